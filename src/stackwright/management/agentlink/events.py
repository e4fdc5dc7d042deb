"""What the engine's host service implements to plug into the agent channel.

The agent channel knows nothing about the database: it calls these hooks and
the host service decides what a registration, a ping or a silence means.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

from stackwright.protocol.messages import Ping, RegisterAnswer, RegisterRequest

if TYPE_CHECKING:
    from stackwright.management.agentlink.session import AgentSession


class PingLevel(enum.StrEnum):
    """How long a host has been silent.

    ``ALERT``: no ping for ``ping.interval`` x ``ping.timeout`` seconds
    (CloudStack moves the host to Alert).  ``DOWN``: silent for twice that (the
    session, if still open, is closed; the host can be declared Down).
    """

    ALERT = "alert"
    DOWN = "down"


class RegistrationRefused(Exception):
    """Raised by `AgentEvents.on_register` to turn a host away; the message reaches the agent's log."""


class AgentUnavailable(ConnectionError):
    """No session is open for that host, or it closed while a command was in flight."""


class CommandTimeout(TimeoutError):
    """The agent did not answer a command in time."""


class AgentEvents(Protocol):
    async def on_register(self, session: AgentSession, request: RegisterRequest) -> RegisterAnswer:
        """Accept a host: return its id (``host_id`` becomes the session's host key) or raise `RegistrationRefused`.

        ``ping_interval`` in the returned answer is overwritten with the
        server's setting.  ``session.identity`` is the certificate's common name
        (the host guid), already checked against ``request.guid``.
        """

    async def on_ping(self, session: AgentSession, ping: Ping) -> None:
        """A heartbeat with the state of every guest on the host."""

    async def on_disconnect(self, session: AgentSession, clean: bool) -> None:
        """A registered session ended; ``clean`` when either side closed it in an orderly way."""

    async def on_ping_timeout(self, host_key: str, level: PingLevel, session: AgentSession | None) -> None:
        """A host missed its pings; ``session`` is None when it is no longer connected."""
