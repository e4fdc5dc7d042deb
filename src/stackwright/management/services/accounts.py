"""Domains, accounts, users, API keys and login sessions."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..errors import InvalidParameterValue
from ..persistence.models import Account, Domain, LoginSession, User, utcnow
from .queries import EXACT, NOCASE, ROW, Filter, ci_equals, filtered, keyword, page

if TYPE_CHECKING:
    from types import SimpleNamespace
    from ..services.queries import Page
    from sqlalchemy.orm import Session
    from ..context import Context

ROOT_ADMIN, USER, DOMAIN_ADMIN = 1, 0, 2
ROLE_TYPES = {ROOT_ADMIN: "Admin", USER: "User", DOMAIN_ADMIN: "DomainAdmin"}
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
            account = Account(name="admin", account_type=ROOT_ADMIN, domain_id=root.id)
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

    def create_account(self, *, username: str, password: str, email: str, firstname: str, lastname: str, account_type: int,
                       account_name: str | None = None, domain: Domain | None = None,
                       network_domain: str | None = None, timezone: str | None = None) -> Account:
        domain = domain or self.root_domain()
        name = account_name or username
        clash = self.session.execute(
            select(Account).where(Account.name == name, Account.domain_id == domain.id,
                                  Account.removed.is_(None))
        ).scalar_one_or_none()
        if clash is not None:
            raise InvalidParameterValue(
                f"The specified account: {name} already exists"
            )
        user_clash = self.session.execute(
            select(User).join(Account).where(User.username == username,
                                             Account.domain_id == domain.id,
                                             User.removed.is_(None))
        ).scalar_one_or_none()
        if user_clash is not None:
            raise InvalidParameterValue(
                f"The user {username} already exists in domain {domain.path}"
            )
        account = Account(name=name, account_type=account_type, domain_id=domain.id,
                          network_domain=network_domain)
        self.session.add(account)
        self.session.flush()
        user = User(username=username, password_hash=hash_password(password), email=email,
                    firstname=firstname, lastname=lastname, account_id=account.id,
                    timezone=timezone)
        self.session.add(user)
        self.session.flush()
        return account

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
        user.state = "enabled"
        user.login_attempts = 0
        self.session.flush()
        return user

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

    def list_accounts(self, p: SimpleNamespace) -> Page:
        q = select(Account).where(Account.removed.is_(None))
        if not self.ctx.is_root_admin:
            q = q.where(Account.id == self.ctx.user.account_id)
        return page(self.ctx, p, filtered(q, ACCOUNT_FILTERS, p), Account.id)

    def list_users(self, p: SimpleNamespace) -> Page:
        q = select(User).join(Account, Account.id == User.account_id).where(User.removed.is_(None))
        if not self.ctx.is_root_admin:
            q = q.where(User.id == self.ctx.user.id)
        return page(self.ctx, p, filtered(q, USER_FILTERS, p), User.id)

    def list_domains(self, p: SimpleNamespace) -> Page:
        q = filtered(select(Domain).where(Domain.removed.is_(None)), DOMAIN_FILTERS, p)
        if not self.ctx.is_root_admin:
            q = q.where(Domain.id == self.ctx.account.domain_id)
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
