"""The libvirt driver against the real libvirtd and QEMU/KVM (qemu:///system)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest

from stackwright.agent.errors import HypervisorError, VmNotFound
from stackwright.agent.hypervisor.base import DiskSpec, FileSource, NicSpec, VmSpec, VmState
from stackwright.agent.hypervisor.libvirt import xml
from stackwright.agent.hypervisor.libvirt.host import list_bridges


def make_spec(name: str, **overrides) -> VmSpec:
    values = dict(
        name=name,
        uuid=str(uuid.uuid4()),
        vcpus=1,
        cpu_mhz=500,
        memory_mb=64,
        vnc_listen="127.0.0.1",
    )
    values.update(overrides)
    return VmSpec(**values)


def libvirt_view(uri: str, name: str) -> libvirt.virDomain | None:
    """Look the guest up through a connection of our own, not the driver's."""
    connection = libvirt.open(uri)
    try:
        return connection.lookupByName(name)
    except libvirt.libvirtError:
        return None


def kvm_expected() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def test_host_info_reports_this_machine(kvm_driver, libvirtd):
    info = kvm_driver.host_info()
    assert info.hypervisor == "KVM"
    qemu_version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False).stdout
    assert f"version {info.hypervisor_version}" in qemu_version
    assert info.arch == os.uname().machine
    assert info.cpus == os.cpu_count()
    assert info.cpus == info.cpu_sockets * info.cpu_cores * info.cpu_threads
    assert info.cpu_mhz > 0
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert info.memory_bytes == int(meminfo["MemTotal"].split()[0]) * 1024
    assert info.bridges == list_bridges()
    assert info.accel == ("kvm" if kvm_expected() else "tcg")
    if info.private_mac:
        assert len(info.private_mac.split(":")) == 6


def test_host_stats_sample_the_host(kvm_driver):
    kvm_driver.host_stats()
    stats = kvm_driver.host_stats()
    assert 0.0 <= stats.cpu_utilization <= 100.0
    assert 0 < stats.memory_free_bytes < stats.memory_total_bytes


def test_diskless_guest_starts_runs_and_stops(kvm_driver, libvirtd, guest_name):
    spec = make_spec(guest_name())
    assert kvm_driver.start(spec) is VmState.RUNNING
    assert kvm_driver.query(spec.name) is VmState.RUNNING
    assert kvm_driver.list_vms()[spec.name] is VmState.RUNNING
    domain = libvirt_view(libvirtd.uri, spec.name)
    assert domain is not None and domain.isActive()
    assert f"<domain type='{'kvm' if kvm_expected() else 'qemu'}'" in domain.XMLDesc(0)
    # No OS answers ACPI, so this also proves the power-off after the grace period.
    assert kvm_driver.stop(spec.name) is VmState.STOPPED
    assert libvirt_view(libvirtd.uri, spec.name) is None
    with pytest.raises(VmNotFound):
        kvm_driver.query(spec.name)


def test_guest_with_a_small_qcow2_disk(kvm_driver, libvirtd, image_dir, guest_name):
    image = image_dir / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "32M"], check=True)
    spec = make_spec(guest_name(), disks=[DiskSpec(device="vda", source=FileSource(path=str(image)), size_bytes=32 << 20)])
    assert kvm_driver.start(spec) is VmState.RUNNING
    dumped = libvirt_view(libvirtd.uri, spec.name).XMLDesc(0)
    assert f"<source file='{image}'" in dumped
    assert kvm_driver.stop(spec.name, force=True) is VmState.STOPPED
    assert libvirt_view(libvirtd.uri, spec.name) is None


def test_reboot_and_idempotent_start(kvm_driver, guest_name):
    spec = make_spec(guest_name())
    kvm_driver.start(spec)
    assert kvm_driver.start(spec) is VmState.RUNNING
    kvm_driver.reboot(spec.name)
    assert kvm_driver.query(spec.name) is VmState.RUNNING
    kvm_driver.stop(spec.name, force=True)


def test_failed_boot_leaves_nothing_defined(kvm_driver, libvirtd, guest_name):
    missing_bridge = "swnobr0"
    assert missing_bridge not in list_bridges()
    spec = make_spec(guest_name(), nics=[NicSpec(mac="02:00:00:5e:00:01", bridge=missing_bridge)])
    with pytest.raises(HypervisorError, match=missing_bridge):
        kvm_driver.start(spec)
    assert libvirt_view(libvirtd.uri, spec.name) is None
    assert spec.name not in kvm_driver.list_vms()


def test_over_provisioned_capped_guest_starts_with_its_balloon_and_quota(kvm_driver, libvirtd, guest_name):
    """A guest of a cluster with memory ratio 2 whose offering has limitcpuuse: libvirt takes
    the domain as defined (128 MiB maximum, 64 MiB current, a virtio balloon, a CFS quota of
    a fifth of a core per vCPU) and QEMU runs it."""
    spec = make_spec(guest_name(), memory_mb=128, min_memory_mb=64, cpu_cap=0.2)
    assert kvm_driver.start(spec) is VmState.RUNNING
    try:
        domain = libvirt_view(libvirtd.uri, spec.name)
        assert domain is not None and domain.isActive()
        # The definition libvirt kept (a guest without an OS never lets its balloon inflate, so
        # the live balloon size is not asserted).
        defined = xml.Domain.parse(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert (defined.memory.kib, defined.current_memory.kib) == (128 * 1024, 64 * 1024)
        assert defined.memballoon == xml.MemBalloon(model="virtio")
        assert defined.cputune == xml.CpuTune(shares=500, period=100000, quota=20000)
        # What the running QEMU process got: 128 MiB at most, and the quota in its cgroup.
        _state, max_kib, _memory_kib, _vcpus, _cpu_time = domain.info()
        assert max_kib == 128 * 1024
        scheduler = domain.schedulerParameters()
        assert (scheduler["vcpu_period"], scheduler["vcpu_quota"]) == (100000, 20000)
    finally:
        assert kvm_driver.stop(spec.name, force=True) is VmState.STOPPED
