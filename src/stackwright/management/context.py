"""The context a command runs in: one transaction, the caller, and the domain services."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from .services.accounts import ROOT_ADMIN

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .engine import Engine
    from .persistence.models import Account, AsyncJob, User
    from .services.accounts import AccountService
    from .services.alerts import AlertService
    from .services.capacity import CapacityService
    from .services.catalog import CatalogService
    from .services.configuration import ConfigurationService
    from .services.events import EventService
    from .services.ha import HaService
    from .services.gateway import AgentGateway
    from .services.hierarchy import HierarchyService
    from .services.hosts import HostService
    from .services.jobs import JobService
    from .services.networks import NetworkService
    from .services.resource_limits import ResourceLimitService
    from .services.ssh_keys import SshKeyService
    from .services.storage import StorageService
    from .services.templates import TemplateService
    from .services.vms import VmService
    from .services.volumes import VolumeService


class Principal:
    """Who calls, as known from the API key cache: enough to authorise without a query."""

    __slots__ = ("user_id", "account_id", "root_admin", "role_id")

    def __init__(self, user_id: int, account_id: int, root_admin: bool, role_id: int) -> None:
        self.user_id = user_id
        self.account_id = account_id
        self.root_admin = root_admin
        self.role_id = role_id

    @classmethod
    def of(cls, user: User) -> Principal:
        """The principal of a loaded User row."""
        from .services.roles import role_of

        account = user.account
        return cls(user.id, user.account_id, account.account_type == ROOT_ADMIN, role_of(account))


class Context:
    def __init__(self, engine: Engine, session: Session, user: User | Principal | None,
                 command: str | None = None, request_id: str | None = None,
                 job: AsyncJob | None = None) -> None:
        """`user` is a User row, a Principal (the row is loaded on first use), or None."""
        self.engine = engine
        self.session = session
        if isinstance(user, Principal):
            self.principal, self._user = user, None
        else:
            self._user = user
            self.principal = None if user is None else Principal.of(user)
        self.command = command
        self.request_id = request_id
        self.job = job
        self._after_commit: list[Callable[[], object]] = []
        self.cookies: dict[str, str] = {}

    @property
    def agents(self) -> AgentGateway:
        """The agent gateway (services.gateway.AgentGateway): the only way to a host's agent."""
        return self.engine.gateway

    @property
    def user(self) -> User | None:
        if self._user is None and self.principal is not None:
            from .persistence.models import User

            self._user = self.session.get(User, self.principal.user_id)
        return self._user

    @property
    def account(self) -> Account | None:
        return self.user.account if self.user is not None else None

    @property
    def is_root_admin(self) -> bool:
        return self.principal is not None and self.principal.root_admin

    def after_commit(self, fn: Callable[[], object]) -> None:
        """Run `fn` once the transaction has committed (e.g. hand a job to the workers)."""
        self._after_commit.append(fn)

    def run_after_commit(self) -> None:
        for fn in self._after_commit:
            fn()
        self._after_commit.clear()

    # Services are created on first use and share this context's transaction.

    @functools.cached_property
    def settings(self) -> ConfigurationService:
        """Settings at every scope; `get`/`typed` read the engine-wide global cache."""
        from .services.configuration import ConfigurationService

        return ConfigurationService(self.session, self.engine.settings)

    @functools.cached_property
    def accounts(self) -> AccountService:
        from .services.accounts import AccountService

        return AccountService(self.session)

    @functools.cached_property
    def hierarchy(self) -> HierarchyService:
        from .services.hierarchy import HierarchyService

        return HierarchyService(self)

    @functools.cached_property
    def hosts(self) -> HostService:
        from .services.hosts import HostService

        return HostService(self)

    @functools.cached_property
    def storage(self) -> StorageService:
        from .services.storage import StorageService

        return StorageService(self)

    @functools.cached_property
    def networks(self) -> NetworkService:
        from .services.networks import NetworkService

        return NetworkService(self)

    @functools.cached_property
    def capacity(self) -> CapacityService:
        from .services.capacity import CapacityService

        return CapacityService(self)

    @functools.cached_property
    def templates(self) -> TemplateService:
        from .services.templates import TemplateService

        return TemplateService(self)

    @functools.cached_property
    def catalog(self) -> CatalogService:
        from .services.catalog import CatalogService

        return CatalogService(self)

    @functools.cached_property
    def vms(self) -> VmService:
        from .services.vms import VmService

        return VmService(self)

    @functools.cached_property
    def volumes(self) -> VolumeService:
        from .services.volumes import VolumeService

        return VolumeService(self)

    @functools.cached_property
    def limits(self) -> ResourceLimitService:
        from .services.resource_limits import ResourceLimitService

        return ResourceLimitService(self)

    @functools.cached_property
    def ssh_keys(self) -> SshKeyService:
        from .services.ssh_keys import SshKeyService

        return SshKeyService(self)

    @functools.cached_property
    def jobs(self) -> JobService:
        from .services.jobs import JobService

        return JobService(self)

    @functools.cached_property
    def events(self) -> EventService:
        from .services.events import EventService

        return EventService(self)

    @functools.cached_property
    def ha(self) -> HaService:
        from .services.ha import HaService

        return HaService(self)

    @functools.cached_property
    def alerts(self) -> AlertService:
        from .services.alerts import AlertService

        return AlertService(self)

    def event(self, type: str, description: str, resource_uuid: str | None = None, level: str = "INFO",
              account_id: int | None = None) -> None:
        """Record an event of this transaction's change (services/events.py)."""
        self.events.record(type, description, resource_uuid, level, account_id)
