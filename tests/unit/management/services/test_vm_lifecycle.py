"""VM starts, stops and expunges against the agent's real command handlers, simulator
hypervisor and simulator storage, without the network channel in between: failures on one
host or pool, a start resumed after an interruption, and VMs never left in transition.

The VM service commits between its phases, so this module works on its own database and
each test builds its own zone.
"""

import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from stackwright.agent.handlers import Dispatcher, HandlerContext
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.storage.simulator import SimulatorStorageDriver
from stackwright.management.context import Context
from stackwright.management.errors import CloudRuntimeError, InsufficientCapacity, ResourceUnavailable
from stackwright.management.persistence.models import Event, Host, VmInstance, Volume
from stackwright.management.services import vms
from stackwright.management.services.configuration import GlobalSettings
from stackwright.protocol import messages as m
from tests.unit.management.services.test_vms import GiB, World


class LocalAgents:
    """The engine's `agents.call` served by in-process agents: real handlers and drivers,
    errors mapped the way the agent channel maps them."""

    def __init__(self):
        self.hosts = {}
        self.broken = None          # when set, every call raises it (an unexpected failure)
        self.connected = threading.Event()
        self.connected.set()
        self.cut_after_start = set()    # guids whose link is cut once a StartVm reached them
        self.unreachable = set()        # guids whose commands never arrive
        self.log = []                   # (guid, command type) of the commands that arrived, and marks
        self.events = {}                # registration events of guids not simply connected
        self.down_within = 30.0         # the channel's longest wait for a silent host's Down

    def add(self, guid, memory_mb=16384, storage_bytes=1 << 40):
        driver = SimulatorDriver(hostname=guid, memory_mb=memory_mb)
        storage = SimulatorStorageDriver(capacity_bytes=storage_bytes)
        self.hosts[guid] = Dispatcher(HandlerContext(driver, storage_factory=lambda: storage), workers=0)
        return driver, storage

    def registration_event(self, guid):
        return self.events.get(guid, self.connected)

    def call(self, guid, command, timeout=60.0):
        if self.broken is not None:
            raise self.broken
        dispatcher = self.hosts.get(guid)
        if dispatcher is None or guid in self.unreachable:
            raise ResourceUnavailable("Host %s did not answer %s: not connected" % (guid, type(command).__name__))
        self.log.append((guid, type(command)))
        answer = dispatcher.run(command)
        if guid in self.cut_after_start and isinstance(command, m.StartVm):
            # The guest boots; its answer, and every command after it, is lost.
            self.unreachable.add(guid)
            raise ResourceUnavailable("Host %s did not answer StartVm: timeout" % guid)
        if isinstance(answer, m.ErrorAnswer):
            raise ResourceUnavailable("Host %s failed %s: %s" % (guid, type(command).__name__, answer.message))
        return answer


@pytest.fixture
def agents():
    return LocalAgents()


@pytest.fixture
def ctx(db, agents):
    """A context whose service commits for real (this module's own database)."""
    session = db.session()
    try:
        engine = SimpleNamespace(settings=GlobalSettings(db), agents=agents, agent_channel=lambda wait=0.0: agents)
        yield Context(engine, session, user=None)
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def world(ctx):
    return World(ctx)


def new_vm(ctx, world):
    """A VM as deployVirtualMachine leaves it: Stopped, with an Allocated root volume."""
    vm = world.vm(None, state="Stopped", memory=512)
    ctx.session.add(Volume(name="ROOT-%d" % vm.id, vm_id=vm.id, zone_id=world.zone.id, account_id=world.account.id,
                           size_bytes=GiB, format="qcow2", state="Allocated"))
    ctx.session.flush()
    return vm


def root(ctx, vm):
    return ctx.session.execute(select(Volume).where(Volume.vm_id == vm.id)).scalar_one()


def start(ctx, vm):
    return ctx.vms.start(vm)


def test_start_runs_the_guest_on_the_planned_host_with_its_volume(ctx, world, agents):
    host = world.host()
    pool = world.pool()
    driver, storage = agents.add(host.guid)
    vm = start(ctx, new_vm(ctx, world))
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Running", host.id, host.id)
    volume = root(ctx, vm)
    assert (volume.state, volume.pool_id) == ("Ready", pool.id)
    assert storage.volumes(pool.uuid) == {volume.uuid: GiB}
    assert driver.query(vm.instance_name) == m.VmState.RUNNING
    assert volume.disk["source"]["@type"] == "NfsSource" and volume.disk["source"]["path"] == volume.uuid


def test_a_host_that_refuses_the_guest_is_avoided(ctx, world, agents):
    small, big = world.host(), world.host()
    world.pool()
    agents.add(small.guid, memory_mb=256)      # the hypervisor has less memory than the engine believes
    agents.add(big.guid)
    vm = start(ctx, new_vm(ctx, world))
    assert (vm.state, vm.host_id) == ("Running", big.id)


def test_when_every_host_refuses_the_failures_are_named(ctx, world, agents):
    only = world.host()
    world.pool()
    agents.add(only.guid, memory_mb=256)
    vm = new_vm(ctx, world)
    with pytest.raises(InsufficientCapacity) as caught:
        start(ctx, vm)
    text = caught.value.text
    assert text.startswith("Unable to create a deployment for VM[User|%s]: no other Up and Enabled host left"
                           % vm.instance_name)
    assert "earlier attempts: %s: starting the guest failed:" % only.name in text
    vm = ctx.session.get(VmInstance, vm.id)
    assert (vm.state, vm.host_id) == ("Stopped", None)
    assert root(ctx, vm).state == "Ready"              # the volume was made; the next start reuses it


def test_a_pool_that_cannot_hold_the_volume_is_avoided(ctx, world, agents):
    host = world.host()
    world.pool()
    agents.add(host.guid, storage_bytes=GiB // 2)
    vm = new_vm(ctx, world)
    with pytest.raises(InsufficientCapacity) as caught:
        start(ctx, vm)
    assert "creating the root volume on storage pool" in caught.value.text
    volume = root(ctx, vm)
    assert (volume.state, volume.pool_id) == ("Allocated", None)
    assert ctx.session.get(VmInstance, vm.id).state == "Stopped"


def test_an_interrupted_start_resumes_on_its_host_and_boots_once(ctx, world, agents):
    host = world.host()
    pool = world.pool()
    driver, storage = agents.add(host.guid)
    vm = new_vm(ctx, world)
    # What a restart finds after a kill between CreateVolume and its commit.
    volume = root(ctx, vm)
    storage.create_volume(m.PoolSpec(uuid=pool.uuid, url=pool.url), volume.uuid, GiB)
    vm.state, vm.host_id = "Starting", host.id
    volume.state, volume.pool_id = "Creating", pool.id
    ctx.session.commit()
    vm = start(ctx, vm)
    assert (vm.state, root(ctx, vm).state) == ("Running", "Ready")
    assert driver.boot_count(vm.instance_name) == 1


def resumed_on(ctx, world, host, pool):
    """A VM whose start on `host` was interrupted by a restart (its volume being created)."""
    vm = new_vm(ctx, world)
    vm.state, vm.host_id = "Starting", host.id
    volume = root(ctx, vm)
    volume.state, volume.pool_id = "Creating", pool.id
    ctx.session.commit()
    return vm


def later(seconds, fn):
    timer = threading.Timer(seconds, fn)
    timer.start()
    return timer


@pytest.fixture
def quick_polls(monkeypatch):
    monkeypatch.setattr(vms, "VERDICT_POLL", 0.05)


def test_a_guest_that_may_run_on_a_silent_host_is_started_elsewhere_only_once_it_is_down(
        ctx, db, world, agents, quick_polls):
    first, second = world.host(), world.host()
    pool = world.pool()
    first_driver, _channel = agents.add(first.guid)
    second_driver, _channel = agents.add(second.guid)
    agents.cut_after_start.add(first.guid)
    first_id = first.id
    vm = resumed_on(ctx, world, first, pool)

    def judged_down():
        agents.log.append("first host Down")
        with db.transaction() as s:
            s.get(Host, first_id).state = "Down"

    later(0.5, judged_down)
    vm = start(ctx, vm)
    assert (vm.state, vm.host_id) == ("Running", second.id)
    assert second_driver.query(vm.instance_name) == m.VmState.RUNNING
    assert agents.log.index("first host Down") < agents.log.index((second.guid, m.StartVm))


def test_a_silent_host_whose_agent_returns_stops_the_guest_before_it_starts_elsewhere(
        ctx, world, agents, quick_polls):
    first, second = world.host(), world.host()
    pool = world.pool()
    first_driver, _channel = agents.add(first.guid)
    second_driver, _channel = agents.add(second.guid)
    agents.cut_after_start.add(first.guid)
    vm = resumed_on(ctx, world, first, pool)
    later(0.5, lambda: agents.unreachable.discard(first.guid))
    vm = start(ctx, vm)
    assert (vm.state, vm.host_id) == ("Running", second.id)
    assert first_driver.boot_count(vm.instance_name) == 1
    assert first_driver.query(vm.instance_name) != m.VmState.RUNNING
    assert agents.log.index((first.guid, m.StopVm)) < agents.log.index((second.guid, m.StartVm))


def test_without_a_verdict_on_the_silent_host_the_guest_is_not_started_elsewhere(
        ctx, world, agents, quick_polls, monkeypatch):
    monkeypatch.setattr(vms.VmService, "_verdict_time", lambda self: 0.5)
    first, second = world.host(), world.host()
    pool = world.pool()
    agents.add(first.guid)
    agents.add(second.guid)
    agents.cut_after_start.add(first.guid)
    vm = resumed_on(ctx, world, first, pool)
    with pytest.raises(CloudRuntimeError) as caught:
        start(ctx, vm)
    assert caught.value.text.startswith("Unable to start VM %s: host %s did not answer" % (vm.instance_name, first.name))
    assert "is not started on another host until the host's agent reconnects or the host is Down" in caught.value.text
    assert (second.guid, m.StartVm) not in agents.log
    vm = ctx.session.get(VmInstance, vm.id)
    ctx.session.refresh(vm)
    # Stopped here, Running again as soon as the host reports the guest.
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Stopped", None, first.id)
    assert ctx.session.execute(select(Event).where(Event.resource_uuid == vm.uuid, Event.level == "ERROR")).first()


class LeavingAfterOneCommand:
    """The registration event of an agent that disconnects once it has run one command."""

    def __init__(self, agents, guid):
        self.agents, self.guid, self.waits = agents, guid, 0

    def wait(self, timeout=None):
        self.waits += 1
        if self.waits == 1:
            return True
        self.agents.unreachable.add(self.guid)
        return False


def test_a_start_never_sent_to_an_absent_agent_moves_on_at_once(ctx, world, agents, monkeypatch):
    monkeypatch.setattr(vms.VmService, "_verdict_time", lambda self: pytest.fail("waited for a verdict"))
    leaving, staying = world.host(), world.host()     # the planner tries the lower id first
    world.pool()
    agents.add(leaving.guid)
    agents.add(staying.guid)
    agents.events[leaving.guid] = LeavingAfterOneCommand(agents, leaving.guid)
    vm = start(ctx, new_vm(ctx, world))
    assert (vm.state, vm.host_id) == ("Running", staying.id)
    assert (leaving.guid, m.CreateVolume) in agents.log and (leaving.guid, m.StartVm) not in agents.log


def test_an_unexpected_failure_does_not_leave_the_vm_starting(ctx, world, agents):
    world.host()
    world.pool()
    agents.broken = RuntimeError("the agent channel broke")
    vm = new_vm(ctx, world)
    with pytest.raises(RuntimeError):
        start(ctx, vm)
    vm = ctx.session.get(VmInstance, vm.id)
    ctx.session.refresh(vm)
    assert (vm.state, vm.host_id) == ("Stopped", None)


def test_stop_without_an_answer_needs_forced(ctx, world, agents):
    host = world.host()
    world.pool()
    agents.add(host.guid)
    vm = start(ctx, new_vm(ctx, world))
    del agents.hosts[host.guid]                # the host's agent went away
    with pytest.raises(CloudRuntimeError) as caught:
        ctx.vms.stop(vm)
    assert caught.value.text.startswith("Failed to stop VM instance %s: Host %s did not answer StopVm"
                                        % (vm.instance_name, host.guid))
    assert ctx.session.get(VmInstance, vm.id).state == "Running"
    vm = ctx.vms.stop(vm, forced=True)
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Stopped", None, host.id)
    warnings = ctx.session.execute(select(Event).where(Event.resource_uuid == vm.uuid, Event.level == "WARN",
                                                       Event.type == "VM.STOP"))
    assert "without confirmation from host" in warnings.scalars().one().description


def test_expunge_deletes_the_volume_or_stays_destroyed(ctx, world, agents):
    host = world.host()
    pool = world.pool()
    driver, storage = agents.add(host.guid)
    vm = start(ctx, new_vm(ctx, world))
    vm = ctx.vms.stop(vm)
    agents.broken = ResourceUnavailable("Host %s did not answer DeleteVolume: timeout" % host.guid)
    with pytest.raises(CloudRuntimeError) as caught:
        ctx.vms.destroy(vm, expunge=True)
    assert "could not delete its root volume from storage pool %s" % pool.name in caught.value.text
    assert ctx.session.get(VmInstance, vm.id).state == "Destroyed"
    agents.broken = None
    vm = ctx.vms.destroy(vm, expunge=True)
    assert vm.state == "Expunging" and vm.removed is not None
    assert storage.volumes(pool.uuid) == {}
    assert root_removed(ctx, vm)


def root_removed(ctx, vm):
    volume = ctx.session.execute(select(Volume).where(Volume.vm_id == vm.id)).scalar_one()
    return volume.removed is not None and volume.state == "Expunged"
