"""A recording agent gateway for unit tests: calls are served by in-process agents (the
agent's real command handlers, Simulator hypervisor and storage drivers) and remembered,
so a test can say exactly which requests a job sent to which host."""

from __future__ import annotations

import threading

from stackwright.agent.handlers import Dispatcher, HandlerContext
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.storage.simulator import SimulatorStorageDriver
from stackwright.management.errors import ResourceUnavailable
from stackwright.management.services.gateway import CONNECT_WAIT, AgentAbsent, CallLost, HostRef
from stackwright.protocol import messages as m


class EngineKilled(BaseException):
    """Stands for a kill of the engine: nothing after it runs or is recorded (not an Exception,
    so no job code can catch it)."""


class RecordingGateway:
    """An `AgentGateway` whose hosts are in-process agents; errors are mapped the way the
    agent channel maps them."""

    def __init__(self):
        self.hosts: dict[str, Dispatcher] = {}
        self.broken: Exception | None = None    # when set, every call raises it
        self.cut_after_start: set[str] = set()  # guids whose link is cut once a StartVm reached them
        self.unreachable: set[str] = set()      # guids whose requests never arrive (sent, no answer)
        self.absent: set[str] = set()           # guids whose agent is not connected (never sent)
        self.leave_after: dict[str, type] = {}  # guid -> request type after which its agent goes away
        # guid -> request type whose answer is lost with the management server holding the agent
        # (which goes away: its agent is not connected until `reconnect`)
        self.lose_after: dict[str, type] = {}
        self.kill_after: set[type] = set()      # request types after which the engine is "killed"
        self.max_connect_wait = 0.2             # seconds a call waits for an absent agent, at most
        self.log: list[tuple[str, type]] = []   # (guid, request type) of the requests that arrived
        self.background: list[tuple] = []       # background work asked of the channel
        self.down_within = 30.0
        self.ca_fingerprint = "00" * 32
        self._reconnected: dict[str, threading.Event] = {}

    # --- hosts -----------------------------------------------------------------------

    def add(self, guid: str, memory_mb: int = 16384, storage_bytes: int = 1 << 40):
        driver = SimulatorDriver(hostname=guid, memory_mb=memory_mb)
        storage = SimulatorStorageDriver(capacity_bytes=storage_bytes)
        self.hosts[guid] = Dispatcher(HandlerContext(driver, storage_factory=lambda: storage), workers=0)
        return driver, storage

    def disconnect(self, guid: str) -> threading.Event:
        """The agent of `guid` goes away; set the returned event to bring it back."""
        self.absent.add(guid)
        event = self._reconnected.setdefault(guid, threading.Event())
        event.clear()
        return event

    def reconnect(self, guid: str) -> None:
        self.absent.discard(guid)
        self.unreachable.discard(guid)
        self._reconnected.setdefault(guid, threading.Event()).set()

    def calls(self, request_type: type | None = None) -> list[tuple[str, type]]:
        return [c for c in self.log if request_type is None or c[1] is request_type]

    # --- AgentGateway ----------------------------------------------------------------

    def call(self, host: HostRef, request: m.Request, timeout: float, *,
             connect_wait: float = CONNECT_WAIT) -> m.Answer:
        if self.broken is not None:
            raise self.broken
        guid = host.guid
        if guid in self.absent or guid not in self.hosts:
            if not self.connected(guid, min(connect_wait, self.max_connect_wait)):
                raise AgentAbsent(f"the agent of host {host.name} is not connected")
        if guid in self.unreachable:
            raise ResourceUnavailable(f"Host {guid} did not answer {type(request).__name__}: timeout")
        self.log.append((guid, type(request)))
        answer = self.hosts[guid].run(request)
        if guid in self.cut_after_start and isinstance(request, m.StartVm):
            # The guest boots; its answer, and every request after it, is lost.
            self.unreachable.add(guid)
            raise ResourceUnavailable(f"Host {guid} did not answer StartVm: timeout")
        if self.leave_after.get(guid) is type(request):
            self.absent.add(guid)
        if self.lose_after.get(guid) is type(request):
            del self.lose_after[guid]
            self.disconnect(guid)
            raise CallLost(f"Host {host.name} did not answer {type(request).__name__}: the management server "
                           f"holding its agent did not answer")
        if type(request) in self.kill_after:
            self.kill_after.discard(type(request))
            raise EngineKilled(f"killed after {type(request).__name__} reached {guid}")
        if isinstance(answer, m.ErrorAnswer):
            raise ResourceUnavailable(f"Host {guid} failed {type(request).__name__}: {answer.message}")
        return answer

    def connected(self, guid: str, wait: float = 0.0) -> bool:
        if guid in self.hosts and guid not in self.absent:
            return True
        event = self._reconnected.get(guid)
        return event is not None and event.wait(wait) and guid not in self.absent

    def check_image_store(self, store_uuid: str) -> None:
        self.background.append(("check_image_store", store_uuid))

    def adopt_pending(self, address: str):
        return None

    def adopted(self, guid: str) -> None:
        self.background.append(("adopted", guid))

    def start_simulated(self, guid: str, url: str) -> None:
        self.background.append(("start_simulated", guid))

    def stop_simulated(self, guid: str) -> None:
        self.background.append(("stop_simulated", guid))

    def issue_token(self, ttl: int, guid: str | None = None, note: str = "") -> str:
        raise ResourceUnavailable("The agent channel is not running on this management server")
