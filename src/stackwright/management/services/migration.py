"""Live migration of running guests within a cluster, and maintenance that evacuates a host.

A migration is a job of recorded steps (services/steps.py):

1. a database step reserves it: the guards, a destination (named, or chosen by the
   planner), the VM Migrating with the destination's capacity held as well;
2. a wait step carries it out outside any transaction: the destination prepares
   (PrepareForMigration), the source migrates (MigrateVm), and both hosts are asked where
   the guest runs. A run repeated after a restart asks first, so it never migrates twice;
3. a database step records where the guest runs: on the destination (new host, capacity
   moved, VM.MIGRATE), or still on the source (Running there; the destination is cleared of
   any definition it kept; the job fails with the hypervisor's reason).

Maintenance (`prepare_maintenance`) puts the host in PrepareForMaintenance, migrates its
running guests in batches of `MAX_PARALLEL` to hosts the planner chooses, and ends in
Maintenance, or in ErrorInPrepareForMaintenance naming each guest that could not move.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from stackwright.protocol import codec
from stackwright.protocol import messages as m

from ..errors import CloudRuntimeError, InsufficientCapacity, InvalidParameterValue, ResourceUnavailable
from ..persistence.models import Cluster, Host, StoragePool, Zone, utcnow
from .console import opened
from .gateway import CONNECT_WAIT, AgentAbsent, HostRef
from .hosts import ENABLED, ERROR_IN_PREPARE, MAINTENANCE, MAINTENANCE_STATES, PREPARE
from .placement import Demand, Planner
from .steps import DbStep, Steps, WaitStep
from .vm_lifecycle import _guest_spec
from .vms import MIGRATING, RUNNING, STOPPED, vm_label

log = logging.getLogger(__name__)

HYPERVISORS = ("KVM", "Simulator")      # the ones that migrate live
MAX_PARALLEL = 5                        # migrations a maintenance runs at a time
PREPARE_TIMEOUT = 120.0
MIGRATE_TIMEOUT = 600.0                 # the agent cancels a migration that takes longer
QUERY_TIMEOUT = 30.0
LOCATE_POLL = 2.0
DESTINATION, SOURCE, NOWHERE, UNKNOWN = "destination", "source", "nowhere", "unknown"


# --- guards ---------------------------------------------------------------------------


def demand_of(ctx: Any, vm: Any) -> Demand:
    volume = ctx.vms.root_volume(vm)
    pool = ctx.session.get(StoragePool, volume.pool_id) if volume is not None and volume.pool_id else None
    return Demand(vm.cpu_number, vm.cpu_speed, vm.memory_mb, vm.hypervisor, ctx.vms.offering_tags(vm), pool=pool)


def ha_tag(ctx: Any) -> str | None:
    return (ctx.settings.get("ha.tag") or "").strip() or None


def destination_problem(ctx: Any, vm: Any, source: Host, dest: Host, *, explicit: bool) -> str | None:
    """Why `vm` cannot live-migrate from `source` to `dest` now, or None. A host dedicated
    to HA (its tags hold `ha.tag`) takes a non-HA VM only when an admin names it (`explicit`)."""
    if dest.id == source.id:
        return f"the destination host {dest.name} is the host the VM runs on"
    if dest.removed is not None:
        return f"host {dest.uuid} was removed"
    if dest.hypervisor != source.hypervisor:
        return f"the destination host {dest.name} is a {dest.hypervisor} host and the VM runs on {source.hypervisor}"
    if dest.cluster_id != source.cluster_id:
        clusters = {c.id: c.name for c in (ctx.session.get(Cluster, source.cluster_id),
                                           ctx.session.get(Cluster, dest.cluster_id))}
        return (f"the destination host {dest.name} is in cluster {clusters[dest.cluster_id]} "
                f"and the VM runs in cluster {clusters[source.cluster_id]}; a live migration stays "
                "within the cluster whose storage holds the VM's disk")
    if dest.type != "Routing":
        return f"host {dest.name} is not a hypervisor host"
    if dest.state != "Up":
        return f"the destination host {dest.name} is {dest.state}, not Up"
    if dest.resource_state in MAINTENANCE_STATES:
        return f"the destination host {dest.name} is in {dest.resource_state}"
    if dest.resource_state != ENABLED:
        return f"the destination host {dest.name} is {dest.resource_state}; enable it with updateHost allocationstate=Enable"
    tags = ctx.vms.offering_tags(vm)
    if not set(tags) <= set(dest.tag_list):
        return (f"the destination host {dest.name} does not carry the host tags {','.join(tags)} "
                "of the VM's service offering")
    tag = ha_tag(ctx)
    if tag and tag in dest.tag_list and not vm.ha_enabled and not explicit:
        return (f"the destination host {dest.name} is dedicated to HA (ha.tag {tag}) and the VM is not HA-enabled; an admin may "
                "name it as the destination")
    bridge = ctx.vms.guest_bridge(ctx.session.get(Zone, vm.zone_id))
    if bridge in _bridges(source) and bridge not in _bridges(dest):
        return f"the destination host {dest.name} has no bridge {bridge} for the VM's NIC"
    short = Planner(ctx).shortfall(dest, demand_of(ctx, vm))
    if short:
        return f"the destination host {dest.name} is short of capacity: {short}"
    return None


def _bridges(host: Host) -> set[str]:
    return set(filter(None, (host.details or {}).get("bridges", "").split(",")))


def _check_vm(vm: Any) -> None:
    if vm.state != RUNNING or vm.host_id is None:
        raise InvalidParameterValue(f"VM {vm.instance_name} is not Running, unable to migrate the vm; it is {vm.state}")
    if vm.hypervisor not in HYPERVISORS:
        raise InvalidParameterValue(
            f"Unsupported hypervisor type {vm.hypervisor} for live migration; "
            f"only {' and '.join(HYPERVISORS)} guests migrate")


def candidates(ctx: Any, vm: Any) -> list[tuple[Host, str | None]]:
    """findHostsForMigration: every other host of the VM's cluster, with why it is not suitable."""
    _check_vm(vm)
    source = ctx.session.get(Host, vm.host_id)
    hosts = ctx.session.execute(select(Host).where(
        Host.cluster_id == source.cluster_id, Host.removed.is_(None), Host.id != source.id,
        Host.type == "Routing").order_by(Host.id)).unique().scalars().all()
    return [(h, destination_problem(ctx, vm, source, h, explicit=True)) for h in hosts]


def _choose(ctx: Any, vm: Any, source: Host, avoid: set[int]) -> Host:
    """A destination chosen by the planner within the source's cluster (never a dedicated HA
    host for a non-HA VM)."""
    tag = ha_tag(ctx)
    cluster = ctx.session.get(Cluster, source.cluster_id)
    avoid = set(avoid) | {source.id}
    if tag and not vm.ha_enabled:
        avoid |= {h.id for h in ctx.session.execute(select(Host).where(
            Host.cluster_id == cluster.id, Host.removed.is_(None))).unique().scalars() if tag in h.tag_list}
    try:
        plan = Planner(ctx).plan(vm_label(vm), ctx.session.get(Zone, vm.zone_id), demand_of(ctx, vm),
                                 cluster=cluster, avoid_hosts=avoid)
    except InsufficientCapacity as e:
        raise InsufficientCapacity(
            f"Unable to find a host in cluster {cluster.name} to migrate {vm_label(vm)} to: "
            f"{e.text.split(': ', 1)[-1]}", cserrorcode=4335) from None
    return plan.host


# --- one migration --------------------------------------------------------------------


def migrate_vm(vm_id: int, host_id: int | None = None) -> Steps:
    """migrateVirtualMachine: to `host_id`, or to a host the planner chooses."""
    plan = yield DbStep(_reserve, vm_id, host_id)
    outcomes = yield from _migrations([plan])
    failures = yield DbStep(_finish, outcomes)
    if failures:
        raise CloudRuntimeError(f"Failed to migrate VM {plan['name']}: {failures[0]['reason']}")


def _reserve(ctx: Any, vm_id: int, host_id: int | None) -> dict:
    vm = ctx.vms.locked(vm_id)
    _check_vm(vm)
    source = ctx.session.get(Host, vm.host_id)
    if host_id is not None:
        dest = ctx.session.get(Host, host_id)
        problem = destination_problem(ctx, vm, source, dest, explicit=True)
        if problem is None:
            # Checked again under the host's lock, as a plan is.
            short = Planner(ctx).shortfall(dest, demand_of(ctx, vm), lock=True)
            problem = short and f"the destination host {dest.name} is short of capacity: {short}"
        if problem:
            raise InvalidParameterValue(f"Cannot migrate VM {vm.instance_name}: {problem}")
    else:
        dest = _choose(ctx, vm, source, set())
    return _begin(ctx, vm, source, dest)


def _begin(ctx: Any, vm: Any, source: Host, dest: Host) -> dict:
    """Mark `vm` Migrating to `dest` (holding its capacity there too); what the agents need."""
    zone = ctx.session.get(Zone, vm.zone_id)
    spec = _guest_spec(vm, ctx.vms.volumes(vm), dest, ctx.vms.guest_bridge(zone))
    vm.state, vm.migration_host_id, vm.state_changed = MIGRATING, dest.id, utcnow()
    return {"vm_id": vm.id, "name": vm.instance_name, "source": [source.guid or "", source.name],
            "dest": [dest.guid or "", dest.name], "dest_id": dest.id, "address": dest.ip_address or "",
            "spec": codec.encode_as(spec, m.VmSpec)}


def _migrations(plans: list[dict]) -> Steps:
    """Carry out the planned migrations; an unexpected failure puts the VMs back to Running
    where they were (the hosts' next reports correct a guest that moved meanwhile)."""
    try:
        return (yield WaitStep(_carry_out, plans))
    except Exception:
        yield DbStep(_unstick, [plan["vm_id"] for plan in plans])
        raise


def _unstick(ctx: Any, vm_ids: list[int]) -> None:
    for vm_id in vm_ids:
        vm = ctx.vms.locked(vm_id)
        if vm.state == MIGRATING:
            vm.state, vm.migration_host_id, vm.state_changed = RUNNING, None, utcnow()


def _carry_out(waiter: Any, plans: list[dict]) -> list[dict]:
    """Migrate every planned guest, at most MAX_PARALLEL at a time; where each runs afterwards.
    Safe to run again: a guest already on its destination is not migrated twice."""
    if not plans:
        return []
    agents = waiter.agents
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(plans)), thread_name_prefix="migrate") as pool:
        return list(pool.map(lambda plan: _move(agents, plan), plans))


def _move(agents: Any, plan: dict) -> dict:
    source, dest, name = HostRef(*plan["source"]), HostRef(*plan["dest"]), plan["name"]
    reason = None
    where, dest_state = _locate(agents, name, source, dest)
    if where == SOURCE:
        try:
            agents.call(dest, m.PrepareForMigration(spec=opened(codec.decode(m.VmSpec, plan["spec"]))), PREPARE_TIMEOUT)
            agents.call(source, m.MigrateVm(name=name, address=plan["address"], guid=dest.guid,
                                            vnc_listen=plan["address"] or "127.0.0.1", timeout=MIGRATE_TIMEOUT),
                        MIGRATE_TIMEOUT + 30)
        except ResourceUnavailable as e:
            reason = e.text
        where, dest_state = _locate(agents, name, source, dest)
    if where == SOURCE and dest_state is not None:
        # The destination keeps no definition of a guest that did not arrive.
        try:
            agents.call(dest, m.StopVm(name=name, force=True), QUERY_TIMEOUT)
        except ResourceUnavailable as e:
            log.warning("could not clear %s from host %s after a failed migration: %s", name, dest.name, e.text)
    if where != DESTINATION and reason is None:
        reason = {SOURCE: f"the guest is still on host {source.name}",
                  NOWHERE: f"neither host {source.name} nor host {dest.name} runs the guest",
                  UNKNOWN: f"host {source.name} or {dest.name} did not say whether it runs the guest"}[where]
    return {"vm_id": plan["vm_id"], "name": name, "dest_id": plan["dest_id"], "source": source.name,
            "dest": dest.name, "where": where, "reason": reason if where != DESTINATION else None}


def _locate(agents: Any, name: str, source: HostRef, dest: HostRef) -> tuple[str, m.VmState | None]:
    """Where the guest runs, asking both hosts (again while one does not answer, for as long
    as the engine takes to judge a silent host); and its state on the destination, if known
    there."""
    deadline = time.monotonic() + (agents.down_within + CONNECT_WAIT if agents.down_within > 0 else 0.0)
    while True:
        on_source, on_dest = _state(agents, source, name), _state(agents, dest, name)
        if on_source is not UNKNOWN and on_dest is not UNKNOWN:
            running_source, running_dest = on_source == m.VmState.RUNNING, on_dest == m.VmState.RUNNING
            if running_dest and not running_source:
                return DESTINATION, on_dest
            if running_source and not running_dest:
                return SOURCE, on_dest
            if not running_source and not running_dest:
                return NOWHERE, on_dest
            # Both: an incoming copy still paused on the destination; ask again.
        if time.monotonic() >= deadline:
            return UNKNOWN, None
        time.sleep(LOCATE_POLL)


def _state(agents: Any, host: HostRef, name: str) -> Any:
    try:
        return agents.call(host, m.QueryVm(name=name), QUERY_TIMEOUT, connect_wait=0.5).state
    except AgentAbsent:
        return UNKNOWN
    except ResourceUnavailable:
        return None         # the host does not know the guest


def _finish(ctx: Any, outcomes: list[dict]) -> list[dict]:
    """Record where each guest runs; the ones that did not move, with why."""
    failures = []
    for outcome in outcomes:
        vm = ctx.vms.locked(outcome["vm_id"])
        if vm.state != MIGRATING:
            continue
        vm.migration_host_id, vm.state_changed = None, utcnow()
        where = outcome["where"]
        if where == DESTINATION:
            vm.state, vm.host_id, vm.last_host_id = RUNNING, outcome["dest_id"], outcome["dest_id"]
            ctx.event(
                "VM.MIGRATE",
                f"Migrated VM {vm.instance_name} from host {outcome['source']} to host {outcome['dest']}",
                vm.uuid)
            log.info("migrated %s from %s to %s", vm.instance_name, outcome["source"], outcome["dest"])
            continue
        if where == NOWHERE:
            vm.state, vm.last_host_id, vm.host_id = STOPPED, vm.host_id, None
        else:
            # Still on the source; when nobody could say, the hosts' next reports correct it.
            vm.state = RUNNING
        text = (f"Failed to migrate VM {vm.instance_name} from host {outcome['source']} "
                f"to host {outcome['dest']}: {outcome['reason']}")
        ctx.event("VM.MIGRATE", text, vm.uuid, level="ERROR")
        log.warning("%s", text)
        failures.append({"vm": vm.uuid, "name": vm.instance_name, "reason": outcome["reason"]})
    return failures


# --- maintenance that evacuates ----------------------------------------------------------


def prepare_maintenance(host_id: int) -> Steps:
    """prepareHostForMaintenance: PrepareForMaintenance, the running guests migrated away,
    then Maintenance; ErrorInPrepareForMaintenance when a guest cannot move."""
    guests = yield DbStep(_begin_maintenance, host_id)
    failures: list[dict] = []
    for i in range(0, len(guests), MAX_PARALLEL):
        batch = yield DbStep(_reserve_evacuation, host_id, guests[i:i + MAX_PARALLEL])
        if batch is None:
            return      # the maintenance was cancelled meanwhile
        failures += batch["failures"]
        outcomes = yield from _migrations(batch["plans"])
        failures += yield DbStep(_finish, outcomes)
    yield DbStep(_end_maintenance, host_id, failures)
    if failures:
        raise CloudRuntimeError(
            f"Failed to prepare host for maintenance: {len(failures)} VM(s) could not be migrated: "
            + "; ".join(f"{f['name']}: {f['reason']}" for f in failures))


def _begin_maintenance(ctx: Any, host_id: int) -> list[int]:
    host = ctx.session.get(Host, host_id)
    return [vm.id for vm in ctx.hosts.begin_maintenance(host)]


def _reserve_evacuation(ctx: Any, host_id: int, vm_ids: list[int]) -> dict | None:
    host = ctx.session.get(Host, host_id)
    if host.resource_state != PREPARE:
        return None
    plans, failures = [], []
    for vm_id in vm_ids:
        vm = ctx.vms.locked(vm_id)
        if vm.state != RUNNING or vm.host_id != host.id:
            continue            # stopped or moved meanwhile: nothing to evacuate
        try:
            plans.append(_begin(ctx, vm, host, _choose(ctx, vm, host, set())))
        except InsufficientCapacity as e:
            ctx.event("VM.MIGRATE", f"Failed to migrate VM {vm.instance_name} off host {host.name} for maintenance: {e.text}", vm.uuid, level="ERROR")
            failures.append({"vm": vm.uuid, "name": vm.instance_name, "reason": e.text})
        ctx.session.flush()     # the next guest's plan counts this one's reservation
    return {"plans": plans, "failures": failures}


def _end_maintenance(ctx: Any, host_id: int, failures: list[dict]) -> None:
    host = ctx.session.get(Host, host_id)
    if host.resource_state != PREPARE:
        return
    if failures:
        host.resource_state = ERROR_IN_PREPARE
        ctx.event(
            "MAINT.PREPARE",
            f"Host {host.name} is in {ERROR_IN_PREPARE}: "
            + "; ".join(f"VM {f['name']}: {f['reason']}" for f in failures),
            host.uuid, level="ERROR")
        return
    host.resource_state = MAINTENANCE
    ctx.event("MAINT.PREPARE", f"Host {host.name} is in maintenance", host.uuid)
