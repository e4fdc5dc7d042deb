"""The channel between management servers: a call for a host whose agent is connected to a
peer is forwarded to that peer, which sends it to the agent and returns the answer.

Both ends authenticate with certificates of the certificate authority every server shares
(kept in the database, table `management_ca`, its key encrypted with the key file every
server of the installation has): mutual TLS, and the client's certificate must allow server
authentication, which only management servers' do (agents hold client-only certificates).
The listener is HTTPS (aiohttp) on `cluster.listen`; each server records the address in
`mshost` (service_ip, service_port), where its peers look it up.

A request is the agent protocol's own frame (framing.encode_frame without its length
header), the answer too; `ErrorAnswer` codes tell what went wrong at the peer: `absent` (the
agent is not connected there: the request was not sent), `timeout`, or the agent's own
error code.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from stackwright.management.agentlink.events import AgentUnavailable, CommandTimeout
from stackwright.management.errors import ResourceUnavailable
from stackwright.management.persistence import crypto
from stackwright.management.persistence.models import ManagementCa
from stackwright.management.services.gateway import AgentAbsent, CallLost
from stackwright.protocol import messages as m
from stackwright.protocol.channel import RemoteError
from stackwright.protocol.framing import HEADER, Frame, ProtocolError, decode_payload, encode_frame
from stackwright.protocol.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CertificateAuthority,
    client_context,
    is_server_certificate,
    peer_server_context,
    write_file_atomic,
)

if TYPE_CHECKING:
    import socket
    from pathlib import Path

    from ..persistence.db import Database
    from .channel import AgentChannel

log = logging.getLogger(__name__)

CALL_PATH = "/agent/call"
SIMULATED_PATH = "/agent/stop-simulated"
# Seconds beyond the call's own timeout that a forwarded call may take (TLS, the peer's queue).
FORWARD_MARGIN = 10.0


class PeerAbsent(AgentAbsent):
    """The peer does not hold the host's agent (any more): the request was not sent."""


def shared_ca(db: Database, directory: Path | str) -> CertificateAuthority:
    """The certificate authority every server of the database shares, written to `directory` as
    well (agents' enrollment and the listeners read it there). The first server to start puts
    its own (or a new) CA into the database; the others take that one."""
    from pathlib import Path

    directory = Path(directory)
    for _attempt in range(3):
        with db.transaction() as s:
            row = s.get(ManagementCa, 1)
            if row is not None and row.key_pem:
                cert_pem, key_pem = row.cert_pem, row.key_pem.get("pem")
            else:
                cert_pem = key_pem = None
        if cert_pem and key_pem:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
            if not cert_path.exists() or cert_path.read_text() != cert_pem:
                if cert_path.exists():
                    log.warning("%s held another CA than the one the management servers share; replaced "
                                "(agents enrolled with the old one must enroll again)", cert_path)
                write_file_atomic(key_path, key_pem.encode(), 0o600)
                write_file_atomic(cert_path, cert_pem.encode(), 0o644)
            return CertificateAuthority.load(directory)
        ca = CertificateAuthority.load_or_create(directory)
        if not crypto.installed():
            log.warning("the certificate authority in %s is not shared with other management servers: no key "
                        "file to encrypt its key in the database (stackwright-setup-databases writes one)", directory)
            return ca
        key_pem = (directory / CA_KEY_FILE).read_text()
        try:
            with db.transaction() as s:
                s.add(ManagementCa(id=1, cert_pem=ca.ca_pem, key_pem={"pem": key_pem}))
        except IntegrityError:
            continue    # another server stored its CA first: take that one
        log.info("the certificate authority in %s is shared with the other management servers (database)", directory)
        return ca
    raise RuntimeError("could not agree on a certificate authority with the other management servers")


class PeerServer:
    """The listener peers forward agent calls to, on a socket bound before the engine started."""

    def __init__(self, channel: AgentChannel, sock: socket.socket, cert: Path, key: Path):
        self.channel = channel
        self.sock = sock
        self.cert, self.key = cert, key
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        context = peer_server_context(self.cert, self.key, self.channel.ca.cert_path)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post(CALL_PATH, self._call)
        app.router.add_post(SIMULATED_PATH, self._stop_simulated)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock, ssl_context=context).start()
        log.info("engine-to-engine channel on %s:%d (mutual TLS)", *self.sock.getsockname()[:2])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _peer_is_server(request: web.Request) -> bool:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        return ssl_object is not None and is_server_certificate(ssl_object.getpeercert(binary_form=True))

    async def _call(self, request: web.Request) -> web.Response:
        if not self._peer_is_server(request):
            raise web.HTTPForbidden(text="only management servers may forward agent calls")
        guid = request.headers.get("X-Host-Guid", "")
        try:
            timeout = float(request.headers.get("X-Timeout", "60"))
            command = decode_payload(await request.read()).message
        except (ValueError, ProtocolError) as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        if not isinstance(command, m.Request) or command.origin != "engine":
            raise web.HTTPBadRequest(text="not a command the engine sends")
        try:
            answer = await self.channel.server.send(guid, command, timeout)
        except AgentUnavailable as e:
            answer = m.ErrorAnswer(code="absent", message=str(e))
        except CommandTimeout as e:
            answer = m.ErrorAnswer(code="timeout", message=str(e))
        except RemoteError as e:
            answer = m.ErrorAnswer(code=e.code or "remote", message=e.message)
        log.info("forwarded %s for host %s from a peer: %s", type(command).__name__, guid, answer.type_name())
        return web.Response(body=_payload(answer), content_type="application/json")

    async def _stop_simulated(self, request: web.Request) -> web.Response:
        if not self._peer_is_server(request):
            raise web.HTTPForbidden(text="only management servers may stop simulated agents")
        guid = request.headers.get("X-Host-Guid", "")
        stopped = guid in self.channel.simulated
        await self.channel.stop_simulated(guid)
        return web.Response(text=json.dumps({"stopped": stopped}), content_type="application/json")


def _payload(message: m.Message) -> bytes:
    return encode_frame(Frame(seq=0, message=message))[HEADER.size:]


class PeerClient:
    """Calls to peers, from worker threads, with this server's peer certificate."""

    def __init__(self, ca: CertificateAuthority, cert: Path, key: Path):
        self.context: ssl.SSLContext = client_context(ca.cert_path, cert, key)

    def _post(self, address: tuple[str, int], path: str, body: bytes, headers: dict[str, str],
              timeout: float) -> bytes:
        conn = http.client.HTTPSConnection(address[0], address[1], context=self.context, timeout=timeout)
        try:
            try:
                conn.connect()
            except OSError as e:
                # Nothing was sent: the peer is gone (or going), its agents are moving.
                raise PeerAbsent(f"the management server at {address[0]}:{address[1]} cannot be reached: {e}") from None
            conn.request("POST", path, body=body, headers=dict(headers, **{"Content-Type": "application/json"}))
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise ResourceUnavailable(f"management server {address[0]}:{address[1]} refused the call "
                                          f"({response.status}): {data[:200].decode(errors='replace')}")
            return data
        finally:
            conn.close()

    def call(self, address: tuple[str, int], guid: str, host_name: str, request: m.Request,
             timeout: float) -> m.Answer:
        """Send `request` to the agent of host `guid` through the peer at `address`."""
        what = type(request).__name__
        try:
            data = self._post(address, CALL_PATH, _payload(request),
                              {"X-Host-Guid": guid, "X-Timeout": str(timeout)}, timeout + FORWARD_MARGIN)
        except (OSError, http.client.HTTPException) as e:
            # Sent, and nothing came back: the request may or may not have reached the agent.
            raise CallLost(f"Host {host_name} did not answer {what}: the management server holding its "
                           f"agent ({address[0]}:{address[1]}) did not answer: {e}") from None
        try:
            answer = decode_payload(data).message
        except ProtocolError as e:
            raise ResourceUnavailable(f"Host {host_name}: the answer to {what} from {address[0]}:{address[1]} "
                                      f"is unreadable: {e}") from None
        if isinstance(answer, m.ErrorAnswer):
            if answer.code == "absent":
                raise PeerAbsent(f"the agent of host {host_name} is not connected")
            if answer.code == "timeout":
                raise ResourceUnavailable(f"Host {guid} did not answer {what}: {answer.message}")
            raise ResourceUnavailable(f"Host {guid} failed {what}: {answer.message}")
        return answer

    def stop_simulated(self, address: tuple[str, int], guid: str) -> None:
        self._post(address, SIMULATED_PATH, b"", {"X-Host-Guid": guid}, 30)
