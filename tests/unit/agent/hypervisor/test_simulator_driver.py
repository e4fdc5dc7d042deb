import pytest

from stackwright.agent.errors import HypervisorError, InsufficientCapacity, InvalidSpec, VmNotFound
from stackwright.agent.hypervisor import get_driver
from stackwright.agent.hypervisor.base import VmSpec, VmState
from stackwright.agent.hypervisor.simulator import SimulatorDriver


def spec(name="i-2-10-VM", memory_mb=1024, vcpus=2):
    return VmSpec(name=name, uuid=f"uuid-{name}", vcpus=vcpus, cpu_mhz=1000, memory_mb=memory_mb)


@pytest.fixture
def driver():
    return get_driver("simulator", hostname="sim1", cpus=4, cpu_sockets=2, cpu_mhz=2000, memory_mb=4096)


def test_host_info_follows_configuration(driver):
    info = driver.host_info()
    assert (info.hypervisor, info.hostname, info.cpus, info.cpu_sockets, info.cpu_cores, info.cpu_mhz) == (
        "Simulator", "sim1", 4, 2, 2, 2000)
    assert info.memory_bytes == 4096 << 20
    assert info.private_mac.startswith("52:54:00:")
    assert SimulatorDriver(hostname="sim1").host_info().private_mac == info.private_mac


def test_lifecycle_and_stats(driver):
    assert driver.start(spec()) is VmState.RUNNING
    assert driver.start(spec()) is VmState.RUNNING  # already running: no change
    assert driver.boot_count("i-2-10-VM") == 1
    stats = driver.host_stats()
    assert stats.cpu_utilization == 50.0 and stats.memory_free_bytes == 3072 << 20
    driver.reboot("i-2-10-VM")
    assert driver.boot_count("i-2-10-VM") == 2
    assert driver.stop("i-2-10-VM") is VmState.STOPPED
    assert driver.list_vms() == {"i-2-10-VM": VmState.STOPPED}
    assert driver.host_stats().memory_free_bytes == 4096 << 20
    with pytest.raises(HypervisorError, match="is not running on host sim1"):
        driver.reboot("i-2-10-VM")


def test_unknown_guests(driver):
    assert driver.stop("ghost") is VmState.STOPPED
    with pytest.raises(VmNotFound, match="VM ghost does not exist on host sim1"):
        driver.query("ghost")
    with pytest.raises(VmNotFound):
        driver.reboot("ghost")


def test_memory_is_a_hard_limit(driver):
    driver.start(spec("a", memory_mb=3000))
    with pytest.raises(InsufficientCapacity, match="VM b: needs 2000 MiB but host sim1 has 1096 MiB free of 4096 MiB"):
        driver.start(spec("b", memory_mb=2000))
    driver.stop("a")
    assert driver.start(spec("b", memory_mb=2000)) is VmState.RUNNING


def test_an_over_provisioned_guest_takes_its_minimum_memory():
    """The guide's example: a 2 GiB host whose cluster has memory ratio 2 runs three 1 GiB
    guests (512 MiB reserved each); a 2 GiB guest (1 GiB reserved) then no longer fits."""
    small = get_driver("simulator", hostname="sim2", memory_mb=2048)
    for name in ("a", "b", "c"):
        assert small.start(VmSpec(name=name, uuid=name, vcpus=1, cpu_mhz=500, memory_mb=1024,
                                  min_memory_mb=512)) is VmState.RUNNING
    assert small.host_stats().memory_free_bytes == 512 << 20
    with pytest.raises(InsufficientCapacity, match="VM d: needs 1024 MiB but host sim2 has 512 MiB free of 2048 MiB"):
        small.start(VmSpec(name="d", uuid="d", vcpus=1, cpu_mhz=500, memory_mb=2048, min_memory_mb=1024))


@pytest.mark.parametrize("overrides, message", [
    ({"min_memory_mb": 0}, "min_memory_mb must be between 1 and memory_mb \\(1024\\), got 0"),
    ({"min_memory_mb": 1025}, "min_memory_mb must be between 1 and memory_mb \\(1024\\), got 1025"),
    ({"cpu_cap": 0.0}, "cpu_cap must be above 0 and at most 1, got 0.0"),
    ({"cpu_cap": 1.5}, "cpu_cap must be above 0 and at most 1, got 1.5"),
])
def test_sizing_out_of_range_is_refused(driver, overrides, message):
    with pytest.raises(InvalidSpec, match=message):
        driver.start(VmSpec(name="x", uuid="x", vcpus=1, cpu_mhz=500, memory_mb=1024, **overrides))
    assert driver.list_vms() == {}


def test_invalid_configuration_and_specs():
    with pytest.raises(InvalidSpec, match="3 CPUs cannot be split over 2 sockets"):
        SimulatorDriver(cpus=3, cpu_sockets=2)
    with pytest.raises(InvalidSpec, match="vcpus >= 1"):
        SimulatorDriver().start(spec(vcpus=0))
