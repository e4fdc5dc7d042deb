"""The context a command runs in: one transaction, the caller, and the domain services."""

import functools

from .services.accounts import ROOT_ADMIN


class Principal:
    """Who calls, as known from the API key cache: enough to authorise without a query."""

    __slots__ = ("user_id", "account_id", "root_admin")

    def __init__(self, user_id, account_id, root_admin):
        self.user_id = user_id
        self.account_id = account_id
        self.root_admin = root_admin


class Context:
    def __init__(self, engine, session, user, command=None, request_id=None, job=None):
        """`user` is a User row, a Principal (the row is loaded on first use), or None."""
        self.engine = engine
        self.session = session
        if isinstance(user, Principal):
            self.principal, self._user = user, None
        else:
            self._user = user
            self.principal = None if user is None else Principal(
                user.id, user.account_id, user.account.account_type == ROOT_ADMIN)
        self.command = command
        self.request_id = request_id
        self.job = job
        self._after_commit = []
        self.cookies = {}

    @property
    def agents(self):
        """The agent gateway (services.gateway.AgentGateway): the only way to a host's agent."""
        return self.engine.gateway

    @property
    def config(self):
        return self.engine.settings

    @property
    def user(self):
        if self._user is None and self.principal is not None:
            from .persistence.models import User

            self._user = self.session.get(User, self.principal.user_id)
        return self._user

    @property
    def account(self):
        return self.user.account if self.user is not None else None

    @property
    def is_root_admin(self):
        return self.principal is not None and self.principal.root_admin

    def after_commit(self, fn):
        """Run `fn` once the transaction has committed (e.g. hand a job to the workers)."""
        self._after_commit.append(fn)

    def run_after_commit(self):
        for fn in self._after_commit:
            fn()
        self._after_commit.clear()

    # Services are created on first use and share this context's transaction.

    @functools.cached_property
    def configuration(self):
        from .services.configuration import ConfigurationService

        return ConfigurationService(self.session, self.engine.settings)

    @functools.cached_property
    def accounts(self):
        from .services.accounts import AccountService

        return AccountService(self.session)

    @functools.cached_property
    def hierarchy(self):
        from .services.hierarchy import HierarchyService

        return HierarchyService(self)

    @functools.cached_property
    def hosts(self):
        from .services.hosts import HostService

        return HostService(self)

    @functools.cached_property
    def storage(self):
        from .services.storage import StorageService

        return StorageService(self)

    @functools.cached_property
    def networks(self):
        from .services.networks import NetworkService

        return NetworkService(self)

    @functools.cached_property
    def capacity(self):
        from .services.capacity import CapacityService

        return CapacityService(self)

    @functools.cached_property
    def catalog(self):
        from .services.catalog import CatalogService

        return CatalogService(self)

    @functools.cached_property
    def vms(self):
        from .services.vms import VmService

        return VmService(self)

    @functools.cached_property
    def jobs(self):
        from .services.jobs import JobService

        return JobService(self)

    def event(self, type, description, resource_uuid=None, level="INFO"):
        from .persistence.models import Event

        self.session.add(Event(
            type=type, level=level, description=description, resource_uuid=resource_uuid,
            account_id=self.account.id if self.account else None,
            user_id=self.user.id if self.user else None,
        ))
