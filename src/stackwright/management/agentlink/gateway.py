"""The engine's `AgentGateway` (services.gateway) over its agent channel.

The engine creates the gateway; the daemon attaches the channel once it listens. The
channel may start after the job workers (jobs resumed at start then wait for it, when the
daemon said it is coming) or not run at all (then nothing is ever sent).
"""

from __future__ import annotations

import logging
import threading
import time

from stackwright.management.agentlink.channel import AgentChannel
from stackwright.management.agentlink.peers import PeerAbsent
from stackwright.management.errors import ResourceUnavailable
from stackwright.management.services.gateway import CONNECT_WAIT, AgentAbsent, HostRef
from stackwright.protocol import messages as m


log = logging.getLogger(__name__)

# Seconds between two looks, while a call waits for a host's agent, at where it is connected.
WHERE_POLL = 0.5


class ChannelGateway:
    """An `AgentGateway` served by an `AgentChannel`, once one is attached."""

    def __init__(self):
        self.channel: AgentChannel | None = None
        # Set by the daemon before the engine starts: a channel will be attached.
        self.coming = False
        self._up = threading.Event()

    # --- the channel, as the composition root attaches it ---------------------------------------

    def expect(self) -> None:
        """A channel will be attached: calls made before wait for it (up to their connect wait)."""
        self.coming = True

    def attach(self, channel: AgentChannel) -> None:
        self.channel = channel
        self._up.set()

    def detach(self) -> None:
        self.coming = False
        self.channel = None
        self._up.set()  # wake waiters: the channel is not coming any more

    def channel_within(self, wait: float = 0.0) -> AgentChannel | None:
        """The channel, or None; waits up to `wait` seconds for one that is still starting
        (after a restart, pending jobs resume before it is up)."""
        if self.channel is None and self.coming and wait > 0:
            self._up.wait(wait)
        return self.channel

    def _running(self) -> AgentChannel:
        channel = self.channel
        if channel is None:
            raise ResourceUnavailable("The agent channel is not running on this management server")
        return channel

    # --- AgentGateway -------------------------------------------------------------------------

    def call(self, host: HostRef, request: m.Request, timeout: float, *,
             connect_wait: float = CONNECT_WAIT) -> m.Answer:
        """The host's agent is reached here, or through the management server holding it
        (recorded in the database); while it is connected to neither, the call waits up to
        `connect_wait` for it to connect to one of them."""
        channel = self.channel_within(connect_wait)
        if channel is None:
            raise AgentAbsent("the agent channel is not running on this management server")
        if not host.guid:
            raise AgentAbsent(f"the agent of host {host.name} is not connected")
        registered = channel.registration_event(host.guid)
        deadline = time.monotonic() + connect_wait
        while True:
            if registered.is_set():
                return channel.call(host.guid, request, timeout)
            peer = self._peer_holding(channel, host.guid)
            if peer is not None:
                try:
                    return channel.peer_client.call(peer, host.guid, host.name, request, timeout)
                except PeerAbsent:
                    pass    # it is moving: look again
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentAbsent(f"the agent of host {host.name} is not connected")
            registered.wait(min(WHERE_POLL, remaining))

    @staticmethod
    def _peer_holding(channel: AgentChannel, guid: str) -> tuple[str, int] | None:
        """The address of the live peer holding the agent of host `guid`, if one does."""
        cluster = channel.engine.cluster
        owner = cluster.host_owner(guid)
        if owner is None or owner == cluster.me.msid or channel.peer_client is None:
            return None
        return cluster.peer_address(owner)

    def connected(self, guid: str, wait: float = 0.0) -> bool:
        channel = self.channel
        if channel is None or not guid:
            return False
        registered = channel.registration_event(guid)
        if registered.is_set() or self._peer_holding(channel, guid) is not None:
            return True
        return registered.wait(wait)

    @property
    def down_within(self) -> float:
        # Jobs resumed after a restart ask before the channel is up: it is waited for, so that a
        # host's silence is judged by the channel's rules and not taken as none at all.
        channel = self.channel_within(CONNECT_WAIT)
        return channel.down_within if channel is not None else 0.0

    def check_image_store(self, store_uuid: str) -> None:
        channel = self.channel
        if channel is not None:
            channel.schedule(channel.registrar.check_image_store, store_uuid)

    def adopt_pending(self, address: str) -> tuple[m.HostInfo, str, str] | None:
        channel = self.channel
        found = channel.registrar.pending_for(address=address) if channel is not None else None
        if found is None:
            return None
        guid, pending = found
        return pending.request.host, guid, pending.request.agent_version

    def adopted(self, guid: str) -> None:
        channel = self.channel
        if channel is not None:
            channel.adopted(guid)

    def take_over(self) -> None:
        """In the background: claim what management servers found Down served."""
        channel = self.channel
        if channel is not None:
            channel.schedule(channel.take_over)

    def start_simulated(self, guid: str, url: str) -> None:
        channel = self.channel
        if channel is not None:
            channel.schedule(channel.start_simulated, guid, url)

    def stop_simulated(self, guid: str) -> None:
        channel = self.channel
        if channel is None:
            return
        if guid not in channel.simulated:
            # Run by a peer, perhaps: that one stops it.
            peer = self._peer_holding(channel, guid)
            if peer is not None:
                try:
                    channel.peer_client.stop_simulated(peer, guid)
                except (OSError, ResourceUnavailable) as e:
                    log.warning("could not have the management server at %s:%d stop the simulated agent of "
                                "host %s: %s", peer[0], peer[1], guid, e)
        channel.schedule(channel.stop_simulated, guid)

    def issue_token(self, ttl: int, guid: str | None = None, note: str = "") -> str:
        return self._running().issue_token(ttl, guid=guid, note=note)

    @property
    def ca_fingerprint(self) -> str:
        return self._running().ca.fingerprint
