"""NFS primary and secondary storage in user space against a real nfs-ganesha,
and KVM guests booting from volumes on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import libvirt
import pytest

from stackwright.agent.errors import StorageError, StorageNotWritable, StorageUnreachable, VolumeExists
from stackwright.agent.hypervisor.base import NfsSource, VmSpec, VmState, nfs_path, nfs_url
from stackwright.agent.storage.base import PoolSpec
from stackwright.agent.storage.nfs import NfsStorageDriver

# A loopback address nothing listens on: connections are refused at once.
DEAD_SERVER = "127.0.0.2"
UNREACHABLE_BOUND = 10.0


@pytest.fixture
def pool_dir(nfs_server):
    """A fresh directory inside the primary export, so tests sharing the server do not collide."""
    scratch = nfs_server.scratch(nfs_server.primary, f"pool-{uuid.uuid4().hex[:8]}")
    yield scratch
    nfs_server.discard(scratch)


@pytest.fixture
def pool(pool_dir):
    return PoolSpec(uuid=str(uuid.uuid4()), url=pool_dir.url, mode="userspace")


def test_attach_reports_the_export_filesystem(nfs_storage, pool, pool_dir):
    stats = nfs_storage.attach(pool)
    local = os.statvfs(pool_dir.path)
    assert stats.capacity_bytes == local.f_blocks * local.f_frsize
    # Free space moves while the machine works; it must still be the same filesystem's.
    assert abs(stats.available_bytes - local.f_bavail * local.f_frsize) < 256 << 20
    assert stats.used_bytes + local.f_bfree * local.f_frsize == pytest.approx(stats.capacity_bytes, abs=256 << 20)
    assert os.listdir(pool_dir.path) == []  # the write probe is gone again
    assert nfs_storage.stats(pool).capacity_bytes == stats.capacity_bytes
    nfs_storage.detach(pool)


def test_create_and_delete_a_qcow2_volume(nfs_storage, pool, pool_dir):
    disk = nfs_storage.create_volume(pool, "vol-1.qcow2", 64 << 20)
    assert isinstance(disk.source, NfsSource)
    assert nfs_url(disk.source) == f"{pool_dir.url}/vol-1.qcow2"
    assert (disk.format, disk.size_bytes) == ("qcow2", 64 << 20)
    image = pool_dir.path / "vol-1.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                     capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 64 << 20)
    with pytest.raises(VolumeExists, match="vol-1.qcow2 already exists"):
        nfs_storage.create_volume(pool, "vol-1.qcow2", 64 << 20)
    nfs_storage.delete_volume(pool, "vol-1.qcow2")
    assert not image.exists()
    nfs_storage.delete_volume(pool, "vol-1.qcow2")  # already gone: not an error


def test_raw_volume(nfs_storage, pool, pool_dir):
    nfs_storage.create_volume(pool, "data.raw", 8 << 20, fmt="raw")
    assert (pool_dir.path / "data.raw").stat().st_size == 8 << 20


def test_failed_create_leaves_no_partial_image(pool, pool_dir, tmp_path):
    # A qemu-img that writes part of an image and then fails, as on a full export.
    failing = tmp_path / "qemu-img"
    # Called as: create -q -f FORMAT TARGET SIZE
    failing.write_text("#!/bin/sh\nqemu-img create -q -f raw \"$5\" 1M || exit 2\n"
                       "echo 'qemu-img: No space left on device' >&2\nexit 1\n")
    failing.chmod(0o755)
    driver = NfsStorageDriver(timeout=5.0, qemu_img=str(failing), kernel_available=lambda: False)
    seen = []
    original_delete = driver.delete_volume

    def delete_and_record(pool, name):
        seen.append((pool_dir.path / name).exists())  # the partial image was really there
        original_delete(pool, name)

    driver.delete_volume = delete_and_record
    with pytest.raises(StorageError, match="No space left on device"):
        driver.create_volume(pool, "big.qcow2", 1 << 30)
    assert seen == [True]
    assert not (pool_dir.path / "big.qcow2").exists()


def test_kvm_guest_boots_from_an_nfs_volume(nfs_storage, pool, kvm_driver, libvirtd, guest_name):
    nfs_storage.attach(pool)
    disk = nfs_storage.create_volume(pool, "root.qcow2", 32 << 20)
    spec = VmSpec(name=guest_name(), uuid=str(uuid.uuid4()), vcpus=1,
                  cpu_mhz=500, memory_mb=64, disks=[disk])
    assert kvm_driver.start(spec) is VmState.RUNNING
    assert kvm_driver.query(spec.name) is VmState.RUNNING
    connection = libvirt.open(libvirtd.uri)
    dumped = connection.lookupByName(spec.name).XMLDesc(0)
    connection.close()
    assert "<source protocol='nfs'" in dumped
    assert f"name='{nfs_path(disk.source)}'" in dumped
    assert kvm_driver.stop(spec.name, force=True) is VmState.STOPPED
    nfs_storage.delete_volume(pool, "root.qcow2")


def test_secondary_storage_check(nfs_storage, nfs_server):
    secondary = nfs_server.scratch(nfs_server.secondary, f"store-{uuid.uuid4().hex[:8]}")
    try:
        stats = nfs_storage.check_secondary(secondary.url)
        local = os.statvfs(secondary.path)
        assert stats.capacity_bytes == local.f_blocks * local.f_frsize
        assert os.listdir(secondary.path) == []
    finally:
        nfs_server.discard(secondary)


def test_read_only_export_fails_the_write_probe(nfs_storage, nfs_server):
    with pytest.raises(StorageNotWritable, match=f"{nfs_server.readonly.path} is not writable"):
        nfs_storage.check_secondary(nfs_server.readonly.url)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        # no server at all
        (f"nfs://{DEAD_SERVER}/export/primary", f"{DEAD_SERVER}:/export/primary"),
        # a server, but the port is closed
        ("nfs://127.0.0.1:1/export/secondary", "127.0.0.1:/export/secondary (port 1)"),
    ],
)
def test_unreachable_server_is_a_quick_clear_error(nfs_storage, nfs_server, url, where):
    started = time.monotonic()
    with pytest.raises(StorageUnreachable) as raised:
        nfs_storage.check_secondary(url)
    assert time.monotonic() - started < UNREACHABLE_BOUND
    assert str(raised.value).startswith(f"NFS export {where} is unreachable: ")


def test_unreachable_primary_pool_names_server_and_path(nfs_storage, nfs_server):
    pool = PoolSpec(uuid=str(uuid.uuid4()), url=f"nfs://{DEAD_SERVER}/export/primary", mode="userspace")
    with pytest.raises(StorageUnreachable, match=f"NFS export {DEAD_SERVER}:/export/primary is unreachable"):
        nfs_storage.attach(pool)


def test_path_the_server_does_not_export(nfs_storage, nfs_server):
    with pytest.raises(StorageUnreachable, match="127.0.0.1:/not/exported is unreachable"):
        nfs_storage.check_secondary("nfs://127.0.0.1/not/exported")


# --- heartbeats for HA ---------------------------------------------------------------------


def test_heartbeat_service_writes_on_the_pools_the_agent_attached(nfs_storage, pool, pool_dir, tmp_path):
    """The agent lists the pool it attached; stackwright-heartbeat (its own process) writes the
    host's heartbeat there; another host reads its age by the pool's clock."""
    from stackwright.agent.handlers import Dispatcher, HandlerContext
    from stackwright.protocol import messages as m

    pools_file = tmp_path / "pools.json"
    agent = Dispatcher(HandlerContext(None, storage_factory=lambda: nfs_storage, pools_file=pools_file), workers=0)
    assert isinstance(agent.run(m.AttachPool(pool=pool)), m.PoolStatsAnswer)
    assert json.loads(pools_file.read_text())[0]["uuid"] == pool.uuid
    properties = tmp_path / "agent.properties"
    properties.write_text("host=127.0.0.1\nguid=host-a\nstorage.mode=userspace\nha.pools.file=%s\n" % pools_file)
    # Nothing written yet: the checker finds no heartbeat of host-a.
    other = Dispatcher(HandlerContext(None, storage_factory=lambda: nfs_storage), workers=0)
    answer = other.run(m.CheckHeartbeat(pool=pool, host="host-a"))
    assert (answer.age, answer.activity) == (None, False)
    done = subprocess.run([sys.executable, "-m", "stackwright.agent.heartbeat", "--properties", str(properties),
                           "--once"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    beat = pool_dir.path / ".stackwright-heartbeat-host-a"
    assert beat.exists()
    answer = other.run(m.CheckHeartbeat(pool=pool, host="host-a"))
    assert 0 <= answer.age < 5 and answer.activity is False
    # Ten minutes without a heartbeat, on the export's clock.
    old = time.time() - 600
    os.utime(beat, (old, old))
    assert 595 < other.run(m.CheckHeartbeat(pool=pool, host="host-a")).age < 610
    # A guest of host-a that writes its volume during the window is activity.
    nfs_storage.create_volume(pool, "vol-busy", 16 << 20, fmt="raw")
    image = pool_dir.path / "vol-busy"

    def write_soon():
        time.sleep(0.5)
        with image.open("r+b") as f:
            f.write(b"x" * 4096)

    writer = threading.Thread(target=write_soon)
    writer.start()
    answer = other.run(m.CheckHeartbeat(pool=pool, host="host-a", volumes=["vol-busy"], window=2.0))
    writer.join()
    assert answer.activity is True
    idle = other.run(m.CheckHeartbeat(pool=pool, host="host-a", volumes=["vol-busy"], window=1.0))
    assert idle.activity is False
    assert isinstance(agent.run(m.DetachPool(pool=pool)), m.Ack)
    assert json.loads(pools_file.read_text()) == []
