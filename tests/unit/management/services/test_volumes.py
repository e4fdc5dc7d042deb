"""Data volume jobs (services/volumes.py) through the executor against simulated agents behind a
recording gateway: what each job asks the host, what it records, how a failed step is put back
and how a job interrupted after its agent step is settled by asking the host."""

import pytest
from sqlalchemy import select

from stackwright.management.persistence.models import DiskOffering, Volume
from stackwright.management.services.placement import GiB
from stackwright.protocol import messages as m
from tests.support.gateway import EngineKilled
from tests.unit.management.services.job_harness import failure
from tests.unit.management.services.test_vm_lifecycle import fresh, start, stop
from tests.unit.management.services.test_vms import World


@pytest.fixture
def ctx(job_ctx):
    return job_ctx


@pytest.fixture
def world(ctx):
    return World(ctx)


def volume_now(ctx, volume_id):
    row = ctx.session.execute(select(Volume).where(Volume.id == volume_id)
                              .execution_options(populate_existing=True)).scalar_one()
    ctx.session.commit()
    return row


def running_guest(ctx, world, jobs, gateway):
    host = world.host()
    pool = world.pool()
    driver, storage = gateway.add(host.guid)
    vm = ctx.vms.create(zone=world.zone, offering=world.offering, template=world.template, owner=world.account)
    ctx.session.commit()
    assert start(ctx, jobs, vm).status == 1
    return host, pool, driver, storage, vm


def new_volume(ctx, world, size_gb=2):
    offering = world.add(DiskOffering(name="custom", customized=True))
    volume = ctx.volumes.create(zone=world.zone, offering=offering, owner=world.account, size_gb=size_gb)
    ctx.session.commit()
    return volume


def test_hot_plug_resize_unplug_and_delete_on_a_running_guest(ctx, world, gateway, jobs):
    host, pool, driver, storage, vm = running_guest(ctx, world, jobs, gateway)
    volume = new_volume(ctx, world)
    assert (volume.state, volume.pool_id, volume.name) == ("Allocated", None, f"DATA-{volume.id}")
    gateway.log.clear()
    assert jobs.call(ctx.user, "attachVolume", id=volume.uuid, virtualmachineid=vm.uuid).status == 1
    assert gateway.calls() == [(host.guid, m.CreateVolume), (host.guid, m.AttachDisk)]
    assert driver.disks(vm.instance_name) == ["vda", "vdb"]
    attached = volume_now(ctx, volume.id)
    assert (attached.state, attached.vm_id, attached.device_id, attached.pool_id) == ("Ready", vm.id, 1, pool.id)
    assert attached.attached is not None and storage.volumes(pool.uuid)[volume.uuid] == 2 * GiB
    # Grown live on the guest's host.
    gateway.log.clear()
    assert jobs.call(ctx.user, "resizeVolume", id=volume.uuid, size="3").status == 1
    assert gateway.calls() == [(host.guid, m.ResizeVolume)]
    guest_disk = [d for d in driver._guests[vm.instance_name].spec.disks if d.device == "vdb"]
    assert guest_disk[0].size_bytes == 3 * GiB and volume_now(ctx, volume.id).size_bytes == 3 * GiB
    # Unplugged, then removed from the pool.
    gateway.log.clear()
    assert jobs.call(ctx.user, "detachVolume", id=volume.uuid).status == 1
    assert gateway.calls() == [(host.guid, m.DetachDisk)] and driver.disks(vm.instance_name) == ["vda"]
    assert volume_now(ctx, volume.id).vm_id is None
    assert jobs.call(ctx.user, "deleteVolume", id=volume.uuid).status == 1
    assert volume.uuid not in storage.volumes(pool.uuid)
    deleted = volume_now(ctx, volume.id)
    assert (deleted.state, deleted.removed is not None) == ("Expunged", True)


def test_attached_to_a_stopped_guest_it_is_made_and_plugged_at_start(ctx, world, gateway, jobs):
    host, pool, driver, storage, vm = running_guest(ctx, world, jobs, gateway)
    assert stop(ctx, jobs, vm).status == 1
    volume = new_volume(ctx, world)
    gateway.log.clear()
    assert jobs.call(ctx.user, "attachVolume", id=volume.uuid, virtualmachineid=vm.uuid, deviceid="4").status == 1
    assert gateway.calls() == []
    assert (volume_now(ctx, volume.id).state, volume_now(ctx, volume.id).device_id) == ("Allocated", 4)
    assert start(ctx, jobs, vm).status == 1
    assert driver.disks(vm.instance_name) == ["vda", "vde"]
    assert volume_now(ctx, volume.id).state == "Ready" and volume.uuid in storage.volumes(pool.uuid)


def test_a_failed_hot_plug_leaves_the_volume_detached(ctx, world, gateway, jobs):
    host, pool, driver, storage, vm = running_guest(ctx, world, jobs, gateway)
    volume = new_volume(ctx, world)
    driver.stop(vm.instance_name)          # the guest went away behind the engine's back
    code, text = failure(jobs.call(ctx.user, "attachVolume", id=volume.uuid, virtualmachineid=vm.uuid))
    assert code == 530 and "Failed to attach volume" in text and "not running" in text
    after = volume_now(ctx, volume.id)
    # The image it got stays (Ready, on its pool); the attachment does not.
    assert (after.vm_id, after.state, after.attached) == (None, "Ready", None)


def test_an_attach_killed_after_the_hot_plug_is_settled_not_sent_again(ctx, world, gateway, jobs):
    host, pool, driver, storage, vm = running_guest(ctx, world, jobs, gateway)
    volume = new_volume(ctx, world)
    gateway.kill_after.add(m.AttachDisk)
    job_uuid = jobs.submit(ctx.user, "attachVolume", id=volume.uuid, virtualmachineid=vm.uuid)
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    gateway.log.clear()
    assert jobs.run(job_uuid).status == 1
    assert gateway.calls() == [(host.guid, m.QueryDisks)]
    assert volume_now(ctx, volume.id).attached is not None


def test_a_resize_killed_after_the_agent_grew_it_is_settled_by_its_size(ctx, world, gateway, jobs):
    host, pool, driver, storage, vm = running_guest(ctx, world, jobs, gateway)
    volume = new_volume(ctx, world)
    assert jobs.call(ctx.user, "attachVolume", id=volume.uuid, virtualmachineid=vm.uuid).status == 1
    assert jobs.call(ctx.user, "detachVolume", id=volume.uuid).status == 1
    gateway.kill_after.add(m.ResizeVolume)
    job_uuid = jobs.submit(ctx.user, "resizeVolume", id=volume.uuid, size="5")
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    assert volume_now(ctx, volume.id).state == "Resizing"
    gateway.log.clear()
    assert jobs.run(job_uuid).status == 1
    assert gateway.calls() == [(host.guid, m.QueryVolume)]
    assert volume_now(ctx, volume.id).size_bytes == 5 * GiB and storage.volumes(pool.uuid)[volume.uuid] == 5 * GiB


def test_checks_run_again_in_the_job(ctx, world, gateway, jobs):
    _host, _pool, _driver, _storage, vm = running_guest(ctx, world, jobs, gateway)
    volume = new_volume(ctx, world)
    assert jobs.call(ctx.user, "attachVolume", id=volume.uuid, virtualmachineid=vm.uuid).status == 1
    code, text = failure(jobs.call(ctx.user, "attachVolume", id=volume.uuid, virtualmachineid=vm.uuid))
    assert code == 431 and text.startswith("Please specify a volume that is not attached to any VM")
    code, text = failure(jobs.call(ctx.user, "deleteVolume", id=volume.uuid))
    assert code == 431 and "detach it first" in text
    code, text = failure(jobs.call(ctx.user, "resizeVolume", id=volume.uuid, size="1"))
    assert code == 431 and "shrinkok" in text
    # Growing past its pool's room (10 GiB x 2 over-provisioning, under the 0.85 threshold).
    code, text = failure(jobs.call(ctx.user, "resizeVolume", id=volume.uuid, size="30"))
    assert code == 533 and "has no room for 28 GiB more" in text
    assert volume_now(ctx, volume.id).size_bytes == 2 * GiB
    assert fresh(ctx, vm).state == "Running"
