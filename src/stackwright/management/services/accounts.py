"""Domains, accounts, users, API keys and login sessions."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
# Any is named in a TypeVar bound written as a string.
from typing import TYPE_CHECKING, Any, TypeVar  # pylint: disable=unused-import

from sqlalchemy import or_, select

from ..errors import CloudRuntimeError, InvalidParameterValue, PermissionDenied
from ..persistence.models import Account, Domain, LoginSession, Role, User, VmInstance, utcnow
from .roles import ACCOUNT_TYPE_OF_ROLE_TYPE, DEFAULT_ROLE_OF_ACCOUNT_TYPE
from .queries import EXACT, NOCASE, ROW, Filter, ci_equals, filtered, keyword, page

if TYPE_CHECKING:
    from types import SimpleNamespace
    from sqlalchemy import Select
    from ..services.queries import Page
    from sqlalchemy.orm import Session
    from ..context import Context

S = TypeVar("S", bound="Select[Any]")
ROOT_ADMIN, USER, DOMAIN_ADMIN, RESOURCE_ADMIN = 1, 0, 2, 3
ROLE_TYPES = {ROOT_ADMIN: "Admin", USER: "User", DOMAIN_ADMIN: "DomainAdmin", RESOURCE_ADMIN: "ResourceAdmin"}
ENABLED, DISABLED = "enabled", "disabled"
SESSION_LIFETIME = dt.timedelta(minutes=30)
LOCKED = "locked"

log = logging.getLogger(__name__)


def new_key() -> str:
    """An API key or secret: URL-safe Base64 of 64 random bytes (86 characters), as CloudStack."""
    return secrets.token_urlsafe(64)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    computed = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(computed, base64.b64decode(digest))


def _digest(session_key: str):
    """What is stored of a session key: its SHA-256, so the table alone opens no session."""
    return hashlib.sha256(session_key.encode("utf-8", "replace")).hexdigest()


@functools.lru_cache(maxsize=1)
def _dummy_hash():
    """A hash no password matches, checked when the user name is unknown: a login then costs
    what a wrong password costs, and its time tells nothing about which user names exist."""
    return hash_password(secrets.token_urlsafe(24))


class AccountService:
    def __init__(self, session: Session):
        self.session = session

    def root_domain(self) -> Domain | None:
        return self.session.execute(
            select(Domain).where(Domain.parent_id.is_(None), Domain.removed.is_(None))
        ).scalar_one_or_none()

    def ensure_root(self, admin_password: str | None = None) -> User:
        """Create the ROOT domain and the `admin` root-admin account if missing.

        Returns the admin user; its keys are generated when it has none.
        """
        root = self.root_domain()
        if root is None:
            root = Domain(name="ROOT", path="ROOT", level=0)
            self.session.add(root)
            self.session.flush()
        admin = self.session.execute(
            select(User).join(Account).where(
                User.username == "admin", Account.domain_id == root.id, User.removed.is_(None)
            )
        ).scalar_one_or_none()
        if admin is None:
            account = Account(name="admin", account_type=ROOT_ADMIN, domain_id=root.id,
                              role_id=DEFAULT_ROLE_OF_ACCOUNT_TYPE[ROOT_ADMIN])
            self.session.add(account)
            self.session.flush()
            admin = User(
                username="admin",
                password_hash=hash_password(admin_password or secrets.token_urlsafe(24)),
                account_id=account.id,
                firstname="Admin",
                lastname="User",
            )
            self.session.add(admin)
            self.session.flush()
        elif admin_password:
            admin.password_hash = hash_password(admin_password)
        if not admin.api_key:
            self.register_keys(admin)
        return admin

    def register_keys(self, user: User) -> User:
        user.api_key = new_key()
        user.secret_key = new_key()
        self.session.flush()
        return user

    def user_by_key(self, api_key: str) -> User | None:
        return self.session.execute(
            select(User).where(User.api_key == api_key, User.removed.is_(None))
        ).scalar_one_or_none()

    def create_account(self, *, username: str, password: str, email: str, firstname: str, lastname: str,
                       role: Role, account_name: str | None = None, domain: Domain | None = None,
                       network_domain: str | None = None, timezone: str | None = None) -> Account:
        """A new account of `role` (its type follows the role's) with its first user."""
        domain = domain or self.root_domain()
        name = account_name or username
        if self.account_named(name, domain) is not None:
            raise InvalidParameterValue(f"The specified account: {name} already exists")
        account = Account(name=name, account_type=ACCOUNT_TYPE_OF_ROLE_TYPE[role.role_type], domain_id=domain.id,
                          network_domain=network_domain, role_id=role.id)
        self.session.add(account)
        self.session.flush()
        self.create_user(account, username=username, password=password, email=email, firstname=firstname,
                         lastname=lastname, timezone=timezone)
        return account

    def account_named(self, name: str, domain: Domain) -> Account | None:
        return self.session.execute(
            select(Account).where(Account.name == name, Account.domain_id == domain.id, Account.removed.is_(None))
        ).scalar_one_or_none()

    def create_user(self, account: Account, *, username: str, password: str, email: str | None,
                    firstname: str | None, lastname: str | None, timezone: str | None = None) -> User:
        """A new user of `account`; user names are unique within a domain, as CloudStack's."""
        self._check_username(username, account.domain_id)
        user = User(username=username, password_hash=hash_password(password), email=email,
                    firstname=firstname, lastname=lastname, account_id=account.id, timezone=timezone)
        self.session.add(user)
        self.session.flush()
        return user

    def _check_username(self, username: str, domain_id: int, other_than: User | None = None) -> None:
        clash = self.session.execute(
            select(User).join(Account).where(User.username == username, Account.domain_id == domain_id,
                                             User.removed.is_(None))
        ).scalars().first()
        if clash is not None and clash is not other_than:
            domain = self.session.get(Domain, domain_id)
            raise InvalidParameterValue(f"The user {username} already exists in domain {domain.path}")

    def update_user(self, user: User, *, username: str | None = None, password: str | None = None,
                    email: str | None = None, firstname: str | None = None, lastname: str | None = None,
                    timezone: str | None = None) -> User:
        if username is not None and username != user.username:
            if not username.strip():
                raise InvalidParameterValue("Username cannot be empty")
            self._check_username(username, user.account.domain_id, other_than=user)
            user.username = username
        if password is not None:
            if not password:
                raise InvalidParameterValue("Password cannot be empty")
            user.password_hash = hash_password(password)
        for column, value in (("email", email), ("firstname", firstname), ("lastname", lastname),
                              ("timezone", timezone)):
            if value is not None:
                setattr(user, column, value)
        self.session.flush()
        return user

    def set_user_state(self, user: User, state: str) -> User:
        """`enabled`, `disabled` or `locked`; enabling clears the count of wrong passwords."""
        user.state = state
        if state == ENABLED:
            user.login_attempts = 0
        self.session.flush()
        return user

    def delete_user(self, user: User) -> None:
        """Removes the user, its keys and its login sessions; an account's last user stays."""
        others = [u for u in self.users_of(user.account) if u.id != user.id]
        if not others:
            raise InvalidParameterValue(
                f"Account id={user.account.uuid} has only one user; delete the account instead")
        self._remove_user(user)

    def _remove_user(self, user: User) -> None:
        user.removed = utcnow()
        user.state = DISABLED
        user.api_key = None
        user.secret_key = None
        for record in self.session.execute(
                select(LoginSession).where(LoginSession.user_id == user.id)).scalars():
            self.session.delete(record)
        self.session.flush()

    def revoke_keys(self, account: Account) -> None:
        """The account's users can no longer call the API: keys and sessions dropped."""
        for user in self.users_of(account):
            user.api_key = None
            user.secret_key = None
            for record in self.session.execute(
                    select(LoginSession).where(LoginSession.user_id == user.id)).scalars():
                self.session.delete(record)
        self.session.flush()

    def guests_of(self, account: Account) -> list[int]:
        """Ids of the account's guests that are not yet expunged."""
        return list(self.session.execute(
            select(VmInstance.id).where(VmInstance.account_id == account.id, VmInstance.removed.is_(None))
            .order_by(VmInstance.id)
        ).scalars())

    def running_guests(self, account: Account) -> list[int]:
        return list(self.session.execute(
            select(VmInstance.id).where(VmInstance.account_id == account.id, VmInstance.removed.is_(None),
                                        VmInstance.state == "Running").order_by(VmInstance.id)
        ).scalars())

    def remove_account(self, account: Account) -> None:
        """The account and its users, once its guests are gone."""
        if self.guests_of(account):
            raise CloudRuntimeError(f"Failed to delete account {account.name}: it still has guests")
        for user in self.users_of(account):
            self._remove_user(user)
        account.removed = utcnow()
        account.state = DISABLED
        self.session.flush()

    # --- domains --------------------------------------------------------------------

    def children(self, domain: Domain) -> list[Domain]:
        return list(self.session.execute(
            select(Domain).where(Domain.parent_id == domain.id, Domain.removed.is_(None)).order_by(Domain.id)
        ).scalars())

    def accounts_in(self, domain: Domain) -> list[Account]:
        return list(self.session.execute(
            select(Account).where(Account.domain_id == domain.id, Account.removed.is_(None)).order_by(Account.id)
        ).scalars())

    def create_domain(self, name: str, parent: Domain | None, network_domain: str | None,
                      uuid: str | None = None) -> Domain:
        parent = parent or self.root_domain()
        name = (name or "").strip()
        if not name or "/" in name:
            raise InvalidParameterValue(f"Invalid domain name {name!r}: it must not be empty or contain '/'")
        if any(child.name.lower() == name.lower() for child in self.children(parent)):
            raise InvalidParameterValue(
                f"Domain with name {name} already exists for the parent id={parent.uuid}")
        domain = Domain(name=name, path=f"{parent.path}/{name}", level=parent.level + 1, parent_id=parent.id,
                        network_domain=network_domain)
        if uuid:
            domain.uuid = uuid
        self.session.add(domain)
        self.session.flush()
        return domain

    def update_domain(self, domain: Domain, name: str | None, network_domain: str | None) -> Domain:
        if name is not None and name != domain.name:
            if domain.parent_id is None:
                raise InvalidParameterValue("ROOT domain can not be edited with a new name")
            name = name.strip()
            parent = self.session.get(Domain, domain.parent_id)
            if not name or "/" in name:
                raise InvalidParameterValue(f"Invalid domain name {name!r}: it must not be empty or contain '/'")
            if any(c.name.lower() == name.lower() and c.id != domain.id for c in self.children(parent)):
                raise InvalidParameterValue(
                    f"Failed to update domain id={domain.uuid}; domain with name {name} already exists in the "
                    f"system")
            old = domain.path
            domain.name, domain.path = name, f"{parent.path}/{name}"
            for below in self.session.execute(
                    select(Domain).where(Domain.path.startswith(old + "/", autoescape=True))).scalars():
                below.path = domain.path + below.path[len(old):]
        if network_domain is not None:
            domain.network_domain = network_domain or None
        self.session.flush()
        return domain

    def subtree(self, domain: Domain) -> list[Domain]:
        """`domain` and the live domains below it, deepest first."""
        below = self.session.execute(
            select(Domain).where(Domain.removed.is_(None), or_(Domain.id == domain.id, Domain.path.startswith(
                domain.path + "/", autoescape=True)))
        ).scalars()
        return sorted(below, key=lambda d: -d.level)

    def check_domain_deletable(self, domain: Domain, cleanup: bool) -> None:
        if domain.parent_id is None:
            raise PermissionDenied("Can't delete ROOT domain")
        if not cleanup and (self.children(domain) or self.accounts_in(domain)):
            raise CloudRuntimeError(
                f"Delete failed on domain {domain.name} (id: {domain.uuid}); please make sure all users and sub "
                f"domains have been removed from the domain before deleting, or pass cleanup=true")

    def remove_domain(self, domain: Domain) -> None:
        domain.removed = utcnow()
        domain.state = "Inactive"
        self.session.flush()

    def users_of(self, account: Account) -> list[User]:
        return list(self.session.execute(
            select(User).where(User.account_id == account.id, User.removed.is_(None)).order_by(User.id)
        ).scalars())

    # --- login sessions -------------------------------------------------------------

    def login(self, username: str, password: str, domain: Domain | None,
              attempts_allowed: int = 5) -> tuple[User, LoginSession, str] | tuple[None, None, None]:
        """(user, login session, session key) for the right password of an enabled user, else
        (None, None, None). Only a digest of the session key is stored.

        Every wrong password counts; at `attempts_allowed` in a row the user is locked (state
        `locked`) until an admin enables it (enableUser), as CloudStack's
        incorrect.login.attempts.allowed. The caller commits the count even though the login
        fails. Known and unknown names cost one password hash each."""
        user = None if domain is None else self.session.execute(
            select(User).join(Account).where(
                User.username == username, Account.domain_id == domain.id, User.removed.is_(None)
            )
        ).scalar_one_or_none()
        if user is None:
            check_password(password, _dummy_hash())
            return None, None, None
        if not check_password(password, user.password_hash):
            if user.state == "enabled":
                user.login_attempts = (user.login_attempts or 0) + 1
                if user.login_attempts >= attempts_allowed:
                    user.state = LOCKED
                    log.warning("user %s (%s) locked after %d incorrect login attempts",
                                user.username, user.uuid, user.login_attempts)
            return None, None, None
        if user.state != "enabled" or user.account.state != "enabled":
            return None, None, None
        user.login_attempts = 0
        session_key = secrets.token_urlsafe(24)
        record = LoginSession(
            session_key=_digest(session_key),
            session_id=secrets.token_hex(16).upper(),
            user_id=user.id,
            expires=utcnow() + SESSION_LIFETIME,
        )
        self.session.add(record)
        self.session.flush()
        return user, record, session_key

    def session_user(self, session_id: str, session_key: str) -> User | None:
        """The user of login session `session_id`, or None. The session key must come with
        every request: the JSESSIONID cookie alone, which a browser sends on any cross-site
        request, authenticates nothing."""
        if not session_id or not session_key:
            return None
        record = self.session.execute(
            select(LoginSession).where(LoginSession.session_id == session_id)
        ).scalar_one_or_none()
        if record is None or record.expires < utcnow():
            return None
        if not hmac.compare_digest(record.session_key.encode(), _digest(session_key).encode()):
            return None
        user = self.session.get(User, record.user_id)
        if user is None or user.removed is not None:
            return None
        record.expires = utcnow() + SESSION_LIFETIME
        return user

    def enable_user(self, user: User) -> User:
        """An admin's way back for a locked or disabled user: enabled, the count of wrong
        passwords cleared."""
        return self.set_user_state(user, ENABLED)

    def logout(self, session_id: str) -> None:
        record = self.session.execute(
            select(LoginSession).where(LoginSession.session_id == session_id)
        ).scalar_one_or_none()
        if record is not None:
            self.session.delete(record)


# --- reads: listAccounts, listUsers, listDomains and what their views refer to ----------------

ACCOUNT_FILTERS = (
    Filter("id", Account.id, ROW),
    Filter("name", Account.name, NOCASE),
    Filter("accounttype", Account.account_type, EXACT),
    Filter("domainid", Account.domain_id, ROW),
    Filter("state", Account.state, NOCASE),
    keyword(Account.name),
)

USER_FILTERS = (
    Filter("id", User.id, ROW),
    Filter("username", User.username, NOCASE),
    Filter("account", Account.name, NOCASE),
    Filter("domainid", Account.domain_id, ROW),
    keyword(User.username),
)

DOMAIN_FILTERS = (
    Filter("id", Domain.id, ROW),
    Filter("name", Domain.name, NOCASE),
    Filter("level", Domain.level, EXACT),
    keyword(Domain.name),
)


class AccountQueries:
    """The list reads of accounts, users and domains, for the caller of `ctx`."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.session = ctx.session

    # --- who sees and acts on what: a root admin everything, a domain admin its domain and
    # the domains below it, a user its own account and user ----------------------------

    @property
    def is_domain_admin(self) -> bool:
        return not self.ctx.is_root_admin and self.ctx.account.account_type == DOMAIN_ADMIN

    def in_scope(self, domain: Domain) -> bool:
        """Whether the caller administers `domain` (root admin: all; domain admin: its subtree)."""
        if self.ctx.is_root_admin:
            return True
        if not self.is_domain_admin:
            return False
        base = self.ctx.account.domain
        return domain.id == base.id or domain.path.lower().startswith(base.path.lower() + "/")

    def check_domain(self, domain: Domain) -> Domain:
        if not self.in_scope(domain):
            raise PermissionDenied(
                f"Account {self.ctx.account.name} does not have permission to operate within domain id={domain.uuid}")
        return domain

    def check_account(self, account: Account) -> Account:
        """`account` if the caller may act on it: its own, or one in a domain it administers."""
        if account.removed is not None:
            raise InvalidParameterValue(f"Unable to find account by id {account.uuid}")
        if account.id != self.ctx.principal.account_id and not self.in_scope(self.domain(account.domain_id)):
            raise PermissionDenied(
                f"Account {self.ctx.account.name} does not have permission to operate with resource {account.uuid}")
        return account

    def check_user(self, user: User) -> User:
        """`user` if the caller may act on it: itself, or a user of an account it may act on."""
        if user.removed is not None:
            raise InvalidParameterValue(f"Unable to find user by id {user.uuid}")
        if user.id != self.ctx.principal.user_id and not self.in_scope(self.domain(user.account.domain_id)):
            raise PermissionDenied(
                f"Account {self.ctx.account.name} does not have permission to operate with resource {user.uuid}")
        return user

    def account_by_name(self, name: str, domain: Domain | None) -> Account:
        """The live account `name` of `domain` (the caller's when None), or 431."""
        domain = domain or self.domain(self.ctx.account.domain_id)
        account = AccountService(self.session).account_named(name, domain)
        if account is None:
            raise InvalidParameterValue(f"Unable to find account by name {name} in domain id={domain.uuid}")
        return account

    def _scoped(self, q: S, account_column: object, domain_column: object) -> S:
        if self.ctx.is_root_admin:
            return q
        if self.is_domain_admin:
            base = self.ctx.account.domain
            return q.where(domain_column.in_(
                select(Domain.id).where(or_(Domain.id == base.id,
                                            Domain.path.startswith(base.path + "/", autoescape=True)))))
        return q.where(account_column == self.ctx.principal.account_id)

    def list_accounts(self, p: SimpleNamespace) -> Page:
        q = self._scoped(select(Account).where(Account.removed.is_(None)), Account.id, Account.domain_id)
        return page(self.ctx, p, filtered(q, ACCOUNT_FILTERS, p), Account.id)

    def list_users(self, p: SimpleNamespace) -> Page:
        q = select(User).join(Account, Account.id == User.account_id).where(User.removed.is_(None))
        if not self.ctx.is_root_admin and not self.is_domain_admin:
            q = q.where(User.id == self.ctx.principal.user_id)
        q = self._scoped(q, Account.id, Account.domain_id)
        return page(self.ctx, p, filtered(q, USER_FILTERS, p), User.id)

    def list_domains(self, p: SimpleNamespace) -> Page:
        q = filtered(select(Domain).where(Domain.removed.is_(None)), DOMAIN_FILTERS, p)
        if not self.ctx.is_root_admin and not self.is_domain_admin:
            q = q.where(Domain.id == self.ctx.account.domain_id)
        q = self._scoped(q, None, Domain.id) if self.is_domain_admin else q
        return page(self.ctx, p, q, Domain.id)

    def list_children(self, p: SimpleNamespace, parent: Domain, recursive: bool) -> Page:
        """The domains below `parent`: its children, or every level with `recursive`."""
        if recursive:
            q = select(Domain).where(Domain.path.startswith(parent.path + "/", autoescape=True))
        else:
            q = select(Domain).where(Domain.parent_id == parent.id)
        # `id` names the parent here, not a domain listed.
        q = filtered(q.where(Domain.removed.is_(None)), [f for f in DOMAIN_FILTERS if f.param != "id"], p)
        return page(self.ctx, p, q, Domain.id)

    def domain(self, domain_id: int) -> Domain | None:
        return self.session.get(Domain, domain_id) if domain_id else None

    def has_child(self, domain: Domain) -> bool:
        return self.session.execute(
            select(Domain.id).where(Domain.parent_id == domain.id, Domain.removed.is_(None)).limit(1)
        ).first() is not None

    def domain_by_path(self, path: str) -> Domain | None:
        """The live domain whose path is `path` (case-insensitive), or None."""
        return self.session.execute(
            select(Domain).where(ci_equals(Domain.path, path), Domain.removed.is_(None))
        ).scalar_one_or_none()
