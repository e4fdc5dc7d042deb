"""Over-provisioning as the admin guide describes it, through start jobs run against the
agent's real simulator hypervisor behind a recording gateway: a cluster's memory ratio lets
a host run more guests than its memory, each guest keeps the ratios it was started with,
and a host that is not Up counts nowhere.

The executor commits each step, so this module works on its own database and each test
builds its own zone.
"""

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from stackwright.management.commands.hosts import render_hosts
from stackwright.management.context import Context
from stackwright.management.persistence.models import Host, Volume
from stackwright.management.services.capacity import CPU, MEMORY
from stackwright.management.services.placement import GiB
from stackwright.management.services.vm_lifecycle import _guest_spec
from tests.support.gateway import RecordingGateway
from tests.unit.management.services.conftest import root_admin
from tests.unit.management.services.job_harness import JobHarness, failure
from tests.unit.management.services.test_vms import World

MiB = 1024 * 1024


@pytest.fixture
def gateway():
    return RecordingGateway()


@pytest.fixture
def jobs(db, gateway):
    return JobHarness(db, gateway)


@pytest.fixture
def ctx(db, jobs):
    # The global settings are read before the test's session takes SQLite's write lock.
    jobs.engine.settings.load()
    session = db.session()
    try:
        yield Context(jobs.engine, session, user=root_admin(session))
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def world(ctx):
    return World(ctx)


def new_vm(ctx, world, memory):
    vm = world.vm(None, state="Stopped", memory=memory)
    ctx.session.add(Volume(name="ROOT-%d" % vm.id, vm_id=vm.id, zone_id=world.zone.id, account_id=world.account.id,
                           size_bytes=GiB, format="qcow2", state="Allocated"))
    ctx.session.commit()
    return vm


def call(ctx, jobs, command, vm):
    """Run `command` on `vm` as a job; the test's own transaction is ended first (on SQLite it
    holds the write lock) and after."""
    user, uuid = SimpleNamespace(id=ctx.user.id, account_id=ctx.user.account_id), vm.uuid
    ctx.session.commit()
    job = jobs.call(user, command, id=uuid)
    ctx.session.commit()
    ctx.session.expire_all()
    return job


def memory_row(ctx, cluster):
    rows = {r["type"]: r for r in ctx.capacity.rows(cluster=cluster)}
    ctx.session.commit()
    return rows[MEMORY]["capacityused"], rows[MEMORY]["capacitytotal"]


def guide_example(ctx, world, gateway, memory_ratio="2"):
    """A 2 GiB host (the simulator's memory too) in a cluster with memory ratio 2, a pool."""
    cluster = world.new_cluster(memory_ratio=memory_ratio)
    host = world.host(cluster, cpus=2, speed=1000, memory=2 * GiB)
    world.pool(cluster)
    driver, _storage = gateway.add(host.guid, memory_mb=2048)
    ctx.session.commit()
    return cluster, host, driver


def test_the_guides_example_three_guests_of_1_gib_on_2_gib_at_ratio_2(ctx, world, gateway, jobs):
    cluster, host, driver = guide_example(ctx, world, gateway)
    assert memory_row(ctx, cluster) == (0, 4 * GiB)
    vms = [new_vm(ctx, world, 1024) for _unused in range(3)]
    for vm in vms:
        assert call(ctx, jobs, "startVirtualMachine", vm).status == 1
    for vm in vms:
        ctx.session.refresh(vm)
        assert vm.state == "Running" and vm.host_id == host.id
        assert (vm.details["cpuOvercommitRatio"], vm.details["memoryOvercommitRatio"]) == ("1.0", "2.0")
        spec = _guest_spec(vm, ctx.vms.volumes(vm), host, "cloudbr0")
        assert (spec.memory_mb, spec.min_memory_mb, spec.cpu_cap) == (1024, 512, None)
    # The engine counts 3 of 4 GiB; the host holds 3 x 512 MiB of its 2 GiB.
    assert memory_row(ctx, cluster) == (3 * GiB, 4 * GiB)
    assert driver.host_stats().memory_free_bytes == 512 * MiB

    fourth = new_vm(ctx, world, 2048)
    code, text = failure(call(ctx, jobs, "startVirtualMachine", fourth))
    assert code == 533
    assert ("no host has 1 x 500 MHz CPU and 2 GiB of memory unallocated (%s has 500 MHz and 1 GiB free)"
            % host.name) in text
    ctx.session.refresh(fourth)
    assert (fourth.state, fourth.host_id) == ("Stopped", None)
    volume = ctx.session.execute(select(Volume).where(Volume.vm_id == fourth.id)).scalar_one()
    assert (volume.state, volume.pool_id) == ("Allocated", None)
    assert fourth.instance_name not in driver.list_vms()
    assert memory_row(ctx, cluster) == (3 * GiB, 4 * GiB)


def test_a_ratio_change_rates_only_guests_started_after_it(ctx, world, gateway, jobs):
    """Each running guest counts as its size ÷ the ratio it started with × the cluster's
    current ratio: two 1 GiB guests started at ratio 1 count 1 ÷ 1 × 4 = 4 GiB each once
    the ratio is 4, all of the 8 GiB offered, until a stop + start re-rates them."""
    cluster, host, _driver = guide_example(ctx, world, gateway, memory_ratio="1")
    ctx.settings.set_scoped("cluster.memory.allocated.capacity.disablethreshold", "1", "cluster", cluster)
    ctx.session.commit()
    first = [new_vm(ctx, world, 1024) for _unused in range(2)]
    for vm in first:
        job = call(ctx, jobs, "startVirtualMachine", vm)
        assert job.status == 1, job.result
    assert memory_row(ctx, cluster) == (2 * GiB, 2 * GiB)

    ctx.settings.set_scoped("mem.overprovisioning.factor", "4", "cluster", cluster)
    ctx.session.commit()
    # The running guests keep their ratio 1: each still holds a whole GiB of the host, which
    # at ratio 4 is 4 GiB of the 8 GiB offered.
    assert memory_row(ctx, cluster) == (8 * GiB, 8 * GiB)
    [view] = render_hosts(ctx, ctx.hosts.view_rows([host.id]))
    ctx.session.commit()
    assert view["memoryallocated"] == 8 * GiB and view["memorywithoverprovisioning"] == str(8 * GiB)

    # A stop + start re-rates a guest: it now holds 1 GiB of 8.
    assert call(ctx, jobs, "stopVirtualMachine", first[0]).status == 1
    assert memory_row(ctx, cluster) == (4 * GiB, 8 * GiB)
    assert call(ctx, jobs, "startVirtualMachine", first[0]).status == 1
    ctx.session.refresh(first[0])
    assert first[0].details["memoryOvercommitRatio"] == "4.0"
    assert memory_row(ctx, cluster) == (5 * GiB, 8 * GiB)


def test_a_host_that_is_not_up_counts_nowhere(ctx, world, gateway, jobs):
    cluster, host, _driver = guide_example(ctx, world, gateway)
    other = world.host(cluster, cpus=2, speed=1000, memory=2 * GiB)
    ctx.session.commit()
    vm = new_vm(ctx, world, 1024)
    assert call(ctx, jobs, "startVirtualMachine", vm).status == 1
    ctx.session.refresh(vm)
    assert memory_row(ctx, cluster) == (GiB, 8 * GiB)
    on = ctx.session.get(Host, vm.host_id)
    for state in ("Down", "Disconnected"):
        on.state = state
        ctx.session.commit()
        # Neither its 4 GiB nor the guest's 1 GiB: 0 of the other host's 4 GiB, never above 100 %.
        rows = {r["type"]: r for r in ctx.capacity.rows(cluster=cluster)}
        assert (rows[MEMORY]["capacityused"], rows[MEMORY]["capacitytotal"]) == (0, 4 * GiB)
        assert (rows[CPU]["capacityused"], rows[CPU]["capacitytotal"]) == (0, 2000)
        assert rows[MEMORY]["percentused"] == "0"
    assert other.id != on.id


def test_limitcpuuse_caps_each_vcpu_at_the_offerings_speed(ctx, world, gateway, jobs):
    _cluster, host, _driver = guide_example(ctx, world, gateway)
    world.offering.limit_cpu_use = True
    ctx.session.commit()
    vm = new_vm(ctx, world, 1024)
    assert call(ctx, jobs, "startVirtualMachine", vm).status == 1
    ctx.session.refresh(vm)
    spec = _guest_spec(vm, ctx.vms.volumes(vm), host, "cloudbr0")
    assert (spec.vcpus, spec.cpu_mhz, spec.cpu_cap, spec.min_memory_mb) == (1, 500, 0.5, 512)
    ctx.session.commit()
