"""Live migration and maintenance that evacuates, as jobs run by the job executor with the API's
command handlers against in-process agents (the agent's real handlers over the Simulator
driver, whose hosts hand guests to each other in simulation): every guard, failures that
leave the guest on its source, a job killed mid-migration, and a host of 200 guests drained.
"""

import time

import pytest
from sqlalchemy import select

from stackwright.agent.hypervisor import simulator
from stackwright.management.persistence.models import Event, Host, VmInstance, Volume
from stackwright.management.services import migration
from stackwright.management.services.placement import GiB
from stackwright.protocol import codec
from stackwright.protocol import messages as m
from tests.support.gateway import EngineKilled
from tests.unit.management.services.job_harness import failure
from tests.unit.management.services import test_vm_lifecycle as lifecycle
from tests.unit.management.services.test_vm_lifecycle import fresh, new_vm, start

# The fixtures of the life cycle's tests (the recording gateway and the jobs come from conftest): a
# context whose rows the test commits, and a zone of its own.
ctx, world = lifecycle.ctx, lifecycle.world


def running_vm(ctx, world, jobs, host, memory=512):
    """A VM started through its job on `host`."""
    vm = new_vm(ctx, world)
    vm.memory_mb = memory
    ctx.session.commit()
    assert start(ctx, jobs, vm, hostid=host.uuid).status == 1
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id) == ("Running", host.id)
    return vm


def migrate(ctx, jobs, vm, host=None, **params):
    if host is not None:
        params["hostid"] = host.uuid
    return jobs.call(ctx.user, "migrateVirtualMachine", vm.uuid, virtualmachineid=vm.uuid, **params)


def allocated_mb(ctx, host):
    ctx.session.commit()
    held = ctx.capacity.host_allocations([host.id]).get(host.id)
    ctx.session.commit()
    return held.memory_bytes >> 20 if held else 0


def events(ctx, vm, type="VM.MIGRATE", level=None):
    ctx.session.commit()
    q = select(Event.description).where(Event.resource_uuid == vm.uuid, Event.type == type)
    if level:
        q = q.where(Event.level == level)
    found = ctx.session.execute(q.order_by(Event.id)).scalars().all()
    ctx.session.commit()
    return found


@pytest.fixture
def pair(ctx, world, gateway):
    """Two Simulator hosts of one cluster with a shared pool; their drivers."""
    a, b = world.host(), world.host()
    world.pool()
    drivers = (gateway.add(a.guid)[0], gateway.add(b.guid)[0])
    ctx.session.commit()
    return a, b, drivers


# --- migrateVirtualMachine ------------------------------------------------------------


def test_a_running_guest_moves_to_the_named_host_and_keeps_running(ctx, world, gateway, jobs, pair):
    a, b, (on_a, on_b) = pair
    vm = running_vm(ctx, world, jobs, a)
    gateway.log.clear()
    job = migrate(ctx, jobs, vm, b)
    assert job.status == 1, job.result
    assert job.result["virtualmachine"]["hostid"] == b.uuid
    assert job.result["virtualmachine"]["state"] == "Running"
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id, vm.last_host_id, vm.migration_host_id) == ("Running", b.id, b.id, None)
    # The same guest goes on running on b (no second boot); a no longer has it.
    assert on_b.query(vm.instance_name) == m.VmState.RUNNING and on_b.boot_count(vm.instance_name) == 1
    assert vm.instance_name not in on_a.list_vms()
    assert (allocated_mb(ctx, a), allocated_mb(ctx, b)) == (0, 512)
    assert events(ctx, vm) == ["Migrated VM %s from host %s to host %s" % (vm.instance_name, a.name, b.name)]
    assert gateway.calls() == [(a.guid, m.QueryVm), (b.guid, m.QueryVm), (b.guid, m.PrepareForMigration),
                               (a.guid, m.MigrateVm), (a.guid, m.QueryVm), (b.guid, m.QueryVm)]
    # And back.
    assert migrate(ctx, jobs, vm, a).status == 1
    assert fresh(ctx, vm).host_id == a.id and on_a.boot_count(vm.instance_name) == 1


def test_without_a_host_the_planner_chooses_one_of_the_cluster(ctx, world, gateway, jobs, pair):
    a, b, (_on_a, on_b) = pair
    elsewhere = world.host(cluster=world.new_cluster())
    gateway.add(elsewhere.guid)
    ctx.session.commit()
    vm = running_vm(ctx, world, jobs, a)
    assert migrate(ctx, jobs, vm).status == 1
    assert fresh(ctx, vm).host_id == b.id and on_b.query(vm.instance_name) == m.VmState.RUNNING


def test_the_destination_capacity_is_held_while_migrating(ctx, world, jobs, pair):
    a, b, _drivers = pair
    vm = running_vm(ctx, world, jobs, a)
    ctx.session.commit()
    row = ctx.session.get(VmInstance, vm.id)
    row.state, row.migration_host_id = "Migrating", b.id
    ctx.session.commit()
    assert (allocated_mb(ctx, a), allocated_mb(ctx, b)) == (512, 512)


def refused(ctx, jobs, vm, host=None, **params):
    job = migrate(ctx, jobs, vm, host, **params)
    code, text = failure(job)
    after = fresh(ctx, vm)
    return code, text, after


@pytest.mark.parametrize("change, reason", [
    (dict(state="Down"), "is Down, not Up"),
    (dict(resource_state="Disabled"), "is Disabled; enable it with updateHost allocationstate=Enable"),
    (dict(resource_state="Maintenance"), "is in Maintenance"),
    (dict(resource_state="PrepareForMaintenance"), "is in PrepareForMaintenance"),
    (dict(memory=256 * 1024 * 1024), "is short of capacity"),
    (dict(host_tags="other"), "does not carry the host tags"),
])
def test_a_destination_that_cannot_take_the_guest_is_refused(ctx, world, gateway, jobs, pair, change, reason):
    a, b, _drivers = pair
    world.offering.host_tags = "fast" if "host_tags" in change else None
    for host in (a, b):
        host.host_tags = "fast" if "host_tags" in change else None
    ctx.session.commit()
    vm = running_vm(ctx, world, jobs, a)
    row = ctx.session.get(Host, b.id)
    for key, value in change.items():
        setattr(row, "memory_bytes" if key == "memory" else key, value)
    ctx.session.commit()
    gateway.log.clear()
    code, text, after = refused(ctx, jobs, vm, b)
    assert code == 431 and text.startswith("Cannot migrate VM %s: the destination host %s " % (vm.instance_name,
                                                                                               b.name)), text
    assert reason in text
    assert (after.state, after.host_id, after.migration_host_id) == ("Running", a.id, None)
    assert gateway.calls() == []


def test_refusals_of_the_vm_and_of_hosts_elsewhere(ctx, world, gateway, jobs, pair):
    a, b, _drivers = pair
    vm = running_vm(ctx, world, jobs, a)
    other_cluster = world.new_cluster()
    other = world.host(cluster=other_cluster)
    kvm = world.host(cluster=world.new_cluster(hypervisor="KVM"))
    ctx.session.commit()
    code, text, _job = refused(ctx, jobs, vm, a)
    assert (code, text) == (431, "Cannot migrate VM %s: the destination host %s is the host the VM runs on"
                            % (vm.instance_name, a.name))
    _code, text, _job = refused(ctx, jobs, vm, other)
    assert "is in cluster %s and the VM runs in cluster %s" % (other_cluster.name, world.cluster.name) in text
    assert "a live migration stays within the cluster" in text
    _code, text, _job = refused(ctx, jobs, vm, kvm)
    assert "is a KVM host and the VM runs on Simulator" in text
    gateway.log.clear()
    assert jobs.call(ctx.user, "stopVirtualMachine", vm.uuid, id=vm.uuid).status == 1
    code, text, after = refused(ctx, jobs, vm, b)
    assert (code, text) == (431, "VM %s is not Running, unable to migrate the vm; it is Stopped" % vm.instance_name)
    assert after.state == "Stopped"


def test_nowhere_to_go_names_the_shortfall(ctx, world, gateway, jobs, pair):
    a, b, _drivers = pair
    ctx.session.get(Host, b.id).resource_state = "Disabled"
    ctx.session.commit()
    vm = running_vm(ctx, world, jobs, a)
    code, text, after = refused(ctx, jobs, vm)
    assert code == 533 and text.startswith("Unable to find a host in cluster %s to migrate" % world.cluster.name)
    assert after.state == "Running" and after.host_id == a.id


def test_a_dedicated_ha_host_takes_a_non_ha_vm_only_when_named(ctx, world, gateway, jobs, pair):
    a, b, (_on_a, on_b) = pair
    ctx.session.get(Host, b.id).host_tags = "ha"
    ctx.settings.set_global("ha.tag", "ha")
    ctx.session.commit()
    ctx.settings.invalidate()
    try:
        vm = running_vm(ctx, world, jobs, a)
        code, text, _job = refused(ctx, jobs, vm)
        assert code == 533 and "no other Up and Enabled host left" in text
        found = dict((h.id, why) for h, why in migration.candidates(ctx, fresh(ctx, vm)))
        ctx.session.commit()
        assert found == {b.id: None}        # suitable when an admin names it
        assert migrate(ctx, jobs, vm, b).status == 1
        assert on_b.query(vm.instance_name) == m.VmState.RUNNING
    finally:
        ctx.settings.set_global("ha.tag", "")
        ctx.session.commit()
        ctx.settings.invalidate()


def test_find_hosts_for_migration_flags_each_host(ctx, world, gateway, jobs, pair):
    a, b, _drivers = pair
    down = world.host(state="Down")
    world.host(cluster=world.new_cluster())
    ctx.session.commit()
    vm = running_vm(ctx, world, jobs, a)
    found = [(h.id, why) for h, why in migration.candidates(ctx, fresh(ctx, vm))]
    assert found[0] == (b.id, None)
    assert found[1][0] == down.id and "is Down, not Up" in found[1][1]
    assert len(found) == 2


# --- failures --------------------------------------------------------------------------


def test_a_destination_that_refuses_the_guest_leaves_it_running_on_the_source(ctx, world, gateway, jobs):
    a, b = world.host(), world.host()
    world.pool()
    on_a = gateway.add(a.guid)[0]
    on_b = gateway.add(b.guid, memory_mb=256)[0]      # less than the engine believes
    ctx.session.commit()
    vm = running_vm(ctx, world, jobs, a)
    code, text, after = refused(ctx, jobs, vm, b)
    assert code == 530 and text.startswith("Failed to migrate VM %s: Host %s failed PrepareForMigration: " % (
        vm.instance_name, b.guid)) and "needs 512 MiB" in text, text
    assert (after.state, after.host_id, after.migration_host_id) == ("Running", a.id, None)
    assert on_a.query(vm.instance_name) == m.VmState.RUNNING and vm.instance_name not in on_b.list_vms()
    assert (allocated_mb(ctx, a), allocated_mb(ctx, b)) == (512, 0)
    assert events(ctx, vm, level="ERROR")


def test_a_migration_that_fails_leaves_no_copy_on_the_destination(ctx, world, gateway, jobs, pair):
    a, b, (on_a, on_b) = pair
    vm = running_vm(ctx, world, jobs, a)
    # The destination prepares, but its hypervisor cannot be reached for the migration itself.
    unreachable = simulator._PEERS.pop(b.guid)
    try:
        code, text, after = refused(ctx, jobs, vm, b)
    finally:
        simulator._PEERS[b.guid] = unreachable
    assert code == 530 and "cannot connect to destination host %s" % b.guid in text, text
    assert (after.state, after.host_id) == ("Running", a.id)
    assert on_a.query(vm.instance_name) == m.VmState.RUNNING and vm.instance_name not in on_b.list_vms()


def test_an_engine_killed_mid_migration_asks_both_hosts_and_migrates_once(ctx, world, gateway, jobs, pair):
    a, b, (on_a, on_b) = pair
    vm = running_vm(ctx, world, jobs, a)
    gateway.kill_after.add(m.MigrateVm)
    job_uuid = jobs.submit(ctx.user, "migrateVirtualMachine", vm.uuid, virtualmachineid=vm.uuid, hostid=b.uuid)
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    assert fresh(ctx, vm).state == "Migrating"
    gateway.log.clear()
    job = jobs.run(job_uuid)
    assert job.status == 1
    assert gateway.calls() == [(a.guid, m.QueryVm), (b.guid, m.QueryVm)]
    assert (fresh(ctx, vm).state, fresh(ctx, vm).host_id) == ("Running", b.id)
    assert vm.instance_name not in on_a.list_vms() and on_b.boot_count(vm.instance_name) == 1


def test_a_host_that_cannot_say_leaves_the_vm_on_its_source_with_an_error(ctx, world, gateway, jobs, pair):
    a, b, _drivers = pair
    vm = running_vm(ctx, world, jobs, a)
    gateway.down_within = 0.0
    gateway.absent.add(b.guid)
    code, text, after = refused(ctx, jobs, vm, b)
    assert code == 530 and "did not say whether it runs the guest" in text
    assert (after.state, after.host_id) == ("Running", a.id)


# --- maintenance -----------------------------------------------------------------------


def maintenance(ctx, jobs, host):
    return jobs.call(ctx.user, "prepareHostForMaintenance", host.uuid, id=host.uuid)


def host_state(ctx, host):
    ctx.session.commit()
    state = ctx.session.get(Host, host.id, populate_existing=True).resource_state
    ctx.session.commit()
    return state


def test_maintenance_migrates_the_running_guests_away(ctx, world, gateway, jobs):
    draining, b, c = world.host(), world.host(), world.host()
    world.pool()
    drivers = {h.id: gateway.add(h.guid)[0] for h in (draining, b, c)}
    ctx.session.commit()
    guests = [running_vm(ctx, world, jobs, draining) for _i in range(3)]
    stopped = running_vm(ctx, world, jobs, draining)
    assert jobs.call(ctx.user, "stopVirtualMachine", stopped.uuid, id=stopped.uuid).status == 1
    job = maintenance(ctx, jobs, draining)
    assert job.status == 1, job.result
    assert job.result["host"]["resourcestate"] == "Maintenance"
    assert host_state(ctx, draining) == "Maintenance"
    for vm in guests:
        row = fresh(ctx, vm)
        assert row.state == "Running" and row.host_id in (b.id, c.id)
        assert drivers[row.host_id].boot_count(vm.instance_name) == 1
    assert drivers[draining.id].list_vms() == {stopped.instance_name: m.VmState.STOPPED}
    assert fresh(ctx, stopped).state == "Stopped"
    assert jobs.call(ctx.user, "cancelHostMaintenance", draining.uuid, id=draining.uuid).status == 1
    assert host_state(ctx, draining) == "Enabled"


def test_a_guest_that_fits_nowhere_ends_in_error_in_prepare_for_maintenance(ctx, world, gateway, jobs):
    draining = world.host(memory=4 * GiB)
    other = world.host(memory=1 * GiB)
    world.pool()
    gateway.add(draining.guid)
    gateway.add(other.guid)
    ctx.session.commit()
    small = running_vm(ctx, world, jobs, draining, memory=512)
    big = running_vm(ctx, world, jobs, draining, memory=2048)
    job = maintenance(ctx, jobs, draining)
    code, text = failure(job)
    assert code == 530 and text.startswith("Failed to prepare host for maintenance: 1 VM(s) could not be migrated: "
                                           "%s: Unable to find a host" % big.instance_name), text
    assert host_state(ctx, draining) == "ErrorInPrepareForMaintenance"
    # The guest that could move stays moved; the other still runs where it was.
    assert fresh(ctx, small).host_id == other.id and fresh(ctx, big).host_id == draining.id
    assert events(ctx, big, level="ERROR")
    ctx.session.commit()
    described = ctx.session.execute(select(Event.description).where(
        Event.resource_uuid == draining.uuid, Event.level == "ERROR")).scalars().all()
    ctx.session.commit()
    assert any(big.instance_name in d for d in described)
    # A second request is refused until cancelled; cancel brings the host back.
    assert failure(maintenance(ctx, jobs, draining))[1].endswith(
        "Host is already in state ErrorInPrepareForMaintenance. Cannot recall for maintenance until resolved.")
    assert jobs.call(ctx.user, "cancelHostMaintenance", draining.uuid, id=draining.uuid).status == 1
    assert host_state(ctx, draining) == "Enabled"


def placed_guests(ctx, world, host, driver, pool, count):
    """`count` guests as their start jobs leave them, running on `host` (rows and hypervisor)."""
    for _i in range(count):
        vm = world.vm(host, memory=128)
        vm.last_host_id = host.id
        disk = m.DiskSpec(device="vda", source=m.NfsSource(server="nfs", export="/p", path=vm.uuid), size_bytes=GiB)
        world.add(Volume(name="ROOT-%d" % vm.id, vm_id=vm.id, zone_id=world.zone.id, account_id=world.account.id,
                         pool_id=pool.id, size_bytes=GiB, state="Ready", disk=codec.encode_as(disk, m.DiskSpec)))
        driver.start(m.VmSpec(name=vm.instance_name, uuid=vm.uuid, vcpus=1, cpu_mhz=500, memory_mb=128))
    ctx.session.commit()


def test_maintenance_drains_a_host_of_200_guests(ctx, world, gateway, jobs):
    draining = world.host(cpus=64, memory=64 * GiB)
    others = [world.host(cpus=64, memory=16 * GiB) for _i in range(4)]
    pool = world.pool(size=1000 * GiB)
    driver = gateway.add(draining.guid, memory_mb=64 * 1024)[0]
    peers = {h.id: gateway.add(h.guid, memory_mb=16 * 1024)[0] for h in others}
    placed_guests(ctx, world, draining, driver, pool, 200)
    started = time.monotonic()
    job = maintenance(ctx, jobs, draining)
    took = time.monotonic() - started
    assert job.status == 1, job.result
    assert host_state(ctx, draining) == "Maintenance"
    assert driver.list_vms() == {}
    ctx.session.commit()
    placed = ctx.session.execute(select(VmInstance.host_id, VmInstance.instance_name, VmInstance.state).where(
        VmInstance.zone_id == world.zone.id, VmInstance.state == "Running")).all()
    ctx.session.commit()
    assert len(placed) == 200 and all(host_id in peers for host_id, _name, _state in placed)
    for host_id, name, _state in placed:
        assert peers[host_id].query(name) == m.VmState.RUNNING
    assert sum(allocated_mb(ctx, h) for h in others) == 200 * 128
    assert took < 120


def test_an_unexpected_failure_does_not_leave_the_vm_migrating(ctx, world, gateway, jobs, pair):
    a, b, _drivers = pair
    vm = running_vm(ctx, world, jobs, a)
    gateway.broken = RuntimeError("the agent channel broke")
    job = migrate(ctx, jobs, vm, b)
    gateway.broken = None
    assert job.status == 2 and "the agent channel broke" in job.result["errortext"]
    after = fresh(ctx, vm)
    assert (after.state, after.host_id, after.migration_host_id) == ("Running", a.id, None)


def test_a_maintenance_killed_mid_evacuation_resumes_and_moves_each_guest_once(ctx, world, gateway, jobs):
    draining, other = world.host(), world.host()
    world.pool()
    drivers = {h.id: gateway.add(h.guid)[0] for h in (draining, other)}
    ctx.session.commit()
    guests = [running_vm(ctx, world, jobs, draining) for _i in range(3)]
    gateway.kill_after.add(m.MigrateVm)
    job_uuid = jobs.submit(ctx.user, "prepareHostForMaintenance", draining.uuid, id=draining.uuid)
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    assert host_state(ctx, draining) == "PrepareForMaintenance"
    job = jobs.run(job_uuid)
    assert job.status == 1, job.result
    assert host_state(ctx, draining) == "Maintenance"
    for vm in guests:
        assert fresh(ctx, vm).host_id == other.id
        assert drivers[other.id].boot_count(vm.instance_name) == 1
    assert drivers[draining.id].list_vms() == {}
