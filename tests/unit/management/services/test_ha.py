"""High availability: hosts reserved by `ha.tag`, hosts declared Dead and their guests fenced
and restarted elsewhere, guests that crashed restarted, and a host back from the dead
stopping its stale copies. Jobs run through the real executor against in-process agents."""

import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from stackwright.agent.storage import simulator as simulated_storage
from stackwright.management.commands.hosts import render_hosts
from stackwright.management.context import Context
from stackwright.management.persistence.models import Alert, ConfigValue, Event, Host, VmInstance, utcnow
from stackwright.protocol import messages as m
from tests.support.gateway import EngineKilled
from tests.support.waiting import wait_for
from tests.unit.management.services.job_harness import failure
from tests.unit.management.services.test_vm_lifecycle import fresh, new_vm, start
from tests.unit.management.services.test_vms import LONG_AGO, World


@pytest.fixture
def ctx(job_ctx):
    return job_ctx


@pytest.fixture
def world(ctx):
    return World(ctx)


@pytest.fixture
def ha_tag(ctx, jobs):
    """ha.tag set to `ha-only` for the test, removed afterwards."""
    def set_tag(value="ha-only"):
        ctx.session.add(ConfigValue(name="ha.tag", scope="global", resource_id=0, value=value))
        ctx.session.commit()
        jobs.engine.settings.invalidate()
        ctx.settings.invalidate()
        return value
    yield set_tag
    ctx.session.rollback()
    ctx.session.execute(ConfigValue.__table__.delete().where(ConfigValue.name == "ha.tag"))
    ctx.session.commit()
    jobs.engine.settings.invalidate()


HOST_PARAMS = ("id", "zoneid", "podid", "clusterid", "name", "type", "state", "resourcestate", "hypervisor",
               "keyword", "page", "pagesize", "hahost", "outofbandmanagementenabled")


def hosts_listed(ctx, **given):
    p = SimpleNamespace(**{**dict.fromkeys(HOST_PARAMS), **given})
    return [(v["name"], v["hahost"]) for v in render_hosts(ctx, ctx.hosts.list_page(p).rows)]


def test_ordinary_deploys_never_land_on_ha_hosts(ctx, world, gateway, jobs, ha_tag):
    reserved = world.host(tags="ha-only,ssd")
    world.pool()
    gateway.add(reserved.guid)
    ctx.session.commit()
    ha_tag()
    vm = new_vm(ctx, world)
    code, text = failure(start(ctx, jobs, vm))
    assert code == 533 and "carry the HA tag ha-only (ha.tag): they take only HA restarts" in text
    plain = world.host()
    gateway.add(plain.guid)
    ctx.session.commit()
    assert start(ctx, jobs, vm).status == 1
    assert fresh(ctx, vm).host_id == plain.id
    # An administrator may still place a guest there.
    other = new_vm(ctx, world)
    assert start(ctx, jobs, other, hostid=reserved.uuid).status == 1
    assert fresh(ctx, other).host_id == reserved.id


def test_list_hosts_hahost(ctx, world, ha_tag):
    names = [world.host(tags="ha-only").name, world.host(tags="ssd").name, world.host().name]
    ctx.session.commit()
    assert all(ha is False for _n, ha in hosts_listed(ctx, clusterid=world.cluster))
    assert hosts_listed(ctx, clusterid=world.cluster, hahost=True) == []
    ha_tag()
    assert hosts_listed(ctx, clusterid=world.cluster, hahost=True) == [(names[0], True)]
    assert hosts_listed(ctx, clusterid=world.cluster, hahost=False) == [(names[1], False), (names[2], False)]
    assert dict(hosts_listed(ctx, clusterid=world.cluster))[names[0]] is True


# --- a host declared Dead ------------------------------------------------------------------


def ha_vm(ctx, world, ha=True):
    vm = new_vm(ctx, world)
    vm.ha_enabled = ha
    ctx.session.commit()
    return vm


def went_down(ctx, jobs, host):
    """The heartbeat monitor gives up on `host`: what the registration service does then."""
    before = len(jobs.submitted)
    with jobs.db.transaction() as s:
        agent = Context(jobs.engine, s, None, "agent")
        agent.hosts.agent_lost(s.get(Host, host.id), "Down")
    agent.run_after_commit()
    return jobs.submitted[before:]


def run_all(jobs, uuids):
    """Run jobs and the jobs they give the workers, to the end; the rows of every job run."""
    done = []
    queue = list(uuids)
    while queue:
        before = len(jobs.submitted)
        done.append(jobs.run(queue.pop(0)))
        queue.extend(jobs.submitted[before:])
    return done


def watched(ctx, jobs, host, job_uuid):
    """Run an investigation that keeps watching a silent host: once its first verdict is
    recorded the host's agent registers again (Up), which ends the watch. The first verdict."""
    runner = threading.Thread(target=jobs.run, args=(job_uuid,))
    runner.start()
    try:
        wait_for("the first verdict", lambda: len(jobs.job(job_uuid).step_results or ()) >= 2, timeout=30)
        with jobs.db.transaction() as s:
            s.get(Host, host.id).state = "Up"       # what a registration does (hosts.agent_connected)
    finally:
        runner.join(30)
    job = jobs.job(job_uuid)
    assert job.status == 1 and job.result == {"verdict": "Alive", "restarted": []}, job.result
    return job.step_results[0]["value"]


@pytest.fixture(autouse=True)
def quick_watch(ctx, jobs):
    """Silent hosts found alive are looked at again every second."""
    ctx.session.add(ConfigValue(name="investigate.retry.interval", scope="global", resource_id=0, value="1"))
    ctx.session.commit()
    jobs.engine.settings.invalidate()
    yield
    ctx.session.rollback()
    ctx.session.execute(ConfigValue.__table__.delete().where(ConfigValue.name == "investigate.retry.interval"))
    ctx.session.commit()
    jobs.engine.settings.invalidate()


def settled(ctx, *vms):
    """The VMs' last change long before any report (reports newer than a change are trusted)."""
    for vm in vms:
        ctx.session.get(VmInstance, vm.id, populate_existing=True).state_changed = LONG_AGO
    ctx.session.commit()


def alerts_of(ctx, type_code):
    ctx.session.commit()
    rows = ctx.session.execute(select(Alert.subject).where(Alert.type == type_code).order_by(Alert.id)).scalars().all()
    ctx.session.commit()
    return rows


def events_of(ctx, vm, type_name):
    ctx.session.commit()
    rows = ctx.session.execute(select(Event.description).where(
        Event.resource_uuid == vm.uuid, Event.type == type_name).order_by(Event.id)).scalars().all()
    ctx.session.commit()
    return rows


def test_a_dead_host_is_fenced_and_its_ha_guest_restarted_in_its_cluster(ctx, world, gateway, jobs, ha_tag):
    dead, other, spare = world.host(), world.host(), world.host(tags="ha-only")
    elsewhere = world.host(cluster=world.new_cluster())
    world.pool()
    drivers = {h.id: gateway.add(h.guid)[0] for h in (dead, other, spare, elsewhere)}
    ctx.session.commit()
    ha_tag()
    protected, plain = ha_vm(ctx, world), ha_vm(ctx, world, ha=False)
    for vm in (protected, plain):
        assert start(ctx, jobs, vm, hostid=dead.uuid).status == 1
    investigation, = went_down(ctx, jobs, dead)
    assert any("Host is down, name: %s" % dead.name in a for a in alerts_of(ctx, 7))
    done = run_all(jobs, [investigation])
    assert [j.command for j in done] == ["HaInvestigateHost", "HaRestartVm"]
    assert done[0].result == {"verdict": "Dead", "restarted": [protected.uuid]}
    assert done[1].status == 1 and done[1].result == {"restarted": True}
    vm = fresh(ctx, protected)
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Running", spare.id, spare.id)    # the ha.tag host first
    assert drivers[spare.id].query(vm.instance_name) == m.VmState.RUNNING
    left = fresh(ctx, plain)
    assert (left.state, left.host_id, left.last_host_id) == ("Stopped", None, dead.id)   # capacity released
    assert any(d.startswith("HA restarted VM %s on host %s" % (vm.instance_name, spare.name))
               for d in events_of(ctx, vm, "VM.START"))
    assert "stopped: its host %s was declared Dead" % dead.name in events_of(ctx, left, "VM.STOP")[-1]
    uservm = alerts_of(ctx, 8)
    assert any("is being restarted by HA" in a for a in uservm)
    assert any("HA restarted VM %s" % vm.instance_name in a for a in uservm)
    # The guest was started once, and never on the Dead host again.
    assert [g for g, r in gateway.calls(m.StartVm)].count(spare.guid) == 1


def test_a_restart_that_finds_no_room_is_retried_then_given_up(ctx, world, gateway, jobs):
    dead, small = world.host(), world.host(memory=256 * 1024 * 1024)
    world.pool()
    gateway.add(dead.guid)
    gateway.add(small.guid)
    ctx.session.commit()
    for name, value in (("max.retries", "1"), ("restart.retry.interval", "1")):
        ctx.session.add(ConfigValue(name=name, scope="global", resource_id=0, value=value))
    ctx.session.commit()
    jobs.engine.settings.invalidate()
    try:
        vm = ha_vm(ctx, world)
        assert start(ctx, jobs, vm, hostid=dead.uuid).status == 1
        done = run_all(jobs, went_down(ctx, jobs, dead))
        assert done[-1].command == "HaRestartVm" and done[-1].result == {"restarted": False}
        assert fresh(ctx, vm).state == "Stopped"
        failed = [a for a in alerts_of(ctx, 8) if a.startswith("Unable to restart VM %s" % vm.instance_name)]
        assert len(failed) == 1 and "after 2 attempt(s)" in failed[0]
    finally:
        ctx.session.execute(ConfigValue.__table__.delete().where(
            ConfigValue.name.in_(("max.retries", "restart.retry.interval"))))
        ctx.session.commit()
        jobs.engine.settings.invalidate()


def test_a_simulator_host_kept_alive_is_not_fenced(ctx, world, gateway, jobs):
    host = world.host()
    world.pool()
    gateway.add(host.guid)
    ctx.session.add(ConfigValue(name="simulator.ha.keep.alive", scope="cluster", resource_id=world.cluster.id,
                                value="true"))
    ctx.session.commit()
    vm = ha_vm(ctx, world)
    assert start(ctx, jobs, vm).status == 1
    investigation, = went_down(ctx, jobs, host)
    assert watched(ctx, jobs, host, investigation) == "Alive"
    assert fresh(ctx, vm).state == "Running" and fresh(ctx, vm).host_id == host.id
    alive = [a for a in alerts_of(ctx, 7) if host.name in a and "is alive (investigation)" in a]
    assert len(alive) == 1                  # watched every second, alerted once


def test_an_engine_killed_during_the_restart_finishes_it_once(ctx, world, gateway, jobs):
    dead, other = world.host(), world.host()
    world.pool()
    gateway.add(dead.guid)
    driver, _storage = gateway.add(other.guid)
    ctx.session.commit()
    vm = ha_vm(ctx, world)
    assert start(ctx, jobs, vm, hostid=dead.uuid).status == 1
    investigation, = went_down(ctx, jobs, dead)
    before = len(jobs.submitted)
    assert jobs.run(investigation).result["verdict"] == "Dead"
    restart_job, = jobs.submitted[before:]
    gateway.kill_after.add(m.StartVm)
    with pytest.raises(EngineKilled):
        jobs.run(restart_job)
    gateway.kill_after.clear()
    assert jobs.run(restart_job).status == 1          # the engine's next run of the pending job
    assert driver.boot_count(vm.instance_name) == 1
    assert fresh(ctx, vm).host_id == other.id


# --- a guest that crashed, a host that returns ---------------------------------------------------


def test_a_crashed_ha_guest_is_restarted_on_its_host(ctx, world, gateway, jobs):
    host, other = world.host(), world.host()
    world.pool()
    driver, _storage = gateway.add(host.guid)
    gateway.add(other.guid)
    ctx.session.commit()
    vm, plain = ha_vm(ctx, world), ha_vm(ctx, world, ha=False)
    for guest in (vm, plain):
        assert start(ctx, jobs, guest, hostid=host.uuid).status == 1
    settled(ctx, vm, plain)
    before = len(jobs.submitted)
    with jobs.db.transaction() as s:
        agent = Context(jobs.engine, s, None, "agent")
        agent.vms.reconcile(s.get(Host, host.id), {}, reported_at=utcnow())     # both domains gone
    agent.run_after_commit()
    restart_job, = jobs.submitted[before:]
    assert fresh(ctx, plain).state == "Stopped"
    assert any("VM %s" % plain.instance_name in a and "stopped unexpectedly" in a for a in alerts_of(ctx, 8))
    assert jobs.run(restart_job).status == 1
    row = fresh(ctx, vm)
    assert (row.state, row.host_id) == ("Running", host.id)
    assert fresh(ctx, plain).state == "Stopped"           # not HA-enabled: left Stopped
    # A second crash within time.between.failures (3600 s) of the restart: not restarted again.
    settled(ctx, vm)
    before = len(jobs.submitted)
    with jobs.db.transaction() as s:
        agent = Context(jobs.engine, s, None, "agent")
        agent.vms.reconcile(s.get(Host, host.id), {}, reported_at=utcnow())
    agent.run_after_commit()
    again, = jobs.submitted[before:]
    assert jobs.run(again).result == {"restarted": False}
    assert fresh(ctx, vm).state == "Stopped"
    assert any("failed again less than 3600 s (time.between.failures)" in a for a in alerts_of(ctx, 8))


def test_a_host_back_from_the_dead_stops_its_stale_copy(ctx, world, gateway, jobs):
    dead, other = world.host(), world.host()
    world.pool()
    old_driver, _storage = gateway.add(dead.guid)
    gateway.add(other.guid)
    ctx.session.commit()
    vm = ha_vm(ctx, world)
    assert start(ctx, jobs, vm, hostid=dead.uuid).status == 1
    run_all(jobs, went_down(ctx, jobs, dead))
    assert fresh(ctx, vm).host_id == other.id
    # The old host never stopped its copy (a cut link): it comes back and reports it.
    assert old_driver.query(vm.instance_name) == m.VmState.RUNNING
    settled(ctx, vm)
    before = len(jobs.submitted)
    with jobs.db.transaction() as s:
        agent = Context(jobs.engine, s, None, "agent")
        host = s.get(Host, dead.id)
        agent.hosts.agent_pinged(host)
        agent.vms.reconcile(host, {vm.instance_name: "Running"}, reported_at=utcnow())
    agent.run_after_commit()
    stop_job, = jobs.submitted[before:]
    assert jobs.run(stop_job).status == 1
    assert old_driver.query(vm.instance_name) == m.VmState.STOPPED
    row = fresh(ctx, vm)
    assert (row.state, row.host_id) == ("Running", other.id)
    assert any("stale copy" in d for d in events_of(ctx, vm, "VM.STOP"))


# --- KVM hosts: the heartbeat on their pools decides --------------------------------------------


@pytest.fixture
def kvm(ctx, world, gateway, jobs):
    """A KVM cluster of three hosts on one NFS pool, an HA guest on the first, and a one-second
    activity window; the simulated pool keeps heartbeats the way an NFS export does."""
    cluster = world.new_cluster(hypervisor="KVM")
    hosts = [world.host(cluster=cluster) for _n in range(3)]
    pool = world.pool(cluster=cluster)
    storages = [gateway.add(h.guid)[1] for h in hosts]
    ctx.session.add(ConfigValue(name="kvm.ha.activity.check.interval", scope="global", resource_id=0, value="1"))
    ctx.session.commit()
    jobs.engine.settings.invalidate()
    vm = ha_vm(ctx, world)
    vm.hypervisor = "KVM"
    ctx.session.commit()
    assert start(ctx, jobs, vm, hostid=hosts[0].uuid).status == 1
    yield SimpleNamespace(hosts=hosts, pool=pool, storages=storages, vm=vm,
                          spec=m.PoolSpec(uuid=pool.uuid, url=pool.url, mode="auto"))
    ctx.session.rollback()
    ctx.session.execute(ConfigValue.__table__.delete().where(ConfigValue.name == "kvm.ha.activity.check.interval"))
    ctx.session.commit()
    jobs.engine.settings.invalidate()


def beat(kvm, seconds_ago=0.0):
    """The silent host's heartbeat service wrote on the pool `seconds_ago`."""
    kvm.storages[0].write_heartbeat(kvm.spec, kvm.hosts[0].guid)
    simulated_storage._HEARTBEATS[(kvm.spec.uuid, kvm.hosts[0].guid)] -= seconds_ago


def test_a_kvm_host_whose_heartbeat_is_fresh_is_alive(ctx, jobs, gateway, kvm):
    beat(kvm, seconds_ago=5)
    investigation, = went_down(ctx, jobs, kvm.hosts[0])
    assert watched(ctx, jobs, kvm.hosts[0], investigation) == "Alive"
    assert fresh(ctx, kvm.vm).host_id == kvm.hosts[0].id
    checks = gateway.calls(m.CheckHeartbeat)
    assert checks and set(checks) == {(kvm.hosts[1].guid, m.CheckHeartbeat)}     # the first other host looked


def test_a_host_found_alive_that_goes_down_again_is_not_investigated_twice(ctx, jobs, gateway, kvm):
    beat(kvm, seconds_ago=5)
    investigation, = went_down(ctx, jobs, kvm.hosts[0])
    with jobs.db.transaction() as s:
        s.get(Host, kvm.hosts[0].id).state = "Alert"        # what the Alive verdict does
    down_alerts = len(alerts_of(ctx, 7))
    assert went_down(ctx, jobs, kvm.hosts[0]) == []
    assert len(alerts_of(ctx, 7)) == down_alerts
    assert watched(ctx, jobs, kvm.hosts[0], investigation) == "Alive"


def test_a_kvm_host_whose_heartbeat_is_stale_is_dead_and_fenced(ctx, jobs, gateway, kvm):
    beat(kvm, seconds_ago=600)
    done = run_all(jobs, went_down(ctx, jobs, kvm.hosts[0]))
    assert [j.command for j in done] == ["HaInvestigateHost", "HaRestartVm"]
    assert done[0].result["verdict"] == "Dead"
    row = fresh(ctx, kvm.vm)
    assert row.state == "Running" and row.host_id in (kvm.hosts[1].id, kvm.hosts[2].id)


def test_a_kvm_host_that_never_wrote_a_heartbeat_is_unknown(ctx, jobs, gateway, kvm):
    simulated_storage._HEARTBEATS.pop((kvm.spec.uuid, kvm.hosts[0].guid), None)
    investigation, = went_down(ctx, jobs, kvm.hosts[0])
    assert watched(ctx, jobs, kvm.hosts[0], investigation) == "Unknown"
    assert fresh(ctx, kvm.vm).host_id == kvm.hosts[0].id
    assert any("no other host could tell whether it is alive" in a for a in alerts_of(ctx, 7))


def test_a_kvm_host_nobody_can_look_at_is_unknown(ctx, jobs, gateway, kvm):
    beat(kvm, seconds_ago=600)
    for other in kvm.hosts[1:]:
        gateway.disconnect(other.guid)
    investigation, = went_down(ctx, jobs, kvm.hosts[0])
    assert watched(ctx, jobs, kvm.hosts[0], investigation) == "Unknown"
    assert fresh(ctx, kvm.vm).state == "Running"
