"""The engine's agent listener: sessions, command routing, heartbeat monitor.

One listener serves both kinds of connection (see docs/agent.md):

* agents with a client certificate issued by the engine's CA register, ping and
  receive commands;
* a connection without a client certificate may only fetch the CA certificate
  and enroll with a one-time token; anything else is refused.

TLS client certificates are therefore optional at the TLS layer and enforced
per message.  Plain TCP is used only when ``tls`` is explicitly off.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from stackwright.protocol.channel import Channel
from stackwright.protocol.framing import DEFAULT_MAX_FRAME, Frame
from stackwright.protocol.messages import Answer, Message, Request
from stackwright.protocol.pki import (
    CertificateAuthority,
    EnrollmentTokens,
    peer_common_name,
    server_context,
    use_small_tls_buffers,
)
from stackwright.management.agentlink.events import AgentEvents, AgentUnavailable, PingLevel
from stackwright.management.agentlink.session import AgentSession, peer_label

log = logging.getLogger(__name__)

DEFAULT_PORT = 8250


@dataclass
class LinkSettings:
    """Listener settings; ``ping_interval`` (s) and ``ping_timeout`` (multiplier) are CloudStack's."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls: bool = True
    server_names: tuple[str, ...] = ()
    ping_interval: float = 60.0
    ping_timeout: float = 2.5
    command_timeout: float = 60.0
    handshake_timeout: float = 15.0
    max_frame: int = DEFAULT_MAX_FRAME
    # After a start, how long the agents of hosts served before have to come back before
    # their silence counts (at least alert_after): a reconnect storm of thousands of agents
    # takes tens of seconds, and a host judged Down in the middle of it costs a write.
    reconnect_grace: float = 60.0

    @property
    def alert_after(self) -> float:
        return self.ping_interval * self.ping_timeout

    @property
    def down_within(self) -> float:
        """The longest a host whose agent went silent (or never came back after a start)
        stays anything but Down."""
        return 2 * self.alert_after + self.reconnect_grace


class HeartbeatMonitor:
    """Tracks the last ping of every registered host and reports silences once per level."""

    def __init__(self, server: AgentLinkServer):
        self.server = server
        self._last: dict[str, float] = {}
        self._level: dict[str, PingLevel] = {}
        self._session: dict[str, AgentSession | None] = {}
        # Hosts expected back after a start (when it was), not seen since.
        self._awaited: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def seen(self, host_key: str, session: AgentSession) -> None:
        self._last[host_key] = asyncio.get_running_loop().time()
        self._level.pop(host_key, None)
        self._session[host_key] = session
        self._awaited.pop(host_key, None)

    def expect(self, host_keys: Iterable[str]) -> None:
        """Watch hosts whose agents were connected before this start and have not come back:
        they are silent from now on, with `reconnect_grace` to return before that counts."""
        settings = self.server.settings
        now = asyncio.get_running_loop().time()
        start = now + max(0.0, settings.reconnect_grace - settings.alert_after)
        for host_key in host_keys:
            if host_key not in self._last:
                self._last[host_key] = start
                self._session[host_key] = None
                self._awaited[host_key] = now

    def disconnected(self, host_key: str, session: AgentSession) -> None:
        if self._session.get(host_key) is session:
            self._session[host_key] = None

    def forget(self, host_key: str) -> None:
        self._last.pop(host_key, None)
        self._level.pop(host_key, None)
        self._session.pop(host_key, None)
        self._awaited.pop(host_key, None)

    def level(self, host_key: str) -> PingLevel | None:
        return self._level.get(host_key)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agentlink-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        tick = max(0.05, min(1.0, self.server.settings.ping_interval / 4))
        while True:
            await asyncio.sleep(tick)
            await self.check()

    async def check(self) -> None:
        now = asyncio.get_running_loop().time()
        alert_after = self.server.settings.alert_after
        for host_key, last in list(self._last.items()):
            silent = now - last
            if silent >= 2 * alert_after:
                level = PingLevel.DOWN
            elif silent >= alert_after:
                level = PingLevel.ALERT
            else:
                continue
            if self._level.get(host_key) == level:
                continue
            self._level[host_key] = level
            session = self._session.get(host_key)
            if host_key in self._awaited:
                log.warning("host %s has not reconnected since the engine started %.1f s ago (%s)",
                            host_key, now - self._awaited[host_key], level)
            else:
                log.warning("host %s missed its pings: silent for %.1f s (%s)", host_key, silent, level)
            if level is PingLevel.DOWN and session is not None and not session.closed:
                await session.channel.close(f"no ping for {silent:.0f} s")
                session = None
            try:
                await self.server.events.on_ping_timeout(host_key, level, session)
            except Exception:
                log.exception("ping timeout handler failed for host %s", host_key)


class AgentLinkServer:
    """Accepts agents, keeps one session per host, and routes commands to them.

    ``ca`` and ``tokens`` are required when ``settings.tls`` is on.
    """

    def __init__(
        self,
        events: AgentEvents,
        settings: LinkSettings | None = None,
        ca: CertificateAuthority | None = None,
        tokens: EnrollmentTokens | None = None,
    ):
        self.events = events
        self.settings = settings or LinkSettings()
        self.ca = ca
        self.tokens = tokens
        self.monitor = HeartbeatMonitor(self)
        self._sessions: dict[str, AgentSession] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._ssl: ssl.SSLContext | None = None
        if self.settings.tls and ca is None:
            raise ValueError("TLS is on for the agent listener but no certificate authority was given")

    @property
    def tls_enabled(self) -> bool:
        return self.settings.tls

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return self.settings.port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        if self.settings.tls:
            assert self.ca is not None
            names = set(self.settings.server_names) | {socket.gethostname()}
            if self.settings.host not in ("", "0.0.0.0", "::"):
                names.add(self.settings.host)
            cert_path, key_path = self.ca.ensure_server_cert(names)
            self._ssl = server_context(cert_path, key_path, self.ca.cert_path)
            use_small_tls_buffers()
        else:
            log.warning(
                "agent listener on %s:%s runs WITHOUT TLS: agents are not authenticated and traffic is not "
                "encrypted; enable TLS unless this network is fully trusted",
                self.settings.host, self.settings.port,
            )
        # A deep accept queue: after an engine restart every agent reconnects at once, and
        # connections the kernel drops retry only after seconds of SYN backoff.
        self._server = await asyncio.start_server(
            self._accept, self.settings.host or None, self.settings.port, reuse_address=True, backlog=4096
        )
        self.monitor.start()
        log.info(
            "agent listener on %s:%s (%s), ping interval %g s, timeout x%g",
            self.settings.host, self.port, "TLS" if self.settings.tls else "plain TCP",
            self.settings.ping_interval, self.settings.ping_timeout,
        )

    async def stop(self) -> None:
        """Stop listening and close every session cleanly."""
        if self._server is not None:
            self._server.close()
        await self.monitor.stop()
        # Concurrently, in groups: one by one, ten thousand goodbyes take minutes.
        sessions = list(self._sessions.values())
        for start in range(0, len(sessions), 1000):
            await asyncio.gather(*(s.close("engine shutting down") for s in sessions[start:start + 1000]),
                                 return_exceptions=True)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- routing -------------------------------------------------------------------------

    def session(self, host_key: str) -> AgentSession | None:
        return self._sessions.get(host_key)

    def sessions(self) -> list[AgentSession]:
        return list(self._sessions.values())

    async def send(self, host_key: str, command: Request, timeout: float | None = None) -> Answer:
        """Send ``command`` to the host registered as ``host_key``; see `AgentSession.send`."""
        session = self._sessions.get(host_key)
        if session is None or session.closed:
            raise AgentUnavailable(f"host {host_key} is not connected")
        return await session.send(command, timeout)

    async def disconnect(self, host_key: str, reason: str) -> None:
        """Close a host's session (for example when the host is deleted)."""
        session = self._sessions.get(host_key)
        if session is not None:
            await session.close(reason)

    def forget(self, host_key: str) -> None:
        """Stop watching a host's pings (the host was removed)."""
        self.monitor.forget(host_key)

    async def attach(self, session: AgentSession) -> None:
        assert session.host_key is not None
        previous = self._sessions.get(session.host_key)
        self._sessions[session.host_key] = session
        self.monitor.seen(session.host_key, session)
        if previous is not None and previous is not session:
            log.info("host %s reconnected from %s; closing its old session", session.host_key, session.peer)
            await previous.close("replaced by a new connection from the same host")

    # -- connections ---------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_label(writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            identity, authenticated = None, False
            if self._ssl is not None:
                try:
                    await writer.start_tls(self._ssl, ssl_handshake_timeout=self.settings.handshake_timeout)
                except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
                    reason = str(exc) or (
                        f"{type(exc).__name__}: the agent aborted the handshake; "
                        "does its tls.ca.file hold this engine's CA certificate?"
                    )
                    log.warning("TLS handshake with %s failed: %s", peer, reason)
                    writer.close()
                    return
                identity = peer_common_name(writer.get_extra_info("ssl_object"))
                authenticated = identity is not None
            await self._serve(reader, writer, peer, identity, authenticated)
        finally:
            self._connections.discard(task)

    async def connect_local(self, identity: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An in-process connection for a simulated agent, trusted as ``identity``.

        Returns the agent's end of a socket pair; the engine's end is served like
        any accepted connection (same session, framing and messages), without TLS.
        """
        engine_sock, agent_sock = socket.socketpair()
        engine_reader, engine_writer = await asyncio.open_connection(sock=engine_sock)
        agent_reader, agent_writer = await asyncio.open_connection(sock=agent_sock)
        task = asyncio.create_task(self._serve(engine_reader, engine_writer, f"local:{identity}", identity, True))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        return agent_reader, agent_writer

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        identity: str | None,
        authenticated: bool,
    ) -> None:
        session: AgentSession | None = None

        async def handle(frame: Frame) -> Message | None:
            assert session is not None
            return await session.handle(frame)

        channel = Channel(reader, writer, peer=peer, on_request=handle, max_frame=self.settings.max_frame)
        session = AgentSession(self, channel, identity, authenticated)
        log.debug("connection from %s (certificate: %s)", peer, identity or "none")
        registration_deadline = asyncio.get_running_loop().call_later(
            self.settings.handshake_timeout, self._registration_overdue, session
        )
        try:
            await channel.run()
        except Exception:
            log.exception("session with %s failed", peer)
        finally:
            registration_deadline.cancel()
            await channel.close("session ended", notify_peer=False)
            if session.host_key is not None:
                await self._detach(session)

    def _registration_overdue(self, session: AgentSession) -> None:
        if session.host_key is None and not session.closed:
            reason = f"no registration within {self.settings.handshake_timeout:g} s"
            task = asyncio.ensure_future(session.channel.close(reason))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _detach(self, session: AgentSession) -> None:
        assert session.host_key is not None
        if self._sessions.get(session.host_key) is session:
            del self._sessions[session.host_key]
        self.monitor.disconnected(session.host_key, session)
        clean = session.channel.peer_said_goodbye or session.closed_cleanly
        log.info(
            "host %s disconnected (%s): %s", session.host_key, "clean" if clean else "unexpected",
            session.channel.close_reason,
        )
        try:
            await self.events.on_disconnect(session, clean)
        except Exception:
            log.exception("disconnect handler failed for host %s", session.host_key)
