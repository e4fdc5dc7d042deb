"""The management engine's composition root: database, settings, caches, job workers."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Importing the command families fills the registry.
from . import commands  # noqa: F401  # pylint: disable=unused-import
from .agentlink.gateway import ChannelGateway
from .api.authorize import RoleCache
from .api.cache import ResponseCache
from .api.execute import ApiJobs
from .api.registry import REGISTRY
from .context import Context
from .errors import DatabaseUnavailable, Throttled
from .persistence import crypto
from .persistence.db import Database
from .services import ha, throttling
from .services.accounts import ROOT_ADMIN, AccountService
from .services.alerts import AlertMailer, CapacityChecker
from .services.cluster import ClusterService, ServerIdentity
from .services.configuration import GlobalSettings
from .services.console import ConsoleTokens
from .services.roles import role_of
from .services.jobs import JobExecutor

if TYPE_CHECKING:
    from collections.abc import Collection

    from .persistence.models import User
    from .context import Principal
    from .options import Options
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


@dataclass
class KeyEntry:
    user_id: int
    account_id: int
    secret: str
    root_admin: bool
    role_id: int
    enabled: bool
    loaded: float


class KeyCache:
    """API key -> (user, secret, enabled) for a few seconds, so requests skip the user query.

    Disabling a user or account therefore takes effect within TTL seconds.
    """

    TTL = 5.0

    def __init__(self):
        self._entries: dict[str, KeyEntry] = {}
        self._lock = threading.Lock()

    def fresh(self, api_key: str) -> KeyEntry | None:
        """The entry for `api_key` if it was loaded less than TTL seconds ago, else None."""
        with self._lock:
            entry = self._entries.get(api_key)
        if entry is not None and time.monotonic() - entry.loaded < self.TTL:
            return entry
        return None

    def lookup(self, session: Session, api_key: str) -> KeyEntry | None:
        entry = self.fresh(api_key)
        if entry is not None:
            return entry
        now = time.monotonic()
        user = AccountService(session).user_by_key(api_key)
        if user is None or not user.secret_key:
            return None
        enabled = user.state == "enabled" and user.account.state == "enabled"
        entry = KeyEntry(user.id, user.account_id, user.secret_key,
                         user.account.account_type == ROOT_ADMIN, role_of(user.account), enabled, now)
        with self._lock:
            if len(self._entries) > 10000:
                self._entries.clear()
            self._entries[api_key] = entry
        return entry

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()


class Throttle:
    """Fixed-window API limit per account (api.throttling.*), counted in the database, so that
    every management server counts the same calls (services/throttling.py); root admins are exempt."""

    def __init__(self, db: Database, enabled: bool, interval: float, maximum: int):
        self.db = db
        self.enabled = enabled
        self.interval = interval
        self.maximum = maximum

    def check(self, caller: Principal, session: Session | None = None) -> None:
        """`caller` is a context Principal; `session` the request's transaction when it writes
        (the call is counted in it), else None (counted in a transaction of its own)."""
        if not self.enabled or caller.root_admin:
            return
        now = time.time()
        count, start = throttling.count_call(self.db, caller.account_id, self.interval, now, session)
        if count > self.maximum:
            retry_ms = int((start + self.interval - now) * 1000)
            raise Throttled(
                f"The given user has reached his/her account api limit, please retry after [{max(retry_ms, 0)}] ms."
            )

    def status(self, account_id: int, session: Session | None = None) -> tuple[int, int, int]:
        """(calls counted in the window, calls left, milliseconds until the window ends)."""
        now = time.time()
        start, count = now, 0
        counted = throttling.window(self.db, account_id, session)
        if counted is not None and now - counted[1] < self.interval:
            count, start = counted
        return count, max(0, self.maximum - count), int((start + self.interval - now) * 1000)

    def reset(self, account_id: int | None = None, session: Session | None = None) -> None:
        throttling.reset(self.db, account_id, session)


def advertised_address(opts: Options) -> str:
    """The address peers reach this server's engine-to-engine channel at."""
    if opts.cluster_address:
        return opts.cluster_address
    host = opts.cluster_host or opts.agent_host
    if host not in ("", "0.0.0.0", "::"):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def capacity_checker(engine: Any) -> CapacityChecker:
    """The capacity checker of `engine` (its database and settings): each check one transaction."""
    def check(cluster_ids: Collection[int] | None) -> None:
        with engine.db.transaction() as s:
            Context(engine, s, None).alerts.check_capacity(cluster_ids)

    return CapacityChecker(check, lambda: engine.settings.typed("capacity.check.period") / 1000.0)


class ClusterMonitor:
    """This server's heartbeat, and the takeover of what peers found Down served.

    Every cluster.heartbeat.interval: record the heartbeat; mark Down the peers silent for
    cluster.heartbeat.threshold; claim the pending jobs of servers that are not Up (and run
    them at their recorded step), and have the agent channel claim their hosts; reload the
    global settings when a peer changed them. A server that finds it was itself marked Down
    (it stalled longer than the threshold, and its peers took its hosts and jobs) stops, as
    CloudStack's does: its work is elsewhere now."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fenced = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cluster-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def interval(self) -> float:
        return self.engine.settings.typed("cluster.heartbeat.interval") / 1000.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval()):
            try:
                self.tick()
            except DatabaseUnavailable as e:
                log.warning("cannot record this management server's heartbeat: %s", e.text)
            except Exception:
                log.exception("management server heartbeat failed")

    def tick(self) -> None:
        engine = self.engine
        cluster = engine.cluster
        if not cluster.heartbeat():
            if not self.fenced:
                self.fenced = True
                log.error("this management server (msid %d) was found Down by its peers, which took over its "
                          "hosts and jobs; stopping", cluster.me.msid)
                os.kill(os.getpid(), signal.SIGTERM)
            return
        if cluster.sole:
            return      # no peers on this database
        cluster.find_down(engine.settings.typed("cluster.heartbeat.threshold") / 1000.0)
        engine.jobs.resubmit(cluster.claim_jobs(exclude=engine.jobs.running))
        engine.gateway.take_over()
        # Global settings another server changed take effect here within one interval.
        changed = engine.settings.refresh()
        if changed:
            log.info("global settings changed on another management server, now in effect here: %s",
                     ", ".join(changed))


class Engine:
    def __init__(self, settings: Options):
        # Start-up options (server.properties and the command line): how the process runs.
        self.options = settings
        self.key_file = getattr(settings, "key_file", None) or crypto.default_key_file(settings.db_url)
        key = crypto.read_key(self.key_file)
        if key is None:
            log.warning("no key file %s: stored credentials cannot be read or written until "
                        "stackwright-setup-databases creates it", self.key_file)
        crypto.install(key)
        self.db = Database(settings.db_url)
        self.registry = REGISTRY
        # The engine-wide cache of global settings stored in the database; a command reads
        # settings at every scope through ctx.settings (the ConfigurationService over this cache).
        self.settings = GlobalSettings(self.db)
        self.keys = KeyCache()
        # Each role's rules, compiled (api.authorize): every call is checked against them.
        self.roles = RoleCache()
        self.responses = ResponseCache(self.db, size=settings.api_cache_size)
        self.jobs = JobExecutor(self, ApiJobs(self), workers=settings.job_workers)
        self.throttle = None
        # What services reach agents through (ctx.agents); the daemon attaches the channel.
        self.gateway = ChannelGateway()
        # Mails committed alerts when alert.email.addresses and alert.smtp.host are set.
        self.mailer = AlertMailer(self.db, self.settings)
        # Capacity alerts: every capacity.check.period, and soon after guests start in a cluster.
        self.capacity_checker = capacity_checker(self)
        # This server among the others on the same database (services/cluster.py).
        self.cluster = ClusterService(self.db, ServerIdentity.of(
            f"{settings.listen_host}:{settings.listen_port}", advertised_address(settings),
            settings.cluster_port, settings.agent_port))
        self.monitor = ClusterMonitor(self)
        # One-time console tokens, and where the console proxy is served: (scheme, address,
        # port), set by the daemon once it listens; None while it is not served.
        self.consoles = ConsoleTokens()
        self.console_endpoint: tuple[str, str, int] | None = None
        self.started = time.time()

    def start(self) -> None:
        """Check the schema, load settings, start the job workers."""
        if not self.db.has_schema():
            raise RuntimeError(
                f"the database at {self.db.url.split('@')[-1]} has no Stackwright schema; "
                "run stackwright-setup-databases first"
            )
        self.settings.load()
        self.cluster.register()
        s = self.settings
        self.throttle = Throttle(
            self.db, s.typed("api.throttling.enabled"), s.typed("api.throttling.interval"),
            s.typed("api.throttling.max"),
        )
        # HA work (investigations, restarts) on ha.workers threads of its own.
        self.jobs.lane("ha-worker", s.typed("ha.workers"), ha.JOBS)
        self.jobs.start()
        self.mailer.start()
        self.capacity_checker.start()
        self.monitor.start()

    def stop(self) -> None:
        self.monitor.stop()
        self.mailer.stop()
        self.capacity_checker.stop()
        self.jobs.stop()
        try:
            self.cluster.stopped()
        except DatabaseUnavailable as e:
            log.warning("could not record this management server's stop: %s", e.text)
        self.db.dispose()

    def health(self) -> tuple[bool, dict[str, str]]:
        """Whether this engine can serve calls: its database answers and its management-server
        record is Up (not found Down by a peer); with what a balancer or an operator may read
        (no names, addresses or ids)."""
        try:
            state = self.cluster.recorded_state()
        except DatabaseUnavailable:
            return False, {"status": "DOWN", "database": "unreachable"}
        recorded = state if state is not None else "Unknown"
        healthy = state == "Up" and not self.monitor.fenced
        return healthy, {"status": "UP" if healthy else "DOWN", "database": "reachable",
                         "managementserverstate": recorded}

    def sessions_user(self, session: Session, session_id: str, session_key: str) -> User | None:
        return AccountService(session).session_user(session_id, session_key)
