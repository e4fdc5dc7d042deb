"""Storage tags and data volumes: the planner puts each volume on a pool carrying all of its
offering's tags, a start creates the data volume next to the root volume and attaches it as
vdb, and an expunge deletes both; disk sizes stay within custom.diskoffering.size.min/max.

Jobs run through the executor against the agent's simulator behind a recording gateway, so
this module commits its rows, and each test builds its own zone."""

import pytest
from sqlalchemy import select

from stackwright.management.api.params import Tags
from stackwright.management.errors import InsufficientCapacity, InvalidParameterValue
from stackwright.management.persistence.models import DiskOffering, Volume
from stackwright.management.services import vm_lifecycle
from stackwright.management.services.placement import GiB, Demand, Planner, VolumeDemand
from stackwright.protocol import messages as m
from tests.unit.management.services.test_vm_lifecycle import fresh, start
from tests.unit.management.services.test_vms import World


@pytest.fixture
def ctx(job_ctx):
    return job_ctx


@pytest.fixture
def world(ctx):
    return World(ctx)


def tagged_pool(world, tags, size=10 * GiB):
    pool = world.pool(size=size)
    pool.tags = tags
    world.s.flush()
    return pool


def deployed(ctx, world, offering=None, disk_offering=None, size_gb=None):
    """A VM as deployVirtualMachine leaves it (Stopped, its volumes Allocated); committed."""
    vm = ctx.vms.create(zone=world.zone, offering=offering or world.offering, template=world.template,
                        owner=world.account, disk_offering=disk_offering, data_disk_gb=size_gb)
    ctx.session.commit()
    return vm


def volumes(ctx, vm):
    ctx.session.commit()
    rows = ctx.session.execute(select(Volume).where(Volume.vm_id == vm.id).order_by(Volume.device_id)
                               .execution_options(populate_existing=True)).scalars().all()
    ctx.session.commit()
    return rows


def test_a_start_places_each_volume_by_its_tags_and_attaches_the_data_volume(ctx, world, gateway, jobs):
    host = world.host()
    plain = world.pool()
    ssd = tagged_pool(world, "ssd,fast")
    bulk = tagged_pool(world, "hdd,bulk")
    world.offering.storage_tags = "fast"
    disk = world.add(DiskOffering(name="bulk", disk_size_bytes=5 * GiB, tags="bulk"))
    _driver, storage = gateway.add(host.guid)
    vm = deployed(ctx, world, disk_offering=disk)
    job = start(ctx, jobs, vm)
    assert job.status == 1, job.result
    root, data = volumes(ctx, vm)
    assert (root.volume_type, root.pool_id, root.state) == ("ROOT", ssd.id, "Ready")
    assert (data.volume_type, data.pool_id, data.state, data.device_id) == ("DATADISK", bulk.id, "Ready", 1)
    assert (data.size_bytes, data.disk_offering_id) == (5 * GiB, disk.id)
    assert storage.volumes(bulk.uuid) == {data.uuid: 5 * GiB}
    assert storage.volumes(plain.uuid) == {}
    assert gateway.calls() == [(host.guid, m.CreateVolume), (host.guid, m.CreateVolume), (host.guid, m.StartVm)]
    spec = vm_lifecycle._guest_spec(fresh(ctx, vm), [root, data], host, "cloudbr0")
    assert [(d.device, d.source.path) for d in spec.disks] == [("vda", root.uuid), ("vdb", data.uuid)]

    # Expunged: the root volume is deleted from its pool; the data volume is detached and kept.
    job = jobs.call(ctx.user, "destroyVirtualMachine", id=vm.uuid, expunge="true")
    assert job.status == 1, job.result
    assert storage.volumes(ssd.uuid) == {} and storage.volumes(bulk.uuid) == {data.uuid: 5 * GiB}
    [root] = volumes(ctx, vm)
    assert root.state == "Expunged" and root.removed is not None
    data_id = data.id
    data = ctx.session.execute(select(Volume).where(Volume.id == data_id)
                               .execution_options(populate_existing=True)).scalar_one()
    ctx.session.commit()
    assert (data.vm_id, data.state, data.removed) == (None, "Ready", None)
    job = jobs.call(ctx.user, "deleteVolume", id=data.uuid)
    assert job.status == 1, job.result
    assert storage.volumes(bulk.uuid) == {}


def test_volumes_of_one_guest_share_a_pool_within_its_room(ctx, world):
    """Two volumes on one pool count together: 6 + 6 GiB do not fit a pool offering 10 GiB
    (5 GiB x storage.overprovisioning.factor 2) under the 0.85 threshold."""
    world.host()
    tagged_pool(world, "ssd", size=5 * GiB)
    demand = Demand(1, 500, 512, "Simulator", volume_bytes=6 * GiB, storage_tags=["ssd"],
                    data_volumes=[VolumeDemand("data", 6 * GiB, ["ssd"])])
    with pytest.raises(InsufficientCapacity) as refused:
        Planner(ctx).plan("VM[User|x]", world.zone, demand)
    assert "with the storage tags ssd has room for a 6 GiB data volume" in refused.value.text
    demand.data_volumes[0].size_bytes = 2 * GiB
    plan = Planner(ctx).plan("VM[User|x]", world.zone, demand)
    assert plan.pool.id == plan.data_pools[0].id


def test_no_pool_carrying_the_tags_names_them(ctx, world):
    world.host()
    tagged_pool(world, "ssd")
    demand = Demand(1, 500, 512, "Simulator", volume_bytes=GiB,
                    data_volumes=[VolumeDemand("data", GiB, ["ssd", "nvme"])])
    with pytest.raises(InsufficientCapacity) as refused:
        Planner(ctx).plan("VM[User|x]", world.zone, demand)
    assert refused.value.text.endswith(
        "carries the storage tags ssd,nvme of the disk offering for the 1 GiB data volume; tag a pool with "
        "updateStoragePool tags= or add one with createStoragePool")
    assert "cluster(s) %s (or zone-wide)" % world.cluster.name in refused.value.text


def test_data_disk_sizes_follow_the_custom_size_settings(ctx, world):
    custom = world.add(DiskOffering(name="custom", customized=True, disk_size_bytes=0))
    catalog = ctx.catalog
    assert catalog.data_disk_bytes(custom, 1) == GiB and catalog.data_disk_bytes(custom, 1024) == 1024 * GiB
    for size in (0, 1025):
        with pytest.raises(InvalidParameterValue, match="Max: 1024 Min:1"):
            catalog.data_disk_bytes(custom, size)
    with pytest.raises(InvalidParameterValue, match="requires a custom size"):
        catalog.data_disk_bytes(custom, None)
    ctx.settings.set_global("custom.diskoffering.size.max", "2048")
    ctx.session.commit()
    try:
        assert catalog.data_disk_bytes(custom, 2000) == 2000 * GiB
    finally:
        ctx.settings.reset("custom.diskoffering.size.max")
        ctx.session.commit()
    fixed = world.add(DiskOffering(name="fixed", disk_size_bytes=5 * GiB))
    assert catalog.data_disk_bytes(fixed, None) == 5 * GiB


def test_a_refused_data_disk_creates_no_vm(ctx, world):
    custom = world.add(DiskOffering(name="custom", customized=True, disk_size_bytes=0))
    ctx.session.commit()
    before = ctx.session.execute(select(Volume.id)).all()
    with pytest.raises(InvalidParameterValue):
        ctx.vms.create(zone=world.zone, offering=world.offering, template=world.template, owner=world.account,
                       disk_offering=custom, data_disk_gb=4096)
    assert ctx.session.execute(select(Volume.id)).all() == before


@pytest.mark.parametrize("raw, tags", [("ssd", ["ssd"]), (" ssd , fast ", ["ssd", "fast"]), ("", [])])
def test_tags_parameter(raw, tags):
    assert Tags().convert("createDiskOffering", "tags", raw, None) == tags


@pytest.mark.parametrize("raw", ["ssd,,fast", ",ssd", "ssd,", " , "])
def test_tags_parameter_refuses_empty_items(raw):
    with pytest.raises(InvalidParameterValue, match="none of them may be empty"):
        Tags().convert("createDiskOffering", "tags", raw, None)
