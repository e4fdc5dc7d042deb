"""Live migration between two real libvirtd, through the agent's command handlers and libvirt driver.

Two KVM hosts on one machine: each an isolated libvirtd in its own network namespace with its
own host UUID, listening on TCP without authentication (as the `libvirt_tcp` role sets it up),
the namespaces joined by a veth pair (`tests/support/kvm_cloud.py`, as the engine-level test and
the migration benchmark set them up). A diskless guest runs on one, is live-migrated to the
other and back with PrepareForMigration and MigrateVm, the way the engine's migration job asks
the two agents; a migration to a host whose libvirtd is stopped leaves the guest running where
it was.
"""

from __future__ import annotations

import uuid

import pytest

from stackwright.agent.handlers import Dispatcher, HandlerContext
from stackwright.agent.hypervisor.libvirt.driver import LibvirtDriver
from stackwright.protocol import messages as m
from tests.support.kvm_cloud import LibvirtNode, start_pair
from tests.support.libvirtd import missing_prerequisites, stop_pid

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.timeout(180)]

ADDRESSES = ("10.250.71.1", "10.250.71.2")
DEVICES = ("swmig0", "swmig1")


class KvmHost(LibvirtNode):
    """A LibvirtNode and an agent's command handlers on it."""

    def __init__(self, address: str, device: str):
        super().__init__(address, device)
        self.driver: LibvirtDriver | None = None
        self.agent: Dispatcher | None = None

    def connect(self) -> None:
        # The daemon's socket, reached through its mount namespace.
        socket = "/proc/%d/root/run/libvirt/libvirt-sock" % self.libvirtd.holder.pid
        self.driver = LibvirtDriver(uri="qemu:///system?socket=%s" % socket, stop_grace=1.0)
        self.agent = Dispatcher(HandlerContext(self.driver), workers=0, host_label=self.address)

    def call(self, request: m.Request) -> m.Answer:
        return self.agent.run(request)

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.close()
        self.stop_libvirt()


@pytest.fixture(scope="module")
def hosts():
    problems = missing_prerequisites()
    if problems:
        pytest.skip("no real libvirtd here: " + "; ".join(problems))
    pair = [KvmHost(address, device) for address, device in zip(ADDRESSES, DEVICES, strict=True)]
    try:
        start_pair(pair)
        for host in pair:
            host.connect()
        yield pair
    finally:
        for host in pair:
            host.stop()


def guest_spec(name: str, host: KvmHost) -> m.VmSpec:
    return m.VmSpec(name=name, uuid=str(uuid.uuid4()), vcpus=1, cpu_mhz=1000, memory_mb=128,
                    vnc_listen=host.address)


def migrate(source: KvmHost, dest: KvmHost, spec: m.VmSpec) -> m.Answer:
    """What the engine's migration job sends: the destination prepares, the source migrates."""
    prepared = dest.call(m.PrepareForMigration(spec=spec))
    assert isinstance(prepared, m.Ack), prepared
    return source.call(m.MigrateVm(name=spec.name, address=dest.address, guid=dest.address,
                                   vnc_listen=dest.address, timeout=60))


def test_a_running_guest_migrates_and_back(hosts):
    a, b = hosts
    spec = guest_spec("i-2-801-VM", a)
    started = a.call(m.StartVm(spec=spec))
    assert started == m.VmStateAnswer(name=spec.name, state=m.VmState.RUNNING), started
    domain_uuid = a.driver.host.get_domain(spec.name).UUIDString()
    try:
        answer = migrate(a, b, spec)
        assert answer == m.VmStateAnswer(name=spec.name, state=m.VmState.STOPPED), answer
        # It left a (no definition kept) and runs on b, persistent there, the same domain.
        assert spec.name not in a.driver.list_vms()
        assert b.call(m.QueryVm(name=spec.name)).state == m.VmState.RUNNING
        moved = b.driver.host.get_domain(spec.name)
        assert moved.UUIDString() == domain_uuid and moved.isPersistent()
        assert "listen='%s'" % b.address in moved.XMLDesc(0) or 'listen="%s"' % b.address in moved.XMLDesc(0)

        back = migrate(b, a, spec)
        assert back.state == m.VmState.STOPPED
        assert a.call(m.QueryVm(name=spec.name)).state == m.VmState.RUNNING
        assert spec.name not in b.driver.list_vms()
    finally:
        for host in hosts:
            host.call(m.StopVm(name=spec.name, force=True))


def test_a_failed_migration_leaves_the_guest_running_on_its_source(hosts):
    a, b = hosts
    spec = guest_spec("i-2-802-VM", a)
    assert a.call(m.StartVm(spec=spec)).state == m.VmState.RUNNING
    try:
        assert isinstance(b.call(m.PrepareForMigration(spec=spec)), m.Ack)
        stop_pid(b.libvirtd.daemon_pid(), "libvirtd")       # the destination's libvirtd goes away
        failed = a.call(m.MigrateVm(name=spec.name, address=b.address, guid=b.address, vnc_listen=b.address,
                                    timeout=60))
        assert isinstance(failed, m.ErrorAnswer), failed
        assert "migrate %s to %s" % (spec.name, b.address) in failed.message
        assert a.call(m.QueryVm(name=spec.name)).state == m.VmState.RUNNING
    finally:
        a.call(m.StopVm(name=spec.name, force=True))
