"""The console proxy over TLS (consoleproxy.sslEnabled): an engine serves noVNC and the console
WebSocket on a listener of their own with the certificate its CA issued, and refuses the
WebSocket over plain HTTP; a made-up token is refused over wss with the reason and code 4001.
"""

from __future__ import annotations

import socket
import ssl
import struct
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.support.browser import run
from tests.support.engine import EngineProcess, free_port
from tests.support.waiting import wait_for

NOVNC = Path("/usr/share/novnc/vnc.html")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    if not NOVNC.exists():
        pytest.skip("needs Debian's novnc package")
    workdir = tmp_path_factory.mktemp("console-tls")
    console_port = free_port()
    engine = EngineProcess(workdir, "sqlite:///%s" % (workdir / "cloud.db"),
                           extra_args=["--console-listen", "127.0.0.1:%d" % console_port])
    try:
        engine.start()
        engine.client().updateConfiguration(name="consoleproxy.sslEnabled", value="true")
        engine.restart()
        # The console's listener opens after the API answers (it waits for the agent channel's certificate).
        wait_for("console listener on port %d" % console_port, lambda: listening(console_port), 30)
        engine.console_port = console_port
        yield engine
    finally:
        engine.kill()


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


def trusting(engine):
    context = ssl.create_default_context(cafile=str(engine.workdir / "pki" / "ca.crt"))
    return context


def test_novnc_is_served_over_tls_with_the_engines_certificate(engine):
    url = "https://127.0.0.1:%d/console/vnc.html" % engine.console_port
    with urllib.request.urlopen(url, context=trusting(engine), timeout=30) as answer:
        page = answer.read().decode()
    assert answer.status == 200 and "noVNC" in page
    # A client that does not trust the engine's CA is refused by TLS itself.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=30)


async def _refusal(url, context):
    async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=context or True) as ws:
        data = bytearray()
        while len(data) < 12 + 1 + 4:
            msg = await ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            data += msg.data
            if len(data) == 12:
                await ws.send_bytes(b"RFB 003.008\n")
        assert data[:12] == b"RFB 003.008\n" and data[12] == 0
        length = struct.unpack(">I", data[13:17])[0]
        while len(data) < 17 + length:
            data += (await ws.receive(timeout=30)).data
        await ws.receive(timeout=30)
        return data[17:17 + length].decode(), ws.close_code


def test_tokens_are_refused_with_their_reason_and_plain_http_is_refused(engine):
    reason, code = run(_refusal("wss://127.0.0.1:%d/console/websockify?token=made-up" % engine.console_port,
                                trusting(engine)))
    assert "not valid" in reason and code == 4001
    reason, code = run(_refusal("ws://127.0.0.1:%d/console/websockify?token=made-up" % engine.port, None))
    assert "over TLS only" in reason and code == 4001
