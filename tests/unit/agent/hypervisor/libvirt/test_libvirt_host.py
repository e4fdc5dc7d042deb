"""Host facts that do not need libvirt: versions, bridges, the KVM device."""

from stackwright.agent.hypervisor.libvirt.host import format_version, kvm_device_usable, list_bridges, nic_address


def test_libvirt_version_numbers():
    assert format_version(7002022) == "7.2.22"
    assert format_version(9000000) == "9.0.0"


def test_bridges_are_the_devices_with_a_bridge_directory(tmp_path):
    for device in ("eth0", "cloudbr0", "cloudbr1", "vnet0"):
        (tmp_path / device).mkdir()
    (tmp_path / "cloudbr1" / "bridge").mkdir()
    (tmp_path / "cloudbr0" / "bridge").mkdir()
    (tmp_path / "vnet0" / "brport").mkdir()
    assert list_bridges(tmp_path) == ["cloudbr0", "cloudbr1"]
    assert list_bridges(tmp_path / "absent") == []


def test_missing_private_device_reports_no_address(tmp_path):
    address = nic_address("cloudbr9", sys_class_net=tmp_path)
    assert (address.device, address.ip, address.mac) == ("cloudbr9", None, None)


def test_kvm_device_check_needs_a_device_that_opens(tmp_path):
    assert kvm_device_usable(str(tmp_path / "kvm")) is False
