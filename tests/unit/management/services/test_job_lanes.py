"""Job lanes: commands given threads of their own (HA work on `ha.workers` threads) run at most
that many at once, and never hold the workers of other jobs while they wait."""

import threading

import pytest

from stackwright.management.api.execute import ApiJobs
from stackwright.management.persistence.models import AsyncJob
from stackwright.management.services import system_jobs
from stackwright.management.services.jobs import JobExecutor
from stackwright.management.services.steps import WaitStep
from tests.support.waiting import wait_for
from tests.unit.management.services.conftest import root_admin

GATE = threading.Event()
ACTIVE: list[str] = []
MOST = [0]
LOCK = threading.Lock()


def _hold(waiter, label):
    with LOCK:
        ACTIVE.append(label)
        MOST[0] = max(MOST[0], len(ACTIVE))
    try:
        GATE.wait(30)
    finally:
        with LOCK:
            ACTIVE.remove(label)


def held_job(ctx, label):
    yield WaitStep(_hold, label)
    return {"label": label}


def quick_job(ctx, label):
    return {"label": label}
    yield  # pragma: no cover  (a generator of no step)


@pytest.fixture
def executor(db, jobs, monkeypatch):
    monkeypatch.setitem(system_jobs.SYSTEM_JOBS, "testHeld", held_job)
    monkeypatch.setitem(system_jobs.SYSTEM_JOBS, "testQuick", quick_job)
    made = []

    def make(workers):
        made.append(JobExecutor(jobs.engine, ApiJobs(jobs.engine), workers=workers))
        return made[-1]

    GATE.clear()
    yield make
    GATE.set()
    for executor in made:
        executor.stop()


def queued(db, user, command, label):
    with db.transaction() as s:
        job = AsyncJob(command=command, cmd_class=command, params={"label": label}, user_id=user.id,
                       account_id=user.account_id, instance_type="Host", instance_uuid=label)
        s.add(job)
        s.flush()
        return job.uuid


def test_a_lane_runs_at_most_its_workers_and_leaves_the_other_workers_free(db, jobs, executor):
    with db.transaction() as s:
        user = root_admin(s)
        s.expunge(user)
    executor = executor(1)
    executor.lane("ha-worker", 2, {"testHeld"})
    executor.start()
    held = [queued(db, user, "testHeld", f"held-{i}") for i in range(3)]
    for job_uuid in held:
        executor.submit(job_uuid, "testHeld")
    wait_for("two held jobs", lambda: len(ACTIVE) == 2, timeout=20)
    # The general worker is free while both lane threads wait.
    quick = queued(db, user, "testQuick", "quick")
    executor.submit(quick)
    wait_for("the quick job", lambda: jobs.job(quick).status == 1, timeout=20)
    assert len(ACTIVE) == 2 and jobs.job(held[2]).status == 0       # the third waits for a lane thread
    GATE.set()
    wait_for("the held jobs", lambda: all(jobs.job(u).status == 1 for u in held), timeout=20)
    assert MOST[0] == 2


def test_jobs_known_by_uuid_only_go_to_the_lane_of_their_command(db, jobs, executor):
    with db.transaction() as s:
        user = root_admin(s)
        s.expunge(user)
    executor = executor(0)                                          # no general worker at all
    executor.lane("ha-worker", 1, {"testHeld"})
    executor.start()
    job_uuid = queued(db, user, "testHeld", "resumed")
    GATE.set()
    executor.resubmit([job_uuid])                                  # as after a restart or a take-over
    wait_for("the resumed job", lambda: jobs.job(job_uuid).status == 1, timeout=20)
