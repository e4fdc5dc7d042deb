"""The in-memory storage driver of Simulator hosts, directly and through the command handlers."""

import pytest

from stackwright.agent.errors import InsufficientCapacity, InvalidSpec, VolumeExists
from stackwright.agent.handlers import Dispatcher, HandlerContext
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.storage import get_storage_driver
from stackwright.agent.storage.simulator import SimulatorStorageDriver
from stackwright.protocol import messages as m

NFS_POOL = m.PoolSpec(uuid="p1", url="nfs://10.147.28.6/export/primary")
OTHER_POOL = m.PoolSpec(uuid="p2", url="rbd://mon/pool")


def test_volumes_on_an_nfs_pool_are_nfs_disks():
    driver = SimulatorStorageDriver(capacity_bytes=10 << 30)
    disk = driver.create_volume(NFS_POOL, "vol-1", 1 << 30)
    assert disk == m.DiskSpec(device="vda", format="qcow2", size_bytes=1 << 30,
                              source=m.NfsSource(server="10.147.28.6", export="/export/primary", path="vol-1"))
    other = driver.create_volume(OTHER_POOL, "vol-1", 1 << 30, fmt="raw")
    assert other.source == m.FileSource(path="/simulator/p2/vol-1") and other.format == "raw"
    assert driver.stats(NFS_POOL) == m.PoolStats(capacity_bytes=10 << 30, used_bytes=1 << 30,
                                                 available_bytes=9 << 30)


def test_duplicates_space_and_bad_specs_are_refused():
    driver = SimulatorStorageDriver(capacity_bytes=2 << 30)
    driver.create_volume(NFS_POOL, "vol-1", 1 << 30)
    with pytest.raises(VolumeExists):
        driver.create_volume(NFS_POOL, "vol-1", 1 << 30)
    with pytest.raises(InsufficientCapacity):
        driver.create_volume(NFS_POOL, "vol-2", 2 << 30)
    for name, size, fmt in (("", 1, "qcow2"), ("a/b", 1, "qcow2"), ("v", 0, "qcow2"), ("v", 1, "vmdk")):
        with pytest.raises(InvalidSpec):
            driver.create_volume(NFS_POOL, name, size, fmt=fmt)


def test_delete_is_idempotent_and_frees_space():
    driver = SimulatorStorageDriver()
    driver.create_volume(NFS_POOL, "vol-1", 1 << 30)
    driver.delete_volume(NFS_POOL, "vol-1")
    driver.delete_volume(NFS_POOL, "vol-1")
    assert driver.volumes("p1") == {} and driver.stats(NFS_POOL).used_bytes == 0


def test_registered_under_its_kind():
    assert isinstance(get_storage_driver("simulator"), SimulatorStorageDriver)


def test_create_start_stop_through_the_handlers():
    storage = SimulatorStorageDriver()
    dispatcher = Dispatcher(HandlerContext(SimulatorDriver(hostname="h"), storage_factory=lambda: storage), workers=0)
    answer = dispatcher.run(m.CreateVolume(pool=NFS_POOL, name="root-1", size_bytes=1 << 30))
    assert isinstance(answer, m.VolumeAnswer) and answer.disk.source.path == "root-1"
    spec = m.VmSpec(name="i-2-1-VM", uuid="u", vcpus=1, cpu_mhz=500, memory_mb=512, disks=[answer.disk])
    assert dispatcher.run(m.StartVm(spec=spec)).state == m.VmState.RUNNING
    assert dispatcher.run(m.StopVm(name="i-2-1-VM", force=True)).state == m.VmState.STOPPED
    assert isinstance(dispatcher.run(m.DeleteVolume(pool=NFS_POOL, name="root-1")), m.Ack)
    again = dispatcher.run(m.CreateVolume(pool=NFS_POOL, name="root-1", size_bytes=0))
    assert isinstance(again, m.ErrorAnswer) and again.code == "invalid_spec"
