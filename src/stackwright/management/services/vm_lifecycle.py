"""The VM life cycle as jobs of recorded steps: start (and deploy), stop, reboot, destroy, expunge.

Each sequence is a generator of steps (services/steps.py): database steps move the VM
through CloudStack's states (cloudstack-api.md §8) one transaction at a time, agent steps
ask the host's agent to create the root volume, boot, stop or reboot the guest, or delete
the volume, and never run inside a transaction. The executor records every outcome, so a
job interrupted by a restart goes on from its last recorded step; a StartVm or StopVm
whose answer was not recorded is settled by asking the host for the guest's state first.

A guest is never started on a second host while it may still run on the first: when a
start's outcome on a host is unknown (no answer, or the agent went away after the request
may have arrived), the job waits until the host's agent is back and stops the guest, or
the heartbeat monitor marks the host Down; otherwise it gives up and leaves the VM Stopped.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import lazyload, object_session

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from ..errors import (
    ApiError,
    CloudRuntimeError,
    InsufficientCapacity,
    ResourceUnavailable,
)
from ..persistence.models import Account, Cluster, Host, ServiceOffering, StoragePool, Template, Volume, Zone, utcnow
from .capacity import MEMORY_RATIO, started_ratios
from .console import opened, seal, vnc_password_for
from .gateway import CONNECT_WAIT, AgentAbsent, HostRef
from .placement import Demand, Planner
from .queries import by_uuid
from .resource_limits import CPU, MEMORY, PRIMARY_STORAGE, USER_VM, VOLUME
from .steps import AgentStep, DbStep, Settle, Steps, WaitStep, settle_guest
from .template_jobs import COPY_TIMEOUT, await_copy, copy_after_expunge, copy_failed, copy_ready, drop_copy, plan_copy
from .vms import (
    ALLOCATED,
    CREATING,
    DATADISK,
    DESTROY,
    DESTROYED,
    ERROR,
    EXPUNGED,
    EXPUNGING,
    IN_TRANSITION,
    MIGRATING,
    READY,
    ROOT,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    disk_of,
    pool_spec,
    vm_label,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

START_ATTEMPTS = 3          # hosts tried before a start gives up
VERDICT_POLL = 5.0          # seconds between two looks at a host a guest may still run on
CLEANUP_TIMEOUT = 30.0
TIMEOUTS = {
    m.CopyTemplate: COPY_TIMEOUT, m.CreateVolume: 300.0, m.StartVm: 300.0, m.StopVm: 180.0, m.RebootVm: 180.0, m.DeleteVolume: 120.0,
}


def _host(plan: dict) -> HostRef:
    return HostRef(plan["guid"] or "", plan["host"])


# --- deploy and start ----------------------------------------------------------------------


def deploy(vm_id: int, *, start: bool = True, host_id: int | None = None, pod_id: int | None = None,
           cluster_id: int | None = None) -> Steps:
    """The job part of deployVirtualMachine: start the VM, or leave it Stopped."""
    if not start:
        return
    try:
        yield from start_vm(vm_id, host_id=host_id, pod_id=pod_id, cluster_id=cluster_id,
                            consider_last_host=False, deploying=True)
    except InsufficientCapacity:
        # CloudStack leaves a VM it could not deploy in Error; destroying it cleans up.
        yield DbStep(_deploy_failed, vm_id)
        raise


def start_vm(vm_id: int, *, host_id: int | None = None, pod_id: int | None = None, cluster_id: int | None = None,
             consider_last_host: bool = True, deploying: bool = False, ha: bool = False) -> Steps:
    """Start a Stopped VM on a host the planner chooses (`ha`: an HA restart, which may use
    and prefers the hosts of `ha.tag`)."""
    avoid_hosts: list[int] = []
    avoid_pools: list[int] = []
    failures: list[str] = []
    for _attempt in range(START_ATTEMPTS):
        plan = yield DbStep(_reserve_start, vm_id, dict(
            host_id=host_id, pod_id=pod_id, cluster_id=cluster_id, consider_last_host=consider_last_host,
            deploying=deploying, avoid_hosts=avoid_hosts, avoid_pools=avoid_pools, failures=failures, ha=ha))
        if plan is None:
            return
        host = _host(plan)
        try:
            spec, failed = plan.get("spec"), None
            for create in plan["creates"]:
                spec, failed = yield from _create_volume(host, vm_id, plan, create)
                if failed is not None:
                    break
            if failed is not None:
                yield DbStep(_volume_failed, vm_id, plan, create, failed)
                failures.append(f"{host.name}: creating the {create['kind']} volume on storage pool "
                                f"{create['pool_name']} failed: {failed}")
                avoid_hosts.append(plan["host_id"])
                avoid_pools.append(create["pool_id"])
                continue
            reason = yield from _boot(vm_id, plan, host, codec.decode(m.VmSpec, spec))
        except ApiError:
            raise
        except Exception:
            yield DbStep(_unstick, vm_id, STOPPED, True)
            raise
        if reason is None:
            return
        failures.append(f"{host.name}: {reason}")
        avoid_hosts.append(plan["host_id"])
    raise InsufficientCapacity(f"Unable to create a deployment for {plan['label']}: {'; '.join(failures)}",
                               cserrorcode=4335)


def _create_volume(host: HostRef, vm_id: int, plan: dict, create: dict) -> Steps:
    """Have `host` create one planned volume on its pool (a root volume from a template as an
    overlay on the template's copy there, made first when missing) and record it Ready. Returns
    (the guest's VmSpec once the last planned volume is created, else None; None, or why it
    could not be created)."""
    pool = codec.decode(m.PoolSpec, create["pool"])
    if create["recreate"]:
        # An interrupted creation may have left an image behind; it never held data.
        try:
            yield AgentStep(host, m.DeleteVolume(pool=pool, name=create["volume"]), CLEANUP_TIMEOUT)
        except ResourceUnavailable:
            pass
    copy = create.get("copy")
    if copy is not None and not copy["ready"]:
        reason = yield from _template_on_pool(host, pool, create, copy)
        if reason is not None:
            return None, reason
    try:
        answer = yield AgentStep(host, m.CreateVolume(
            pool=pool, name=create["volume"], size_bytes=create["size"], format=create["format"],
            backing=copy["name"] if copy is not None else None),
            TIMEOUTS[m.CreateVolume], settle=discard_volume(pool, create["volume"]))
    except ResourceUnavailable as e:
        return None, e.text
    spec = yield DbStep(_volume_created, vm_id, plan, create, answer.disk)
    return spec, None


def _template_on_pool(host: HostRef, pool: m.PoolSpec, create: dict, copy: dict) -> Steps:
    """Make sure the template's copy is on the pool before the root volume is made on it: copy it
    (the first volume of the template there) or wait for the job copying it. None when it is
    there, else why not."""
    if copy["copy"]:
        try:
            answer = yield AgentStep(host, m.CopyTemplate(
                pool=pool, template=codec.decode(m.TemplateLocation, copy["location"]), name=copy["name"]),
                TIMEOUTS[m.CopyTemplate], settle=discard_volume(pool, copy["name"]))
        except ResourceUnavailable as e:
            yield DbStep(copy_failed, copy["ref"])
            return (f"copying template {copy['template']} from image store {copy['store']} to storage pool "
                    f"{create['pool_name']} failed: {e.text}")
        yield DbStep(copy_ready, copy["ref"], answer.disk.size_bytes)
        return None
    if (yield WaitStep(await_copy, copy["ref"])):
        return None
    return (f"template {copy['template']} was being copied to storage pool {create['pool_name']} by another job, "
            f"which did not finish")


def _boot(vm_id: int, plan: dict, host: HostRef, spec: m.VmSpec) -> Steps:
    """Boot the guest on the planned host: None when it runs, else why not (the VM is Stopped again)."""
    name = plan["name"]
    try:
        answer = yield AgentStep(host, m.StartVm(spec=opened(spec)), TIMEOUTS[m.StartVm],
                                 settle=settle_guest(name, m.VmState.RUNNING))
        if answer.state != m.VmState.RUNNING:
            raise ResourceUnavailable(f"host {host.name} reports the guest {answer.state} after starting it")
    except ResourceUnavailable as e:
        # Whatever the agent got done is undone; a start that timed out may still have booted it.
        try:
            yield AgentStep(host, m.StopVm(name=name, force=True), CLEANUP_TIMEOUT)
            undone = True
        except ResourceUnavailable:
            undone = False
        maybe_running = plan["resumed"] or not isinstance(e, AgentAbsent)
        if not undone and maybe_running:
            stopped = yield WaitStep(_await_stopped, name, plan["host_id"], host)
            if not stopped:
                # Started anywhere else it could run twice, on two hosts, from the same disk.
                text = (f"Unable to start VM {name}: host {host.name} did not answer ({e.text}) and may be running "
                        f"the guest; it is not started on another host until the host's agent reconnects or the host "
                        f"is Down; start it again then")
                yield DbStep(_start_abandoned, vm_id, plan["host_id"], text)
                raise CloudRuntimeError(text) from None
        yield DbStep(_start_failed, vm_id, host.name, e.text)
        return f"starting the guest failed: {e.text}"
    yield DbStep(_started, vm_id, plan)
    return None


def _reserve_start(ctx: Any, vm_id: int, want: dict) -> dict | None:
    """Check the VM can start, plan a host and pool, and mark it Starting there (its root volume
    Creating when it has none yet). None when there is nothing to start."""
    vms, session = ctx.vms, ctx.session
    vm = vms.locked(vm_id)
    if vm.state == RUNNING:
        return None
    if want["deploying"] and vm.state in (ERROR, DESTROYED, EXPUNGING):
        return None
    if vm.state not in (STOPPED, STARTING):
        raise CloudRuntimeError(
            f"Unable to start VM {vm.instance_name}: it is {vm.state}; only a Stopped VM can be started")
    zone = session.get(Zone, vm.zone_id)
    volumes = vms.volumes(vm)
    volume = next(v for v in volumes if v.volume_type == ROOT)
    # The root volume first, then the data volumes: the order of Demand.volumes and the plan's pools.
    ordered = [volume, *(v for v in volumes if v.volume_type == DATADISK)]
    label = vm_label(vm)
    resumed = vm.state == STARTING and vm.host_id is not None
    if resumed:
        # Another run of a start left it Starting there: it may run there already.
        target = session.get(Host, vm.host_id)
        pools = [session.get(StoragePool, v.pool_id) if v.pool_id else None for v in ordered]
    else:
        placed = session.get(StoragePool, volume.pool_id) if volume.state == READY else None
        storage_tags, data_volumes = vms.volume_demands(vm, ordered)
        demand = Demand(vm.cpu_number, vm.cpu_speed, vm.memory_mb, vm.hypervisor, vms.offering_tags(vm),
                        volume_bytes=volume.size_bytes, pool=placed, storage_tags=storage_tags,
                        data_volumes=data_volumes)
        plan = Planner(ctx).plan(
            label, zone, demand,
            host=session.get(Host, want["host_id"]) if want["host_id"] else None,
            pod=vms.pod(want["pod_id"]), cluster=vms.cluster(want["cluster_id"]),
            last_host_id=vm.last_host_id if want["consider_last_host"] else None,
            avoid_hosts=set(want["avoid_hosts"]), avoid_pools=set(want["avoid_pools"]), failures=want["failures"],
            ha=want.get("ha", False))
        target, pools = plan.host, [plan.pool, *plan.data_pools]
    if any(pool is None for pool in pools):
        raise CloudRuntimeError(f"Unable to start {label}: a volume of it has no storage pool")
    out = {
        "label": label, "name": vm.instance_name, "host_id": target.id, "host": target.name, "guid": target.guid,
        "creates": [], "resumed": resumed, "bridge": vms.guest_bridge(zone),
    }
    for each, pool in zip(ordered, pools, strict=True):
        if each.state in (ALLOCATED, CREATING):
            copy = None
            if each.volume_type == ROOT:
                # A root volume from a downloaded template is an overlay on its copy on the pool.
                copy = plan_copy(ctx, session.get(Template, vm.template_id), zone, pool)
                if copy is not None:
                    each.template_id, each.format = vm.template_id, "qcow2"
            out["creates"].append({
                "volume": each.uuid, "kind": "root" if each.volume_type == ROOT else "data", "size": each.size_bytes,
                "format": each.format, "recreate": each.state == CREATING, "pool_id": pool.id,
                "pool_name": pool.name, "pool": codec.encode(pool_spec(pool)), "copy": copy})
            each.pool_id, each.state = pool.id, CREATING
    vm.state, vm.host_id, vm.state_changed = STARTING, target.id, utcnow()
    if not resumed:
        # The ratios it starts with are its own until it is started again.
        ratios = ctx.capacity.ratios(session.get(Cluster, target.cluster_id))
        vm.details = {**(vm.details or {}), **started_ratios(ratios)}
    if not out["creates"]:
        out["spec"] = codec.encode_as(_guest_spec(vm, ordered, target, out["bridge"]), m.VmSpec)
    return out


def _guest_spec(vm: Any, volumes: list[Volume], host: Host, bridge: str) -> m.VmSpec:
    """The guest as `host` runs it: its volumes as virtio disks (root vda, data vdb...), its
    offering's memory as maximum, memory ÷ the memory ratio it was started with as what the
    host reserves, and with the offering's limitcpuuse each vCPU capped at the offering's MHz."""
    bridges = set(filter(None, (host.details or {}).get("bridges", "").split(",")))
    nics = [m.NicSpec(mac=vm.mac_address, bridge=bridge)] if bridge in bridges else []
    memory_ratio = float((vm.details or {}).get(MEMORY_RATIO) or 1.0)
    min_memory = int(vm.memory_mb / memory_ratio) if memory_ratio > 1.0 else None
    offering = object_session(vm).get(ServiceOffering, vm.service_offering_id)
    cpu_cap = (min(1.0, vm.cpu_speed / host.cpu_speed)
               if offering is not None and offering.limit_cpu_use and host.cpu_speed else None)
    return m.VmSpec(name=vm.instance_name, uuid=vm.uuid, vcpus=vm.cpu_number, cpu_mhz=vm.cpu_speed,
                    memory_mb=vm.memory_mb, disks=[disk_of(v) for v in volumes], nics=nics,
                    vnc_listen=host.ip_address or "127.0.0.1", vnc_password=seal(vnc_password_for(vm)),
                    min_memory_mb=min_memory, cpu_cap=cpu_cap)


def discard_volume(pool: m.PoolSpec, name: str) -> Settle:
    """Settle a CreateVolume that may have run: drop what it left (the volume never held data),
    then create it again."""
    def settle(ask: Callable[[m.Request], m.Answer]) -> m.Answer | None:
        try:
            ask(m.DeleteVolume(pool=pool, name=name))
        except AgentAbsent:
            raise
        except ResourceUnavailable:
            pass
        return None

    return settle


def _volume_failed(ctx: Any, vm_id: int, plan: dict, create: dict, reason: str) -> None:
    """A volume could not be created: the VM is Stopped again and every volume still being
    created goes back to Allocated, to be placed anew (those created stay where they are)."""
    vm = ctx.vms.locked(vm_id)
    vm.state, vm.host_id = STOPPED, None
    for volume in ctx.vms.volumes(vm):
        if volume.state == CREATING:
            volume.pool_id, volume.state, volume.template_id = None, ALLOCATED, None
    log.warning("could not create the %s volume of %s on pool %s from host %s: %s",
                create["kind"], vm.instance_name, create["pool_name"], plan["host"], reason)


def _volume_created(ctx: Any, vm_id: int, plan: dict, create: dict, disk: m.DiskSpec) -> dict | None:
    """Record a created volume Ready; after the last planned one, the guest's VmSpec."""
    volume = by_uuid(ctx.session, Volume, create["volume"])
    volume.state, volume.disk = READY, codec.encode_as(disk, m.DiskSpec)
    ctx.event("VOLUME.CREATE", f"Created {create['kind']} volume {volume.name} on storage pool "
                               f"{create['pool_name']}", volume.uuid)
    if create["volume"] != plan["creates"][-1]["volume"]:
        return None
    vm = ctx.vms.locked(vm_id)
    return codec.encode_as(_guest_spec(vm, ctx.vms.volumes(vm), _planned_host(ctx, plan),
                                       plan["bridge"]), m.VmSpec)


def _planned_host(ctx: Any, plan: dict) -> Host:
    """The Host row of the plan, without its cluster, pod and zone (a step records the guest's
    progress on it; it reads the host's own columns only)."""
    return ctx.session.get(Host, plan["host_id"], options=[lazyload(Host.cluster)])


def _start_failed(ctx: Any, vm_id: int, host_name: str, reason: str) -> None:
    vm = ctx.vms.locked(vm_id)
    vm.state, vm.host_id, vm.state_changed = STOPPED, None, utcnow()
    log.warning("could not start %s on host %s: %s", vm.instance_name, host_name, reason)


def _start_abandoned(ctx: Any, vm_id: int, host_id: int, text: str) -> None:
    vm = ctx.vms.locked(vm_id)
    vm.state, vm.host_id, vm.last_host_id, vm.state_changed = STOPPED, None, host_id, utcnow()
    ctx.event("VM.START", text, vm.uuid, level="ERROR")


def _started(ctx: Any, vm_id: int, plan: dict) -> None:
    vm = ctx.vms.locked(vm_id)
    host = _planned_host(ctx, plan)
    vm.state, vm.host_id, vm.last_host_id, vm.state_changed = RUNNING, host.id, host.id, utcnow()
    bridges = set(filter(None, (host.details or {}).get("bridges", "").split(",")))
    if plan["bridge"] not in bridges:
        ctx.event("VM.START", f"VM {vm.instance_name} started on host {host.name} without a NIC: the host does not "
                              f"report bridge {plan['bridge']} (the zone's Guest traffic KVM label); create the bridge "
                              f"on the host or change the label", vm.uuid, level="WARN")
    ctx.event("VM.START", f"Started VM {vm.instance_name} on host {host.name}", vm.uuid)
    log.info("started %s (%s) on host %s", vm.instance_name, vm.uuid, host.name)
    ctx.alerts.capacity_changed(host.cluster_id)


def _deploy_failed(ctx: Any, vm_id: int) -> None:
    vm = ctx.vms.locked(vm_id)
    if vm.state == STOPPED:
        vm.state, vm.state_changed = ERROR, utcnow()
        ctx.event("VM.CREATE", f"Failed to deploy VM {vm.instance_name}", vm.uuid, level="ERROR")


def _await_stopped(waiter: Any, name: str, host_id: int, host: HostRef) -> bool:
    """After a start whose outcome on a host is unknown: True once the guest is known not to run
    there (the host's agent is back and stopped it, or the host is Down or gone), False when
    neither happened in the time the engine takes to judge a silent host."""
    log.warning("%s may be running on host %s, whose agent does not answer; waiting for the agent or for "
                "the host to be Down before starting it elsewhere", name, host.name)
    agents = waiter.agents
    # Without an agent channel there is no heartbeat monitor, and no verdict to wait for.
    verdict_time = agents.down_within + CONNECT_WAIT if agents.down_within > 0 else 0.0
    deadline = time.monotonic() + verdict_time
    stop = m.StopVm(name=name, force=True)
    while True:
        with waiter.read() as ctx:
            state, removed = ctx.hosts.presence(host_id)
        if removed or state == "Down":
            log.warning("host %s is %s: %s may be started elsewhere", host.name,
                        "removed" if removed else state, name)
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if agents.connected(host.guid, min(VERDICT_POLL, remaining)):
            try:
                agents.call(host, stop, CLEANUP_TIMEOUT)
                return True
            except ResourceUnavailable as e:
                log.info("clean-up StopVm on %s did not succeed: %s", host.name, e.text)
            waiter.sleep(min(VERDICT_POLL, max(0.0, deadline - time.monotonic())))


# --- stop, reboot --------------------------------------------------------------------------


def stop_vm(vm_id: int, *, forced: bool = False) -> Steps:
    target = yield DbStep(_begin_stop, vm_id)
    if target is None:
        return
    try:
        unconfirmed = None
        if target["host"] is not None:
            host, name = HostRef(*target["host"]), target["name"]
            try:
                yield AgentStep(host, m.StopVm(name=name, force=forced), TIMEOUTS[m.StopVm],
                                settle=settle_guest(name, m.VmState.STOPPED))
            except ResourceUnavailable as e:
                if not forced:
                    yield DbStep(_unstick, vm_id, RUNNING, False)
                    raise CloudRuntimeError(
                        f"Failed to stop VM instance {name}: {e.text}; retry, or pass forced=true to mark it Stopped "
                        f"without the host's confirmation") from None
                unconfirmed = (host.name, e.text)
        yield DbStep(_stopped, vm_id, forced, unconfirmed)
    except ApiError:
        raise
    except Exception:
        yield DbStep(_unstick, vm_id, RUNNING, False)
        raise


def _begin_stop(ctx: Any, vm_id: int) -> dict | None:
    vm = ctx.vms.locked(vm_id)
    if vm.state == STOPPED:
        return None
    if vm.state not in (RUNNING, STOPPING):
        raise CloudRuntimeError(
            f"Unable to stop VM {vm.instance_name}: it is {vm.state}; only a Running VM can be stopped")
    host = ctx.session.get(Host, vm.host_id) if vm.host_id else None
    vm.state, vm.state_changed = STOPPING, utcnow()
    return {"name": vm.instance_name, "host": [host.guid or "", host.name] if host is not None else None}


def _stopped(ctx: Any, vm_id: int, forced: bool, unconfirmed: tuple[str, str] | None) -> None:
    vm = ctx.vms.locked(vm_id)
    if unconfirmed is not None:
        host_name, reason = unconfirmed
        ctx.event("VM.STOP", f"Marked VM {vm.instance_name} Stopped without confirmation from host {host_name}: "
                             f"{reason}", vm.uuid, level="WARN")
    vm.state, vm.state_changed = STOPPED, utcnow()
    vm.last_host_id = vm.host_id or vm.last_host_id
    vm.host_id = None
    ctx.event("VM.STOP", f"Stopped VM {vm.instance_name}", vm.uuid)
    log.info("stopped %s (%s)%s", vm.instance_name, vm.uuid, " (forced)" if forced else "")


def reboot_vm(vm_id: int) -> Steps:
    target = yield DbStep(_begin_reboot, vm_id)
    host, name = HostRef(*target["host"]), target["name"]
    try:
        yield AgentStep(host, m.RebootVm(name=name), TIMEOUTS[m.RebootVm])
    except ResourceUnavailable as e:
        raise CloudRuntimeError(f"Failed to reboot vm instance {name}: {e.text}") from None
    yield DbStep(_rebooted, vm_id, host.name)


def _begin_reboot(ctx: Any, vm_id: int) -> dict:
    vm = ctx.vms.locked(vm_id)
    if vm.state != RUNNING or vm.host_id is None:
        raise CloudRuntimeError(
            f"Failed to reboot vm instance: VM {vm.instance_name} is {vm.state}; only a Running VM can be rebooted "
            f"(start it instead)")
    host = ctx.session.get(Host, vm.host_id)
    return {"name": vm.instance_name, "host": [host.guid or "", host.name]}


def _rebooted(ctx: Any, vm_id: int, host_name: str) -> None:
    vm = ctx.vms.locked(vm_id)
    ctx.event("VM.REBOOT", f"Rebooted VM {vm.instance_name} on host {host_name}", vm.uuid)


# --- destroy, expunge ------------------------------------------------------------------


def destroy_vm(vm_id: int, *, expunge: bool = False) -> Steps:
    state = yield DbStep(_begin_destroy, vm_id)
    if state in (RUNNING, STOPPING):
        yield from stop_vm(vm_id)
        yield DbStep(_destroyed, vm_id)
    if expunge:
        yield from expunge_vm(vm_id)


def _begin_destroy(ctx: Any, vm_id: int) -> str:
    vm = ctx.vms.locked(vm_id)
    if vm.state in (STARTING, MIGRATING):
        raise CloudRuntimeError(f"Unable to destroy VM {vm.instance_name} while it is {vm.state}; wait for its job "
                                f"to finish")
    if vm.state not in (RUNNING, STOPPING):
        _destroyed(ctx, vm_id)
    return vm.state


def _destroyed(ctx: Any, vm_id: int) -> None:
    vm = ctx.vms.locked(vm_id)
    if vm.state in (DESTROYED, EXPUNGING):
        return
    vm.state, vm.state_changed = DESTROYED, utcnow()
    for volume in ctx.vms.volumes(vm):
        # Data volumes stay as they are: the expunge detaches them, as CloudStack does.
        if volume.state != ALLOCATED and volume.volume_type == ROOT:
            volume.state = DESTROY
    # A destroyed guest no longer counts; its volumes count until it is expunged.
    ctx.limits.change(ctx.session.get(Account, vm.account_id), {USER_VM: -1, CPU: -vm.cpu_number, MEMORY: -vm.memory_mb})
    ctx.event("VM.DESTROY", f"Destroyed VM {vm.instance_name}", vm.uuid)


def expunge_vm(vm_id: int) -> Steps:
    """Delete the VM's root volume from its pool, detach its data volumes (they stay, as in
    CloudStack), then the VM. The VM stays Destroyed when that fails."""
    target = yield DbStep(_begin_expunge, vm_id)
    try:
        for delete in target["deletes"]:
            host, pool = HostRef(*delete["host"]), codec.decode(m.PoolSpec, delete["pool"])
            try:
                yield AgentStep(host, m.DeleteVolume(pool=pool, name=delete["volume"]), TIMEOUTS[m.DeleteVolume])
            except ResourceUnavailable as e:
                yield DbStep(_unstick, vm_id, DESTROYED, False)
                raise CloudRuntimeError(f"Failed to expunge VM {target['name']}: could not delete its "
                                        f"{delete['kind']} volume from storage pool {delete['pool_name']}: "
                                        f"{e.text}") from None
        unused = yield DbStep(_expunged, vm_id)
        for copy in unused:
            yield from drop_copy(copy)
    except ApiError:
        raise
    except Exception:
        yield DbStep(_unstick, vm_id, DESTROYED, False)
        raise


def _begin_expunge(ctx: Any, vm_id: int) -> dict:
    vm = ctx.vms.locked(vm_id)
    deletes = []
    for volume in ctx.vms.volumes(vm):
        if volume.pool_id is None or volume.volume_type == DATADISK:
            continue
        pool = ctx.session.get(StoragePool, volume.pool_id)
        host = ctx.vms.host_for_pool(pool, vm.last_host_id)
        if host is None:
            raise CloudRuntimeError(
                f"Failed to expunge VM {vm.instance_name}: no Up host can reach storage pool {pool.name} to delete its "
                f"volume {volume.name}; bring a host of the pool's cluster Up and retry")
        deletes.append({"host": [host.guid, host.name], "pool": codec.encode(pool_spec(pool)),
                        "pool_name": pool.name, "volume": volume.uuid,
                        "kind": "root"})
    vm.state = EXPUNGING
    return {"name": vm.instance_name, "deletes": deletes}


def _expunged(ctx: Any, vm_id: int) -> list[dict]:
    """The VM and its volumes are gone; returns the template copies on their pools of which they
    were the last users, when the template is deleted."""
    vm = ctx.vms.locked(vm_id)
    now = utcnow()
    unused = []
    for volume in ctx.vms.volumes(vm):
        if volume.volume_type == DATADISK:
            volume.vm_id, volume.device_id, volume.attached = None, 0, None
            ctx.event("VOLUME.DETACH", f"Detached volume {volume.name} from expunged VM {vm.name}", volume.uuid,
                      account_id=volume.account_id)
            continue
        volume.state, volume.removed = EXPUNGED, now
        ctx.limits.change(ctx.session.get(Account, vm.account_id), {VOLUME: -1, PRIMARY_STORAGE: -volume.size_bytes})
        ctx.event("VOLUME.DELETE", f"Deleted volume {volume.name} of {vm.instance_name}", volume.uuid)
        if volume.template_id is not None:
            ctx.session.flush()
            copy = copy_after_expunge(ctx, volume.template_id, volume.pool_id)
            if copy is not None:
                unused.append(copy)
    vm.state, vm.removed, vm.host_id = EXPUNGING, now, None
    ctx.event("VM.EXPUNGE", f"Expunged VM {vm.instance_name}", vm.uuid)
    log.info("expunged %s (%s)", vm.instance_name, vm.uuid)
    return unused


# --- shared ------------------------------------------------------------------------------


def _unstick(ctx: Any, vm_id: int, state: str, clear_host: bool) -> None:
    """Put the VM back in `state` when a step left it in a transitional state and the job cannot
    go on (an unexpected failure, or a refusal the job reports)."""
    vm = ctx.vms.locked(vm_id)
    if vm.state in IN_TRANSITION:
        vm.state, vm.state_changed = state, utcnow()
        if clear_host:
            vm.host_id = None
