"""Agent steps that may have been carried out already (the job resumes after its engine
stopped): the host's agent is waited for, then asked, before anything is sent again."""

import pytest

from stackwright.management.services import system_jobs
from stackwright.management.services.gateway import HostRef
from stackwright.management.services.steps import AgentStep, settle_guest
from stackwright.protocol import messages as m
from tests.support.gateway import EngineKilled
from tests.unit.management.services.test_vm_lifecycle import back_after
from tests.unit.management.services.test_vms import World


@pytest.fixture
def world(job_ctx):
    world = World(job_ctx)
    job_ctx.session.commit()
    return world


@pytest.mark.parametrize("away", [0.4, 3.0])
def test_a_resumed_agent_step_waits_for_the_agent_as_long_as_a_silent_host_stays_not_down(
        job_ctx, world, gateway, jobs, monkeypatch, away):
    """A step that may have been carried out waits for its host's agent beyond the step's own
    wait (the agent is moving to another server), up to the time a silent host takes to be
    Down; past it the job fails and says why."""
    host = world.host()
    job_ctx.session.commit()
    gateway.add(host.guid)
    ref = HostRef(host.guid, host.name)

    def steps(ctx):
        answer = yield AgentStep(ref, m.StartVm(spec=m.VmSpec(name="i-9-VM", uuid="9", vcpus=1, cpu_mhz=500, memory_mb=64)), 10,
                                 settle=settle_guest("i-9-VM", m.VmState.RUNNING), connect_wait=0.1)
        return {"state": answer.state.value}

    gateway.kill_after.add(m.StartVm)
    monkeypatch.setitem(system_jobs.SYSTEM_JOBS, "testResumedStep", steps)
    job_uuid = jobs.submit(job_ctx.user, "testResumedStep")
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    gateway.disconnect(host.guid)
    timer = back_after(gateway, host.guid, away)
    gateway.down_within = 1.0
    try:
        job = jobs.run(job_uuid)
    finally:
        timer.cancel()
    if away < gateway.down_within:
        assert (job.status, job.result) == (1, {"state": "Running"})
        assert gateway.calls() == [(host.guid, m.StartVm), (host.guid, m.QueryVm)]   # not started twice
    else:
        assert job.status == 2 and ("the agent of host %s is not connected within 1 s; StartVm may have been "
                                    "carried out before the engine restarted" % host.name) in job.result["errortext"]
        assert gateway.calls() == [(host.guid, m.StartVm)]
