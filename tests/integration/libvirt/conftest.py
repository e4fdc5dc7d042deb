"""Fixtures for the libvirt and NFS integration tests: real libvirtd, KVM and nfs-ganesha."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from stackwright.agent.hypervisor.libvirt.driver import LibvirtDriver
from stackwright.agent.storage.nfs import NfsStorageDriver

GUEST_PREFIX = "sw-it-"


@pytest.fixture
def kvm_driver(libvirtd):
    """The libvirt driver on qemu:///system; removes the guests a test leaves running."""
    driver = LibvirtDriver(uri=libvirtd.uri, stop_grace=1.0)
    yield driver
    for name in driver.list_vms():
        if name.startswith(GUEST_PREFIX):
            driver.stop(name, force=True)
    driver.close()


@pytest.fixture
def guest_name():
    """Makes names for throw-away guests that `kvm_driver` cleans up."""
    return lambda: f"{GUEST_PREFIX}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def image_dir():
    """A scratch directory QEMU (running as libvirt-qemu) can traverse; pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix="sw-images-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nfs_storage():
    """The NFS storage driver in user-space mode, as on hosts without kernel NFS."""
    return NfsStorageDriver(timeout=5.0, kernel_available=lambda: False)
