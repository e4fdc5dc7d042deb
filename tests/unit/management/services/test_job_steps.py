"""The job executor's recorded steps: what commits together, what a killed job does on its
next run, and which requests reach the agents (recording gateway)."""

import pytest
from sqlalchemy import select

from stackwright.management.errors import CloudRuntimeError, ResourceUnavailable
from stackwright.management.persistence.models import Event, Host, StoragePool, Zone
from stackwright.management.services import system_jobs
from stackwright.management.services.gateway import HostRef
from stackwright.management.services.pool_attach import ATTACH_JOB
from stackwright.management.services.steps import AgentStep, DbStep
from stackwright.protocol import messages as m
from tests.support.gateway import EngineKilled
from tests.unit.management.services.job_harness import failure
from tests.unit.management.services.test_vms import World


@pytest.fixture
def ctx(job_ctx):
    return job_ctx


@pytest.fixture
def world(ctx):
    world = World(ctx)
    ctx.session.commit()
    return world


@pytest.fixture
def kind(monkeypatch):
    """Register a system job of the test's own: kind(fn) -> its name."""
    def register(fn, name="testSteps"):
        monkeypatch.setitem(system_jobs.SYSTEM_JOBS, name, fn)
        return name

    return register


def zone_name(ctx, zone_id):
    ctx.session.commit()
    name = ctx.session.get(Zone, zone_id, populate_existing=True).name
    ctx.session.commit()
    return name


def rename(ctx, zone_id, name):
    ctx.session.get(Zone, zone_id).name = name
    return name


def rename_then_fail(ctx, zone_id, name):
    rename(ctx, zone_id, name)
    ctx.session.flush()
    raise CloudRuntimeError(f"refusing {name}")


def rename_then_crash(ctx, zone_id, name):
    rename(ctx, zone_id, name)
    ctx.session.flush()
    raise KeyError(name)


def test_a_database_step_that_fails_leaves_nothing_and_the_job_compensates(ctx, world, jobs, kind):
    zone_id, before = world.zone.id, world.zone.name

    def steps(ctx):
        try:
            yield DbStep(rename_then_fail, zone_id, "half")
        except CloudRuntimeError as e:
            yield DbStep(ctx_event, f"compensated: {e.text}")
            raise

    name = kind(steps)
    code, text = failure(jobs.call(ctx.user, name))
    assert (code, text) == (530, "refusing half")
    assert zone_name(ctx, zone_id) == before
    assert ctx.session.execute(select(Event).where(Event.description == "compensated: refusing half")).first()


def ctx_event(ctx, text):
    ctx.event("TEST", text)


def test_an_unexpected_failure_in_a_step_is_an_internal_error_with_nothing_written(ctx, world, jobs, kind):
    zone_id, before = world.zone.id, world.zone.name

    def steps(ctx):
        yield DbStep(rename, zone_id, "first")
        yield DbStep(rename_then_crash, zone_id, "second")

    job = jobs.call(ctx.user, kind(steps))
    assert failure(job) == (530, "'second'")
    # The first step committed, the second did not: each step is one transaction.
    assert zone_name(ctx, zone_id) == "first" != before
    assert len(job.step_results) == 2 and job.step_results[1]["error"] is None


def test_the_last_step_the_result_and_the_final_status_commit_together(ctx, world, jobs, kind):
    zone_id = world.zone.id

    def steps(ctx):
        yield DbStep(rename, zone_id, "renamed")
        return {"zone": (yield DbStep(rename, zone_id, "final"))}

    job = jobs.call(ctx.user, kind(steps))
    assert (job.status, job.result, job.step) == (1, {"zone": "final"}, 2)


def test_a_killed_job_replays_what_it_recorded_and_runs_no_database_step_twice(ctx, world, gateway, jobs, kind):
    host = world.host()
    ctx.session.commit()
    gateway.add(host.guid)
    ref = HostRef(host.guid, host.name)
    ran = []

    def counted(ctx, label):
        ran.append(label)
        return label

    def steps(ctx):
        first = yield DbStep(counted, "before")
        failed = ""
        try:
            yield AgentStep(ref, m.QueryVm(name="nobody"), 10)
        except ResourceUnavailable as e:
            failed = e.text
        answer = yield AgentStep(ref, m.GetHostStats(), 10)
        last = yield DbStep(counted, "after")
        return {"steps": [first, failed.startswith(f"Host {host.guid} failed QueryVm"), last,
                          type(answer).__name__]}

    gateway.kill_after.add(m.GetHostStats)
    job_uuid = jobs.submit(ctx.user, kind(steps))
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    killed = jobs.job(job_uuid)
    # The failed QueryVm was recorded with the next step; the GetHostStats answer never was.
    assert (killed.status, killed.step, [o.get("error") for o in killed.step_results]) == (
        0, 2, [None, "ResourceUnavailable"])
    job = jobs.run(job_uuid)
    assert job.status == 1 and job.result == {"steps": ["before", True, "after", "HostStatsAnswer"]}
    assert ran == ["before", "after"]
    # GetHostStats has no way to settle it: it is sent again; QueryVm is not.
    assert [t for _g, t in gateway.calls()] == [m.QueryVm, m.GetHostStats, m.GetHostStats]


def test_a_pool_attach_killed_after_the_host_attached_it_asks_the_host_instead_of_attaching_again(
        ctx, world, gateway, jobs):
    kvm = world.new_cluster(hypervisor="KVM")
    host = world.host(cluster=kvm)
    pool = world.pool(cluster=kvm, state="Initialized", size=0)
    ctx.session.commit()
    gateway.add(host.guid, storage_bytes=7 << 30)
    gateway.kill_after.add(m.AttachPool)
    job_uuid = jobs.submit(ctx.user, ATTACH_JOB, pool=pool.uuid)
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    assert jobs.job(job_uuid).status == 0
    job = jobs.run(job_uuid)
    assert job.status == 1
    assert gateway.calls() == [(host.guid, m.AttachPool), (host.guid, m.GetPoolStats)]
    ctx.session.commit()
    pool = ctx.session.get(StoragePool, pool.id, populate_existing=True)
    assert (pool.state, pool.capacity_bytes) == ("Up", 7 << 30)


def test_a_pool_attach_skips_hosts_whose_agent_is_away_and_records_refusals(ctx, world, gateway, jobs):
    kvm = world.new_cluster(hypervisor="KVM")
    away, refusing = world.host(cluster=kvm), world.host(cluster=kvm)
    pool = world.pool(cluster=kvm, state="Initialized", size=0)
    ctx.session.commit()
    gateway.add(refusing.guid, storage_bytes=1)
    gateway.broken = None
    gateway.unreachable.add(refusing.guid)
    job = jobs.call(ctx.user, ATTACH_JOB, pool=pool.uuid)
    assert job.status == 1
    ctx.session.commit()
    pool = ctx.session.get(StoragePool, pool.id, populate_existing=True)
    assert pool.state == "Initialized" and "did not answer AttachPool" in pool.status_message
    assert gateway.calls() == []            # nothing reached either host
    assert ctx.session.get(Host, away.id) is not None


def test_a_failed_step_is_replayed_as_a_failure_after_a_kill(ctx, world, gateway, jobs, kind):
    """The failure of a database step is recorded with the compensating step after it, so a
    job killed later takes the same path again on its next run."""
    host = world.host()
    ctx.session.commit()
    gateway.add(host.guid)
    ref = HostRef(host.guid, host.name)
    zone_id, before = world.zone.id, world.zone.name
    paths = []

    def steps(ctx):
        path = []
        paths.append(path)
        try:
            yield DbStep(rename_then_fail, zone_id, "half")
            path.append("no failure")
        except CloudRuntimeError as e:
            path.append("compensated")
            yield DbStep(ctx_event, f"compensated once: {e.text}")
        yield AgentStep(ref, m.GetHostStats(), 10)
        return {"path": path}

    gateway.kill_after.add(m.GetHostStats)
    job_uuid = jobs.submit(ctx.user, kind(steps))
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    assert [o.get("error") for o in jobs.job(job_uuid).step_results] == ["CloudRuntimeError", None]
    job = jobs.run(job_uuid)
    assert job.status == 1 and job.result == {"path": ["compensated"]}
    assert paths == [["compensated"], ["compensated"]]      # the first run's, then the replay's
    assert zone_name(ctx, zone_id) == before
    events = ctx.session.execute(select(Event).where(Event.description == "compensated once: refusing half"))
    assert len(events.all()) == 1
