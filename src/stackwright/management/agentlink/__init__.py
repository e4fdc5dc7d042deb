"""The engine's side of the agent channel (TLS listener on 8250).

The host service plugs in by implementing `AgentEvents`; commands go out with
``await server.send(host_key, command, timeout)``.  Nothing here touches the
database.
"""

from stackwright.management.agentlink.events import (
    AgentEvents,
    AgentUnavailable,
    CommandTimeout,
    PingLevel,
    RegistrationRefused,
)
from stackwright.management.agentlink.server import AgentLinkServer, HeartbeatMonitor, LinkSettings
from stackwright.management.agentlink.session import AgentSession
from stackwright.protocol.channel import RemoteError

__all__ = [
    "AgentEvents",
    "AgentLinkServer",
    "AgentSession",
    "AgentUnavailable",
    "CommandTimeout",
    "HeartbeatMonitor",
    "LinkSettings",
    "PingLevel",
    "RegistrationRefused",
    "RemoteError",
]
