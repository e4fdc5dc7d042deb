"""The libvirt driver on libvirt's built-in test driver (test:///default): no daemon."""

import uuid

import libvirt
import pytest

from stackwright.agent.errors import HypervisorError, HypervisorUnavailable, InvalidSpec, VmNotFound
from stackwright.agent.hypervisor import get_driver
from stackwright.agent.hypervisor.base import (
    DiskSpec,
    FileSource,
    NfsSource,
    NicSpec,
    VmSpec,
    VmState,
)
from stackwright.agent.hypervisor.libvirt import xml
from stackwright.agent.hypervisor.libvirt.driver import LibvirtDriver, build_domain, cpu_cap
from stackwright.agent.hypervisor.libvirt.host import Host, format_version

TEST_URI = "test:///default"


@pytest.fixture
def driver():
    driver = get_driver("libvirt", uri=TEST_URI, stop_grace=0)
    yield driver
    for name in driver.list_vms():
        if name.startswith("i-"):
            driver.stop(name, force=True)
    driver.close()


def make_spec(name: str | None = None, **overrides) -> VmSpec:
    values = dict(
        name=name or f"i-2-{uuid.uuid4().int % 10000}-VM",
        uuid=str(uuid.uuid4()),
        vcpus=2,
        cpu_mhz=1000,
        memory_mb=128,
        disks=[DiskSpec(device="vda", source=FileSource(path="/var/lib/images/root.qcow2"))],
        nics=[NicSpec(mac="02:00:0A:00:00:01", bridge="cloudbr0")],
        vnc_listen="127.0.0.1",
    )
    values.update(overrides)
    return VmSpec(**values)


def test_registry_builds_the_libvirt_driver():
    driver = get_driver("libvirt", uri=TEST_URI)
    assert isinstance(driver, LibvirtDriver)
    driver.close()


def test_registry_rejects_unknown_kinds():
    with pytest.raises(InvalidSpec, match="unknown hypervisor driver 'xen'; choose one of: libvirt, simulator"):
        get_driver("xen")


def test_host_info_comes_from_libvirt(driver):
    connection = libvirt.open(TEST_URI)
    model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = connection.getInfo()
    info = driver.host_info()
    assert info.hypervisor == "KVM"
    assert info.hypervisor_version == format_version(connection.getVersion())
    assert (info.cpus, info.cpu_mhz) == (cpus, mhz)
    assert (info.cpu_sockets, info.cpu_cores, info.cpu_threads) == (nodes * sockets, cores, threads)
    assert info.cpus == info.cpu_sockets * info.cpu_cores * info.cpu_threads
    assert info.memory_bytes == memory_mib * 1024 * 1024
    assert info.arch == "i686"  # what the test driver's capabilities report
    assert info.accel == "none"
    assert info.hostname == connection.getHostname()
    connection.close()


def test_host_stats_are_within_bounds(driver):
    stats = driver.host_stats()
    again = driver.host_stats()
    for sample in (stats, again):
        assert 0.0 <= sample.cpu_utilization <= 100.0
        assert 0 < sample.memory_free_bytes <= sample.memory_total_bytes


def test_start_query_list_stop(driver):
    spec = make_spec()
    assert driver.start(spec) is VmState.RUNNING
    assert driver.query(spec.name) is VmState.RUNNING
    assert driver.list_vms()[spec.name] is VmState.RUNNING
    assert driver.stop(spec.name) is VmState.STOPPED
    assert spec.name not in driver.list_vms()
    with pytest.raises(VmNotFound, match=f"virtual machine {spec.name} is not defined"):
        driver.query(spec.name)


def test_start_defines_the_domain_libvirt_was_given(driver):
    spec = make_spec()
    driver.start(spec)
    connection = libvirt.open(TEST_URI)
    domain = connection.lookupByName(spec.name)
    assert domain.UUIDString() == spec.uuid
    assert domain.maxMemory() == 128 * 1024
    assert domain.info()[3] == 2  # vCPUs
    dumped = domain.XMLDesc(0)
    assert "02:00:0a:00:00:01" in dumped and "cloudbr0" in dumped
    connection.close()


def test_start_is_idempotent_for_a_running_guest(driver):
    spec = make_spec()
    driver.start(spec)
    assert driver.start(spec) is VmState.RUNNING
    assert list(driver.list_vms()).count(spec.name) == 1


def test_forced_stop_and_stop_of_an_unknown_guest(driver):
    spec = make_spec()
    driver.start(spec)
    assert driver.stop(spec.name, force=True) is VmState.STOPPED
    assert driver.stop(spec.name) is VmState.STOPPED
    assert driver.stop("i-9-9999-VM") is VmState.STOPPED


def test_reboot_keeps_the_guest_running(driver):
    spec = make_spec()
    driver.start(spec)
    driver.reboot(spec.name)
    assert driver.query(spec.name) is VmState.RUNNING


def test_reboot_of_unknown_and_stopped_guests(driver):
    with pytest.raises(VmNotFound):
        driver.reboot("i-9-9998-VM")
    spec = make_spec()
    # Defined but not running: as after a crash the engine has not cleaned up yet.
    connection = libvirt.open(TEST_URI)
    connection.defineXML(driver.domain_xml(spec))
    with pytest.raises(HypervisorError, match="it is not running; start it instead"):
        driver.reboot(spec.name)
    assert driver.query(spec.name) is VmState.STOPPED
    assert driver.list_vms()[spec.name] is VmState.STOPPED
    driver.stop(spec.name)
    connection.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "bad name"}, "VM name 'bad name' must be"),
        ({"vcpus": 0}, "vcpus must be a positive integer, got 0"),
        ({"memory_mb": -5}, "memory_mb must be a positive integer"),
        ({"disks": [DiskSpec(device="xvda", source=FileSource(path="/x"))]}, "disk device 'xvda'"),
        ({"disks": [DiskSpec(device="vda", format="vmdk", source=FileSource(path="/x"))]}, "format 'vmdk'"),
        (
            {"disks": [DiskSpec(device="vda", source=FileSource(path="/a")),
                       DiskSpec(device="vda", source=FileSource(path="/b"))]},
            "are not unique",
        ),
        (
            {"disks": [DiskSpec(device="vda", source=NfsSource(server="s", export="/e", path="v", port=20490))]},
            "is on NFS port 20490",
        ),
        ({"nics": [NicSpec(mac="nonsense", bridge="cloudbr0")]}, "NIC MAC 'nonsense'"),
        ({"nics": [NicSpec(mac="02:00:00:00:00:01", bridge="")]}, "names no bridge"),
    ],
)
def test_invalid_specs_are_refused_before_libvirt_sees_them(driver, overrides, message):
    spec = make_spec(**overrides)
    with pytest.raises(InvalidSpec, match=message):
        driver.start(spec)
    assert spec.name not in driver.list_vms()


def test_unknown_acceleration_is_refused():
    with pytest.raises(InvalidSpec, match="acceleration 'xen'"):
        LibvirtDriver(uri=TEST_URI, accel="xen")


def test_unreachable_libvirt_is_a_clear_error(tmp_path):
    driver = LibvirtDriver(uri=f"qemu+unix:///system?socket={tmp_path}/absent.sock")
    with pytest.raises(HypervisorUnavailable, match="cannot connect to libvirt at qemu\\+unix"):
        driver.list_vms()


def test_host_reconnects_after_the_connection_is_closed():
    host = Host(TEST_URI)
    first = host.get_connection()
    first.close()
    second = host.get_connection()
    assert second is not first and second.isAlive()
    host.close()


def test_kvm_domain_policy():
    spec = make_spec(disks=[DiskSpec(device="vda", source=NfsSource(server="10.0.0.9", export="/export/primary",
                                                                    path="root.qcow2"))])
    domain = build_domain(spec, accel="kvm", arch="x86_64", nfs_identity=("root", "root"), cpu_mode="host-model")
    assert domain.type == "kvm"
    assert domain.cpu.mode == "host-model"
    assert domain.cputune.shares == 2 * 1000
    assert domain.memory.kib == 128 * 1024
    assert domain.features == ["acpi", "apic"]
    disk = domain.disks[0]
    assert (disk.source_protocol, disk.source_name) == ("nfs", "/export/primary/root.qcow2")
    assert [host.name for host in disk.hosts] == ["10.0.0.9"] and disk.hosts[0].port is None
    assert (disk.identity_user, disk.identity_group) == ("root", "root")
    # Storage errors pause the guest (resumed once its pool answers) instead of reaching its OS.
    assert (disk.error_policy, disk.rerror_policy) == ("stop", "stop")
    assert 'error_policy="stop" rerror_policy="stop"' in disk.to_xml()
    assert domain.interfaces[0].mac == "02:00:0a:00:00:01"
    assert domain.graphics[0].listen == "127.0.0.1"


def test_over_provisioned_guest_gets_its_memory_as_maximum_and_a_balloon():
    """An offering of 2 vCPUs x 1000 MHz and 128 MiB in a cluster of memory ratio 2 on a host of
    2500 MHz cores, with limitcpuuse: each vCPU may run 1000 of 2500 MHz."""
    domain = build_domain(make_spec(min_memory_mb=64, cpu_cap=1000 / 2500), accel="kvm", arch="x86_64")
    assert (domain.memory.kib, domain.current_memory.kib) == (128 * 1024, 64 * 1024)
    assert domain.memballoon == xml.MemBalloon(model="virtio")
    assert domain.cputune == xml.CpuTune(shares=2000, period=100000, quota=40000)
    rendered = domain.to_xml()
    assert '<memory unit="KiB">131072</memory>' in rendered
    assert '<currentMemory unit="KiB">65536</currentMemory>' in rendered
    # Without over-provisioning or a cap: all of it, weighed but not capped.
    plain = build_domain(make_spec(), accel="kvm", arch="x86_64")
    assert plain.current_memory.kib == plain.memory.kib == 128 * 1024
    assert plain.cputune == xml.CpuTune(shares=2000)
    assert cpu_cap(0.001) == {"period": 100000, "quota": 1000}


def test_tcg_domain_policy():
    domain = build_domain(make_spec(), accel="tcg", arch="x86_64", cpu_mode="host-passthrough")
    assert domain.type == "qemu"
    assert domain.cpu is None  # passthrough means nothing without KVM
    assert domain.disks[0].source_file == "/var/lib/images/root.qcow2"


def test_start_replaces_a_stale_stopped_definition(driver):
    spec = make_spec()
    connection = libvirt.open(TEST_URI)
    stale = make_spec(name=spec.name, memory_mb=64)  # same name, another UUID
    connection.defineXML(driver.domain_xml(stale))
    assert driver.start(spec) is VmState.RUNNING
    domain = connection.lookupByName(spec.name)
    assert (domain.UUIDString(), domain.maxMemory()) == (spec.uuid, 128 * 1024)
    connection.close()


def test_an_overlay_names_its_backing_image_and_the_console_is_logged():
    from stackwright.agent.hypervisor.base import BackingSpec
    from stackwright.agent.hypervisor.libvirt import xml as libvirt_xml

    spec = make_spec(disks=[DiskSpec(
        device="vda", source=NfsSource(server="10.0.0.9", export="/export/primary", path="root.qcow2"),
        backing=BackingSpec(source=NfsSource(server="10.0.0.9", export="/export/primary", path="template-1")))])
    domain = build_domain(spec, accel="kvm", arch="x86_64", nfs_identity=("root", "root"), console_log_dir="/logs")
    text = domain.to_xml()
    parsed = libvirt_xml.Domain.parse(text)
    backing = parsed.disks[0].backing
    assert (backing.source_protocol, backing.source_name, backing.driver_type) == (
        "nfs", "/export/primary/template-1", "qcow2")
    assert parsed.disks[0].target_dev == "vda" and parsed.disks[0].source_name == "/export/primary/root.qcow2"
    assert "<backingStore />" in text or "<backingStore/>" in text     # the chain ends at the template's copy
    assert parsed.serials[0].log_file == "/logs/%s-console.log" % spec.name


def test_console_of_guests_without_a_display(driver):
    with pytest.raises(VmNotFound):
        driver.console("i-9-9999-VM")
    spec = make_spec()
    driver.start(spec)
    # libvirt's test driver runs no QEMU: the guest has no port, which is said as such.
    with pytest.raises(HypervisorError, match="no VNC display"):
        driver.console(spec.name)
    driver.stop(spec.name, force=True)


def test_only_guests_paused_by_storage_errors_are_resumed(driver):
    spec = make_spec()
    driver.start(spec)
    domain = driver.host.get_domain(spec.name)
    domain.suspend()                       # paused by an operator, not by an I/O error
    assert driver.io_paused() == [] and driver.resume_io_paused() == []
    assert domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert driver.list_vms()[spec.name] is VmState.RUNNING


def test_the_disks_of_a_running_guest_and_the_element_a_detach_names(driver):
    """libvirt's test driver cannot hot-plug (tests/e2e/test_templates_kvm.py does it on KVM);
    what the driver reads from the live definition is checked here."""
    data = DiskSpec(device="vdb", source=FileSource(path="/var/lib/images/data.qcow2"))
    spec = make_spec(disks=[make_spec().disks[0], data])
    driver.start(spec)
    assert driver.disks(spec.name) == ["vda", "vdb"]
    driver.attach_disk(spec.name, data)             # already there: nothing to do
    live = driver.host.get_domain(spec.name).XMLDesc(0)
    element = xml.disk_element(live, "vdb")
    assert "data.qcow2" in element and element.startswith("<disk")
    with pytest.raises(KeyError):
        xml.disk_element(live, "vdc")
    with pytest.raises(InvalidSpec):
        driver.attach_disk(spec.name, DiskSpec(device="sdz1", source=FileSource(path="/x")))
    driver.stop(spec.name, force=True)
    with pytest.raises(VmNotFound):
        driver.disks(spec.name)
    with pytest.raises(VmNotFound):
        driver.detach_disk(spec.name, "vdb", timeout=1)
