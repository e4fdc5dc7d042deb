"""High availability: a host declared Dead is fenced and its HA guests restarted elsewhere in
its cluster; a guest that crashed is restarted; a host that returns stops its stale copies.

When the heartbeat monitor gives up on a host (Down), `host_down` raises an alert and gives
the engine an investigation job (`INVESTIGATE`). Its verdict (`investigate`):

- **Dead**: the host is fenced in one transaction: every guest it held is Stopped there and
  its capacity released; each HA guest (`offerha`) that was Running gets a restart job.
- **Alive**: something still shows the host working (a Simulator host kept alive while its
  link is cut, `simulator.ha.keep.alive`): nothing is restarted, the host is Alert again.
- **Unknown**: nobody could look (a KVM host: its heartbeat is not read yet): nothing is
  restarted; an alert says why.

A restart (`RESTART`) is the start sequence of vm_lifecycle with `ha=True` (the planner may
use, and prefers, hosts tagged `ha.tag`), tried `max.retries` more times `restart.retry.interval`
seconds apart. A guest restarted less than `time.between.failures` seconds ago is not restarted
again. Both are system jobs: recorded step by step, so an engine restart goes on with them
and never starts a guest twice. docs/ha.md is the contract.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from stackwright.protocol import messages as m

from ..errors import ApiError, ResourceUnavailable
from ..persistence.models import Account, AsyncJob, Cluster, Host, User, VmInstance, Volume, utcnow
from . import alerts
from .accounts import ROOT_ADMIN
from .gateway import HostRef
from .steps import AgentStep, DbStep, WaitStep
from .vm_lifecycle import start_vm
from .vms import HOLDING_CAPACITY, RUNNING, STOPPED, pool_spec

if TYPE_CHECKING:
    from ..context import Context
    from .steps import Steps

log = logging.getLogger(__name__)

INVESTIGATE, RESTART, STOP_STRAY = "HaInvestigateHost", "HaRestartVm", "HaStopStaleGuest"
# HA work runs on `ha.workers` threads of its own (JobExecutor.lane): at most that many items at
# once, and a restart waiting restart.retry.interval never holds a worker of API jobs.
JOBS = (INVESTIGATE, RESTART, STOP_STRAY)
ALIVE, DEAD, UNKNOWN = "Alive", "Dead", "Unknown"
STRAY_STOP_TIMEOUT = 60.0
CHECK_TIMEOUT = 60.0        # seconds a CheckHeartbeat may take beyond its activity window


def submit(ctx: Context, kind: str, params: dict, instance_type: str, instance_uuid: str) -> AsyncJob | None:
    """A system job of the engine's own, owned by the first root admin, run once this
    transaction commits (None, logged, in a database without an administrator: the change that
    asked for it still commits)."""
    owner = ctx.session.execute(
        select(User).join(Account, Account.id == User.account_id)
        .where(Account.account_type == ROOT_ADMIN, User.removed.is_(None)).order_by(User.id).limit(1)
    ).scalar_one_or_none()
    if owner is None:
        log.error("no root admin to own the %s job of %s %s; run stackwright-setup-databases", kind,
                  instance_type, instance_uuid)
        return None
    job = AsyncJob(command=kind, cmd_class=f"com.cloud.ha.{kind}", params=params, user_id=owner.id,
                   account_id=owner.account_id, instance_type=instance_type, instance_uuid=instance_uuid)
    ctx.session.add(job)
    ctx.session.flush()
    job_uuid, jobs = job.uuid, ctx.engine.jobs
    ctx.after_commit(lambda: jobs.submit(job_uuid, kind))
    return job


class HaService:
    """What the host and VM services tell HA, in their transaction (`ctx.ha`)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def host_down(self, host: Host) -> None:
        host_down(self.ctx, host)

    def guest_crashed(self, vm: VmInstance, host: Host) -> None:
        guest_crashed(self.ctx, vm, host)

    def stale_copy(self, vm: VmInstance, host: Host) -> None:
        stale_copy(self.ctx, vm, host)


# --- a host goes Down ------------------------------------------------------------------------


def host_down(ctx: Context, host: Host) -> None:
    """`host` just went Down (its agent silent past ping.timeout): alert, and investigate; unless
    an investigation watches it already (it found the host Alive, made it Alert, and the
    heartbeat monitor calls it Down again: that investigation looks again by itself)."""
    if ctx.session.execute(select(AsyncJob.id).where(
            AsyncJob.command == INVESTIGATE, AsyncJob.status == 0, AsyncJob.instance_uuid == host.uuid)).first():
        return
    cluster = ctx.session.get(Cluster, host.cluster_id)
    ctx.alerts.raise_alert(
        alerts.HOST, f"Host is down, name: {host.name} ({host.uuid}), availability zone: {cluster.zone.name}, "
                     f"pod: {cluster.pod.name}; investigating before its guests are restarted",
        zone_id=host.zone_id, pod_id=host.pod_id, cluster_id=host.cluster_id, resource_uuid=host.uuid)
    if ctx.session.execute(select(VmInstance.id).where(
            VmInstance.host_id == host.id, VmInstance.removed.is_(None),
            VmInstance.state.in_(HOLDING_CAPACITY)).limit(1)).first() is None:
        return
    submit(ctx, INVESTIGATE, {"host_id": host.id}, "Host", host.uuid)


def investigate_job(ctx: Context, host_id: int) -> Steps:
    """Investigate until the host is Dead (fenced) or back Up: a host found Alive or Unknown is
    looked at again every `investigate.retry.interval` seconds while it stays silent."""
    previous = None
    while True:
        verdict = yield WaitStep(investigate, host_id)
        result = yield DbStep(_apply_verdict, host_id, verdict, previous)
        if not result.pop("watch", False):
            return result
        previous = result["verdict"]
        yield WaitStep(_pause, result.pop("interval"))


def investigate(waiter: Any, host_id: int) -> str:
    """The verdict on a silent host: Alive, Dead or Unknown."""
    with waiter.read() as ctx:
        host = ctx.session.get(Host, host_id)
        if host is None or host.removed is not None:
            return DEAD
        if host.state == "Up":
            return ALIVE            # it came back
        if host.hypervisor == "Simulator":
            cluster = ctx.session.get(Cluster, host.cluster_id)
            keep = ctx.settings.scoped_value("simulator.ha.keep.alive", "cluster", cluster)
            return ALIVE if str(keep).lower() == "true" else DEAD
        evidence = _evidence(ctx, host)
    return _weigh(waiter, *evidence)


def _evidence(ctx: Context, host: Host) -> tuple:
    """What a KVM investigation asks, and whom: (the silent host's guid and name, [(pool spec,
    volume names of its guests there)], [HostRef of the other Up hosts of its cluster],
    heartbeat timeout, activity window)."""
    pools = [p for p in ctx.storage.pools_for_host(host)
             if p.state == "Up" and p.url.lower().startswith("nfs://")]
    volumes: dict[int, list[str]] = {p.id: [] for p in pools}
    for pool_id, volume_uuid in ctx.session.execute(
            select(Volume.pool_id, Volume.uuid).join(VmInstance, VmInstance.id == Volume.vm_id).where(
                VmInstance.host_id == host.id, VmInstance.removed.is_(None), Volume.removed.is_(None),
                VmInstance.state.in_(HOLDING_CAPACITY))):
        if pool_id in volumes:
            volumes[pool_id].append(volume_uuid)
    checkers = [HostRef(h.guid, h.name) for h in ctx.session.execute(select(Host).where(
        Host.cluster_id == host.cluster_id, Host.id != host.id, Host.removed.is_(None), Host.state == "Up",
        Host.guid.is_not(None)).order_by(Host.id)).scalars()]
    settings = ctx.settings
    return ((host.guid or "", host.name), [(pool_spec(p), volumes[p.id]) for p in pools], checkers,
            float(settings.typed("kvm.ha.heartbeat.timeout")), float(settings.typed("kvm.ha.activity.check.interval")))


def _weigh(waiter: Any, silent: tuple[str, str], pools: list, checkers: list[HostRef], timeout: float,
           window: float) -> str:
    """Ask the other hosts, one after the other, to read the silent host's heartbeat on each
    pool and watch its guests' volumes: Alive on a fresh heartbeat or a write; Dead when a host
    looked and found only stale heartbeats and no writes; Unknown when nobody could look or the
    host never wrote a heartbeat (its heartbeat service does not run)."""
    guid, name = silent
    for checker in checkers:
        looked, stale = False, False
        for spec, volumes in pools:
            request = m.CheckHeartbeat(pool=spec, host=guid, volumes=volumes, window=window if volumes else 0.0)
            try:
                answer = waiter.agents.call(checker, request, window + CHECK_TIMEOUT, connect_wait=0)
            except ResourceUnavailable as e:
                log.info("host %s could not check the heartbeat of %s on pool %s: %s", checker.name, name,
                         spec.uuid, e.text)
                continue
            looked = True
            if answer.age is not None and answer.age <= timeout:
                log.warning("host %s is silent but its heartbeat on pool %s is %.0f s old: Alive", name, spec.uuid,
                            answer.age)
                return ALIVE
            if answer.activity:
                log.warning("host %s is silent but its guests write to pool %s: Alive", name, spec.uuid)
                return ALIVE
            stale = stale or answer.age is not None
        if looked:
            if stale:
                log.warning("host %s: heartbeat older than %.0f s on its pools and no disk activity (seen by %s): "
                            "Dead", name, timeout, checker.name)
                return DEAD
            log.warning("host %s never wrote a heartbeat on its pools (is stackwright-heartbeat running?): Unknown",
                        name)
            return UNKNOWN
    return UNKNOWN


def _apply_verdict(ctx: Context, host_id: int, verdict: str, previous: str | None = None) -> dict:
    """Act on a verdict; `watch` in the result: investigate again after `interval` seconds.
    An alert is raised when the verdict differs from the previous one."""
    host = ctx.session.get(Host, host_id)
    if host is None:
        return {"verdict": verdict, "restarted": []}
    if host.state == "Up" and host.removed is None:
        log.info("host %s is Up again: its guests stay where they are", host.name)
        return {"verdict": ALIVE, "restarted": []}
    where = dict(zone_id=host.zone_id, pod_id=host.pod_id, cluster_id=host.cluster_id, resource_uuid=host.uuid)
    watch = {"verdict": verdict, "restarted": [], "watch": host.removed is None,
             "interval": float(ctx.settings.typed("investigate.retry.interval"))}
    if verdict == ALIVE:
        host.state = "Alert"
        if previous != verdict:
            ctx.alerts.raise_alert(alerts.HOST, f"Host {host.name} does not answer its management server but is "
                                                f"alive (investigation); its guests are not restarted", **where)
        return watch
    if verdict != DEAD:
        if previous != verdict:
            ctx.alerts.raise_alert(alerts.HOST, f"Host {host.name} is Down and no other host could tell whether it "
                                                f"is alive; its guests are not restarted until it returns or is "
                                                f"removed", **where)
        return watch
    host.state = "Down"
    return {"verdict": verdict, "restarted": fence(ctx, host)}


def fence(ctx: Context, host: Host) -> list[str]:
    """Declare `host` Dead: its guests are Stopped (their capacity released); HA guests that
    were Running get a restart job. The uuids of those."""
    now = utcnow()
    guests = ctx.session.execute(select(VmInstance).where(
        VmInstance.host_id == host.id, VmInstance.removed.is_(None),
        VmInstance.state.in_(HOLDING_CAPACITY)).order_by(VmInstance.id).with_for_update()).scalars().all()
    restarted = []
    host.status_message = f"Declared Dead by investigation at {now.isoformat(timespec='seconds')}Z; guests fenced"
    for vm in guests:
        was = vm.state
        vm.state, vm.last_host_id, vm.host_id, vm.migration_host_id, vm.state_changed = (
            STOPPED, host.id, None, None, now)
        ctx.event("VM.STOP", f"VM {vm.instance_name} stopped: its host {host.name} was declared Dead",
                  vm.uuid, level="WARN", account_id=vm.account_id)
        if vm.ha_enabled and was == RUNNING:
            restarted.append(vm.uuid)
            ctx.alerts.raise_alert(alerts.USERVM, f"VM {vm.instance_name} ({vm.name}) of host {host.name}, which is "
                                                  f"Dead, is being restarted by HA", zone_id=vm.zone_id,
                                   pod_id=host.pod_id, cluster_id=host.cluster_id, resource_uuid=vm.uuid)
            submit(ctx, RESTART, {"vm_id": vm.id, "cluster_id": host.cluster_id, "crashed": False},
                   "VirtualMachine", vm.uuid)
        else:
            ctx.alerts.raise_alert(alerts.USERVM, f"VM {vm.instance_name} ({vm.name}) stopped: its host {host.name} "
                                                  f"was declared Dead and it is not HA-enabled", zone_id=vm.zone_id,
                                   pod_id=host.pod_id, cluster_id=host.cluster_id, resource_uuid=vm.uuid)
    log.warning("host %s declared Dead: %d guest(s) fenced, %d to restart", host.name, len(guests), len(restarted))
    return restarted


# --- a guest crashed on a live host ------------------------------------------------------------


def guest_crashed(ctx: Context, vm: VmInstance, host: Host) -> None:
    """`vm` is gone from `host` without a stop order (marked Stopped by the caller): alert, and
    restart it when it is HA-enabled (on the same host first)."""
    where = dict(zone_id=vm.zone_id, pod_id=host.pod_id, cluster_id=host.cluster_id, resource_uuid=vm.uuid)
    if not vm.ha_enabled:
        ctx.alerts.raise_alert(alerts.USERVM, f"VM {vm.instance_name} ({vm.name}) stopped unexpectedly on host "
                                              f"{host.name}", **where)
        return
    ctx.alerts.raise_alert(alerts.USERVM, f"VM {vm.instance_name} ({vm.name}) stopped unexpectedly on host "
                                          f"{host.name}; HA restarts it", **where)
    submit(ctx, RESTART, {"vm_id": vm.id, "cluster_id": host.cluster_id, "crashed": True}, "VirtualMachine", vm.uuid)


# --- restarts --------------------------------------------------------------------------------------


def restart_job(ctx: Context, vm_id: int, cluster_id: int, crashed: bool) -> Steps:
    plan = yield DbStep(_begin_restart, vm_id)
    if plan is None:
        return {"restarted": False}
    reason = ""
    for attempt in range(plan["retries"] + 1):
        if attempt:
            yield WaitStep(_pause, plan["interval"])
            if not (yield DbStep(_still_stopped, vm_id)):
                return {"restarted": False}
        try:
            # A crashed guest goes back to its host first (last host); a fenced one anywhere in its cluster.
            yield from start_vm(vm_id, cluster_id=cluster_id, consider_last_host=crashed, ha=True)
        except ApiError as e:
            reason = e.text
            log.warning("HA restart %d of VM id %d failed: %s", attempt + 1, vm_id, reason)
            continue
        yield DbStep(_restarted, vm_id, attempt + 1)
        return {"restarted": True}
    yield DbStep(_restart_failed, vm_id, plan["retries"] + 1, reason)
    return {"restarted": False}


def _pause(waiter: Any, seconds: float) -> None:
    waiter.sleep(seconds)


def _still_stopped(ctx: Context, vm_id: int) -> bool:
    vm = ctx.session.get(VmInstance, vm_id)
    return vm is not None and vm.removed is None and vm.state == STOPPED


def _begin_restart(ctx: Context, vm_id: int) -> dict | None:
    vm = ctx.vms.locked(vm_id)
    if vm.removed is not None or vm.state != STOPPED:
        log.info("HA: VM %s is %s; nothing to restart", vm.instance_name, vm.state)
        return None
    settings = ctx.settings
    last = (vm.details or {}).get("ha.restarted")
    between = settings.typed("time.between.failures")
    if last and utcnow() - dt.datetime.fromisoformat(last) < dt.timedelta(seconds=between):
        ctx.alerts.raise_alert(alerts.USERVM, f"VM {vm.instance_name} ({vm.name}) failed again less than "
                                              f"{between} s (time.between.failures) after its last HA restart; it is "
                                              f"not restarted", zone_id=vm.zone_id, resource_uuid=vm.uuid)
        return None
    return {"retries": settings.typed("max.retries"), "interval": float(settings.typed("restart.retry.interval"))}


def _restarted(ctx: Context, vm_id: int, attempts: int) -> None:
    vm = ctx.vms.locked(vm_id)
    vm.details = {**(vm.details or {}), "ha.restarted": utcnow().isoformat()}
    host = ctx.session.get(Host, vm.host_id) if vm.host_id else None
    where = host.name if host is not None else "?"
    ctx.event("VM.START", f"HA restarted VM {vm.instance_name} on host {where} (attempt {attempts})", vm.uuid,
              account_id=vm.account_id)
    ctx.alerts.raise_alert(alerts.USERVM, f"HA restarted VM {vm.instance_name} ({vm.name}) on host {where}",
                           zone_id=vm.zone_id, pod_id=host.pod_id if host else None,
                           cluster_id=host.cluster_id if host else None, resource_uuid=vm.uuid)


def _restart_failed(ctx: Context, vm_id: int, attempts: int, reason: str) -> None:
    vm = ctx.vms.locked(vm_id)
    text = f"Unable to restart VM {vm.instance_name} ({vm.name}) by HA after {attempts} attempt(s): {reason}"
    ctx.event("VM.START", text, vm.uuid, level="ERROR", account_id=vm.account_id)
    ctx.alerts.raise_alert(alerts.USERVM, text, zone_id=vm.zone_id, resource_uuid=vm.uuid)


# --- a host back from the dead ----------------------------------------------------------------------


def stale_copy(ctx: Context, vm: VmInstance, host: Host) -> None:
    """`host` runs `vm`, which the engine has running elsewhere (restarted after the host was
    declared Dead): stop that copy on `host`, unless a job does so already."""
    pending = ctx.session.execute(select(AsyncJob.id).where(
        AsyncJob.command == STOP_STRAY, AsyncJob.status == 0, AsyncJob.instance_uuid == vm.uuid)).first()
    if pending is not None:
        return
    ctx.event("VM.STOP", f"Host {host.name} runs a stale copy of VM {vm.instance_name}, which runs on another "
                         f"host; the copy is stopped", vm.uuid, level="WARN", account_id=vm.account_id)
    submit(ctx, STOP_STRAY, {"host": [host.guid or "", host.name], "name": vm.instance_name}, "VirtualMachine",
           vm.uuid)


def stop_stray_job(ctx: Context, host: list, name: str) -> Steps:
    yield AgentStep(HostRef(*host), m.StopVm(name=name, force=True), STRAY_STOP_TIMEOUT)
    return {"stopped": name}
