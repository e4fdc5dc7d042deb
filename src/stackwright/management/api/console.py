"""The console proxy, inside the engine: noVNC's page and the WebSocket it connects to.

`/console/` serves Debian's noVNC (/usr/share/novnc) as static files; `/console/websockify`
takes a one-time token (createConsoleEndpoint), asks the guest's host where its VNC display
listens (GetVmConsole), connects there, authenticates with the guest's VNC password and then
relays bytes between the browser's WebSocket and the display. The browser is offered the
security type None: the password never leaves the engine. A token that is unknown, used or
expired, or a guest that cannot be reached, fails the RFB handshake with the reason (noVNC
shows it) and the WebSocket closes with code 4001 (refused) or 4002 (unreachable).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from stackwright.protocol import messages as m

from ..errors import ResourceUnavailable
from ..services.console import (
    CONSOLE_TIMEOUT,
    TokenRefused,
    VncError,
    console_target,
    display_address,
    to_browser,
    to_server,
)

if TYPE_CHECKING:
    from ..engine import Engine
    from ..services.console import ConsoleGrant

log = logging.getLogger(__name__)

NOVNC_DIR = "/usr/share/novnc"
HANDSHAKE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
REFUSED, UNREACHABLE = 4001, 4002
CHUNK = 65536


class BrowserStream:
    """The browser's side of the relay: WebSocket messages read as a byte stream."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self.buffer = bytearray()

    async def receive(self, count: int) -> bytes:
        while len(self.buffer) < count:
            msg = await asyncio.wait_for(self.ws.receive(), HANDSHAKE_TIMEOUT)
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                raise ConnectionError("the browser closed the console")
            self.buffer += msg.data if isinstance(msg.data, bytes) else msg.data.encode()
        data, self.buffer = bytes(self.buffer[:count]), self.buffer[count:]
        return data

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)


async def _open_display(engine: Engine, grant: ConsoleGrant) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the guest's display and authenticate; TokenRefused or VncError say why not."""
    loop = asyncio.get_running_loop()

    def locate():
        with engine.db.transaction(readonly=True) as session:
            target = console_target(session, grant.vm_id)
        try:
            answer = engine.gateway.call(target.host, m.GetVmConsole(name=target.instance_name), CONSOLE_TIMEOUT,
                                         connect_wait=0.0)
        except ResourceUnavailable as e:
            raise VncError(f"the host {target.host.name} of {target.instance_name} cannot show its console: "
                           f"{e.text}") from None
        return target, display_address(target, answer)

    target, (address, port) = await loop.run_in_executor(None, locate)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as e:
        raise VncError(f"cannot reach the VNC display of {target.instance_name} at {address}:{port}: "
                       f"{getattr(e, 'strerror', None) or e or 'timed out'}") from None

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    try:
        await asyncio.wait_for(to_server(reader.readexactly, send, target.password), HANDSHAKE_TIMEOUT)
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as e:
        writer.close()
        raise VncError(f"the VNC display of {target.instance_name} closed the connection during its handshake "
                       f"({type(e).__name__})") from None
    except VncError:
        writer.close()
        raise
    return reader, writer


async def _relay(ws: web.WebSocketResponse, browser: BrowserStream, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    async def upstream() -> None:
        if browser.buffer:
            writer.write(bytes(browser.buffer))
            browser.buffer.clear()
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                writer.write(msg.data)
            elif msg.type == WSMsgType.TEXT:
                writer.write(msg.data.encode())
            else:
                break
            await writer.drain()

    async def downstream() -> None:
        while data := await reader.read(CHUNK):
            await ws.send_bytes(data)

    tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()


async def websockify(engine: Engine, request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=("binary",), heartbeat=30.0, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    browser = BrowserStream(ws)
    peer = request.remote
    grant = None
    try:
        if engine.console_endpoint and engine.console_endpoint[0] == "https" and not request.secure:
            raise TokenRefused("consoles are served over TLS only (consoleproxy.sslEnabled); use the https URL")
        grant = engine.consoles.redeem(request.query.get("token", ""))
        reader, writer = await _open_display(engine, grant)
    except (TokenRefused, VncError) as e:
        refused = isinstance(e, TokenRefused)
        log.warning("console %s from %s: %s", "refused" if refused else "unavailable", peer, e)
        try:
            await asyncio.wait_for(to_browser(browser.receive, browser.send, refusal=str(e)), HANDSHAKE_TIMEOUT)
        except (ConnectionError, TimeoutError, VncError):
            pass
        await ws.close(code=REFUSED if refused else UNREACHABLE, message=str(e)[:120].encode())
        return ws
    log.info("console of VM %s opened from %s", grant.vm_uuid, peer)
    try:
        await asyncio.wait_for(to_browser(browser.receive, browser.send), HANDSHAKE_TIMEOUT)
        await _relay(ws, browser, reader, writer)
    except (ConnectionError, TimeoutError, VncError) as e:
        log.info("console of VM %s from %s ended: %s", grant.vm_uuid, peer, e or type(e).__name__)
    finally:
        writer.close()
        await ws.close()
    log.info("console of VM %s closed (%s)", grant.vm_uuid, peer)
    return ws


def add_console_routes(app: web.Application, engine: Engine, novnc_dir: str = NOVNC_DIR) -> bool:
    """Serve the console proxy on `app`; False (and nothing added) when noVNC is not installed."""
    if not os.path.isfile(os.path.join(novnc_dir, "vnc.html")):
        log.warning("noVNC is not installed (%s/vnc.html is missing): guest consoles are not served; install "
                    "Debian's novnc package", novnc_dir)
        return False

    async def handler(request: web.Request) -> web.StreamResponse:
        return await websockify(engine, request)

    app.router.add_route("GET", "/console/websockify", handler)
    app.router.add_static("/console/", novnc_dir, follow_symlinks=True)
    return True
