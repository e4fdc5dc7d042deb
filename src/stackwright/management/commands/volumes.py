"""Volumes: listVolumes shows each guest disk, where it lives and what it was made from;
createVolume, attachVolume, detachVolume, resizeVolume and deleteVolume change data volumes
as async jobs of recorded steps (services/volumes.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, List, Long, Param, Size, String, Uuid
from ..api.registry import Success, api_command
from ..errors import InvalidParameterValue
from ..formatting import compact, date
from ..persistence.models import Cluster, DiskOffering, Domain, Host, Pod, StoragePool, VmInstance, Volume, Zone
from ..services import volumes as jobs
from ..services.queries import by_id, by_uuid
from ..services.steps import DbStep, Result
from ..services.volume_queries import VolumeQueries
from ..services.vms import DESTROY, EXPUNGED

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context
    from ..services.steps import Steps
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
        "attached": date(volume.attached or volume.created) if vm else None,
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


# --- changes of data volumes, as async jobs ----------------------------------------------------

VOLUME_PACKAGE = "org.apache.cloudstack.api.command.user.volume."
VOLUME_ID = Param("id", Uuid(Volume), required=True, description="the ID of the disk volume")


def _view(ctx: Context, volume_id: int) -> dict[str, Any]:
    """The job's result: the volume as its last step left it."""
    return render_volumes(ctx, [by_id(ctx.session, Volume, volume_id)])[0]


def _job_volume(ctx: Context) -> Volume:
    return by_uuid(ctx.session, Volume, ctx.job.instance_uuid)


def _prepare_create(ctx: Context, p: SimpleNamespace) -> str:
    if p.zoneid is None:
        if p.virtualmachineid is None:
            raise InvalidParameterValue("Please specify zoneid (or virtualmachineid) to create a volume")
        p.zoneid = ctx.session.get(Zone, p.virtualmachineid.zone_id)
    if p.diskofferingid is None:
        raise InvalidParameterValue("Please specify diskofferingid: volumes are created from a disk offering "
                                    "(snapshots are not supported)")
    owner = ctx.vms.owner(p.account, p.domainid)
    volume = ctx.volumes.create(zone=p.zoneid, offering=p.diskofferingid, owner=owner, name=p.name, size_gb=p.size,
                                vm=p.virtualmachineid)
    return volume.uuid


@api_command(
    "createVolume", response="volume", async_job=True, prepare=_prepare_create, instance_type="Volume",
    admin_only=False, fields=VOLUME_FIELDS, cmd_class=VOLUME_PACKAGE + "CreateVolumeCmd", params=[
        Param("name", String(), description="the name of the disk volume"),
        Param("diskofferingid", Uuid(DiskOffering), description="the ID of the disk offering: its size (or, "
                                                                "customized, the size asked for) and storage tags"),
        Param("size", Size(1024 ** 3), description="Arbitrary volume size (GB), for a customized disk offering"),
        Param("zoneid", Uuid(Zone), description="the ID of the availability zone"),
        Param("virtualmachineid", Uuid(VmInstance), description="the ID of the virtual machine; to be used with "
                                                                "snapshot Id, VM to which the volume gets attached "
                                                                "after creation"),
        Param("account", String(), description="the account associated with the disk volume. Must be used with the "
                                               "domainId parameter."),
        Param("domainid", Uuid(Domain), description="the domain ID associated with the disk offering. If used with "
                                                    "the account parameter returns the disk volume associated with "
                                                    "the account for the specified domain."),
        Param("displayvolume", Boolean(), description="an optional field, whether to display the volume to the end "
                                                      "user or not."),
        Param("miniops", Long(), description="min iops (not applied)"),
        Param("maxiops", Long(), description="max iops (not applied)"),
    ])
def create_volume(ctx: Context, p: SimpleNamespace) -> Steps:
    """Creates a disk volume from a disk offering. This disk volume must still be attached to a virtual machine to
    make use of it."""
    volume = _job_volume(ctx)
    yield from jobs.create_volume(volume.id, p.virtualmachineid.id if p.virtualmachineid is not None else None)
    return Result(_view, volume.id)


def _admit_attach(ctx: Context, p: SimpleNamespace) -> None:
    ctx.volumes.check_attach(p.id, p.virtualmachineid, p.deviceid)


@api_command(
    "attachVolume", response="volume", async_job=True, admit=_admit_attach, instance_type="Volume",
    admin_only=False, fields=VOLUME_FIELDS, cmd_class=VOLUME_PACKAGE + "AttachVolumeCmd", params=[
        VOLUME_ID,
        Param("virtualmachineid", Uuid(VmInstance), required=True, description="the ID of the virtual machine"),
        Param("deviceid", Long(), description="the ID of the device to map the volume to the guest OS (1, 2, 4-25: "
                                              "vdb, vdc, vde...); without it the lowest free one"),
    ])
def attach_volume(ctx: Context, p: SimpleNamespace) -> Steps:
    """Attaches a disk volume to a virtual machine."""
    yield from jobs.attach_volume(p.id.id, p.virtualmachineid.id, p.deviceid)
    return Result(_view, p.id.id)


def _detached_volume(ctx: Context, p: SimpleNamespace) -> Volume:
    """detachVolume's volume: `id`, or the one at `deviceid` of `virtualmachineid`."""
    if p.id is not None:
        if p.virtualmachineid is not None or p.deviceid is not None:
            raise InvalidParameterValue("Please provide either a volume id, or a tuple(device id, instance id)")
        return p.id
    if p.virtualmachineid is None or p.deviceid is None:
        raise InvalidParameterValue("Please provide either a volume id, or a tuple(device id, instance id)")
    return ctx.volumes.by_device(ctx.vms.check_access(p.virtualmachineid), p.deviceid)


def _detach_target(ctx: Context, volume_id: int | None, vm_id: int | None, device_id: int | None) -> int:
    if volume_id is not None:
        return volume_id
    return ctx.volumes.by_device(ctx.session.get(VmInstance, vm_id), device_id).id


def _admit_detach(ctx: Context, p: SimpleNamespace) -> None:
    ctx.volumes.check_detach(_detached_volume(ctx, p))


@api_command(
    "detachVolume", response="volume", async_job=True, admit=_admit_detach,
    instance_type="Volume", admin_only=False, fields=VOLUME_FIELDS, cmd_class=VOLUME_PACKAGE + "DetachVolumeCmd",
    params=[
        Param("id", Uuid(Volume), description="the ID of the disk volume"),
        Param("virtualmachineid", Uuid(VmInstance), description="the ID of the virtual machine where the volume is "
                                                                "detached from"),
        Param("deviceid", Long(), description="the device ID on the virtual machine where volume is detached from"),
    ])
def detach_volume(ctx: Context, p: SimpleNamespace) -> Steps:
    """Detaches a disk volume from a virtual machine."""
    # The volume is found once and recorded: a resumed job detaches the same one.
    volume_id = yield DbStep(_detach_target, p.id.id if p.id is not None else None,
                             p.virtualmachineid.id if p.virtualmachineid is not None else None, p.deviceid)
    yield from jobs.detach_volume(volume_id)
    return Result(_view, volume_id)


def _admit_resize(ctx: Context, p: SimpleNamespace) -> None:
    ctx.volumes.check_resize(p.id, p.size, p.diskofferingid, bool(p.shrinkok))


@api_command(
    "resizeVolume", response="volume", async_job=True, admit=_admit_resize, instance_type="Volume",
    admin_only=False, fields=VOLUME_FIELDS, cmd_class=VOLUME_PACKAGE + "ResizeVolumeCmd", params=[
        VOLUME_ID,
        Param("size", Size(1024 ** 3), description="New volume size in GB"),
        Param("diskofferingid", Uuid(DiskOffering), description="new disk offering id"),
        Param("shrinkok", Boolean(), description="Verify OK to Shrink"),
        Param("miniops", Long(), description="New minimum number of IOPS (not applied)"),
        Param("maxiops", Long(), description="New maximum number of IOPS (not applied)"),
    ])
def resize_volume(ctx: Context, p: SimpleNamespace) -> Steps:
    """Resizes a volume"""
    offering_id = p.diskofferingid.id if p.diskofferingid is not None else None
    yield from jobs.resize_volume(p.id.id, p.size, offering_id, bool(p.shrinkok))
    return Result(_view, p.id.id)


def _admit_delete(ctx: Context, p: SimpleNamespace) -> None:
    ctx.volumes.check_delete(p.id)


@api_command(
    "deleteVolume", async_job=True, admit=_admit_delete, instance_type="Volume",
    admin_only=False, cmd_class=VOLUME_PACKAGE + "DeleteVolumeCmd", params=[VOLUME_ID])
def delete_volume(ctx: Context, p: SimpleNamespace) -> Steps:
    """Deletes a detached disk volume (and its image on primary storage)."""
    yield from jobs.delete_volume(p.id.id)
    return Success()
