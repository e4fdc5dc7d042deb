"""The engine's agent channel: its listener, certificate authority, enrollment tokens,
and the simulated agents of Simulator hosts that run inside the engine.

`AgentChannel` starts and stops the `AgentLinkServer` with a `Registrar` as its events, and
offers worker threads (API requests, jobs) what they need of it: a call to a host's agent,
an enrollment token, something to run on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
from typing import TYPE_CHECKING

from stackwright.management.agentlink.events import AgentUnavailable, CommandTimeout
from stackwright.management.agentlink.peers import PeerClient, PeerServer, shared_ca
from stackwright.management.agentlink.registrar import Registrar
from stackwright.management.agentlink.server import AgentLinkServer, LinkSettings
from stackwright.management.errors import ResourceUnavailable
from stackwright.management.persistence.models import EnrollmentToken
from stackwright.management.services.registration import RegistrationService
from stackwright.protocol.channel import RemoteError
from stackwright.protocol.pki import EnrollmentTokens, TokenRecord

if TYPE_CHECKING:
    import socket
    import threading
    from collections.abc import Awaitable, Callable, Iterable
    from pathlib import Path

    from stackwright.protocol import messages as m

    from ..options import Options
    from ..engine import Engine
    from ..persistence.db import Database

log = logging.getLogger(__name__)

SIMULATED_BATCH = 200      # simulated agents started together at engine start
SIMULATED_PAUSE = 0.5      # seconds between two batches


class DbTokenStore:
    """Enrollment tokens in the database, keyed by the SHA-256 digest of the secret."""

    def __init__(self, db: Database):
        self.db = db

    def add(self, digest: str, record: TokenRecord) -> None:
        with self.db.transaction() as s:
            s.add(EnrollmentToken(digest=digest, expires_at=record.expires_at, guid=record.guid,
                                  note=record.note))

    def take(self, digest: str) -> TokenRecord | None:
        with self.db.transaction() as s:
            row = s.get(EnrollmentToken, digest)
            if row is None:
                return None
            s.delete(row)
            return TokenRecord(expires_at=row.expires_at, guid=row.guid, note=row.note or "")


class AgentChannel:
    """The agent channel of an engine (`engine.db`, `engine.settings`), by the start-up
    options `opts` (agent_host, agent_port, agent_tls, agent_reconnect_grace, pki_dir)."""

    def __init__(self, engine: Engine, opts: Options, peer_socket: socket.socket | None = None):
        self.engine = engine
        self.opts = opts
        # Bound before the engine started (its port is in mshost): peers forward calls there.
        self.peer_socket = peer_socket
        self.peer_server: PeerServer | None = None
        self.peer_client: PeerClient | None = None
        self.registration = RegistrationService(engine)
        self.registrar = Registrar(self.registration)
        self.server: AgentLinkServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.simulated: dict[str, object] = {}
        self._sim_start: asyncio.Task | None = None
        self.ca = None
        self.tokens = None
        self._taking_over = False
        self.cert_names: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------

    def server_certificate(self, names: Iterable[str]) -> tuple[Path, Path]:
        """The engine's certificate (cert, key files), covering the agent listener's names and
        `names` too (the console proxy's): one certificate for every TLS listener of the engine."""
        return self.ca.ensure_server_cert(self.cert_names | set(names))

    async def start(self) -> AgentChannel:
        self.loop = asyncio.get_running_loop()
        settings = self.engine.settings
        self.ca = await asyncio.to_thread(shared_ca, self.engine.db, self.opts.pki_dir)
        self.tokens = EnrollmentTokens(DbTokenStore(self.engine.db), self.ca)
        me = self.engine.cluster.me
        cert, key = await asyncio.to_thread(self.ca.issue_peer_cert, f"management-server-{me.msid}", [me.service_ip])
        self.peer_client = PeerClient(self.ca, cert, key)
        if self.peer_socket is not None:
            self.peer_server = PeerServer(self, self.peer_socket, cert, key)
            await self.peer_server.start()
        names = tuple(n.strip() for n in settings.get("host").split(",") if n.strip())
        link = LinkSettings(
            host=self.opts.agent_host, port=self.opts.agent_port, tls=self.opts.agent_tls,
            server_names=names + ("localhost", "127.0.0.1"),
            ping_interval=float(settings.typed("ping.interval")),
            ping_timeout=float(settings.typed("ping.timeout")),
            reconnect_grace=self.opts.agent_reconnect_grace,
        )
        self.cert_names = set(link.server_names) | {socket.gethostname()}
        if self.opts.agent_host not in ("", "0.0.0.0", "::"):
            self.cert_names.add(self.opts.agent_host)
        self.server = AgentLinkServer(self.registrar, link, self.ca, self.tokens)
        self.registrar.server = self.server
        await self.server.start()
        self.registrar.start()
        log.info("agent channel listening on %s:%d (%s), ping.interval=%ss ping.timeout=%s",
                 self.opts.agent_host, self.server.port, "TLS" if self.opts.agent_tls else "PLAIN TCP",
                 link.ping_interval, link.ping_timeout)
        self.server.monitor.expect(await self.registrar.run(self.registration.hosts_served))
        self._sim_start = asyncio.create_task(self._start_simulated_hosts(), name="simulated-agents")
        return self

    @property
    def down_within(self) -> float:
        """The longest a silent host stays anything but Down, by the settings the channel runs with
        (ping.interval and ping.timeout as they were when it started)."""
        return self.server.settings.down_within

    async def close(self) -> None:
        """Shut the agent channel down; the hosts it served are left Disconnected."""
        self.registrar.closing = True
        # Connected agents, and the engine's own simulated agents even if not registered yet.
        served = {s.host_key for s in self.server.sessions() if s.host_key} if self.server is not None else set()
        served = sorted(served | set(self.simulated))
        if self._sim_start is not None:
            self._sim_start.cancel()
            await asyncio.gather(self._sim_start, return_exceptions=True)
        for agent in list(self.simulated.values()):
            await agent.stop()
        self.simulated.clear()
        if self.peer_server is not None:
            await self.peer_server.close()
        await self.registrar.drain(served)
        if self.server is not None:
            await self.server.stop()
        self.registrar.shutdown()

    # --- for worker threads (API requests, jobs) -------------------------------------------

    def call(self, host_key: str, command: m.Request, timeout: float = 60.0) -> m.Answer:
        """Send `command` to a host's agent from a worker thread; returns the answer."""
        if self.loop is None:
            raise ResourceUnavailable("The agent channel is not running")
        future = asyncio.run_coroutine_threadsafe(self.server.send(host_key, command, timeout), self.loop)
        try:
            return future.result(timeout + 5)
        except (AgentUnavailable, CommandTimeout, concurrent.futures.TimeoutError) as e:
            raise ResourceUnavailable(
                f"Host {host_key} did not answer {type(command).__name__}: {e or 'timeout'}") from None
        except RemoteError as e:
            raise ResourceUnavailable(f"Host {host_key} failed {type(command).__name__}: {e}") from None

    def issue_token(self, ttl: float, guid: str | None = None, note: str = "") -> str:
        future = asyncio.run_coroutine_threadsafe(self.tokens.issue(ttl, guid=guid, note=note), self.loop)
        return future.result(30)

    def schedule(self, coro_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run `coro_fn(*args)` on the event loop, from any thread, without waiting."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(coro_fn(*args)))

    def registration_event(self, guid: str) -> threading.Event:
        """Set while the agent of host `guid` is registered."""
        return self.registrar.registration_event(guid)

    def adopted(self, guid: str) -> None:
        """From any thread: the pending agent `guid` has its host now (committed); it is
        registered, and attaches its host's storage."""
        self.registrar.adopted(guid)
        self.schedule(self.registrar.after_register, guid)

    # --- what servers found Down served ------------------------------------------------------

    async def take_over(self) -> None:
        """Claim the hosts and the in-engine Simulator hosts of servers that are not Up: watch the
        former until their agents reconnect (here or to another server), run the latter here."""
        if self._taking_over or self.registrar.closing:
            return
        self._taking_over = True
        try:
            cluster = self.engine.cluster
            guids = await self.registrar.run(cluster.claim_hosts)
            for guid in guids:
                if self.server.session(guid) is None:
                    self.server.forget(guid)
            self.server.monitor.expect(guids)
            rows = await self.registrar.run(cluster.claim_simulated_hosts, True)
            for guid, url in rows:
                await self.start_simulated(guid, url, wait=False)
        finally:
            self._taking_over = False

    # --- simulated agents of Simulator hosts ------------------------------------------------

    async def _start_simulated_hosts(self):
        rows = await self.registrar.run(self.registration.simulated_hosts)
        # Paced, so that thousands of Simulator hosts do not all register at once
        # (the in-process equivalent of a reconnect storm) and starve the API.
        for i, (guid, url) in enumerate(rows):
            await self.start_simulated(guid, url, wait=False)
            if i % SIMULATED_BATCH == SIMULATED_BATCH - 1:
                await asyncio.sleep(SIMULATED_PAUSE)
        if rows:
            log.info("started %d simulated agent(s) for Simulator hosts", len(rows))

    async def start_simulated(self, guid: str, url: str, wait: bool = True) -> None:
        from stackwright.simulation.agent import Registration, SimulatedAgent, SimulatorDriver
        from stackwright.simulation.host import SimulatedHost

        if guid in self.simulated:
            return
        sizes = SimulatedHost(url, self.engine.settings.get)
        driver = SimulatorDriver(hostname=guid, cpus=sizes.cpus, cpu_mhz=sizes.cpu_speed,
                                 memory_mb=sizes.memory >> 20)
        agent = SimulatedAgent.local(self.server.connect_local, Registration(guid=guid), driver=driver)
        self.simulated[guid] = agent
        await agent.start(wait_registered=10 if wait else None)

    async def stop_simulated(self, guid: str) -> None:
        agent = self.simulated.pop(guid, None)
        if agent is not None:
            await agent.stop()
        self.server.forget(guid)
