"""A real browser for the tests: Debian's headless Chromium, driven over the Chrome DevTools
protocol (a WebSocket, with aiohttp), and a small PNG reader for its screenshots.

`Chromium` starts `chromium --headless` with a profile of its own and a DevTools port chosen by
the browser (read back from DevToolsActivePort), and stops it by PID. `Chromium.page()` opens
a tab; `Page.navigate`, `Page.evaluate` and `Page.screenshot` are the few commands the tests
need. `png_pixels` decodes a screenshot (8-bit RGB or RGBA, not interlaced, as Chromium
writes them) so a test can tell a screen with content from a blank or uniform one.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import aiohttp

from tests.support.engine import terminate

START_TIMEOUT = 30.0


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CdpError(RuntimeError):
    pass


class Page:
    """One tab, over its DevTools WebSocket."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session, self.ws = session, ws
        self._ids = itertools.count(1)

    async def send(self, method: str, timeout: float = 30.0, **params):
        message_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CdpError("%s: no answer within %.0fs" % (method, timeout))
            msg = await self.ws.receive(timeout=remaining)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise CdpError("%s: the DevTools connection closed" % method)
            data = json.loads(msg.data)
            if data.get("id") == message_id:
                if "error" in data:
                    raise CdpError("%s: %s" % (method, data["error"]))
                return data.get("result", {})

    async def navigate(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError("evaluate %r: %s" % (expression, result["exceptionDetails"]))
        return result["result"].get("value")

    async def screenshot(self) -> bytes:
        result = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        await self.ws.close()


class Chromium:
    """A headless Chromium of the test's own."""

    def __init__(self, workdir: Path | None = None, width: int = 1024, height: int = 768):
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed (Debian package chromium)")
        self.binary = binary
        self.profile = Path(tempfile.mkdtemp(prefix="swchrome-", dir=workdir))
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log = self.profile / "chromium.log"

    def start(self) -> Chromium:
        log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-extensions", "--disable-dev-shm-usage",
             "--window-size=%d,%d" % self.size, "--user-data-dir=%s" % self.profile,
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while not (active.exists() and active.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("chromium did not start: %s" % self.log.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        self.port = int(active.read_text().splitlines()[0])
        return self

    async def page(self, session: aiohttp.ClientSession) -> Page:
        async with session.put("http://127.0.0.1:%d/json/new?about:blank" % self.port) as answer:
            target = await answer.json()
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        return Page(session, ws)

    def stop(self) -> None:
        terminate(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)


def run(coro, timeout: float = 120.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# --- PNG ------------------------------------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, pixels) of an 8-bit RGB/RGBA PNG; each pixel a tuple of its channels."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            channels = {2: 3, 6: 4}.get(colour, 0)
            if depth != 8 or not channels or interlace:
                raise ValueError("only 8-bit RGB/RGBA non-interlaced PNGs are read here")
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(line)
        previous = line
    pixels = [tuple(row[x * channels:x * channels + channels]) for row in rows for x in range(width)]
    return width, height, pixels
