"""The management engine's composition root: database, settings, caches, job workers."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

# Importing the command families fills the registry.
from . import commands  # noqa: F401  # pylint: disable=unused-import
from .agentlink.gateway import ChannelGateway
from .api.authorize import RoleCache
from .api.cache import ResponseCache
from .api.execute import ApiJobs
from .api.registry import REGISTRY
from .errors import Throttled
from .persistence import crypto
from .persistence.db import Database
from .services.accounts import ROOT_ADMIN, AccountService
from .services.configuration import GlobalSettings
from .services.roles import role_of
from .services.jobs import JobExecutor

if TYPE_CHECKING:
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
    """Fixed-window API limit per account (api.throttling.*); root admins are exempt."""

    def __init__(self, enabled: bool, interval: float, maximum: int, cachesize: int):
        self.enabled = enabled
        self.interval = interval
        self.maximum = maximum
        self.cachesize = cachesize
        self._windows = {}
        self._lock = threading.Lock()

    def check(self, caller: Principal) -> None:
        """`caller` is a context Principal."""
        if not self.enabled or caller.root_admin:
            return
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(caller.account_id, (now, 0))
            if now - start >= self.interval:
                start, count = now, 0
            count += 1
            if len(self._windows) >= self.cachesize and caller.account_id not in self._windows:
                self._windows.clear()
            self._windows[caller.account_id] = (start, count)
        if count > self.maximum:
            retry_ms = int((start + self.interval - now) * 1000)
            raise Throttled(
                f"The given user has reached his/her account api limit, please retry after [{max(retry_ms, 0)}] ms."
            )

    def status(self, account_id: int) -> tuple[int, int, int]:
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(account_id, (now, 0))
        if now - start >= self.interval:
            start, count = now, 0
        return count, max(0, self.maximum - count), int((start + self.interval - now) * 1000)

    def reset(self, account_id: int | None = None) -> None:
        with self._lock:
            if account_id is None:
                self._windows.clear()
            else:
                self._windows.pop(account_id, None)


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
        self.started = time.time()

    def start(self) -> None:
        """Check the schema, load settings, start the job workers."""
        if not self.db.has_schema():
            raise RuntimeError(
                f"the database at {self.db.url.split('@')[-1]} has no Stackwright schema; "
                "run stackwright-setup-databases first"
            )
        self.settings.load()
        s = self.settings
        self.throttle = Throttle(
            s.typed("api.throttling.enabled"), s.typed("api.throttling.interval"),
            s.typed("api.throttling.max"), s.typed("api.throttling.cachesize"),
        )
        self.jobs.start()

    def stop(self) -> None:
        self.jobs.stop()
        self.db.dispose()

    def sessions_user(self, session: Session, session_id: str, session_key: str) -> User | None:
        return AccountService(session).session_user(session_id, session_key)
