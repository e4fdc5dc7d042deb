"""Helpers for agent channel tests: a recording AgentEvents, servers, raw clients."""

import asyncio
import ssl
import threading
import time

from stackwright.management.agentlink import AgentLinkServer, LinkSettings, RegistrationRefused
from stackwright.protocol.framing import encode_frame, read_frame, Frame
from stackwright.protocol.messages import RegisterAnswer
from stackwright.protocol.pki import (
    CertificateAuthority,
    EnrollmentTokens,
    MemoryTokenStore,
    client_context,
    enrollment_context,
    write_file_atomic,
)


class Recorder:
    """AgentEvents that records every call; thread-safe so tests can watch a server running in a thread."""

    def __init__(self):
        self.calls = []
        self.refuse = None
        self._lock = threading.Lock()

    def _add(self, *entry):
        with self._lock:
            self.calls.append(entry)

    def of(self, kind):
        with self._lock:
            return [c for c in self.calls if c[0] == kind]

    async def on_register(self, session, request):
        if self.refuse:
            raise RegistrationRefused(self.refuse)
        self._add("register", request.guid, session)
        return RegisterAnswer(host_id=f"host-{request.guid}", host_name=request.host.hostname)

    async def on_ping(self, session, ping):
        self._add("ping", session.host_key, dict(ping.vms))

    async def on_disconnect(self, session, clean):
        self._add("disconnect", session.host_key, clean)

    async def on_ping_timeout(self, host_key, level, session):
        self._add("timeout", host_key, level, session)


async def eventually(predicate, timeout=10.0):
    """Wait until ``predicate()`` is true (a deadline for hangs, not a timing assertion)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def eventually_sync(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Pki:
    """A CA in a temp dir plus helpers to write agent credentials."""

    def __init__(self, directory):
        self.directory = directory
        self.ca = CertificateAuthority.load_or_create(directory / "ca")
        self.store = MemoryTokenStore()
        self.tokens = EnrollmentTokens(self.store, self.ca)

    def agent_files(self, guid, ca=None, name=None):
        """Write key/cert/CA files for ``guid`` (issued by ``ca``, default ours); return their paths."""
        ca = ca or self.ca
        folder = self.directory / (name or guid)
        key_pem, cert_pem = ca.issue_client_cert(guid)
        paths = folder / "cloud.key", folder / "cloud.crt", folder / "cloud.ca.crt"
        write_file_atomic(paths[0], key_pem)
        write_file_atomic(paths[1], cert_pem)
        write_file_atomic(paths[2], self.ca.ca_pem.encode())
        return paths

    def client_context(self, guid, ca=None):
        key, cert, ca_file = self.agent_files(guid, ca)
        return client_context(ca_file, cert, key)


async def start_server(pki, events, **settings):
    base = dict(port=0, ping_interval=0.2, ping_timeout=2.0, handshake_timeout=5.0)
    base.update(settings)
    link_settings = LinkSettings(**base)
    server = AgentLinkServer(events, link_settings, pki.ca if link_settings.tls else None,
                             pki.tokens if link_settings.tls else None)
    await server.start()
    return server


class RawClient:
    """A hand-driven connection, to send what a well-behaved agent never would."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port, context=None, enrolling=False):
        if context is None and enrolling:
            context = enrollment_context()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        return cls(reader, writer)

    async def send(self, message, seq=1, reply=False):
        self.writer.write(encode_frame(Frame(seq=seq, message=message, reply=reply)))
        await self.writer.drain()

    async def send_raw(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, timeout=10.0):
        async with asyncio.timeout(timeout):
            return await read_frame(self.reader)

    async def receive_until_closed(self, timeout=10.0):
        frames = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frame = await read_frame(self.reader)
                except (ConnectionError, ssl.SSLError):
                    return frames
                if frame is None:
                    return frames
                frames.append(frame)

    async def close(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


class ServerThread:
    """An agent listener on its own event loop thread, for tests that drive agent processes."""

    def __init__(self, pki, events, **settings):
        self.pki, self.events, self.settings = pki, events, settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(start_server(pki, events, **settings))

    def call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
