"""The channel's `AgentEvents`: what the engine does when agents register, ping, go silent.

`Registrar` keeps what the channel knows between events (agents waiting for their host,
hosts whose next ping brings them back Up, heartbeats not yet written, the guests each host
last reported) and hands the database work to the registration service on a small thread
pool, never on the event loop. Under load it batches: registrations that arrive within
REGISTER_GATHER seconds share one transaction (on a thread of their own), heartbeats are
written every PING_FLUSH_SECONDS in one statement, and guest reports that did not change
cost nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from stackwright.management.agentlink.events import (
    AgentUnavailable,
    CommandTimeout,
    PingLevel,
    RegistrationRefused,
)
from stackwright.management.persistence.models import utcnow
from stackwright.management.services.registration import AgentRefused, RegistrationService
from stackwright.protocol import messages as m
from stackwright.protocol.channel import RemoteError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from .server import AgentLinkServer
    from .session import AgentSession

log = logging.getLogger(__name__)

PING_FLUSH_SECONDS = 5.0
POOL_CHECK_TIMEOUT = 60.0  # seconds a host has to answer for a pool before the pool counts as lost
REGISTER_GATHER = 0.02     # seconds registrations wait for others to share their transaction
REGISTER_BATCH = 200       # registrations per transaction at most

T = TypeVar("T")


@dataclass
class Pending:
    """An agent that registered before its host was added."""

    request: m.RegisterRequest
    since: float


class Registrar:
    """`AgentEvents` on top of the registration service; commands go out through `send`
    (the channel server's) to the sessions `session` finds."""

    def __init__(self, registration: RegistrationService, server: AgentLinkServer | None = None):
        self.registration = registration
        self.server = server       # the AgentLinkServer, once it exists
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="agents")
        self.pending: dict[str, Pending] = {}
        # Hosts marked Alert or Disconnected: their next ping brings them back Up.
        self.degraded: set[str] = set()
        # Set while the engine shuts down: sessions then end without a write per host.
        self.closing = False
        self._registered: dict[str, threading.Event] = {}
        self._pings: dict[str, int] = {}
        self._recovered: set[str] = set()
        self._pings_lock = threading.Lock()
        self._flusher: asyncio.Task | None = None
        self._pool_checker: asyncio.Task | None = None
        # Guests each host last reported paused by storage errors.
        self._io_paused: dict[str, frozenset[str]] = {}
        self._registrations: list = []
        self._registrar_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="registrar")
        self._registrar: asyncio.Task | None = None
        # Last guest states each host reported, so unchanged pings cost nothing.
        self._vm_reports: dict[str, dict[str, str]] = {}
        self._vm_reports_lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the thread pool (database work)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_pings_forever(), name="ping-flusher")
        self._pool_checker = asyncio.create_task(self._check_pools_forever(), name="pool-checker")

    async def drain(self, served: Sequence[str]) -> None:
        """At shutdown: write what is queued, then leave the hosts in `served` Disconnected.
        Registrations and sessions that end from now on write nothing."""
        self.closing = True
        for task in (self._flusher, self._pool_checker):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # A batch of registrations still being written would mark its hosts Up after the
        # Disconnected below: let it finish first, and take no more.
        if self._registrar is not None:
            self._registrar.cancel()
            await asyncio.gather(self._registrar, return_exceptions=True)
        await asyncio.to_thread(self._registrar_pool.shutdown, True)
        await self.run(self._flush_pings)
        await self.run(self.registration.disconnect_all, served)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
        self._registrar_pool.shutdown(wait=True)

    # --- what the gateway asks -------------------------------------------------------------

    def registration_event(self, guid: str) -> threading.Event:
        """Set while the agent of host `guid` is registered."""
        return self._registered.setdefault(guid, threading.Event())

    def pending_for(self, address: str | None = None, guid: str | None = None) -> tuple[str, Pending] | None:
        for key, pending in self.pending.items():
            if guid and key == guid:
                return key, pending
            if address and pending.request.host.private_ip == address:
                return key, pending
        return None

    def adopted(self, guid: str) -> None:
        """The pending agent `guid` has its host now: it counts as registered."""
        self.pending.pop(guid, None)
        self.registration_event(guid).set()

    # --- registration ----------------------------------------------------------------------

    async def register_soon(self, request: m.RegisterRequest) -> tuple[str | None, str]:
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
                    self._registrar_pool, self.registration.register_many, [request for request, _future in batch])
            except Exception as e:  # noqa: BLE001 - e.g. the database is unavailable
                results = [e] * len(batch)
            for (_request, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    # --- storage the hosts attach and check ----------------------------------------------------

    async def after_register(self, guid: str) -> None:
        """Attach the primary pools of the host's cluster."""
        for pool_uuid in await self.run(self.registration.pools_to_attach, guid):
            await self.attach_pool_on(guid, pool_uuid)

    async def attach_pool_on(self, guid: str, pool_uuid: str) -> None:
        """Ask host `guid` to attach pool `pool_uuid`; record Up with real figures, or why not."""
        pool_spec = await self.run(self.registration.pool_spec, pool_uuid)
        if pool_spec is None:
            return
        try:
            answer = await self.server.send(guid, m.AttachPool(pool=pool_spec), timeout=120)
        except (RemoteError, AgentUnavailable, CommandTimeout) as e:
            message = str(e) or type(e).__name__
            log.warning("host %s could not attach pool %s (%s): %s", guid, pool_spec.uuid, pool_spec.url, message)
            await self.run(self.registration.pool_result, pool_uuid, None, message)
            return
        await self.run(self.registration.pool_result, pool_uuid, answer.stats, None)

    # --- primary storage outages ---------------------------------------------------------------

    async def _check_pools_forever(self) -> None:
        """Every storage.stats.interval: each NFS pool of a KVM cluster is asked about by one of
        its hosts; a pool that stops answering is lost (alert), one that answers again is Up."""
        last = time.monotonic()
        while True:
            # The interval is read every second: a new value applies without waiting out the old.
            await asyncio.sleep(1.0)
            try:
                if time.monotonic() - last < self.registration.pool_check_interval():
                    continue
                last = time.monotonic()
                await self.check_pools()
            except Exception:
                log.exception("checking the primary storage pools failed; trying again next round")

    async def check_pools(self) -> None:
        for spec, up, guids in await self.run(self.registration.pools_to_check):
            guid = next((g for g in guids if self.server.session(g) is not None), None)
            if guid is None:
                continue        # no host of its cluster is connected here: nobody to ask
            # An Up pool is asked for its figures; one waiting to be reached is attached again
            # (mounted, and proven writable).
            request = m.GetPoolStats(pool=spec) if up else m.AttachPool(pool=spec)
            try:
                answer = await self.server.send(guid, request, timeout=POOL_CHECK_TIMEOUT)
            except AgentUnavailable:
                continue
            except (RemoteError, CommandTimeout) as e:
                message = str(e) or type(e).__name__
                if up:
                    log.warning("primary storage pool %s (%s) does not answer host %s: %s", spec.uuid, spec.url, guid,
                                message)
                    await self.run(self.registration.pool_lost, spec.uuid, message)
                continue
            for host in await self.run(self.registration.pool_answered, spec.uuid, answer.stats):
                await self.resume_io_paused(host)

    async def resume_io_paused(self, guid: str) -> None:
        """Have host `guid` resume the guests storage errors paused."""
        if self.server.session(guid) is None:
            return
        try:
            answer = await self.server.send(guid, m.ResumeIoPaused(), timeout=POOL_CHECK_TIMEOUT)
        except (RemoteError, AgentUnavailable, CommandTimeout) as e:
            log.warning("host %s could not resume its guests paused by storage errors: %s", guid, e)
            return
        if answer.names:
            log.warning("host %s resumed %d guest(s) paused by storage errors: %s", guid, len(answer.names),
                        ", ".join(answer.names))

    def io_paused_reported(self, guid: str, names: Sequence[str]) -> None:
        """Host `guid` reported the guests storage errors paused; alert for the new ones."""
        now = frozenset(names)
        new = now - self._io_paused.get(guid, frozenset())
        self._io_paused[guid] = now
        if new:
            log.warning("host %s: guest(s) paused by storage errors: %s", guid, ", ".join(sorted(new)))
            asyncio.ensure_future(self.run(self.registration.guests_io_paused, guid, sorted(new)))

    async def check_image_store(self, store_uuid: str) -> None:
        """Have an Up KVM host of the store's zone check reachability and write access."""
        url, guids = await self.run(self.registration.image_store_target, store_uuid)
        if not url or not guids:
            return
        for guid in guids:
            if self.server.session(guid) is None:
                continue
            try:
                answer = await self.server.send(guid, m.CheckSecondary(url=url), timeout=60)
            except (RemoteError, AgentUnavailable, CommandTimeout) as e:
                await self.run(self.registration.store_result, store_uuid, None, str(e) or type(e).__name__)
                return
            await self.run(self.registration.store_result, store_uuid, answer.stats, None)
            return

    # --- heartbeats -------------------------------------------------------------------------

    def pinged(self, guid: str) -> None:
        with self._pings_lock:
            self._pings[guid] = int(time.time())

    def recovered(self, guid: str) -> None:
        """A host that was Alert or Disconnected pinged: Up again with the next flush."""
        with self._pings_lock:
            self._recovered.add(guid)

    def _flush_pings(self):
        with self._pings_lock:
            batch, self._pings = self._pings, {}
            recovered, self._recovered = self._recovered, set()
        # Flagged again since their ping: the monitor's state stands.
        self.registration.record_heartbeats(batch, recovered - self.degraded)

    async def _flush_pings_forever(self):
        last = time.monotonic()
        while True:
            # Heartbeats are written every PING_FLUSH_SECONDS; hosts coming back Up within a second.
            await asyncio.sleep(1.0)
            if not self._recovered and time.monotonic() - last < PING_FLUSH_SECONDS:
                continue
            last = time.monotonic()
            try:
                await self.run(self._flush_pings)
            except Exception:
                log.exception("could not record heartbeats; retrying in %ss", PING_FLUSH_SECONDS)

    # --- guest states reported by agents --------------------------------------------------------

    def vms_reported(self, guid: str, reported: Mapping[str, m.VmState], always: bool = False) -> None:
        """Host `guid` reported its guests ({instance name: state}); reconcile them with the
        database when they differ from its previous report (or `always`, on registration)."""
        snapshot = {name: str(state) for name, state in reported.items()}
        with self._vm_reports_lock:
            if not always and self._vm_reports.get(guid) == snapshot:
                return
            self._vm_reports[guid] = snapshot
        asyncio.ensure_future(self.run(self._reconcile_vms, guid, snapshot, utcnow()))

    def _reconcile_vms(self, guid: str, snapshot: dict[str, str], received: datetime) -> None:
        if not self.registration.reconcile_vms(guid, snapshot, received):
            # Not settled: look again at the next ping, even if unchanged.
            with self._vm_reports_lock:
                if self._vm_reports.get(guid) == snapshot:
                    del self._vm_reports[guid]

    # --- AgentEvents ---------------------------------------------------------------------------

    async def on_register(self, session: AgentSession, request: m.RegisterRequest) -> m.RegisterAnswer:
        try:
            host_uuid, name = await self.register_soon(request)
        except RegistrationRefused:
            raise
        except AgentRefused as e:
            raise RegistrationRefused(str(e)) from None
        except Exception as e:
            log.warning("registration of agent %s refused: %s", request.guid, e)
            raise RegistrationRefused(str(e)) from None
        if host_uuid is None:
            self.pending[request.guid] = Pending(request, time.time())
            log.info("agent %s at %s registered but no host was added for it yet; waiting for addHost "
                     "(zone=%r pod=%r cluster=%r)", request.guid, request.host.private_ip,
                     request.zone, request.pod, request.cluster)
        else:
            self.pending.pop(request.guid, None)
            log.info("agent %s connected: host %s (%s) is Up", request.guid, name, host_uuid)
            self.registration_event(request.guid).set()
            if request.host.hypervisor != "Simulator":
                # Pools of Simulator clusters are not attached by agents (see pools_to_attach).
                asyncio.ensure_future(self.after_register(request.guid))
            self.vms_reported(request.guid, request.vms, always=True)
        return m.RegisterAnswer(host_id=request.guid, host_name=name or request.host.hostname)

    async def on_ping(self, session: AgentSession, ping: m.Ping) -> None:
        guid = session.host_key
        if guid in self.pending:
            return
        self.pinged(guid)
        if guid in self.degraded:
            # The answer does not wait for the database: the host is Up again with the next
            # batch of heartbeats, so a storm of recoveries costs one transaction a second.
            self.degraded.discard(guid)
            self.recovered(guid)
        if ping.vms_reported:
            self.vms_reported(guid, ping.vms)
            if ping.io_paused or guid in self._io_paused:
                self.io_paused_reported(guid, ping.io_paused)

    async def on_disconnect(self, session: AgentSession, clean: bool) -> None:
        guid = session.host_key
        if self.closing:
            return
        if self.pending.pop(guid, None) is not None:
            return
        self.registration_event(guid).clear()
        state = "Disconnected" if clean else "Alert"
        self.degraded.add(guid)
        new = await self.run(self.registration.host_state, guid, state)
        if new is not None:
            log.info("agent of host %s disconnected (%s): host is %s", guid, "clean" if clean else "connection lost", new)

    async def on_ping_timeout(self, host_key: str, level: PingLevel, session: AgentSession | None) -> None:
        if host_key in self.pending:
            return
        # Without a connection the host is gone once it has been silent for
        # interval x timeout; with one, it is first Alert and Down after twice that.
        state = "Down" if (level == PingLevel.DOWN or session is None) else "Alert"
        self.degraded.add(host_key)
        new = await self.run(self.registration.host_state, host_key, state)
        log.warning("host %s missed its pings (%s): now %s", host_key, level, new)
        if host_key not in self.degraded and session is not None:
            self.recovered(host_key)  # it pinged while the state was being written
