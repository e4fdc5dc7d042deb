"""Live migration through the agent's handlers between simulated hosts: the guest moves without a
boot, a destination without room or bridge refuses, a failure leaves the guest where it was, and
a second MigrateVm for a guest already migrating waits for that migration."""

import threading
import time

from stackwright.agent.handlers import Dispatcher, HandlerContext
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.protocol import messages as m


def host(name, memory_mb=1024, bridges=("cloudbr0",)):
    driver = SimulatorDriver(hostname=name, memory_mb=memory_mb, bridges=bridges)
    return driver, Dispatcher(HandlerContext(driver), workers=0, host_label=name)


def spec(name="i-2-10-VM", memory_mb=512):
    return m.VmSpec(name=name, uuid="7e1b0c2a-0000-4000-8000-%012d" % len(name), vcpus=1, cpu_mhz=500,
                    memory_mb=memory_mb, nics=[m.NicSpec(mac="02:00:00:00:00:01", bridge="cloudbr0")])


def migrate_request(name, dest):
    return m.MigrateVm(name=name, address="192.0.2.2", guid=dest, vnc_listen="192.0.2.2", timeout=30)


def test_a_guest_moves_without_booting_again():
    source, a = host("agent-mig-a")
    dest, b = host("agent-mig-b")
    guest = spec()
    a.run(m.StartVm(spec=guest))
    assert isinstance(b.run(m.PrepareForMigration(spec=guest)), m.Ack)
    assert a.run(migrate_request(guest.name, "agent-mig-b")) == m.VmStateAnswer(name=guest.name,
                                                                                state=m.VmState.STOPPED)
    assert guest.name not in source.list_vms()
    assert dest.query(guest.name) == m.VmState.RUNNING and dest.boot_count(guest.name) == 1


def test_a_destination_without_room_or_bridge_refuses():
    _small, small = host("agent-mig-small", memory_mb=256)
    _nobridge, nobridge = host("agent-mig-nobridge", bridges=())
    refused = small.run(m.PrepareForMigration(spec=spec()))
    assert isinstance(refused, m.ErrorAnswer) and "needs 512 MiB" in refused.message
    refused = nobridge.run(m.PrepareForMigration(spec=spec()))
    assert isinstance(refused, m.ErrorAnswer) and "has no bridge cloudbr0" in refused.message


def test_a_failed_migration_leaves_the_guest_running_on_its_source():
    source, a = host("agent-mig-c")
    _full, _full_storage = host("agent-mig-full", memory_mb=256)
    guest = spec()
    a.run(m.StartVm(spec=guest))
    for target in ("agent-mig-nowhere", "agent-mig-full"):
        failed = a.run(migrate_request(guest.name, target))
        assert isinstance(failed, m.ErrorAnswer), failed
        assert source.query(guest.name) == m.VmState.RUNNING
    assert "cannot connect to destination host agent-mig-nowhere" in a.run(
        migrate_request(guest.name, "agent-mig-nowhere")).message


def test_a_second_request_waits_for_the_migration_under_way():
    source, a = host("agent-mig-d")
    _dest, _dest_storage = host("agent-mig-e")
    guest = spec()
    a.run(m.StartVm(spec=guest))
    entered, release = threading.Event(), threading.Event()
    migrate = source.migrate

    def slow(*args):
        entered.set()
        release.wait(10)
        return migrate(*args)

    source.migrate = slow
    answers = []
    first = threading.Thread(target=lambda: answers.append(a.run(migrate_request(guest.name, "agent-mig-e"))))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=lambda: answers.append(a.run(migrate_request(guest.name, "agent-mig-e"))))
    second.start()
    time.sleep(0.3)         # the second request reaches the handler while the first migrates
    release.set()
    first.join(10)
    second.join(10)
    # One migration, two identical answers.
    assert answers == [m.VmStateAnswer(name=guest.name, state=m.VmState.STOPPED)] * 2
