"""The agent gateway: the only way services and jobs reach a host's agent.

Services never look for the agent channel themselves; the engine injects an
`AgentGateway` into every request and job context (`ctx.agents`). The agent channel
implements it (`agentlink.gateway.ChannelGateway`); unit tests use a recording gateway
that serves calls from in-process agents and remembers them.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from stackwright.protocol import messages as m

from ..errors import ResourceUnavailable

# Seconds a call waits for a host's agent to (re)connect before it is refused unsent.
CONNECT_WAIT = 10.0


class HostRef(NamedTuple):
    """A host as a call names it: the agent's guid, and the host's name for messages."""

    guid: str
    name: str


class AgentAbsent(ResourceUnavailable):
    """The host's agent was not connected: the request was never sent."""


class CallLost(ResourceUnavailable):
    """The request went to the host's agent through another management server, which went away
    before answering: the host may have carried it out, and its agent is reconnecting elsewhere."""


class AgentGateway(Protocol):
    """What the engine's services need from the hosts' agents."""

    def call(self, host: HostRef, request: m.Request, timeout: float, *,
             connect_wait: float = CONNECT_WAIT) -> m.Answer:
        """Send `request` to the agent of `host` and return its answer (through the management
        server holding the agent when that is another one).

        Raises `AgentAbsent` when no agent of that host connected within `connect_wait`
        seconds (the request was never sent), `CallLost` when the management server it went
        through went away before answering, `ResourceUnavailable` when it was sent and failed,
        or no answer came within `timeout` (it may have taken effect in both cases)."""

    def connected(self, guid: str, wait: float = 0.0) -> bool:
        """Whether the agent of host `guid` is connected, waiting up to `wait` seconds."""

    @property
    def down_within(self) -> float:
        """The longest a silent host stays anything but Down (0 without an agent channel)."""

    def check_image_store(self, store_uuid: str) -> None:
        """In the background: a connected host of the store's zone checks it."""

    def adopt_pending(self, address: str) -> tuple[m.HostInfo, str, str] | None:
        """An agent at `address` that registered before its host was added: (host info,
        guid, agent version); `adopted(guid)` hands it over once the new host is committed."""

    def adopted(self, guid: str) -> None:
        """The pending agent `guid` now has its host: it is registered and its storage attached."""

    def start_simulated(self, guid: str, url: str) -> None:
        """In the background: the engine's own simulated agent for Simulator host `guid`."""

    def stop_simulated(self, guid: str) -> None:
        """In the background: stop that simulated agent and forget its session."""

    def issue_token(self, ttl: int, guid: str | None = None, note: str = "") -> str:
        """A one-time enrollment token for an agent."""

    @property
    def ca_fingerprint(self) -> str:
        """The fingerprint of the certificate authority agents must trust."""
