"""The engine's side of its hosts' agents: registration, heartbeats, storage attachment.

`AgentManager` owns the agent channel's listener (`agentlink.AgentLinkServer`), the
certificate authority and the enrollment tokens, and implements the channel's
`AgentEvents` on top of the host and storage services. Database work runs on a small
thread pool, never on the event loop.

The host key of a session is the agent's guid. An agent that registers before any
`addHost` names it stays connected as *pending*; `addHost` then completes at once.
Heartbeats only touch the database when they change something (a host coming back from
Alert); `last_pinged` is written in batches, so thousands of hosts pinging cost little.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import lazyload

from stackwright.management.agentlink import (
    AgentLinkServer,
    AgentUnavailable,
    CommandTimeout,
    LinkSettings,
    PingLevel,
    RegistrationRefused,
    RemoteError,
)
from stackwright.protocol import messages as m
from stackwright.protocol.pki import CertificateAuthority, EnrollmentTokens, TokenRecord

from ..context import Context
from ..errors import ResourceUnavailable
from .gateway import CONNECT_WAIT, AgentAbsent, HostRef
from ..persistence.models import (Cluster, EnrollmentToken, Host, ImageStore, Pod, StoragePool, VmInstance,
                                  Zone, utcnow)

log = logging.getLogger(__name__)

PING_FLUSH_SECONDS = 5.0
REGISTER_GATHER = 0.02     # seconds registrations wait for others to share their transaction
REGISTER_BATCH = 200       # registrations per transaction at most
SIMULATED_BATCH = 200      # simulated agents started together at engine start
SIMULATED_PAUSE = 0.5      # seconds between two batches
# Host detail `agent` of a Simulator host whose simulated agent runs outside the engine.
EXTERNAL = "external"


class DbTokenStore:
    """Enrollment tokens in the database, keyed by the SHA-256 digest of the secret."""

    def __init__(self, db):
        self.db = db

    def add(self, digest, record: TokenRecord):
        with self.db.transaction() as s:
            s.add(EnrollmentToken(digest=digest, expires_at=record.expires_at, guid=record.guid,
                                  note=record.note))

    def take(self, digest):
        with self.db.transaction() as s:
            row = s.get(EnrollmentToken, digest)
            if row is None:
                return None
            s.delete(row)
            return TokenRecord(expires_at=row.expires_at, guid=row.guid, note=row.note or "")


@dataclass
class Pending:
    """An agent that registered before its host was added."""

    request: m.RegisterRequest
    since: float


class AgentManager:
    def __init__(self, engine, opts):
        self.engine = engine
        self.opts = opts
        self.server: AgentLinkServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="agents")
        self.pending: dict[str, Pending] = {}
        self.simulated: dict[str, object] = {}
        self._pings: dict[str, int] = {}
        self._recovered: set[str] = set()
        self._registrations: list = []
        self._registrar_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="registrar")
        self._registrar: asyncio.Task | None = None
        self._pings_lock = threading.Lock()
        self._flusher: asyncio.Task | None = None
        self._sim_start: asyncio.Task | None = None
        self._registered: dict[str, threading.Event] = {}
        # Hosts marked Alert or Disconnected: their next ping brings them back Up.
        self.degraded: set[str] = set()
        # Set while the engine shuts down: sessions then end without a write per host.
        self.closing = False
        self.ca = None
        self.tokens = None
        # Last guest states each host reported, so unchanged pings cost nothing.
        self._vm_reports: dict[str, dict[str, str]] = {}
        self._vm_reports_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self):
        self.loop = asyncio.get_running_loop()
        settings = self.engine.settings
        self.ca = CertificateAuthority.load_or_create(self.opts.pki_dir)
        self.tokens = EnrollmentTokens(DbTokenStore(self.engine.db), self.ca)
        names = tuple(n.strip() for n in settings.get("host").split(",") if n.strip())
        link = LinkSettings(
            host=self.opts.agent_host, port=self.opts.agent_port, tls=self.opts.agent_tls,
            server_names=names + ("localhost", "127.0.0.1"),
            ping_interval=float(settings.typed("ping.interval")),
            ping_timeout=float(settings.typed("ping.timeout")),
            reconnect_grace=self.opts.agent_reconnect_grace,
        )
        self.server = AgentLinkServer(_Events(self), link, self.ca, self.tokens)
        await self.server.start()
        self._flusher = asyncio.create_task(self._flush_pings_forever(), name="ping-flusher")
        log.info("agent channel listening on %s:%d (%s), ping.interval=%ss ping.timeout=%s",
                 self.opts.agent_host, self.server.port, "TLS" if self.opts.agent_tls else "PLAIN TCP",
                 link.ping_interval, link.ping_timeout)
        self.server.monitor.expect(await self._run(self._hosts_served_before))
        self._sim_start = asyncio.create_task(self._start_simulated_hosts(), name="simulated-agents")
        return self

    @property
    def down_within(self):
        """The longest a silent host stays anything but Down, by the settings the channel runs with
        (ping.interval and ping.timeout as they were when it started)."""
        return self.server.settings.down_within

    def _hosts_served_before(self):
        """Guids of the hosts whose agents were connected before this start: the heartbeat
        monitor judges them Down when they do not come back, as it would a silent one."""
        with self.engine.db.transaction(readonly=True) as s:
            return s.execute(select(Host.guid).where(
                Host.removed.is_(None), Host.guid.is_not(None),
                Host.state.in_(("Up", "Alert", "Disconnected", "Connecting")))).scalars().all()

    async def close(self):
        """Shut the agent channel down; the hosts it served are left Disconnected."""
        self.closing = True
        # Connected agents, and the engine's own simulated agents even if not registered yet.
        served = {s.host_key for s in self.server.sessions() if s.host_key} if self.server is not None else set()
        served = sorted(served | set(self.simulated))
        if self._sim_start is not None:
            self._sim_start.cancel()
            await asyncio.gather(self._sim_start, return_exceptions=True)
        for agent in list(self.simulated.values()):
            await agent.stop()
        self.simulated.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        # A batch of registrations still being written would mark its hosts Up after the
        # Disconnected below: let it finish first, and take no more.
        if self._registrar is not None:
            self._registrar.cancel()
            await asyncio.gather(self._registrar, return_exceptions=True)
        await asyncio.to_thread(self._registrar_pool.shutdown, True)
        await self._run(self._flush_pings)
        await self._run(self._disconnect_all, served)
        if self.server is not None:
            await self.server.stop()
        self.pool.shutdown(wait=True)
        self._registrar_pool.shutdown(wait=True)

    # --- helpers for worker threads (API requests, jobs) ---------------------------------

    def call(self, host_key, command, timeout=60.0):
        """Send `command` to a host's agent from a worker thread; returns the answer."""
        if self.loop is None:
            raise ResourceUnavailable("The agent channel is not running")
        future = asyncio.run_coroutine_threadsafe(self.server.send(host_key, command, timeout), self.loop)
        try:
            return future.result(timeout + 5)
        except (AgentUnavailable, CommandTimeout, concurrent.futures.TimeoutError) as e:
            raise ResourceUnavailable("Host %s did not answer %s: %s" % (host_key, type(command).__name__, e or "timeout")) from None
        except RemoteError as e:
            raise ResourceUnavailable("Host %s failed %s: %s" % (host_key, type(command).__name__, e)) from None

    def issue_token(self, ttl, guid=None, note=""):
        future = asyncio.run_coroutine_threadsafe(self.tokens.issue(ttl, guid=guid, note=note), self.loop)
        return future.result(30)

    def schedule(self, coro_fn, *args):
        """Run `coro_fn(*args)` on the event loop, from any thread, without waiting."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(coro_fn(*args)))

    def registration_event(self, guid):
        return self._registered.setdefault(guid, threading.Event())

    def pending_for(self, address=None, guid=None):
        for key, pending in self.pending.items():
            if guid and key == guid:
                return key, pending
            if address and pending.request.host.private_ip == address:
                return key, pending
        return None

    # --- simulated agents of Simulator hosts ------------------------------------------------

    async def _start_simulated_hosts(self):
        def load():
            with self.engine.db.transaction(readonly=True) as s:
                rows = s.execute(
                    select(Host.guid, Host.url, Host.details).where(
                        Host.hypervisor == "Simulator", Host.removed.is_(None), Host.guid.is_not(None))
                ).all()
            # Hosts whose simulated agent runs elsewhere reconnect by themselves; a second,
            # in-engine agent with the same guid would keep replacing their connection.
            return [(guid, url) for guid, url, details in rows if (details or {}).get("agent") != EXTERNAL]

        rows = await self._run(load)
        # Paced, so that thousands of Simulator hosts do not all register at once
        # (the in-process equivalent of a reconnect storm) and starve the API.
        for i, (guid, url) in enumerate(rows):
            await self.start_simulated(guid, url, wait=False)
            if i % SIMULATED_BATCH == SIMULATED_BATCH - 1:
                await asyncio.sleep(SIMULATED_PAUSE)
        if rows:
            log.info("started %d simulated agent(s) for Simulator hosts", len(rows))

    async def start_simulated(self, guid, url, wait=True):
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

    async def stop_simulated(self, guid):
        agent = self.simulated.pop(guid, None)
        if agent is not None:
            await agent.stop()
        self.server.forget(guid)

    # --- events ---------------------------------------------------------------------------

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _context(self, session):
        return Context(self.engine, session, None, "agent")

    def register_many(self, requests):
        """Match registering agents to their hosts in one transaction, each in a savepoint of its own: one refusal does
        not undo the others. Returns, per request, (host uuid or None, host name) or the error."""
        results = []
        with self.engine.db.transaction() as s:
            # Read once for the whole batch: the hosts by guid, and (as they are needed) the
            # zones, pods and clusters that agents name.
            known = {}
            guids = {r.guid for r in requests}
            for host in s.execute(_LIGHT_HOST.where(Host.guid.in_(guids)).order_by(Host.id)).scalars():
                known.setdefault(host.guid, host)
            places = {}
            for request in requests:
                try:
                    with s.begin_nested():
                        results.append(self._register_in(s, request, known, places))
                except Exception as e:  # noqa: BLE001 - handed to that agent's session
                    results.append(e)
        return results

    async def register_soon(self, request):
        """Register `request` with others that arrive within REGISTER_GATHER seconds: during a
        reconnect storm, hundreds of registrations then share one transaction."""
        if self.closing:
            raise RegistrationRefused("the management engine is shutting down; the agent will retry")
        future = asyncio.get_running_loop().create_future()
        self._registrations.append((request, future))
        if self._registrar is None or self._registrar.done():
            self._registrar = asyncio.create_task(self._register_queued(), name="registrations")
        return await future

    async def _register_queued(self):
        while self._registrations:
            await asyncio.sleep(REGISTER_GATHER)
            batch = self._registrations[:REGISTER_BATCH]
            del self._registrations[:REGISTER_BATCH]
            try:
                # A thread of their own: registrations never queue behind the per-host state
                # writes that a storm of disconnects and missed pings puts on the shared pool.
                results = await asyncio.get_running_loop().run_in_executor(
                    self._registrar_pool, self.register_many, [request for request, _future in batch])
            except Exception as e:  # noqa: BLE001 - e.g. the database is unavailable
                results = [e] * len(batch)
            for (_request, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _register_in(self, s, request, known, places):
        hosts = self._context(s).hosts
        host = known.get(request.guid)
        if host is None and request.host.private_ip:
            host = s.execute(
                _LIGHT_HOST.where(Host.ip_address == request.host.private_ip, Host.guid.is_(None),
                                  Host.hypervisor == request.host.hypervisor)
            ).scalars().first()
        if host is None and request.host.hypervisor == "Simulator":
            host = _adopt_simulated(s, request)
        if host is None:
            return None, ""
        _check_location(s, host, request, places)
        hosts.agent_connected(host, request.host, guid=request.guid, agent_version=request.agent_version)
        known[request.guid] = host  # the same agent twice in one batch finds the host it now has
        return host.uuid, host.name

    async def after_register(self, guid):
        """Attach the primary pools of the host's cluster and check its zone's image stores."""
        def targets():
            with self.engine.db.transaction(readonly=True) as s:
                host = s.execute(select(Host).where(Host.guid == guid, Host.removed.is_(None))).scalar_one_or_none()
                if host is None:
                    return []
                pools = _ctx_pools(self._context(s), host)
                return [p.uuid for p in pools]

        for pool_uuid in await self._run(targets):
            await self.attach_pool_on(guid, pool_uuid)

    async def attach_pool_on(self, guid, pool_uuid):
        """Ask host `guid` to attach pool `pool_uuid`; record Up with real figures, or why not."""
        def spec():
            with self.engine.db.transaction(readonly=True) as s:
                pool = s.execute(select(StoragePool).where(StoragePool.uuid == pool_uuid)).scalar_one_or_none()
                if pool is None or pool.removed is not None:
                    return None
                return m.PoolSpec(uuid=pool.uuid, url=pool.url, mode="auto")

        pool_spec = await self._run(spec)
        if pool_spec is None:
            return
        try:
            answer = await self.server.send(guid, m.AttachPool(pool=pool_spec), timeout=120)
        except (RemoteError, AgentUnavailable, CommandTimeout) as e:
            message = str(e) or type(e).__name__
            log.warning("host %s could not attach pool %s (%s): %s", guid, pool_spec.uuid, pool_spec.url, message)
            await self._run(self._pool_result, pool_uuid, None, message)
            return
        await self._run(self._pool_result, pool_uuid, answer.stats, None)

    async def attach_pool_everywhere(self, pool_uuid):
        """A new pool: every connected KVM host in its scope attaches it."""
        def hosts_in_scope():
            with self.engine.db.transaction(readonly=True) as s:
                pool = s.execute(select(StoragePool).where(StoragePool.uuid == pool_uuid)).scalar_one_or_none()
                if pool is None or pool.removed is not None or not pool.url.lower().startswith("nfs://"):
                    return []
                q = select(Host.guid).where(Host.state == "Up", Host.removed.is_(None), Host.hypervisor == "KVM",
                                            Host.zone_id == pool.zone_id)
                if pool.cluster_id is not None:
                    q = q.where(Host.cluster_id == pool.cluster_id)
                return [g for g in s.execute(q).scalars() if g]

        for guid in await self._run(hosts_in_scope):
            if self.server.session(guid) is not None:
                await self.attach_pool_on(guid, pool_uuid)

    def _pool_result(self, pool_uuid, stats, message):
        with self.engine.db.transaction() as s:
            pool = s.execute(select(StoragePool).where(StoragePool.uuid == pool_uuid)).scalar_one_or_none()
            if pool is None or pool.removed is not None:
                return
            storage = self._context(s).storage
            if stats is not None:
                storage.pool_attached(pool, stats.capacity_bytes, stats.used_bytes)
            else:
                storage.pool_unreachable(pool, message)

    async def check_image_store(self, store_uuid):
        """Have an Up KVM host of the store's zone check reachability and write access."""
        def target():
            with self.engine.db.transaction(readonly=True) as s:
                store = s.execute(select(ImageStore).where(ImageStore.uuid == store_uuid)).scalar_one_or_none()
                if store is None or store.removed is not None or not store.url.lower().startswith("nfs://"):
                    return None, None
                q = select(Host.guid).where(Host.state == "Up", Host.removed.is_(None), Host.hypervisor == "KVM")
                if store.zone_id is not None:
                    q = q.where(Host.zone_id == store.zone_id)
                return store.url, [g for g in s.execute(q).scalars() if g]

        url, guids = await self._run(target)
        if not url or not guids:
            return
        for guid in guids:
            if self.server.session(guid) is None:
                continue
            try:
                answer = await self.server.send(guid, m.CheckSecondary(url=url), timeout=60)
            except (RemoteError, AgentUnavailable, CommandTimeout) as e:
                await self._run(self._store_result, store_uuid, None, str(e) or type(e).__name__)
                return
            await self._run(self._store_result, store_uuid, answer.stats, None)
            return

    def _store_result(self, store_uuid, stats, message):
        with self.engine.db.transaction() as s:
            store = s.execute(select(ImageStore).where(ImageStore.uuid == store_uuid)).scalar_one_or_none()
            if store is None:
                return
            storage = self._context(s).storage
            if stats is not None:
                storage.image_store_checked(store, stats.capacity_bytes, stats.used_bytes)
            else:
                storage.image_store_unreachable(store, message)

    def host_state(self, guid, state):
        with self.engine.db.transaction() as s:
            host = s.execute(select(Host).where(Host.guid == guid, Host.removed.is_(None))).scalar_one_or_none()
            if host is None:
                return None
            hosts = self._context(s).hosts
            if state == "Up":
                hosts.agent_pinged(host)
            else:
                hosts.agent_lost(host, state)
            return host.state

    def pinged(self, guid):
        with self._pings_lock:
            self._pings[guid] = int(time.time())

    def recovered(self, guid):
        """A host that was Alert or Disconnected pinged: Up again with the next flush."""
        with self._pings_lock:
            self._recovered.add(guid)

    def _flush_pings(self):
        with self._pings_lock:
            batch, self._pings = self._pings, {}
            recovered, self._recovered = self._recovered, set()
        # Flagged again since their ping: the monitor's state stands.
        recovered -= self.degraded
        if not batch and not recovered:
            return
        # One executemany of a plain statement: thousands of hosts a second at short intervals.
        table = Host.__table__
        statement = (update(table).where(table.c.guid == bindparam("g"), table.c.removed.is_(None))
                     .values(last_pinged=bindparam("w")))
        with self.engine.db.transaction() as s:
            if batch:
                s.connection().execute(statement, [{"g": guid, "w": when} for guid, when in batch.items()])
            guids = sorted(recovered)
            for start in range(0, len(guids), 500):
                s.execute(update(Host).where(Host.guid.in_(guids[start:start + 500]), Host.removed.is_(None),
                                             Host.state.in_(("Alert", "Disconnected", "Connecting")))
                          .values(state="Up", disconnected=None).execution_options(synchronize_session=False))
        if recovered:
            log.info("%d host(s) Up again after their pings resumed", len(recovered))

    def _disconnect_all(self, guids):
        """At shutdown: every host whose agent was connected is Disconnected, in one transaction."""
        if not guids:
            return
        now = utcnow()
        with self.engine.db.transaction() as s:
            for start in range(0, len(guids), 500):
                chunk = guids[start:start + 500]
                s.execute(update(Host).where(Host.guid.in_(chunk), Host.removed.is_(None), Host.state != "Disconnected")
                          .values(state="Disconnected", disconnected=func.coalesce(Host.disconnected, now))
                          .execution_options(synchronize_session=False))
        log.info("%d host(s) left Disconnected at shutdown", len(guids))

    async def _flush_pings_forever(self):
        last = time.monotonic()
        while True:
            # Heartbeats are written every PING_FLUSH_SECONDS; hosts coming back Up within a second.
            await asyncio.sleep(1.0)
            if not self._recovered and time.monotonic() - last < PING_FLUSH_SECONDS:
                continue
            last = time.monotonic()
            try:
                await self._run(self._flush_pings)
            except Exception:
                log.exception("could not record heartbeats; retrying in %ss", PING_FLUSH_SECONDS)

    # --- guest states reported by agents, reconciled by the VM service ---------------------

    def vms_reported(self, guid, reported, always=False):
        """Host `guid` reported its guests ({instance name: state}); reconcile them with the
        database when they differ from its previous report (or `always`, on registration)."""
        snapshot = {name: str(state) for name, state in reported.items()}
        with self._vm_reports_lock:
            if not always and self._vm_reports.get(guid) == snapshot:
                return
            self._vm_reports[guid] = snapshot
        asyncio.ensure_future(self._run(self._reconcile_vms, guid, snapshot, utcnow()))

    def _has_guests(self, guid):
        with self.engine.db.transaction(readonly=True) as s:
            return s.execute(
                select(VmInstance.id).join(Host, VmInstance.host_id == Host.id)
                .where(Host.guid == guid, Host.removed.is_(None), VmInstance.removed.is_(None)).limit(1)
            ).first() is not None

    def _reconcile_vms(self, guid, snapshot, received):
        from .vms import VmService

        settled = False
        if not snapshot and not self._has_guests(guid):
            return  # nothing reported, nothing recorded: no write (a reconnect storm sends thousands)
        try:
            with self.engine.db.transaction() as s:
                host = s.execute(select(Host).where(Host.guid == guid, Host.removed.is_(None))).scalar_one_or_none()
                if host is None:
                    return
                settled = VmService(self._context(s)).reconcile(host, snapshot, reported_at=received)
        except Exception:
            log.exception("could not reconcile the guests reported by host %s; retrying on its next ping", guid)
        if not settled:
            # A job is moving one of its VMs: look again at the next ping, even if unchanged.
            with self._vm_reports_lock:
                if self._vm_reports.get(guid) == snapshot:
                    del self._vm_reports[guid]


# A host with only its own columns: no eager loads of its cluster, pod and zone.
_LIGHT_HOST = select(Host).options(lazyload("*")).where(Host.removed.is_(None))


def _check_location(session, host, request, places):
    """The zone/pod/cluster in agent.properties, when given, must be the host's (name or id).

    `places` keeps the rows read so far, for the other registrations of the same batch."""
    for model, value, row_id, what in (
        (Zone, request.zone, host.zone_id, "zone"),
        (Pod, request.pod, host.pod_id, "pod"),
        (Cluster, request.cluster, host.cluster_id, "cluster"),
    ):
        if not value:
            continue
        row = places.get((what, row_id))
        if row is None:
            row = places[(what, row_id)] = session.execute(
                select(model.id, model.uuid, model.name).where(model.id == row_id)).one()
        if value not in (row.uuid, row.name) and value != str(row.id):
            raise RegistrationRefused(
                "agent.properties names %s %r but host %s was added to %s %s (%s); fix %s= in agent.properties"
                % (what, value, host.name, what, row.name, row.uuid, what)
            )


def _adopt_simulated(session, request):
    """A simulated agent (e.g. a load generator) joins the Simulator cluster it names.

    Real hypervisors keep the explicit addHost flow; simulated hosts exist for rehearsals
    and scale tests, where adding thousands of hosts one by one would be the bottleneck.
    """
    if not request.cluster:
        return None
    ref = request.cluster
    q = select(Cluster).options(lazyload("*")).where(Cluster.removed.is_(None), Cluster.hypervisor == "Simulator")
    cluster = session.execute(q.where(Cluster.uuid == ref)).scalar_one_or_none()
    if cluster is None:
        named = session.execute(q.where(Cluster.name == ref)).scalars().all()
        if len(named) != 1:
            raise RegistrationRefused(
                "simulated agent %s names cluster %r, which is not exactly one Simulator cluster; "
                "use the cluster's id" % (request.guid, ref))
        cluster = named[0]
    host = Host(name=request.host.hostname or request.guid, guid=request.guid, zone_id=cluster.zone_id,
                pod_id=cluster.pod_id, cluster_id=cluster.id, hypervisor="Simulator",
                url="http://sim/%s/%s" % (cluster.name, request.guid), ip_address=request.host.private_ip,
                state="Connecting", resource_state="Enabled", details={"agent": EXTERNAL})
    session.add(host)
    session.flush()
    log.info("simulated agent %s joined cluster %s as host %s", request.guid, cluster.name, host.uuid)
    return host


def _ctx_pools(ctx, host):
    if host.hypervisor == "Simulator":
        # Pools of Simulator clusters are simulated by the storage service (Up at creation,
        # with their configured capacity); an attach would overwrite those figures.
        return []
    return [p for p in ctx.storage.pools_for_host(host) if p.url.lower().startswith("nfs://")]


class _Events:
    """`agentlink.AgentEvents` on top of the AgentManager."""

    def __init__(self, manager: AgentManager):
        self.manager = manager

    async def on_register(self, session, request):
        mgr = self.manager
        try:
            host_uuid, name = await mgr.register_soon(request)
        except RegistrationRefused:
            raise
        except Exception as e:
            log.warning("registration of agent %s refused: %s", request.guid, e)
            raise RegistrationRefused(getattr(e, "text", None) or str(e)) from None
        if host_uuid is None:
            mgr.pending[request.guid] = Pending(request, time.time())
            log.info("agent %s at %s registered but no host was added for it yet; waiting for addHost "
                     "(zone=%r pod=%r cluster=%r)", request.guid, request.host.private_ip,
                     request.zone, request.pod, request.cluster)
        else:
            mgr.pending.pop(request.guid, None)
            log.info("agent %s connected: host %s (%s) is Up", request.guid, name, host_uuid)
            mgr.registration_event(request.guid).set()
            if request.host.hypervisor != "Simulator":
                # Pools of Simulator clusters are not attached by agents (see _ctx_pools).
                asyncio.ensure_future(mgr.after_register(request.guid))
            mgr.vms_reported(request.guid, request.vms, always=True)
        return m.RegisterAnswer(host_id=request.guid, host_name=name or request.host.hostname)

    async def on_ping(self, session, ping):
        mgr = self.manager
        guid = session.host_key
        if guid in mgr.pending:
            return
        mgr.pinged(guid)
        if guid in mgr.degraded:
            # The answer does not wait for the database: the host is Up again with the next
            # batch of heartbeats, so a storm of recoveries costs one transaction a second.
            mgr.degraded.discard(guid)
            mgr.recovered(guid)
        if ping.vms_reported:
            mgr.vms_reported(guid, ping.vms)

    async def on_disconnect(self, session, clean):
        mgr = self.manager
        guid = session.host_key
        if mgr.closing:
            return
        if mgr.pending.pop(guid, None) is not None:
            return
        mgr.registration_event(guid).clear()
        state = "Disconnected" if clean else "Alert"
        mgr.degraded.add(guid)
        new = await mgr._run(mgr.host_state, guid, state)
        if new is not None:
            log.info("agent of host %s disconnected (%s): host is %s", guid, "clean" if clean else "connection lost", new)

    async def on_ping_timeout(self, host_key, level, session):
        mgr = self.manager
        if host_key in mgr.pending:
            return
        # Without a connection the host is gone once it has been silent for
        # interval x timeout; with one, it is first Alert and Down after twice that.
        state = "Down" if (level == PingLevel.DOWN or session is None) else "Alert"
        mgr.degraded.add(host_key)
        new = await mgr._run(mgr.host_state, host_key, state)
        log.warning("host %s missed its pings (%s): now %s", host_key, level, new)
        if host_key not in mgr.degraded and session is not None:
            mgr.recovered(host_key)  # it pinged while the state was being written


class EngineGateway:
    """The `AgentGateway` of an engine whose agent channel may start after its job workers
    (jobs resumed at start wait for it) or not run at all (then nothing is ever sent)."""

    def __init__(self, engine):
        self.engine = engine

    def _manager(self, wait: float = 0.0) -> AgentManager | None:
        return self.engine.agent_channel(wait=wait)

    def call(self, host: HostRef, request: m.Request, timeout: float, *,
             connect_wait: float = CONNECT_WAIT) -> m.Answer:
        agents = self._manager(connect_wait)
        if agents is None:
            raise AgentAbsent("the agent channel is not running on this management server")
        if not host.guid or not agents.registration_event(host.guid).wait(connect_wait):
            raise AgentAbsent(f"the agent of host {host.name} is not connected")
        return agents.call(host.guid, request, timeout)

    def connected(self, guid: str, wait: float = 0.0) -> bool:
        agents = self._manager()
        return agents is not None and bool(guid) and agents.registration_event(guid).wait(wait)

    @property
    def down_within(self) -> float:
        agents = self._manager()
        return agents.down_within if agents is not None else 0.0

    def check_image_store(self, store_uuid: str) -> None:
        agents = self._manager()
        if agents is not None:
            agents.schedule(agents.check_image_store, store_uuid)

    def adopt_pending(self, address: str) -> tuple[m.HostInfo, str, str] | None:
        agents = self._manager()
        found = agents.pending_for(address=address) if agents is not None else None
        if found is None:
            return None
        guid, pending = found
        return pending.request.host, guid, pending.request.agent_version

    def adopted(self, guid: str) -> None:
        """Once the new host is committed: what the channel does when a registration finds its host."""
        agents = self._manager()
        if agents is not None:
            agents.pending.pop(guid, None)
            agents.registration_event(guid).set()
            agents.schedule(agents.after_register, guid)

    def start_simulated(self, guid: str, url: str) -> None:
        agents = self._manager()
        if agents is not None:
            agents.schedule(agents.start_simulated, guid, url)

    def stop_simulated(self, guid: str) -> None:
        agents = self._manager()
        if agents is not None:
            agents.schedule(agents.stop_simulated, guid)

    def issue_token(self, ttl: int, guid: str | None = None, note: str = "") -> str:
        agents = self._manager()
        if agents is None:
            raise ResourceUnavailable("The agent channel is not running on this management server")
        return agents.issue_token(ttl, guid=guid, note=note)

    @property
    def ca_fingerprint(self) -> str:
        agents = self._manager()
        if agents is None:
            raise ResourceUnavailable("The agent channel is not running on this management server")
        return agents.ca.fingerprint
