"""NFS storage driver: URL parsing, mode selection and validation (no server needed)."""

import pytest

from stackwright.agent.errors import InvalidSpec
from stackwright.agent.storage import get_storage_driver
from stackwright.agent.storage.base import PoolSpec
from stackwright.agent.storage.nfs import NfsLocation, NfsStorageDriver, kernel_nfs_available, parse_nfs_url

POOL_UUID = "6b6e1b2a-5c4d-4e3f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("nfs://10.0.0.9/export/primary", NfsLocation("10.0.0.9", "/export/primary")),
        ("nfs://nfs.example.org:2049/export/primary/", NfsLocation("nfs.example.org", "/export/primary", 2049)),
        ("nfs://[fd00::9]/e", NfsLocation("fd00::9", "/e")),
    ],
)
def test_parse_nfs_url(url, location):
    assert parse_nfs_url(url) == location


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.9/export", "is not an NFS URL"),
        ("/export/primary", "is not an NFS URL"),
        ("nfs:///export", "names no server"),
        ("nfs://10.0.0.9", "must name an export path"),
        ("nfs://10.0.0.9/export?version=4", "must name an export path and nothing else"),
        ("nfs://10.0.0.9:99999/export", "has an invalid port"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, message):
    with pytest.raises(InvalidSpec, match=message):
        parse_nfs_url(url)


def test_kernel_nfs_detection_reads_proc_filesystems(tmp_path):
    without = tmp_path / "without"
    without.write_text("nodev\tsysfs\nnodev\tproc\n\text4\n")
    assert kernel_nfs_available(str(without)) is False
    assert kernel_nfs_available(str(tmp_path / "absent")) is False
    with_nfs = tmp_path / "with"
    with_nfs.write_text("nodev\tsysfs\nnodev\tnfs\nnodev\tnfs4\n\text4\n")
    # Registered in the kernel, but mount.nfs must exist too.
    import shutil

    assert kernel_nfs_available(str(with_nfs)) is (shutil.which("mount.nfs") is not None)


def userspace_driver(**kwargs) -> NfsStorageDriver:
    return NfsStorageDriver(kernel_available=lambda: False, **kwargs)


def test_registry_builds_the_nfs_driver():
    assert isinstance(get_storage_driver("nfs"), NfsStorageDriver)
    with pytest.raises(InvalidSpec, match="unknown storage driver 'ceph'"):
        get_storage_driver("ceph")


def test_kernel_mode_without_kernel_nfs_is_refused():
    pool = PoolSpec(uuid=POOL_UUID, url="nfs://127.0.0.1/export", mode="kernel")
    with pytest.raises(InvalidSpec, match="needs the kernel NFS client"):
        userspace_driver().attach(pool)


def test_unknown_mode_is_refused():
    pool = PoolSpec(uuid=POOL_UUID, url="nfs://127.0.0.1/export", mode="fuse")
    with pytest.raises(InvalidSpec, match="mode 'fuse' is not one of: auto, kernel, userspace"):
        userspace_driver().stats(pool)


def test_userspace_pools_must_use_standard_ports():
    pool = PoolSpec(uuid=POOL_UUID, url="nfs://127.0.0.1:20490/export", mode="userspace")
    with pytest.raises(InvalidSpec, match="cannot use port 20490"):
        userspace_driver().attach(pool)


def test_mount_point_is_named_after_the_pool(tmp_path):
    driver = NfsStorageDriver(mount_root=str(tmp_path))
    assert driver.mount_point(PoolSpec(uuid=POOL_UUID.upper(), url="nfs://h/e")) == tmp_path / POOL_UUID
    with pytest.raises(InvalidSpec, match="uuid '../etc' is not a UUID"):
        driver.mount_point(PoolSpec(uuid="../etc", url="nfs://h/e"))


@pytest.mark.parametrize(
    ("name", "fmt", "size", "message"),
    [
        ("../escape.qcow2", "qcow2", 1 << 20, "volume name '../escape.qcow2' is not allowed"),
        ("sub/dir.qcow2", "qcow2", 1 << 20, "is not allowed"),
        ("", "qcow2", 1 << 20, "is not allowed"),
        (".stackwright-probe-x", "qcow2", 1 << 20, "is not allowed"),
        ("ok.img", "vmdk", 1 << 20, "volume format 'vmdk' is not one of: qcow2, raw"),
        ("ok.img", "raw", 0, "volume size 0 must be a positive number of bytes"),
    ],
)
def test_volume_arguments_are_checked_before_touching_storage(name, fmt, size, message):
    # The server does not exist: validation must fail first.
    pool = PoolSpec(uuid=POOL_UUID, url="nfs://127.0.0.1/nowhere", mode="userspace")
    with pytest.raises(InvalidSpec, match=message):
        userspace_driver().create_volume(pool, name, size, fmt)
