"""VM starts, stops and expunges as jobs of recorded steps, run by the job executor with the
API's command handlers, against the agent's real command handlers, simulator hypervisor and
simulator storage behind a recording gateway: failures on one host or pool, jobs killed
between an agent's answer and its recording, and VMs never left in transition.

The executor commits each step, so this module works on its own database and each test
builds its own zone.
"""

import threading

import pytest
from sqlalchemy import select

from stackwright.management.errors import ResourceUnavailable
from stackwright.management.persistence.models import Event, Host, VmInstance, Volume
from stackwright.management.services import vm_lifecycle
from stackwright.management.services.placement import GiB
from stackwright.protocol import messages as m
from tests.support.gateway import EngineKilled
from tests.unit.management.services.job_harness import failure
from tests.unit.management.services.test_vms import World


@pytest.fixture
def ctx(job_ctx):
    return job_ctx


@pytest.fixture
def world(ctx):
    return World(ctx)


def new_vm(ctx, world):
    """A VM as deployVirtualMachine leaves it: Stopped, with an Allocated root volume; committed."""
    vm = world.vm(None, state="Stopped", memory=512)
    ctx.session.add(Volume(name="ROOT-%d" % vm.id, vm_id=vm.id, zone_id=world.zone.id, account_id=world.account.id,
                           size_bytes=GiB, format="qcow2", state="Allocated"))
    ctx.session.commit()
    return vm


def fresh(ctx, vm):
    """The VM row as committed now (the read's transaction is ended: on SQLite it holds the write lock)."""
    ctx.session.commit()
    row = ctx.session.get(VmInstance, vm.id, populate_existing=True)
    ctx.session.commit()
    return row


def root(ctx, vm):
    ctx.session.commit()
    row = ctx.session.execute(
        select(Volume).where(Volume.vm_id == vm.id).execution_options(populate_existing=True)).scalar_one()
    ctx.session.commit()
    return row


def start(ctx, jobs, vm, **params):
    return jobs.call(ctx.user, "startVirtualMachine", id=vm.uuid, **params)


def stop(ctx, jobs, vm, **params):
    return jobs.call(ctx.user, "stopVirtualMachine", id=vm.uuid, **params)


def test_start_runs_the_guest_on_the_planned_host_with_its_volume(ctx, world, gateway, jobs):
    host = world.host()
    pool = world.pool()
    driver, storage = gateway.add(host.guid)
    vm = new_vm(ctx, world)
    job = start(ctx, jobs, vm)
    assert job.status == 1 and job.result["virtualmachine"]["state"] == "Running"
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Running", host.id, host.id)
    volume = root(ctx, vm)
    assert (volume.state, volume.pool_id) == ("Ready", pool.id)
    assert storage.volumes(pool.uuid) == {volume.uuid: GiB}
    assert driver.query(vm.instance_name) == m.VmState.RUNNING
    assert volume.disk["source"]["@type"] == "NfsSource" and volume.disk["source"]["path"] == volume.uuid
    # Exactly these requests, and every step recorded in the job's row.
    assert gateway.calls() == [(host.guid, m.CreateVolume), (host.guid, m.StartVm)]
    assert job.step == len(job.step_results) == 5


def test_a_host_that_refuses_the_guest_is_avoided(ctx, world, gateway, jobs):
    small, big = world.host(), world.host()
    world.pool()
    gateway.add(small.guid, memory_mb=256)      # the hypervisor has less memory than the engine believes
    gateway.add(big.guid)
    vm = new_vm(ctx, world)
    assert start(ctx, jobs, vm).status == 1
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id) == ("Running", big.id)


def test_when_every_host_refuses_the_failures_are_named(ctx, world, gateway, jobs):
    only = world.host()
    world.pool()
    gateway.add(only.guid, memory_mb=256)
    vm = new_vm(ctx, world)
    code, text = failure(start(ctx, jobs, vm))
    assert code == 533
    # The first failure leads; that no other host is left follows.
    assert text.startswith("Unable to create a deployment for VM[User|%s]: %s: starting the guest failed:"
                           % (vm.instance_name, only.name))
    assert text.endswith("; and no other host or pool can take it: no other Up and Enabled host left in zone %s"
                         % world.zone.name)
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id) == ("Stopped", None)
    assert root(ctx, vm).state == "Ready"              # the volume was made; the next start reuses it


def test_a_pool_that_cannot_hold_the_volume_is_avoided(ctx, world, gateway, jobs):
    host = world.host()
    world.pool()
    gateway.add(host.guid, storage_bytes=GiB // 2)
    vm = new_vm(ctx, world)
    code, text = failure(start(ctx, jobs, vm))
    assert code == 533 and "creating the root volume on storage pool" in text
    volume = root(ctx, vm)
    assert (volume.state, volume.pool_id) == ("Allocated", None)
    assert fresh(ctx, vm).state == "Stopped"


def killed_start(ctx, world, gateway, jobs, after):
    """A start whose engine was killed right after the agent carried out `after` (a request
    type), its answer not recorded: (host, pool, driver, storage, vm, job uuid)."""
    host = world.host()
    pool = world.pool()
    driver, storage = gateway.add(host.guid)
    vm = new_vm(ctx, world)
    gateway.kill_after.add(after)
    job_uuid = jobs.submit(ctx.user, "startVirtualMachine", id=vm.uuid)
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    return host, pool, driver, storage, vm, job_uuid


def test_a_start_killed_after_the_guest_booted_resumes_without_booting_it_again(ctx, world, gateway, jobs):
    host, _pool, driver, _storage, vm, job_uuid = killed_start(ctx, world, gateway, jobs, m.StartVm)
    pending = jobs.job(job_uuid)
    assert pending.status == 0 and fresh(ctx, vm).state == "Starting"
    gateway.log.clear()
    job = jobs.run(job_uuid)            # the engine's next run of the pending job
    assert job.status == 1 and fresh(ctx, vm).state == "Running"
    # The host was asked first, and the guest was not started again.
    assert gateway.calls() == [(host.guid, m.QueryVm)]
    assert driver.boot_count(vm.instance_name) == 1


def test_a_start_killed_after_creating_the_volume_makes_it_once(ctx, world, gateway, jobs):
    _host, pool, driver, storage, vm, job_uuid = killed_start(ctx, world, gateway, jobs, m.CreateVolume)
    assert root(ctx, vm).state == "Creating"
    job = jobs.run(job_uuid)
    assert job.status == 1
    # What the killed run created (and never recorded) was dropped before the volume was made again.
    assert [t for _g, t in gateway.calls()] == [m.CreateVolume, m.DeleteVolume, m.CreateVolume, m.StartVm]
    assert storage.volumes(pool.uuid) == {root(ctx, vm).uuid: GiB}
    assert driver.boot_count(vm.instance_name) == 1


def back_after(gateway, guid, seconds):
    """The agent of `guid` reconnects `seconds` from now (as agents do to a surviving server)."""
    gateway.max_connect_wait = 10.0
    timer = threading.Timer(seconds, gateway.reconnect, args=(guid,))
    timer.start()
    return timer


def test_a_resumed_start_waits_for_the_agent_and_asks_the_host_before_creating_the_volume_again(
        ctx, world, gateway, jobs):
    host, pool, driver, storage, vm, job_uuid = killed_start(ctx, world, gateway, jobs, m.CreateVolume)
    # The engine that ran the job is gone and so is the agent it held, reconnecting to the survivor.
    gateway.disconnect(host.guid)
    timer = back_after(gateway, host.guid, 0.3)
    job = jobs.run(job_uuid)
    timer.join()
    assert job.status == 1 and fresh(ctx, vm).state == "Running"
    assert [t for _g, t in gateway.calls()] == [m.CreateVolume, m.DeleteVolume, m.CreateVolume, m.StartVm]
    assert storage.volumes(pool.uuid) == {root(ctx, vm).uuid: GiB}
    assert driver.boot_count(vm.instance_name) == 1


def test_a_resumed_start_whose_agent_stays_away_fails_with_the_reason(ctx, world, gateway, jobs):
    host, pool, _driver, storage, vm, job_uuid = killed_start(ctx, world, gateway, jobs, m.CreateVolume)
    gateway.disconnect(host.guid)
    gateway.down_within = 0.5           # below the step's own wait (10 s): that one bounds it
    code, text = failure(jobs.run(job_uuid))
    assert code == 533, text
    assert ("creating the root volume on storage pool %s failed: the agent of host %s is not connected within "
            "10 s; CreateVolume may have been carried out before the engine restarted" % (pool.name, host.name)
            ) in text
    # Nothing was sent again; the volume goes back to be placed anew.
    assert gateway.calls() == [(host.guid, m.CreateVolume)] and len(storage.volumes(pool.uuid)) == 1
    assert (root(ctx, vm).state, fresh(ctx, vm).state) == ("Allocated", "Stopped")


def test_a_start_whose_answer_was_lost_with_the_server_holding_the_agent_asks_the_host_once_it_is_back(
        ctx, world, gateway, jobs):
    host = world.host()
    world.pool()
    driver, _storage = gateway.add(host.guid)
    vm = new_vm(ctx, world)
    gateway.lose_after[host.guid] = m.StartVm
    timer = back_after(gateway, host.guid, 0.3)
    job = start(ctx, jobs, vm)
    timer.join()
    assert job.status == 1 and fresh(ctx, vm).state == "Running"
    # The guest booted with the request whose answer was lost: the host said so, it was not sent again.
    assert [t for _g, t in gateway.calls()][-2:] == [m.StartVm, m.QueryVm]
    assert driver.boot_count(vm.instance_name) == 1


def test_a_resumed_start_on_a_simulator_that_lost_its_state_sends_the_steps_again(ctx, world, gateway, jobs):
    host, pool, first, _storage, vm, job_uuid = killed_start(ctx, world, gateway, jobs, m.StartVm)
    assert first.boot_count(vm.instance_name) == 1
    # An in-engine Simulator host taken over by another server: a new simulated agent, empty.
    survivor, storage = gateway.add(host.guid)
    gateway.log.clear()
    job = jobs.run(job_uuid)
    assert job.status == 1 and fresh(ctx, vm).state == "Running"
    # Its host knows no such guest: not done there, so the guest is started (once) on it.
    assert gateway.calls() == [(host.guid, m.QueryVm), (host.guid, m.StartVm)]
    assert survivor.boot_count(vm.instance_name) == 1
    assert storage.volumes(pool.uuid) == {}


def test_a_stop_killed_after_the_guest_stopped_is_not_sent_again(ctx, world, gateway, jobs):
    host = world.host()
    world.pool()
    driver, _storage = gateway.add(host.guid)
    vm = new_vm(ctx, world)
    assert start(ctx, jobs, vm).status == 1
    gateway.kill_after.add(m.StopVm)
    job_uuid = jobs.submit(ctx.user, "stopVirtualMachine", id=vm.uuid)
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    assert fresh(ctx, vm).state == "Stopping" and driver.query(vm.instance_name) == m.VmState.STOPPED
    gateway.log.clear()
    job = jobs.run(job_uuid)
    assert job.status == 1 and job.result["virtualmachine"]["state"] == "Stopped"
    assert gateway.calls() == [(host.guid, m.QueryVm)]
    assert (fresh(ctx, vm).state, fresh(ctx, vm).last_host_id) == ("Stopped", host.id)


def later(seconds, fn):
    timer = threading.Timer(seconds, fn)
    timer.start()
    return timer


@pytest.fixture
def quick_polls(monkeypatch):
    monkeypatch.setattr(vm_lifecycle, "VERDICT_POLL", 0.05)


def test_a_guest_that_may_run_on_a_silent_host_is_started_elsewhere_only_once_it_is_down(
        ctx, db, world, gateway, jobs, quick_polls):
    first, second = world.host(), world.host()     # the planner tries the lower id first
    world.pool()
    gateway.add(first.guid)
    second_driver, _storage = gateway.add(second.guid)
    gateway.cut_after_start.add(first.guid)
    first_id = first.id
    vm = new_vm(ctx, world)

    def judged_down():
        gateway.log.append("first host Down")
        with db.transaction() as s:
            s.get(Host, first_id).state = "Down"

    later(0.5, judged_down)
    assert start(ctx, jobs, vm).status == 1
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id) == ("Running", second.id)
    assert second_driver.query(vm.instance_name) == m.VmState.RUNNING
    assert gateway.log.index("first host Down") < gateway.log.index((second.guid, m.StartVm))


def test_a_silent_host_whose_agent_returns_stops_the_guest_before_it_starts_elsewhere(
        ctx, world, gateway, jobs, quick_polls):
    first, second = world.host(), world.host()
    world.pool()
    first_driver, _storage = gateway.add(first.guid)
    gateway.add(second.guid)
    gateway.cut_after_start.add(first.guid)
    vm = new_vm(ctx, world)
    later(0.5, lambda: gateway.unreachable.discard(first.guid))
    assert start(ctx, jobs, vm).status == 1
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id) == ("Running", second.id)
    assert first_driver.boot_count(vm.instance_name) == 1
    assert first_driver.query(vm.instance_name) != m.VmState.RUNNING
    assert gateway.log.index((first.guid, m.StopVm)) < gateway.log.index((second.guid, m.StartVm))


def test_without_a_verdict_on_the_silent_host_the_guest_is_not_started_elsewhere(
        ctx, world, gateway, jobs, quick_polls, monkeypatch):
    monkeypatch.setattr(vm_lifecycle, "CONNECT_WAIT", 0.0)
    gateway.down_within = 0.5
    first, second = world.host(), world.host()
    world.pool()
    gateway.add(first.guid)
    gateway.add(second.guid)
    gateway.cut_after_start.add(first.guid)
    vm = new_vm(ctx, world)
    code, text = failure(start(ctx, jobs, vm))
    assert code == 530
    assert text.startswith("Unable to start VM %s: host %s did not answer" % (vm.instance_name, first.name))
    assert "is not started on another host until the host's agent reconnects or the host is Down" in text
    assert (second.guid, m.StartVm) not in gateway.log
    vm = fresh(ctx, vm)
    # Stopped here, Running again as soon as the host reports the guest.
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Stopped", None, first.id)
    assert ctx.session.execute(select(Event).where(Event.resource_uuid == vm.uuid, Event.level == "ERROR")).first()


def test_a_start_never_sent_to_an_absent_agent_moves_on_at_once(ctx, world, gateway, jobs, monkeypatch):
    monkeypatch.setattr(vm_lifecycle, "_await_stopped", lambda *a: pytest.fail("waited for a verdict"))
    leaving, staying = world.host(), world.host()     # the planner tries the lower id first
    world.pool()
    gateway.add(leaving.guid)
    gateway.add(staying.guid)
    gateway.leave_after[leaving.guid] = m.CreateVolume
    vm = new_vm(ctx, world)
    assert start(ctx, jobs, vm).status == 1
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id) == ("Running", staying.id)
    assert (leaving.guid, m.CreateVolume) in gateway.log and (leaving.guid, m.StartVm) not in gateway.log


def test_an_unexpected_failure_does_not_leave_the_vm_starting(ctx, world, gateway, jobs):
    world.host()
    world.pool()
    gateway.broken = RuntimeError("the agent channel broke")
    vm = new_vm(ctx, world)
    code, text = failure(start(ctx, jobs, vm))
    assert (code, text) == (530, "the agent channel broke")
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id) == ("Stopped", None)


def test_stop_without_an_answer_needs_forced(ctx, world, gateway, jobs):
    host = world.host()
    world.pool()
    gateway.add(host.guid)
    vm = new_vm(ctx, world)
    assert start(ctx, jobs, vm).status == 1
    gateway.disconnect(host.guid)                # the host's agent went away
    code, text = failure(stop(ctx, jobs, vm))
    assert text.startswith("Failed to stop VM instance %s: the agent of host %s is not connected; retry, or pass "
                           "forced=true" % (vm.instance_name, host.name))
    assert fresh(ctx, vm).state == "Running"
    assert stop(ctx, jobs, vm, forced="true").status == 1
    vm = fresh(ctx, vm)
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Stopped", None, host.id)
    warnings = ctx.session.execute(select(Event).where(Event.resource_uuid == vm.uuid, Event.level == "WARN",
                                                       Event.type == "VM.STOP"))
    assert "without confirmation from host" in warnings.scalars().one().description


def test_expunge_deletes_the_volume_or_stays_destroyed(ctx, world, gateway, jobs):
    host = world.host()
    pool = world.pool()
    driver, storage = gateway.add(host.guid)
    vm = new_vm(ctx, world)
    assert start(ctx, jobs, vm).status == 1
    assert stop(ctx, jobs, vm).status == 1
    gateway.broken = ResourceUnavailable(
        "Host %s did not answer DeleteVolume: timeout" % host.guid)
    code, text = failure(jobs.call(ctx.user, "destroyVirtualMachine", id=vm.uuid, expunge="true"))
    assert "could not delete its root volume from storage pool %s" % pool.name in text
    assert fresh(ctx, vm).state == "Destroyed"
    gateway.broken = None
    assert jobs.call(ctx.user, "destroyVirtualMachine", id=vm.uuid, expunge="true").status == 1
    vm = fresh(ctx, vm)
    assert vm.state == "Expunging" and vm.removed is not None
    assert storage.volumes(pool.uuid) == {}
    volume = root(ctx, vm)
    assert volume.removed is not None and volume.state == "Expunged"
