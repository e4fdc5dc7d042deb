"""The engine's side of the agent channel (TLS listener on 8250): an entry layer, like the API.

The low-level server (`server`, `session`, `events`) knows nothing of the database: it
reports through `AgentEvents`, and commands go out with
``await server.send(host_key, command, timeout)``. On top of it, `channel.AgentChannel`
owns the listener, the certificate authority, the enrollment tokens and the engine's own
simulated agents; `registrar.Registrar` implements `AgentEvents` with the registration
service; `gateway.ChannelGateway` is the `AgentGateway` that services reach agents through.
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
