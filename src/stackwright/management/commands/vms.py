"""Virtual machines: deployVirtualMachine, startVirtualMachine, stopVirtualMachine,
rebootVirtualMachine, destroyVirtualMachine, listVirtualMachines.

deployVirtualMachine is an async create: the VM exists (Stopped) when the request
returns, and the job starts it. The other changes are async jobs whose result is the VM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, List, Map, Param, Size, String, Uuid, given, map_dict
from ..api.registry import api_command
from ..errors import InvalidParameterValue, PermissionDenied
from ..formatting import compact, date
from ..persistence.models import (
    Cluster,
    DiskOffering,
    Domain,
    Host,
    Pod,
    ServiceOffering,
    StoragePool,
    Template,
    VmInstance,
    Zone,
)
from ..services import migration
from ..services import vm_lifecycle as lifecycle
from ..services.queries import by_id, by_uuid
from ..services.steps import Result
from ..services.vm_queries import VmQueries

if TYPE_CHECKING:
    from ..api.registry import ListResult
    from ..services.steps import Steps
    from types import SimpleNamespace
    from ..context import Context
    from ..persistence.models import Account, Entity

VM_FIELDS = (
    ("id", "the ID of the virtual machine"), ("name", "the name of the virtual machine"),
    ("displayname", "user generated name. The name of the virtual machine is returned if no displayname exists."),
    ("instancename", "instance name of the user vm; this parameter is returned to the ROOT admin only"),
    ("state", "the state of the virtual machine"),
    ("hostid", "the ID of the host for the virtual machine"), ("hostname", "the name of the host for the virtual machine"),
    ("haenable", "true if high-availability is enabled, false otherwise", "boolean"),
    ("cpunumber", "the number of vCPUs this virtual machine is using", "integer"),
    ("cpuspeed", "the speed of each vCPU", "integer"), ("memory", "the memory allocated for the virtual machine", "integer"),
    ("zoneid", "the ID of the availability zone for the virtual machine"),
    ("zonename", "the name of the availability zone for the virtual machine"),
    ("templateid", "the ID of the template for the virtual machine"),
    ("serviceofferingid", "the ID of the service offering of the virtual machine"),
    ("hypervisor", "the hypervisor on which the template runs"),
    ("account", "the account associated with the virtual machine"),
    ("domainid", "the ID of the domain in which the virtual machine exists"),
    ("created", "the date when this virtual machine was created", "date"),
    ("nic", "the list of nics associated with vm", "list"), ("tags", "the list of resource tags associated", "list"),
    ("details", "Vm details in key/value pairs.", "map"),
    ("keypairs", "ssh key-pairs"), ("userdata", "Base64 string containing the user data"),
)
VM_PACKAGE = "org.apache.cloudstack.api.command.user.vm."
VM_ID = Param("id", Uuid(VmInstance, owned=True), required=True, description="The ID of the virtual machine")
PLACEMENT_PARAMS = [
    Param(f"{what}id", Uuid(model),
          description=f"destination {label} ID to deploy the VM to - parameter available for root admin only")
    for what, model, label in (("host", Host, "Host"), ("pod", Pod, "Pod"), ("cluster", Cluster, "Cluster"))
]


def render_vms(ctx: Context, vms: list[VmInstance]) -> list[dict[str, Any]]:
    """API views of `vms`, loading what they refer to once per page."""
    if not vms:
        return []
    refs = VmQueries(ctx).view_context(vms)
    admin = ctx.is_root_admin
    return [vm_view(v, refs.zones[v.zone_id], refs.hosts.get(v.host_id), refs.templates.get(v.template_id),
                    refs.offerings.get(v.service_offering_id), refs.accounts.get(v.account_id),
                    refs.pending.get(v.uuid), admin)
            for v in vms]


def vm_view(vm: VmInstance, zone: Zone, host: Host | None, template: Template, offering: ServiceOffering,
            account: Account, job_uuid: str | None = None, admin: bool = True) -> dict[str, Any]:
    return compact({
        "id": vm.uuid,
        "name": vm.name,
        "displayname": vm.display_name,
        "instancename": vm.instance_name if admin else None,
        "state": vm.state,
        "hostid": host.uuid if host and admin else None,
        "hostname": host.name if host and admin else None,
        "haenable": vm.ha_enabled,
        "cpunumber": vm.cpu_number,
        "cpuspeed": vm.cpu_speed,
        "memory": vm.memory_mb,
        "zoneid": zone.uuid,
        "zonename": zone.name,
        "templateid": template.uuid if template else None,
        "templatename": template.name if template else None,
        "templatedisplaytext": template.display_text if template else None,
        "serviceofferingid": offering.uuid if offering else None,
        "serviceofferingname": offering.name if offering else None,
        "hypervisor": vm.hypervisor,
        "account": account.name if account else None,
        "domainid": account.domain.uuid if account else None,
        "domain": account.domain.name if account else None,
        "ostypename": template.os_type if template else None,
        "rootdevicetype": "ROOT",
        "rootdeviceid": 0,
        "passwordenabled": False,
        "isdynamicallyscalable": False,
        "created": date(vm.created),
        "nic": [{"id": vm.nic_uuid, "macaddress": vm.mac_address, "isdefault": True, "traffictype": "Guest",
                 "deviceid": "0"}],
        "tags": [],
        "details": dict(vm.details or {}),
        "keypairs": vm.keypairs,
        "userdata": vm.user_data,
        "jobid": job_uuid,
        "jobstatus": 0 if job_uuid else None,
    })


def one_vm(ctx: Context, vm: VmInstance) -> dict[str, Any]:
    return render_vms(ctx, [vm])[0]


def _view(ctx: Context, vm_id: int):
    """The job's result: the VM as its last step left it."""
    return one_vm(ctx, by_id(ctx.session, VmInstance, vm_id))


def _job_vm(ctx: Context):
    return by_uuid(ctx.session, VmInstance, ctx.job.instance_uuid)


def _id(row: Entity | None) -> int | None:
    return row.id if row is not None else None


def _prepare_deploy(ctx: Context, p: SimpleNamespace):
    owner = ctx.vms.owner(p.account, p.domainid)
    vm = ctx.vms.create(
        zone=p.zoneid, offering=p.serviceofferingid, template=p.templateid, owner=owner, name=p.name,
        display_name=p.displayname, hypervisor=p.hypervisor, host=p.hostid, pod=p.podid, cluster=p.clusterid,
        details=map_dict(p.details), root_disk_gb=p.rootdisksize, disk_offering=p.diskofferingid,
        data_disk_gb=p.size, user_data=p.userdata,
        keypairs=([p.keypair] if p.keypair else []) + list(p.keypairs or []),
    )
    return vm.uuid


@api_command(
    "deployVirtualMachine", response="virtualmachine", async_job=True, prepare=_prepare_deploy,
    instance_type="VirtualMachine", admin_only=False, fields=VM_FIELDS,
    cmd_class=VM_PACKAGE + "DeployVMCmd", params=[
        Param("serviceofferingid", Uuid(ServiceOffering), required=True,
              description="the ID of the service offering for the virtual machine"),
        Param("templateid", Uuid(Template), required=True, description="the ID of the template for the virtual machine"),
        Param("zoneid", Uuid(Zone), required=True, description="availability zone for the virtual machine"),
        Param("name", String(), description="host name for the virtual machine"),
        Param("displayname", String(), description="an optional user generated name for the virtual machine"),
        *PLACEMENT_PARAMS,
        Param("hypervisor", String(), description="the hypervisor on which to deploy the virtual machine"),
        Param("startvm", Boolean(), default=True, description="true by default - deploy the VM and start it; false: only deploy it"),
        Param("account", String(), description="an optional account for the virtual machine. Must be used with domainId."),
        Param("domainid", Uuid(Domain), description="an optional domainId for the virtual machine"),
        Param("details", Map(), description="used to specify the custom parameters (cpuNumber, cpuSpeed, memory)"),
        Param("rootdisksize", Size(1024 ** 3), description="Optional field to resize root disk on deploy (GB)"),
        Param("keypair", String(), description="name of the ssh key pair used to login to the virtual machine"),
        Param("keypairs", List(), description="names of the ssh key pairs used to login to the virtual machine"),
        Param("userdata", String(1048576), description="an optional binary data that can be sent to the virtual "
                                                       "machine upon a successful deployment, base64 encoded; stored "
                                                       "and shown, not yet handed to the guest"),
        Param("diskofferingid", Uuid(DiskOffering),
              description="the ID of the disk offering for the virtual machine: a data volume of it is created and "
                          "attached, on a storage pool carrying the offering's tags"),
        Param("size", Size(1024 ** 3), description="the arbitrary size in GB for the data volume of a customized disk "
                                                   "offering"),
    ])
def deploy_virtual_machine(ctx: Context, p: SimpleNamespace) -> Steps:
    """Creates and automatically starts a virtual machine based on a service offering and template."""
    vm_id = _job_vm(ctx).id
    yield from lifecycle.deploy(vm_id, start=p.startvm, host_id=_id(p.hostid), pod_id=_id(p.podid),
                                cluster_id=_id(p.clusterid))
    return Result(_view, vm_id)


@api_command(
    "startVirtualMachine", response="virtualmachine", async_job=True, instance_type="VirtualMachine",
    admin_only=False, fields=VM_FIELDS, cmd_class=VM_PACKAGE + "StartVMCmd", params=[
        VM_ID,
        *PLACEMENT_PARAMS,
        Param("considerlasthost", Boolean(), default=True,
              description="True by default, the last host of the VM is tried first when it has capacity"),
    ])
def start_virtual_machine(ctx: Context, p: SimpleNamespace) -> Steps:
    """Starts a virtual machine."""
    vm = ctx.vms.check_access(p.id)
    ctx.vms.check_placement(VmQueries(ctx).zone_of(vm), host=p.hostid, pod=p.podid, cluster=p.clusterid)
    yield from lifecycle.start_vm(vm.id, host_id=_id(p.hostid), pod_id=_id(p.podid), cluster_id=_id(p.clusterid),
                                  consider_last_host=p.considerlasthost)
    return Result(_view, vm.id)


@api_command(
    "stopVirtualMachine", response="virtualmachine", async_job=True, instance_type="VirtualMachine",
    admin_only=False, fields=VM_FIELDS, cmd_class=VM_PACKAGE + "StopVMCmd", params=[
        VM_ID,
        Param("forced", Boolean(), description="Force stop the VM (vm is marked as Stopped even when command fails to "
                                               "be send to the backend, otherwise a force poweroff is attempted)."),
    ])
def stop_virtual_machine(ctx: Context, p: SimpleNamespace) -> Steps:
    """Stops a virtual machine."""
    vm_id = ctx.vms.check_access(p.id).id
    yield from lifecycle.stop_vm(vm_id, forced=bool(p.forced))
    return Result(_view, vm_id)


@api_command("rebootVirtualMachine", response="virtualmachine", async_job=True, instance_type="VirtualMachine",
             admin_only=False, fields=VM_FIELDS, cmd_class=VM_PACKAGE + "RebootVMCmd", params=[VM_ID])
def reboot_virtual_machine(ctx: Context, p: SimpleNamespace) -> Steps:
    """Reboots a virtual machine."""
    vm_id = ctx.vms.check_access(p.id).id
    yield from lifecycle.reboot_vm(vm_id)
    return Result(_view, vm_id)


@api_command(
    "destroyVirtualMachine", response="virtualmachine", async_job=True, instance_type="VirtualMachine",
    admin_only=False, fields=VM_FIELDS, cmd_class=VM_PACKAGE + "DestroyVMCmd", params=[
        VM_ID,
        Param("expunge", Boolean(), description="If true is passed, the vm is expunged immediately. False by default."),
    ])
def destroy_virtual_machine(ctx: Context, p: SimpleNamespace) -> Steps:
    """Destroys a virtual machine."""
    vm = ctx.vms.check_access(p.id)
    if p.expunge and not ctx.is_root_admin:
        raise PermissionDenied("Parameter expunge can be passed by Admin only. Or when the "
                               "allow.user.expunge.recover.vm key is set.")
    yield from lifecycle.destroy_vm(vm.id, expunge=bool(p.expunge))
    return Result(_view, vm.id)


@api_command(
    "listVirtualMachines", response="virtualmachine", admin_only=False, fields=VM_FIELDS,
    cmd_class=VM_PACKAGE + "ListVMsCmd", params=[
        Param("id", Uuid(VmInstance), description="the ID of the virtual machine"),
        Param("ids", List(Uuid(VmInstance)), description="the IDs of the virtual machines, mutually exclusive with id"),
        Param("name", String(), description="name of the virtual machine (a substring match is not done)"),
        Param("state", String(), description="state of the virtual machine"),
        Param("zoneid", Uuid(Zone), description="the availability zone ID"),
        Param("hostid", Uuid(Host), description="the host ID"),
        Param("podid", Uuid(Pod), description="the pod ID"),
        Param("clusterid", Uuid(Cluster), description="the cluster ID"),
        Param("templateid", Uuid(Template), description="list vms by template"),
        Param("serviceofferingid", Uuid(ServiceOffering), description="list by the service offering"),
        Param("hypervisor", String(), description="the target hypervisor for the template"),
        Param("haenable", Boolean(), description="list by the High Availability offering; true if filtering VMs with HA enabled"),
        Param("account", String(), description="list resources by account. Must be used with the domainId parameter."),
        Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
        Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
        Param("details", List(), description="comma separated list of vm details requested"),
    ])
def list_virtual_machines(ctx: Context, p: SimpleNamespace) -> ListResult:
    """List the virtual machines owned by the account."""
    return listed(VmQueries(ctx).list_page(p, given(p, "haenable")), render_many=lambda vms: render_vms(ctx, vms))


@api_command(
    "migrateVirtualMachine", response="virtualmachine", async_job=True, instance_type="VirtualMachine",
    fields=VM_FIELDS, cmd_class="org.apache.cloudstack.api.command.admin.vm.MigrateVMCmd", params=[
        Param("virtualmachineid", Uuid(VmInstance), required=True, description="the ID of the virtual machine"),
        Param("hostid", Uuid(Host), description="Destination Host ID to migrate VM to; without it, a host of the "
                                                "VM's cluster is chosen"),
        Param("autoselect", Boolean(), default=True,
              description="Automatically select a destination host which do not require storage migration, if "
                          "hostId and storageId are not specified. false by default"),
        Param("storageid", Uuid(StoragePool),
              description="Destination storage pool ID to migrate VM volumes to; not supported: the VM's disk stays "
                          "on shared storage"),
    ])
def migrate_virtual_machine(ctx: Context, p: SimpleNamespace) -> Steps:
    """Attempts Migration of a VM to a different host or Root volume of the vm to a different storage pool"""
    vm_id = p.virtualmachineid.id
    if p.storageid is not None:
        raise InvalidParameterValue("Storage migration is not supported: the VM's disk stays on its shared "
                                    "primary storage; migrate without storageid")
    if p.hostid is None and not p.autoselect:
        raise InvalidParameterValue("Either hostid or autoselect=true is required to migrate a VM")
    yield from migration.migrate_vm(vm_id, _id(p.hostid))
    return Result(_view, vm_id)


@api_command("getVirtualMachineUserData", response="virtualmachineuserdata", admin_only=False,
             cmd_class=VM_PACKAGE + "GetVMUserDataCmd", since="4.4", fields=(
                 ("virtualmachineid", "the ID of the virtual machine"), ("userdata", "Base 64 encoded VM user data")),
             params=[Param("virtualmachineid", Uuid(VmInstance, owned=True), required=True,
                           description="The ID of the virtual machine")])
def get_virtual_machine_user_data(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Returns user data associated with the VM"""
    vm = ctx.vms.check_access(p.virtualmachineid)
    return compact({"virtualmachineid": vm.uuid, "userdata": vm.user_data})
