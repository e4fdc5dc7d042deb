"""Volumes: listVolumes shows each guest disk, where it lives and what it was made from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, List, Param, String, Uuid
from ..api.registry import api_command
from ..formatting import compact, date
from ..persistence.models import Cluster, DiskOffering, Domain, Host, Pod, StoragePool, VmInstance, Volume, Zone
from ..services.volume_queries import VolumeQueries
from ..services.vms import DESTROY, EXPUNGED

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context
    from ..services.volume_queries import VolumeView

VOLUME_FIELDS = (
    ("id", "ID of the disk volume"), ("name", "name of the disk volume"),
    ("zoneid", "ID of the availability zone"), ("zonename", "name of the availability zone"),
    ("type", "type of the disk volume (ROOT or DATADISK)"),
    ("deviceid", "the ID of the device on user vm the volume is attahed to. This tag is not returned when the volume "
                 "is detached.", "long"),
    ("virtualmachineid", "id of the virtual machine"), ("vmname", "name of the virtual machine"),
    ("vmstate", "state of the virtual machine"),
    ("size", "size of the disk volume", "long"), ("state", "the state of the disk volume"),
    ("storage", "name of the primary storage hosting the disk volume"),
    ("storageid", "id of the primary storage hosting the disk volume; returned to admin user only"),
    ("storagetype", "shared or local storage"),
    ("diskofferingid", "ID of the disk offering"), ("diskofferingname", "name of the disk offering"),
    ("serviceofferingid", "ID of the service offering for root disk"),
    ("serviceofferingname", "name of the service offering for root disk"),
    ("account", "the account associated with the disk volume"),
    ("domainid", "the ID of the domain associated with the disk volume"),
    ("created", "the date the disk volume was created", "date"),
)


def volume_view(volume: Volume, refs: VolumeView, admin: bool) -> dict[str, Any]:
    zone = refs.zones.get(volume.zone_id)
    vm = refs.vms.get(volume.vm_id)
    pool = refs.pools.get(volume.pool_id)
    disk_offering = refs.disk_offerings.get(volume.disk_offering_id)
    service_offering = refs.service_offerings.get(vm.service_offering_id) if vm and volume.volume_type == "ROOT" \
        else None
    account = refs.accounts.get(volume.account_id)
    return compact({
        "id": volume.uuid,
        "name": volume.name,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "type": volume.volume_type,
        "deviceid": volume.device_id if vm else None,
        "virtualmachineid": vm.uuid if vm else None,
        "vmname": vm.name if vm else None,
        "vmdisplayname": vm.display_name if vm else None,
        "vmstate": vm.state if vm else None,
        "hypervisor": vm.hypervisor if vm else None,
        "provisioningtype": disk_offering.provisioning_type if disk_offering else "thin",
        "size": volume.size_bytes,
        "state": volume.state,
        "destroyed": volume.state in (DESTROY, EXPUNGED),
        "storage": pool.name if pool and admin else None,
        "storageid": pool.uuid if pool and admin else None,
        "storagetype": (disk_offering.storage_type if disk_offering else None) or "shared",
        "format": volume.format.upper(),
        "diskofferingid": disk_offering.uuid if disk_offering else None,
        "diskofferingname": disk_offering.name if disk_offering else None,
        "diskofferingdisplaytext": disk_offering.display_text if disk_offering else None,
        "miniops": disk_offering.min_iops if disk_offering else None,
        "maxiops": disk_offering.max_iops if disk_offering else None,
        "serviceofferingid": service_offering.uuid if service_offering else None,
        "serviceofferingname": service_offering.name if service_offering else None,
        "serviceofferingdisplaytext": service_offering.display_text if service_offering else None,
        "account": account.name if account else None,
        "domainid": account.domain.uuid if account else None,
        "domain": account.domain.name if account else None,
        "created": date(volume.created),
        "attached": date(volume.created) if vm else None,
        "isextractable": False,
        "tags": [],
    })


def render_volumes(ctx: Context, volumes: list[Volume]) -> list[dict[str, Any]]:
    refs = VolumeQueries(ctx).view_context(volumes)
    return [volume_view(v, refs, ctx.is_root_admin) for v in volumes]


@api_command(
    "listVolumes", response="volume", admin_only=False, fields=VOLUME_FIELDS,
    cmd_class="org.apache.cloudstack.api.command.user.volume.ListVolumesCmd", params=[
        Param("id", Uuid(Volume), description="the ID of the disk volume"),
        Param("ids", List(Uuid(Volume)), description="the IDs of the volumes, mutually exclusive with id"),
        Param("name", String(), description="the name of the disk volume"),
        Param("type", String(), description="the type of disk volume (ROOT or DATADISK)"),
        Param("state", String(), description="state of the volume. Possible values are: Ready, Allocated, Destroy, "
                                             "Expunging, Expunged."),
        Param("virtualmachineid", Uuid(VmInstance), description="the ID of the virtual machine"),
        Param("zoneid", Uuid(Zone), description="the ID of the availability zone"),
        Param("podid", Uuid(Pod), description="the pod id the disk volume belongs to"),
        Param("clusterid", Uuid(Cluster), description="the cluster id the disk volume belongs to"),
        Param("hostid", Uuid(Host), description="list volumes on specified host"),
        Param("storageid", Uuid(StoragePool), description="the ID of the storage pool, available to ROOT admin only"),
        Param("diskofferingid", Uuid(DiskOffering), description="list volumes by disk offering"),
        Param("account", String(), description="list resources by account. Must be used with the domainId parameter."),
        Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
        Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's "
                                                "caller"),
    ])
def list_volumes(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all volumes."""
    return listed(VolumeQueries(ctx).list_page(p), render_many=lambda volumes: render_volumes(ctx, volumes))
