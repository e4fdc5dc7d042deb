"""The planner reads hosts a batch at a time: the first host with room is found past a
batch of full hosts, the last host is tried first, and a refusal still names why."""

import pytest

from stackwright.management.errors import InsufficientCapacity
from stackwright.management.services import placement
from stackwright.management.services.placement import GiB, Demand, Planner
from tests.unit.management.services.test_vms import World


@pytest.fixture
def world(ctx):
    return World(ctx)


def demand(memory_mb=512):
    return Demand(1, 500, memory_mb, "Simulator", volume_bytes=GiB)


def test_first_fit_past_a_batch_of_full_hosts(ctx, world, monkeypatch):
    monkeypatch.setattr(placement, "HOST_BATCH", 4)
    world.pool()
    full = [world.host(memory=256 * 1024 * 1024) for _unused in range(9)]   # 256 MiB: no room for 512 MiB
    roomy = world.host()
    plan = Planner(ctx).plan("VM[User|x]", world.zone, demand())
    assert plan.host.id == roomy.id
    # The last host, when it has room, comes first.
    other = world.host()
    assert Planner(ctx).plan("VM[User|x]", world.zone, demand(), last_host_id=other.id).host.id == other.id
    # Nothing fits: the shortfalls of the first hosts are named, in id order.
    with pytest.raises(InsufficientCapacity) as refused:
        Planner(ctx).plan("VM[User|x]", world.zone, demand(memory_mb=64 * 1024))
    assert "no host has 1 x 500 MHz CPU and 64 GiB of memory unallocated (%s has" % full[0].name in refused.value.text


def test_no_usable_host_is_still_explained(ctx, world, monkeypatch):
    monkeypatch.setattr(placement, "HOST_BATCH", 2)
    world.pool()
    for _unused in range(3):
        world.host(resource_state="Disabled")
    with pytest.raises(InsufficientCapacity, match="no Up and Enabled Simulator host in zone"):
        Planner(ctx).plan("VM[User|x]", world.zone, demand())
    world.host(tags="other")
    with pytest.raises(InsufficientCapacity, match="carries the host tags gpu"):
        Planner(ctx).plan("VM[User|x]", world.zone, Demand(1, 500, 512, "Simulator", host_tags=["gpu"]))
