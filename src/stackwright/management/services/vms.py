"""Guests: their states, deployment (the part in the request), ownership, and reconciliation
with what hosts report.

A VM moves through CloudStack's states (cloudstack-api.md §8): deploy creates it Stopped
with an Allocated root volume; the life cycle after that (start, stop, reboot, destroy,
expunge) runs as jobs of recorded steps in `vm_lifecycle`.

Reports of guest states (agent registration and pings) are reconciled by `reconcile()`,
which only ever corrects the database: the engine never starts or stops a guest because
of a report.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from .. import values
from ..errors import (
    CloudRuntimeError,
    InvalidParameterValue,
    PermissionDenied,
)
from ..persistence.models import (
    Account,
    Cluster,
    DiskOffering,
    Host,
    Pod,
    ServiceOffering,
    StoragePool,
    VmInstance,
    Volume,
    split_tags,
    utcnow,
)
from .placement import GiB, VolumeDemand, size_text
from .resource_limits import vm_usage

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from ..context import Context
    from ..persistence.models import Zone
    from ..persistence.models import Template
    from ..persistence.models import Domain

log = logging.getLogger(__name__)

STARTING, RUNNING, STOPPING, STOPPED = "Starting", "Running", "Stopping", "Stopped"
MIGRATING, DESTROYED, EXPUNGING, ERROR = "Migrating", "Destroyed", "Expunging", "Error"
# States in which a guest takes CPU and memory of its host (capacity counts them as used).
HOLDING_CAPACITY = (STARTING, RUNNING, STOPPING, MIGRATING)
# States a job is moving a VM through; reports never override them.
IN_TRANSITION = (STARTING, STOPPING, MIGRATING, EXPUNGING)

# Root volume states
ALLOCATED, CREATING, READY, DESTROY, EXPUNGED = "Allocated", "Creating", "Ready", "Destroy", "Expunged"

# How much older than its receipt a guest report may be (taken by the agent, then sent).
REPORT_GRACE = dt.timedelta(seconds=5)
DEFAULT_GUEST_BRIDGE = "cloudbr0"
ROOT, DATADISK = "ROOT", "DATADISK"

HOSTNAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
INVALID_NAME = (
    "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', and "
    "the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with \"-\" and "
    "can't start with digit"
)


def random_mac() -> str:
    """A locally administered unicast MAC in 02:00:xx:xx:xx:xx."""
    return "02:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))


def vm_label(vm: VmInstance) -> str:
    """How CloudStack names a VM in messages: VM[User|i-2-10-VM]."""
    return f"VM[User|{vm.instance_name}]"


def device_name(device_id: int) -> str:
    """The virtio disk a volume is attached as: device 0 (root) is vda, 1 is vdb, ..."""
    return "vd" + "abcdefghijklmnopqrstuvwxyz"[device_id]


def disk_of(volume: Volume) -> m.DiskSpec:
    """The protocol DiskSpec of a volume the agent created, as the guest's disk."""
    disk = codec.decode(m.DiskSpec, volume.disk)
    disk.device = device_name(volume.device_id)
    return disk


def pool_spec(pool: StoragePool) -> m.PoolSpec:
    return m.PoolSpec(uuid=pool.uuid, url=pool.url, mode="auto")


class VmService:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.session = ctx.session

    # --- lookups and ownership -------------------------------------------------------

    def root_volume(self, vm: VmInstance) -> Volume | None:
        return self.session.execute(
            select(Volume).where(Volume.vm_id == vm.id, Volume.volume_type == ROOT, Volume.removed.is_(None))
        ).scalars().first()

    def volumes(self, vm: VmInstance) -> list[Volume]:
        """The VM's live volumes in device order: the root volume, then its data volumes."""
        return list(self.session.execute(
            select(Volume).where(Volume.vm_id == vm.id, Volume.removed.is_(None)).order_by(Volume.device_id)
        ).scalars().all())

    def locked(self, vm_id: int) -> VmInstance:
        """The VM row as committed now, locked for this transaction (MySQL)."""
        return self.session.execute(
            select(VmInstance).where(VmInstance.id == vm_id).with_for_update().execution_options(populate_existing=True)
        ).scalar_one()

    def pod(self, pod_id: int) -> Pod | None:
        return self.session.get(Pod, pod_id) if pod_id is not None else None

    def cluster(self, cluster_id: int) -> Cluster | None:
        return self.session.get(Cluster, cluster_id) if cluster_id is not None else None

    def check_access(self, vm: VmInstance) -> VmInstance:
        """Non-admin callers may only act on the VMs of their own account."""
        if vm.removed is not None:
            raise InvalidParameterValue(f"Unable to find virtual machine by id {vm.uuid}; it was expunged")
        if not self.ctx.is_root_admin and vm.account_id != self.ctx.account.id:
            raise PermissionDenied(f"Account {self.ctx.account.name} does not have permission to operate with resource {vm.uuid}")
        return vm

    def owner(self, account_name: str | None = None, domain: Domain | None = None) -> Account:
        """The account a new VM belongs to: the caller's, or (admins) the one named."""
        caller = self.ctx.account
        if account_name is None:
            return caller
        domain_id = domain.id if domain is not None else caller.domain_id
        account = self.session.execute(
            select(Account).where(func.lower(Account.name) == account_name.lower(), Account.domain_id == domain_id,
                                  Account.removed.is_(None))
        ).scalars().first()
        if account is None:
            raise InvalidParameterValue(f"Unable to find account {account_name} in domain {domain.uuid if domain is not None else caller.domain.uuid}")
        if account.id != caller.id and not self.ctx.is_root_admin:
            raise PermissionDenied(f"Account {caller.name} does not have permission to deploy VMs for account {account.name}")
        return account

    def check_placement(self, zone: Zone, host: Host | None = None, pod: Pod | None = None, cluster: Cluster | None = None) -> None:
        """Where an admin asks a VM to go must be in its zone; other callers may not ask."""
        for row, what in ((host, "host"), (pod, "pod"), (cluster, "cluster")):
            if row is None:
                continue
            if not self.ctx.is_root_admin:
                raise PermissionDenied(f"Parameter {what}id can only be specified by a Root Admin, permission denied")
            if row.removed is not None or row.zone_id != zone.id:
                raise InvalidParameterValue(f"{what.capitalize()} {row.name} is not in zone {zone.name}")

    # --- deployVirtualMachine (the part that runs in the request) ---------------------

    def create(self, *, zone: Zone, offering: ServiceOffering, template: Template, owner: Account,
               name: str | None = None, display_name: str | None = None, hypervisor: str | None = None,
               host: Host | None = None, pod: Pod | None = None, cluster: Cluster | None = None,
               details: Mapping[str, str] | None = None,
               root_disk_gb: int | None = None, disk_offering: DiskOffering | None = None,
               data_disk_gb: int | None = None, user_data: str | None = None,
               keypairs: Sequence[str] = ()) -> VmInstance:
        """Validate a deployment and create the VM (Stopped) with its Allocated root volume and,
        with `disk_offering`, an Allocated data volume (its size, or `data_disk_gb` GB of a
        customized one); the owner's resource counts grow in the same transaction, and a
        deployment over one of its limits is refused first."""
        catalog = self.ctx.catalog
        if zone.removed is not None:
            raise InvalidParameterValue(f"Unable to find zone by id {zone.uuid}; it was deleted")
        catalog.live_offering(offering)
        catalog.usable_template(template, zone)
        if hypervisor and hypervisor.lower() != template.hypervisor.lower():
            raise InvalidParameterValue(
                "Hypervisor passed to the deployVm call, is different from the hypervisor type of the template "
                f"({template.name} is for {template.hypervisor})")
        self.check_placement(zone, host=host, pod=pod, cluster=cluster)
        cpu_number, cpu_speed, memory_mb = self._sizes(offering, details or {})
        if name is not None and not HOSTNAME.match(name):
            raise InvalidParameterValue(INVALID_NAME)
        if name is not None and self._name_taken(name, zone, owner):
            raise InvalidParameterValue(
                f"A virtual machine with name {name} already exists in zone {zone.name} for account {owner.name}; choose another name")
        size = template.size_bytes
        if root_disk_gb is not None:
            if root_disk_gb * GiB < template.size_bytes or root_disk_gb <= 0:
                raise InvalidParameterValue(
                    f"Root disk size override ({root_disk_gb} GB) is smaller than template size "
                    f"{size_text(template.size_bytes)}; pass rootdisksize >= {-(-template.size_bytes // GiB)}")
            size = root_disk_gb * GiB
        data_bytes = catalog.data_disk_bytes(disk_offering, data_disk_gb) if disk_offering is not None else None
        pairs = self.ctx.ssh_keys.named(owner, keypairs)
        user_data = self.ctx.ssh_keys.checked_user_data(user_data)
        usage = vm_usage(cpu_number, memory_mb, size, *([data_bytes] if data_bytes is not None else []))
        self.ctx.limits.check(owner, usage)
        vm = VmInstance(
            name=name or "pending", display_name=display_name, instance_name="pending", state=STOPPED,
            zone_id=zone.id, account_id=owner.id, domain_id=owner.domain_id, service_offering_id=offering.id,
            template_id=template.id, hypervisor=template.hypervisor, cpu_number=cpu_number, cpu_speed=cpu_speed,
            memory_mb=memory_mb, ha_enabled=offering.offer_ha, mac_address=self._free_mac(), details={},
            user_data=user_data, keypairs=",".join(p.name for p in pairs) or None,
        )
        self.session.add(vm)
        self.session.flush()
        vm.instance_name = f"i-{owner.id}-{vm.id}-VM"
        if name is None:
            vm.name = f"VM-{vm.uuid}"
        vm.display_name = display_name or vm.name
        self.session.add(Volume(
            name=f"ROOT-{vm.id}", vm_id=vm.id, zone_id=zone.id, account_id=owner.id, volume_type=ROOT,
            device_id=0, format=template.format.lower(), size_bytes=size, state=ALLOCATED,
        ))
        if data_bytes is not None:
            self.session.add(Volume(
                name=f"DATA-{vm.id}", vm_id=vm.id, zone_id=zone.id, account_id=owner.id, volume_type=DATADISK,
                device_id=1, format="qcow2", size_bytes=data_bytes, state=ALLOCATED,
                disk_offering_id=disk_offering.id,
            ))
        self.session.flush()
        self.ctx.limits.change(owner, usage)
        self.ctx.event("VM.CREATE", f"Created VM {vm.name} ({vm.instance_name}) from template {template.name} with offering {offering.name}", vm.uuid)
        log.info("created VM %s (%s) in zone %s", vm.instance_name, vm.uuid, zone.name)
        return vm

    @staticmethod
    def _sizes(offering: ServiceOffering, details: Mapping[str, str]) -> tuple[int, int, int]:
        if not offering.is_customized:
            return offering.cpu_number, offering.cpu_speed, offering.memory_mb
        wanted = {}
        for key in ("cpuNumber", "cpuSpeed", "memory"):
            raw = details.get(key)
            try:
                wanted[key] = values.parse_int(raw, *values.INT32)
            except ValueError:
                raise InvalidParameterValue(
                    "Need to specify custom parameter values cpu, cpu speed and memory when using custom "
                    "offering: pass details[0].cpuNumber, details[0].cpuSpeed and details[0].memory (MB)") from None
        if wanted["cpuNumber"] < 1 or wanted["cpuSpeed"] < 1 or wanted["memory"] < 32:
            raise InvalidParameterValue(
                "Invalid custom offering values: cpuNumber and cpuSpeed must be at least 1 and memory at least 32 MB")
        return wanted["cpuNumber"], wanted["cpuSpeed"], wanted["memory"]

    def _name_taken(self, name: str, zone: Zone, owner: Account):
        return self.session.execute(
            select(VmInstance.id).where(func.lower(VmInstance.name) == name.lower(), VmInstance.zone_id == zone.id,
                                        VmInstance.account_id == owner.id, VmInstance.removed.is_(None),
                                        VmInstance.state.notin_((DESTROYED, EXPUNGING))).limit(1)
        ).first() is not None

    def _free_mac(self):
        for _attempt in range(16):
            mac = random_mac()
            taken = self.session.execute(
                select(VmInstance.id).where(VmInstance.mac_address == mac, VmInstance.removed.is_(None)).limit(1)
            ).first()
            if taken is None:
                return mac
        raise CloudRuntimeError("Unable to allocate a unique MAC address; retry the deployment")

    def guest_bridge(self, zone: Zone) -> str:
        """The bridge guests attach to: the KVM label of the zone's Guest traffic, else cloudbr0."""
        guest = self.ctx.networks.zone_traffic(zone).get("Guest")
        return (guest.kvm_label if guest is not None else None) or DEFAULT_GUEST_BRIDGE

    def offering_tags(self, vm: VmInstance) -> list[str]:
        offering = self.session.get(ServiceOffering, vm.service_offering_id)
        return split_tags(offering.host_tags) if offering else []

    def volume_demands(self, vm: VmInstance, volumes: list[Volume]) -> tuple[list[str], list[VolumeDemand]]:
        """(the root volume's storage tags, the data volumes' demands) of `vm` for placement: a
        Ready volume stays on its pool, the others go where their offering's tags allow."""
        offering = self.session.get(ServiceOffering, vm.service_offering_id)
        root_tags = offering.storage_tag_list if offering else []
        data = []
        for volume in volumes:
            if volume.volume_type != DATADISK:
                continue
            disk_offering = self.session.get(DiskOffering, volume.disk_offering_id) if volume.disk_offering_id else None
            placed = self.session.get(StoragePool, volume.pool_id) if volume.state == READY else None
            data.append(VolumeDemand("data", volume.size_bytes, disk_offering.tag_list if disk_offering else [], placed))
        return root_tags, data

    def host_for_pool(self, pool: StoragePool, preferred_id: int) -> Host | None:
        if pool.scope == "ZONE":
            q = select(Host).where(Host.zone_id == pool.zone_id, Host.hypervisor == pool.hypervisor)
        else:
            q = select(Host).where(Host.cluster_id == pool.cluster_id)
        hosts = self.session.execute(
            q.where(Host.removed.is_(None), Host.state == "Up", Host.guid.is_not(None)).order_by(Host.id)
        ).unique().scalars().all()
        hosts.sort(key=lambda h: h.id != preferred_id)
        return hosts[0] if hosts else None

    # --- reconciliation with hypervisor reports ------------------------------------------

    def reconcile(self, host: Host, reported: Mapping[str, str], reported_at: datetime | None = None) -> bool:
        """Correct the VM rows of `host` after its agent reported `reported` ({instance name: state}).

        A VM the database has Running on this host that the hypervisor does not run is
        Stopped; a Stopped VM the hypervisor runs is Running here. VMs a job is moving
        (Starting, Stopping...) are left to the job, and so are VMs whose state changed
        after (or just before) the report was received at `reported_at`: the report may
        predate that change. Nothing is started or stopped.
        Returns False when a VM was left alone, so the caller reconciles again later.
        """
        reported = {name: str(state) for name, state in reported.items()}
        newer_than = (reported_at or utcnow()) - REPORT_GRACE
        settled = True
        on_host = self.session.execute(
            select(VmInstance).where(VmInstance.host_id == host.id, VmInstance.removed.is_(None))
        ).scalars().all()
        seen = set()
        for vm in on_host:
            seen.add(vm.instance_name)
            state = reported.get(vm.instance_name)
            if vm.state in IN_TRANSITION or vm.state_changed > newer_than:
                settled = False
            elif vm.state == RUNNING and state in (None, STOPPED):
                vm.state, vm.last_host_id, vm.host_id, vm.state_changed = STOPPED, host.id, None, utcnow()
                self.ctx.event("VM.STOP",
                               f"VM {vm.instance_name} stopped outside the engine: host {host.name} reports it "
                               f"{'absent' if state is None else state}",
                               vm.uuid, level="WARN", account_id=vm.account_id)
                log.warning("VM %s is no longer running on host %s; marked Stopped", vm.instance_name, host.name)
                self.ctx.ha.guest_crashed(vm, host)
        running = [name for name, state in reported.items() if state == RUNNING and name not in seen]
        if running:
            elsewhere = self.session.execute(
                select(VmInstance).where(VmInstance.instance_name.in_(running), VmInstance.removed.is_(None))
            ).scalars().all()
            for vm in elsewhere:
                if vm.state in IN_TRANSITION or vm.state_changed > newer_than:
                    settled = False
                elif vm.state == STOPPED:
                    vm.state, vm.host_id, vm.last_host_id, vm.state_changed = RUNNING, host.id, host.id, utcnow()
                    self.ctx.event(
                        "VM.START", f"VM {vm.instance_name} found running on host {host.name}: it was started outside the engine",
                        vm.uuid, level="WARN")
                    log.warning("VM %s runs on host %s although it was Stopped; marked Running",
                                vm.instance_name, host.name)
                elif vm.state == RUNNING and vm.host_id != host.id:
                    # Restarted elsewhere while this host was declared Dead: this copy must go.
                    log.warning("host %s runs a stale copy of %s, which runs on another host; stopping it",
                                host.name, vm.instance_name)
                    self.ctx.ha.stale_copy(vm, host)
                else:
                    log.warning("host %s runs a guest %s that the engine has %s; leaving it alone",
                                host.name, vm.instance_name, vm.state)
        self.session.flush()
        return settled
