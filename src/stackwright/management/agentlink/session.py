"""One connected agent, seen from the engine."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from typing import TYPE_CHECKING

from stackwright.protocol.channel import Channel, ChannelClosed
from stackwright.protocol.framing import Frame, ProtocolError, describe
from stackwright.protocol.messages import (
    AGENT,
    Answer,
    CaAnswer,
    Enroll,
    EnrollAnswer,
    ErrorAnswer,
    GetCa,
    Message,
    Ping,
    PingAnswer,
    RegisterRequest,
    Request,
)
from stackwright.protocol.pki import CertificateError, EnrollmentRefused, csr_public_key
from stackwright.management.agentlink.events import AgentUnavailable, CommandTimeout, RegistrationRefused

if TYPE_CHECKING:
    from stackwright.management.agentlink.server import AgentLinkServer

log = logging.getLogger(__name__)


class AgentSession:
    """The engine's end of one agent connection.

    ``identity`` is the common name of the agent's verified client certificate
    (None on an unauthenticated connection, which may only enroll).
    ``host_key`` and ``registration`` are set once the host registered.
    """

    def __init__(self, server: AgentLinkServer, channel: Channel, identity: str | None, authenticated: bool):
        self.server = server
        self.channel = channel
        self.identity = identity
        self.authenticated = authenticated
        self.peer = channel.peer
        self.host_key: str | None = None
        self.registration: RegisterRequest | None = None
        self.connected_at = time.time()
        self.last_ping_at: float | None = None
        self.closed_cleanly = False

    def __repr__(self) -> str:
        return f"<AgentSession host={self.host_key} peer={self.peer} identity={self.identity}>"

    @property
    def closed(self) -> bool:
        return self.channel.closed

    async def send(self, command: Request, timeout: float | None = None) -> Answer:
        """Send a command to the agent and return its answer.

        Raises `stackwright.protocol.channel.RemoteError` when the agent reports
        a failure, `CommandTimeout`, or `AgentUnavailable`.
        """
        if command.origin != "engine":
            raise TypeError(f"{command.type_name()} is not a command the engine sends")
        timeout = self.server.settings.command_timeout if timeout is None else timeout
        started = time.monotonic()
        log.info("host=%s sending %s", self.host_key, describe(command))
        try:
            answer = await self.channel.request(command, timeout)
        except TimeoutError:
            raise CommandTimeout(
                f"host {self.host_key} did not answer {command.type_name()} within {timeout:g} s"
            ) from None
        except ChannelClosed as exc:
            raise AgentUnavailable(f"host {self.host_key}: {exc}") from None
        log.info(
            "host=%s %s answered %s in %.0f ms",
            self.host_key, command.type_name(), answer.type_name(), (time.monotonic() - started) * 1000,
        )
        return answer

    async def close(self, reason: str) -> None:
        self.closed_cleanly = True
        await self.channel.close(reason)

    # -- requests from the agent ---------------------------------------------------

    async def handle(self, frame: Frame) -> Message | None:
        message = frame.message
        if not isinstance(message, Request) or message.origin != AGENT:
            raise ProtocolError(f"an agent may not send {message.type_name()}")
        if isinstance(message, Ping):
            return await self._ping(message)
        if isinstance(message, RegisterRequest):
            return await self._register(frame.seq, message)
        if isinstance(message, GetCa):
            return self._get_ca()
        if isinstance(message, Enroll):
            return await self._enroll(frame.seq, message)
        raise ProtocolError(f"no engine handler for {message.type_name()}")

    async def _refuse(self, seq: int, code: str, reason: str) -> None:
        """Answer with an error, then close the session, logging why."""
        log.warning("refusing %s (identity %s): %s", self.peer, self.identity, reason)
        try:
            await self.channel.reply(seq, ErrorAnswer(code=code, message=reason))
        except (ConnectionError, OSError):
            pass
        await self.channel.close(reason)

    async def _register(self, seq: int, request: RegisterRequest) -> Message | None:
        if self.registration is not None:
            raise ProtocolError("host registered twice on one session")
        if self.server.tls_enabled and not self.authenticated:
            await self._refuse(
                seq, "certificate_required",
                "connection has no client certificate; enroll the host first "
                "(stackwright-setup-agent --token <token>)",
            )
            return None
        if self.identity is not None and request.guid != self.identity:
            await self._refuse(
                seq, "identity_mismatch",
                f"certificate was issued to guid {self.identity} but the agent registers as {request.guid}; "
                "set guid in agent.properties back or enroll again",
            )
            return None
        try:
            answer = await self.server.events.on_register(self, request)
        except RegistrationRefused as exc:
            await self._refuse(seq, "registration_refused", str(exc))
            return None
        answer = dataclasses.replace(answer, ping_interval=self.server.settings.ping_interval)
        self.registration = request
        self.host_key = answer.host_id
        self.last_ping_at = time.time()
        await self.server.attach(self)
        log.info(
            "host %s registered from %s (guid %s, %s %s, %d CPUs, %d MiB)",
            self.host_key, self.peer, request.guid, request.host.hypervisor, request.host.hypervisor_version,
            request.host.cpus, request.host.memory_bytes // (1 << 20),
        )
        return answer

    async def _ping(self, ping: Ping) -> Message:
        if self.host_key is None:
            raise ProtocolError("Ping before RegisterRequest")
        self.last_ping_at = time.time()
        self.server.monitor.seen(self.host_key, self)
        await self.server.events.on_ping(self, ping)
        return PingAnswer()

    def _get_ca(self) -> Message:
        if self.server.ca is None:
            return ErrorAnswer(code="tls_disabled", message="the engine's agent listener runs without TLS")
        return CaAnswer(ca_pem=self.server.ca.ca_pem)

    async def _enroll(self, seq: int, request: Enroll) -> Message | None:
        ca, tokens = self.server.ca, self.server.tokens
        if ca is None or tokens is None:
            await self._refuse(seq, "tls_disabled", "the engine's agent listener runs without TLS; nothing to enroll")
            return None
        try:
            _check_enrollment(request.csr_pem, request.guid)
            await tokens.redeem(request.token, request.guid)
            cert_pem = await asyncio.to_thread(ca.sign_csr, request.csr_pem, request.guid)
        except (EnrollmentRefused, CertificateError) as exc:
            await self._refuse(seq, "enrollment_refused", str(exc))
            return None
        log.info("issued a certificate to host guid %s (%s) from %s", request.guid, request.hostname, self.peer)
        return EnrollAnswer(cert_pem=cert_pem, ca_pem=ca.ca_pem)


def _check_enrollment(csr_pem: str, guid: str) -> None:
    """Validate the request before spending the token on it."""
    if not guid or len(guid) > 128 or any(c.isspace() or c in "/\\" for c in guid):
        raise CertificateError(f"guid {guid!r} is not usable as a certificate name")
    csr_public_key(csr_pem)


def peer_label(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        return "local"
    return str(address or "unknown")
