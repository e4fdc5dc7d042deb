"""Data volumes on their own: createVolume, attachVolume, detachVolume, resizeVolume and
deleteVolume, the checks that run in the request and again in the job's first step, and the
jobs of recorded steps that carry them out.

A volume created without a VM stays Allocated, with no image, until it is first attached:
attached to a Running guest it is created on a pool the guest's cluster reaches (placed by
the planner's rules: the disk offering's storage tags, the pool's room) and hot-plugged as a
virtio disk; attached to a Stopped guest it is only recorded, and the next start places and
creates it with the guest's other volumes. Detaching from a Running guest hot-unplugs it.
Resizing grows the image (live, through the hypervisor, when its guest runs); shrinking needs
`shrinkok` and a guest that is not running. Deleting removes the image of a detached volume.

Each change moves the volume through a state (or its attachment) that refuses concurrent
changes, and a failed agent step puts it back, so nothing is left half-done.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from ..errors import (
    CloudRuntimeError,
    InsufficientCapacity,
    InvalidParameterValue,
    PermissionDenied,
    ResourceUnavailable,
)
from ..persistence.models import Account, Cluster, DiskOffering, Host, StoragePool, VmInstance, Volume, utcnow
from .gateway import HostRef
from .placement import GiB, Planner, VolumeDemand, size_text
from .resource_limits import PRIMARY_STORAGE, VOLUME
from .steps import AgentStep, DbStep, Settle, Steps, settle_by
from .vm_lifecycle import discard_volume
from .vms import (
    ALLOCATED,
    CREATING,
    DATADISK,
    EXPUNGED,
    READY,
    ROOT,
    RUNNING,
    STOPPED,
    device_name,
    pool_spec,
)

if TYPE_CHECKING:
    from ..context import Context
    from ..persistence.models import Zone

log = logging.getLogger(__name__)

# Volume states of its own changes (CloudStack's Volume.State names).
RESIZING, EXPUNGING = "Resizing", "Expunging"
# Device ids a data volume may take: vdb..vdz; 3 is kept free, as CloudStack keeps it for the CD-ROM.
DEVICE_IDS = [d for d in range(1, 26) if d != 3]
CREATE_TIMEOUT, DISK_TIMEOUT, RESIZE_TIMEOUT, DELETE_TIMEOUT = 300.0, 60.0, 300.0, 120.0
DETACH_WAIT = 30.0          # how long a guest may take to release an unplugged disk


def _host_ref(host: Host) -> list[str]:
    return [host.guid or "", host.name]


class VolumeService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    # --- lookups and access ------------------------------------------------------------

    def locked(self, volume_id: int) -> Volume:
        return self.session.execute(
            select(Volume).where(Volume.id == volume_id).with_for_update().execution_options(populate_existing=True)
        ).scalar_one()

    def check_access(self, volume: Volume) -> Volume:
        """A live volume the caller may act on: its own account's, or any for the root admin."""
        if volume.removed is not None or volume.state == EXPUNGED:
            raise InvalidParameterValue(f"Unable to find volume by id {volume.uuid}; it was deleted")
        if not self.ctx.is_root_admin and volume.account_id != self.ctx.account.id:
            raise PermissionDenied(f"Account {self.ctx.account.name} does not have permission to operate with "
                                   f"volume {volume.uuid}")
        return volume

    def _vm(self, vm_id: int) -> VmInstance:
        return self.session.get(VmInstance, vm_id)

    # --- createVolume ------------------------------------------------------------------

    def create(self, *, zone: Zone, offering: DiskOffering, owner: Account, name: str | None = None,
               size_gb: int | None = None, vm: VmInstance | None = None) -> Volume:
        """An Allocated data volume of `offering` (its size, or `size_gb` of a customized one) in
        `zone`, counted against the owner's volume and primary storage limits; with `vm`, the
        attachment it will get is checked first."""
        if zone.removed is not None:
            raise InvalidParameterValue(f"Unable to find zone by id {zone.uuid}; it was deleted")
        self.ctx.catalog.live_disk_offering(offering)
        if size_gb is not None and not offering.customized:
            raise InvalidParameterValue(
                f"This disk offering does not allow custom size: disk offering {offering.name} has a fixed size of "
                f"{size_text(offering.disk_size_bytes)}; leave size out or use a customized offering")
        size = self.ctx.catalog.data_disk_bytes(offering, size_gb)
        if vm is not None:
            self.ctx.vms.check_access(vm)
            if vm.account_id != owner.id:
                raise PermissionDenied(f"Unable to attach a volume of account {owner.name} to VM {vm.name} of "
                                       f"another account")
            if vm.zone_id != zone.id:
                raise InvalidParameterValue(f"Please specify a VM that is in the same zone as the volume: VM {vm.name} "
                                            f"is not in zone {zone.name}")
            self._check_vm_state(vm)
            self._device_id(vm, None)
        usage = {VOLUME: 1, PRIMARY_STORAGE: size}
        self.ctx.limits.check(owner, usage)
        volume = Volume(name=name or "pending", zone_id=zone.id, account_id=owner.id, volume_type=DATADISK,
                        device_id=0, format="qcow2", size_bytes=size, state=ALLOCATED,
                        disk_offering_id=offering.id)
        self.session.add(volume)
        self.session.flush()
        if not name:
            volume.name = f"DATA-{volume.id}"
        self.ctx.limits.change(owner, usage)
        self.ctx.event("VOLUME.CREATE", f"Allocated volume {volume.name} of {size_text(size)} with disk offering "
                                        f"{offering.name} in zone {zone.name}", volume.uuid, account_id=owner.id)
        return volume

    # --- checks ------------------------------------------------------------------------

    @staticmethod
    def _check_vm_state(vm: VmInstance) -> None:
        if vm.state not in (RUNNING, STOPPED):
            raise InvalidParameterValue(f"Please specify a VM that is either running or stopped: VM {vm.name} is "
                                        f"{vm.state}")

    def _device_id(self, vm: VmInstance, wanted: int | None) -> int:
        """The device id a new data volume of `vm` gets: `wanted` when free, else the lowest free."""
        taken = {v.device_id for v in self.ctx.vms.volumes(vm)}
        if wanted is not None:
            if wanted not in DEVICE_IDS:
                raise InvalidParameterValue(f"deviceId should be 1, 2 or 4-{DEVICE_IDS[-1]}, not {wanted}")
            if wanted in taken:
                raise InvalidParameterValue(f"deviceId {wanted} is used by VM {vm.name}; pick another or leave it "
                                            "out")
            return wanted
        free = [d for d in DEVICE_IDS if d not in taken]
        if not free:
            raise InvalidParameterValue(f"VM {vm.name} has the most data volumes it can take ({len(DEVICE_IDS)})")
        return free[0]

    def check_attach(self, volume: Volume, vm: VmInstance, device_id: int | None) -> int:
        """The device id `volume` gets on `vm`, or why it cannot be attached (431/531)."""
        self.check_access(volume)
        self.ctx.vms.check_access(vm)
        if volume.volume_type == ROOT:
            raise InvalidParameterValue(f"Volume {volume.name} is a ROOT volume; only data volumes can be attached")
        if volume.vm_id is not None:
            other = self._vm(volume.vm_id)
            raise InvalidParameterValue(f"Please specify a volume that is not attached to any VM: volume "
                                        f"{volume.name} is attached to VM {other.name if other else volume.vm_id}")
        if volume.state not in (ALLOCATED, READY):
            raise InvalidParameterValue(f"Volume {volume.name} is {volume.state}; only an Allocated or Ready volume "
                                        "can be attached")
        if vm.zone_id != volume.zone_id:
            raise InvalidParameterValue(f"Please specify a VM that is in the same zone as the volume: volume "
                                        f"{volume.name} and VM {vm.name} are in different zones")
        if vm.account_id != volume.account_id:
            raise PermissionDenied(f"Unable to attach volume {volume.name} to VM {vm.name}: they belong to different "
                                   "accounts")
        self._check_vm_state(vm)
        if vm.state == RUNNING and volume.state == READY and volume.pool_id is not None:
            host = self.session.get(Host, vm.host_id)
            pool = self.session.get(StoragePool, volume.pool_id)
            reachable = {p.id for p in self.ctx.storage.allocatable_pools(self.session.get(Cluster, host.cluster_id))}
            if pool.id not in reachable:
                raise InvalidParameterValue(
                    f"Volume {volume.name} is on storage pool {pool.name}, which host {host.name} running VM "
                    f"{vm.name} does not reach (or it is not Up); stop the VM and attach it then")
        return self._device_id(vm, device_id)

    def check_detach(self, volume: Volume) -> VmInstance:
        self.check_access(volume)
        if volume.volume_type == ROOT:
            raise InvalidParameterValue(f"Please specify a data volume: volume {volume.name} is the ROOT volume of "
                                        "its VM and cannot be detached")
        if volume.vm_id is None:
            raise InvalidParameterValue(f"Volume {volume.name} is not attached to any VM")
        vm = self._vm(volume.vm_id)
        self._check_vm_state(vm)
        return vm

    def by_device(self, vm: VmInstance, device_id: int) -> Volume:
        """detachVolume virtualmachineid= deviceid=: the volume at that device."""
        for volume in self.ctx.vms.volumes(vm):
            if volume.device_id == device_id:
                return volume
        raise InvalidParameterValue(f"VM {vm.name} has no volume at device id {device_id}")

    def check_resize(self, volume: Volume, size_gb: int | None, offering: DiskOffering | None,
                     shrink_ok: bool) -> tuple[int, int | None]:
        """(the new size in bytes, the new disk offering's id or None), or why not."""
        self.check_access(volume)
        if volume.state not in (ALLOCATED, READY):
            raise InvalidParameterValue(f"Volume {volume.name} is {volume.state}; only an Allocated or Ready volume "
                                        "can be resized")
        current = self.session.get(DiskOffering, volume.disk_offering_id) if volume.disk_offering_id else None
        if offering is not None:
            self.ctx.catalog.live_disk_offering(offering)
            if volume.volume_type == ROOT:
                raise InvalidParameterValue(f"Volume {volume.name} is a ROOT volume: resize it with size alone")
            if size_gb is not None and not offering.customized:
                raise InvalidParameterValue(
                    f"This disk offering does not allow custom size: disk offering {offering.name} has a fixed size "
                    f"of {size_text(offering.disk_size_bytes)}")
            size = self.ctx.catalog.data_disk_bytes(offering, size_gb)
        else:
            if size_gb is None:
                raise InvalidParameterValue("Please specify size (GB) or diskofferingid to resize a volume")
            if volume.volume_type != ROOT and not (current is not None and current.customized):
                raise InvalidParameterValue(
                    f"To change volume {volume.name}'s size without providing a new disk offering, its current disk "
                    f"offering must be customizable or it must be a root volume (its offering "
                    f"{current.name if current else '(none)'} has a fixed size)")
            size = self.ctx.catalog.check_disk_size(size_gb, "Resize failed") * GiB
        if size < volume.size_bytes:
            if not shrink_ok:
                raise InvalidParameterValue(
                    f"Going from existing size of {size_text(volume.size_bytes)} to size of {size_text(size)} would "
                    "shrink the volume. Need to sign off by supplying the shrinkok parameter with value of true.")
            vm = self._vm(volume.vm_id) if volume.vm_id else None
            if vm is not None and vm.state != STOPPED:
                raise InvalidParameterValue(f"Volume {volume.name} can only be shrunk while VM {vm.name} is stopped")
        if volume.volume_type == ROOT and size < volume.size_bytes:
            raise InvalidParameterValue(f"A ROOT volume cannot be shrunk: volume {volume.name} stays at least "
                                        f"{size_text(volume.size_bytes)}")
        if size > volume.size_bytes:
            self.ctx.limits.check(self.session.get(Account, volume.account_id),
                                  {PRIMARY_STORAGE: size - volume.size_bytes})
            if volume.pool_id is not None:
                why = Planner(self.ctx).growth_fits(self.session.get(StoragePool, volume.pool_id),
                                                    size - volume.size_bytes)
                if why is not None:
                    raise InsufficientCapacity(f"Unable to resize volume {volume.name}: {why}", cserrorcode=4340)
        return size, offering.id if offering is not None else None

    def check_delete(self, volume: Volume) -> None:
        self.check_access(volume)
        if volume.vm_id is not None:
            vm = self._vm(volume.vm_id)
            raise InvalidParameterValue(f"Please specify a volume that is not attached to any VM: volume "
                                        f"{volume.name} is attached to VM {vm.name if vm else volume.vm_id}; detach "
                                        "it first")
        if volume.state not in (ALLOCATED, READY):
            raise InvalidParameterValue(f"Volume {volume.name} is {volume.state}; only an Allocated or Ready volume "
                                        "can be deleted")


# --- the jobs --------------------------------------------------------------------------------


def _settle_devices(name: str, device: str, present: bool) -> Settle:
    """Settle an attach (`present`) or a detach of `device` by the disks the guest has now."""
    return settle_by(m.QueryDisks(name=name), lambda answer: (device in answer.devices) == present)


def _settle_size(pool: m.PoolSpec, name: str, size: int) -> Settle:
    """Settle a resize by the volume's size on its pool: done when it has the size asked for."""
    return settle_by(m.QueryVolume(pool=pool, name=name), lambda answer: answer.size_bytes == size)


def create_volume(volume_id: int, vm_id: int | None) -> Steps:
    """The job of createVolume: the volume is Allocated already; with a VM it is attached."""
    if vm_id is not None:
        yield from attach_volume(volume_id, vm_id, None)


def attach_volume(volume_id: int, vm_id: int, device_id: int | None) -> Steps:
    plan = yield DbStep(_begin_attach, volume_id, vm_id, device_id)
    if plan is None:
        return
    host, name, device = HostRef(*plan["host"]), plan["name"], plan["device"]
    try:
        disk = plan.get("disk")
        if disk is None:
            pool = codec.decode(m.PoolSpec, plan["pool"])
            answer = yield AgentStep(host, m.CreateVolume(pool=pool, name=plan["volume"], size_bytes=plan["size"],
                                                          format="qcow2"),
                                     CREATE_TIMEOUT, settle=discard_volume(pool, plan["volume"]))
            disk = yield DbStep(_volume_made, volume_id, plan, answer.disk)
        spec = codec.decode(m.DiskSpec, disk)
        spec.device = device
        yield AgentStep(host, m.AttachDisk(name=name, disk=spec), DISK_TIMEOUT,
                        settle=_settle_devices(name, device, True))
    except ResourceUnavailable as e:
        yield DbStep(_attach_failed, volume_id)
        raise CloudRuntimeError(f"Failed to attach volume {plan['volume_name']} to VM {plan['vm_name']}: "
                                f"{e.text}") from None
    yield DbStep(_attached, volume_id, plan)


def _begin_attach(ctx: Any, volume_id: int, vm_id: int, device_id: int | None) -> dict | None:
    """Check again under lock and record the attachment; for a Running guest, what the agent steps
    need (the pool a volume without image goes on, the guest's host). None when only recorded."""
    vm = ctx.vms.locked(vm_id)
    volumes = ctx.volumes
    volume = volumes.locked(volume_id)
    device_id = volumes.check_attach(volume, vm, device_id)
    volume.vm_id, volume.device_id = vm.id, device_id
    if vm.state != RUNNING:
        _record_attach(ctx, volume, vm)
        return None
    host = ctx.session.get(Host, vm.host_id)
    out = {"host": _host_ref(host), "name": vm.instance_name, "device": device_name(device_id),
           "volume": volume.uuid, "volume_name": volume.name, "vm_name": vm.name, "size": volume.size_bytes}
    if volume.state == READY:
        out["disk"] = volume.disk
        return out
    offering = ctx.session.get(DiskOffering, volume.disk_offering_id) if volume.disk_offering_id else None
    cluster = ctx.session.get(Cluster, host.cluster_id)
    pool = Planner(ctx).volume_pool(cluster, VolumeDemand("data", volume.size_bytes,
                                                          offering.tag_list if offering else []),
                                    f"volume {volume.name} of VM {vm.name}")
    volume.pool_id, volume.state = pool.id, CREATING
    out.update(pool=codec.encode(pool_spec(pool)), pool_name=pool.name)
    return out


def _volume_made(ctx: Any, volume_id: int, plan: dict, disk: m.DiskSpec) -> dict:
    volume = ctx.volumes.locked(volume_id)
    volume.state, volume.disk = READY, codec.encode_as(disk, m.DiskSpec)
    ctx.event("VOLUME.CREATE", f"Created volume {volume.name} on storage pool {plan['pool_name']}", volume.uuid,
              account_id=volume.account_id)
    return volume.disk


def _attach_failed(ctx: Any, volume_id: int) -> None:
    """The hot-plug did not happen: the volume is detached again (an image it got stays, Ready)."""
    volume = ctx.volumes.locked(volume_id)
    volume.vm_id, volume.device_id, volume.attached = None, 0, None
    if volume.state == CREATING:
        volume.pool_id, volume.state = None, ALLOCATED


def _attached(ctx: Any, volume_id: int, plan: dict) -> None:
    volume = ctx.volumes.locked(volume_id)
    _record_attach(ctx, volume, ctx.session.get(VmInstance, volume.vm_id))


def _record_attach(ctx: Any, volume: Volume, vm: VmInstance) -> None:
    volume.attached = utcnow()
    ctx.event("VOLUME.ATTACH", f"Attached volume {volume.name} to VM {vm.name} as {device_name(volume.device_id)}",
              volume.uuid, account_id=volume.account_id)
    log.info("attached volume %s to %s as device %s", volume.uuid, vm.instance_name, volume.device_id)


def detach_volume(volume_id: int) -> Steps:
    plan = yield DbStep(_begin_detach, volume_id)
    if plan is not None:
        host, name, device = HostRef(*plan["host"]), plan["name"], plan["device"]
        try:
            yield AgentStep(host, m.DetachDisk(name=name, device=device, timeout=DETACH_WAIT),
                            DETACH_WAIT + DISK_TIMEOUT, settle=_settle_devices(name, device, False))
        except ResourceUnavailable as e:
            raise CloudRuntimeError(f"Failed to detach volume {plan['volume_name']} from VM {plan['vm_name']}: "
                                    f"{e.text}; it stays attached") from None
    yield DbStep(_detached, volume_id)


def _begin_detach(ctx: Any, volume_id: int) -> dict | None:
    volume = ctx.volumes.locked(volume_id)
    vm = ctx.volumes.check_detach(volume)
    if vm.state != RUNNING or volume.state != READY:
        return None
    host = ctx.session.get(Host, vm.host_id)
    return {"host": _host_ref(host), "name": vm.instance_name, "device": device_name(volume.device_id),
            "volume_name": volume.name, "vm_name": vm.name}


def _detached(ctx: Any, volume_id: int) -> None:
    volume = ctx.volumes.locked(volume_id)
    vm = ctx.session.get(VmInstance, volume.vm_id) if volume.vm_id else None
    volume.vm_id, volume.device_id, volume.attached = None, 0, None
    ctx.event("VOLUME.DETACH", f"Detached volume {volume.name}{f' from VM {vm.name}' if vm else ''}", volume.uuid,
              account_id=volume.account_id)


def resize_volume(volume_id: int, size_gb: int | None, offering_id: int | None, shrink_ok: bool) -> Steps:
    plan = yield DbStep(_begin_resize, volume_id, size_gb, offering_id, shrink_ok)
    if plan is None:
        return
    pool, size = codec.decode(m.PoolSpec, plan["pool"]), plan["size"]
    try:
        answer = yield AgentStep(HostRef(*plan["host"]), m.ResizeVolume(
            pool=pool, name=plan["volume"], size_bytes=size, shrink=size < plan["from"], vm=plan.get("vm"),
            device=plan.get("device")), RESIZE_TIMEOUT, settle=_settle_size(pool, plan["volume"], size))
    except ResourceUnavailable as e:
        yield DbStep(_resize_failed, volume_id)
        raise CloudRuntimeError(f"Failed to resize volume {plan['volume_name']}: {e.text}") from None
    yield DbStep(_resized, volume_id, answer.size_bytes, offering_id)


def _begin_resize(ctx: Any, volume_id: int, size_gb: int | None, offering_id: int | None,
                  shrink_ok: bool) -> dict | None:
    """Check again under lock; a volume without image just takes its new size, the others are
    Resizing until the agent has grown the image (on the host running its guest, live)."""
    volume = ctx.volumes.locked(volume_id)
    offering = ctx.session.get(DiskOffering, offering_id) if offering_id is not None else None
    size, _offering_id = ctx.volumes.check_resize(volume, size_gb, offering, shrink_ok)
    if volume.state == ALLOCATED:
        _resized(ctx, volume_id, size, offering_id)
        return None
    pool = ctx.session.get(StoragePool, volume.pool_id)
    vm = ctx.session.get(VmInstance, volume.vm_id) if volume.vm_id else None
    out = {"volume": volume.uuid, "volume_name": volume.name, "from": volume.size_bytes, "size": size,
           "pool": codec.encode(pool_spec(pool))}
    if vm is not None and vm.state == RUNNING:
        host = ctx.session.get(Host, vm.host_id)
        out.update(vm=vm.instance_name, device=device_name(volume.device_id))
    else:
        host = ctx.vms.host_for_pool(pool, vm.last_host_id if vm else None)
        if host is None:
            raise CloudRuntimeError(f"Failed to resize volume {volume.name}: no Up host can reach storage pool "
                                    f"{pool.name}; bring a host of the pool's cluster Up and retry")
    out["host"] = _host_ref(host)
    volume.state = RESIZING
    return out


def _resize_failed(ctx: Any, volume_id: int) -> None:
    volume = ctx.volumes.locked(volume_id)
    if volume.state == RESIZING:
        volume.state = READY


def _resized(ctx: Any, volume_id: int, size: int, offering_id: int | None) -> None:
    volume = ctx.volumes.locked(volume_id)
    before = volume.size_bytes
    if volume.state == RESIZING:
        volume.state = READY
    volume.size_bytes = size
    if offering_id is not None:
        volume.disk_offering_id = offering_id
    if volume.disk is not None:
        disk = codec.decode(m.DiskSpec, volume.disk)
        disk.size_bytes = size
        volume.disk = codec.encode_as(disk, m.DiskSpec)
    ctx.limits.change(ctx.session.get(Account, volume.account_id), {PRIMARY_STORAGE: size - before})
    ctx.event("VOLUME.RESIZE", f"Resized volume {volume.name} from {size_text(before)} to {size_text(size)}",
              volume.uuid, account_id=volume.account_id)


def delete_volume(volume_id: int) -> Steps:
    plan = yield DbStep(_begin_delete, volume_id)
    if plan is not None:
        try:
            yield AgentStep(HostRef(*plan["host"]), m.DeleteVolume(pool=codec.decode(m.PoolSpec, plan["pool"]),
                                                                   name=plan["volume"]), DELETE_TIMEOUT)
        except ResourceUnavailable as e:
            yield DbStep(_delete_failed, volume_id)
            raise CloudRuntimeError(f"Failed to delete volume {plan['volume_name']} from storage pool "
                                    f"{plan['pool_name']}: {e.text}") from None
    yield DbStep(_deleted, volume_id)


def _begin_delete(ctx: Any, volume_id: int) -> dict | None:
    volume = ctx.volumes.locked(volume_id)
    ctx.volumes.check_delete(volume)
    if volume.state == ALLOCATED or volume.pool_id is None:
        return None
    pool = ctx.session.get(StoragePool, volume.pool_id)
    host = ctx.vms.host_for_pool(pool, None)
    if host is None:
        raise CloudRuntimeError(f"Failed to delete volume {volume.name}: no Up host can reach storage pool "
                                f"{pool.name}; bring a host of the pool's cluster Up and retry")
    volume.state = EXPUNGING
    return {"host": _host_ref(host), "pool": codec.encode(pool_spec(pool)), "pool_name": pool.name,
            "volume": volume.uuid, "volume_name": volume.name}


def _delete_failed(ctx: Any, volume_id: int) -> None:
    volume = ctx.volumes.locked(volume_id)
    if volume.state == EXPUNGING:
        volume.state = READY


def _deleted(ctx: Any, volume_id: int) -> None:
    volume = ctx.volumes.locked(volume_id)
    volume.state, volume.removed = EXPUNGED, utcnow()
    ctx.limits.change(ctx.session.get(Account, volume.account_id), {VOLUME: -1, PRIMARY_STORAGE: -volume.size_bytes})
    ctx.event("VOLUME.DELETE", f"Deleted volume {volume.name}", volume.uuid, account_id=volume.account_id)
