"""Accounts, users, domains, API keys, session login, API limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Integer, Param, String, Uuid
from ..api.registry import Success, api_command
from ..errors import InvalidParameterValue, LoginFailed, UnsupportedAction
from ..formatting import compact, date
from ..persistence.models import Account, Domain, User
from ..services.accounts import ROLE_TYPES, AccountQueries

if TYPE_CHECKING:
    from ..api.registry import ListResult
    from types import SimpleNamespace
    from ..context import Context


def user_view(user: User, account: Account, domain: Domain) -> dict[str, Any]:
    return compact({
        "id": user.uuid, "username": user.username, "firstname": user.firstname,
        "lastname": user.lastname, "email": user.email, "created": date(user.created),
        "state": user.state, "account": account.name, "accountid": account.uuid,
        "accounttype": account.account_type, "roletype": ROLE_TYPES.get(account.account_type),
        "domainid": domain.uuid, "domain": domain.name, "timezone": user.timezone,
        "apikey": user.api_key,
    })


def account_view(ctx: Context, account: Account) -> dict[str, Any]:
    domain = AccountQueries(ctx).domain(account.domain_id)
    return compact({
        "id": account.uuid, "name": account.name, "accounttype": account.account_type,
        "roletype": ROLE_TYPES.get(account.account_type), "domainid": domain.uuid,
        "domain": domain.name, "domainpath": domain.path, "state": account.state,
        "networkdomain": account.network_domain, "created": date(account.created),
        "user": [user_view(u, account, domain) for u in ctx.accounts.users_of(account)],
    })


def domain_view(ctx: Context, domain: Domain) -> dict[str, Any]:
    reads = AccountQueries(ctx)
    parent = reads.domain(domain.parent_id)
    has_child = reads.has_child(domain)
    return compact({
        "id": domain.uuid, "name": domain.name, "level": domain.level, "path": domain.path,
        "parentdomainid": parent.uuid if parent else None,
        "parentdomainname": parent.name if parent else None,
        "haschild": has_child, "state": domain.state, "networkdomain": domain.network_domain,
        "created": date(domain.created),
    })


@api_command("listAccounts", response="account", admin_only=False, params=[
    Param("id", Uuid(Account), description="list account by account ID"),
    Param("name", String(), description="list account by account name"),
    Param("accounttype", Integer(), description="list accounts by account type"),
    Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
    Param("state", String(), description="list accounts by state"),
    Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
    Param("isrecursive", Boolean(), description="defaults to false"),
])
def list_accounts(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists accounts and provides detailed account information for listed accounts."""
    return listed(AccountQueries(ctx).list_accounts(p), lambda a: account_view(ctx, a))


# The default roles, by id and by type name: the role an account is created under.
ROLE_IDS = {"0": 0, "user": 0, "1": 1, "admin": 1, "2": 2, "domainadmin": 2}


@api_command("createAccount", response="account", params=[
    Param("username", String(), required=True, description="Unique username"),
    Param("password", String(), required=True, description="Clear text password"),
    Param("email", String(), required=True, description="email"),
    Param("firstname", String(), required=True, description="firstname"),
    Param("lastname", String(), required=True, description="lastname"),
    Param("accounttype", Integer(), description="Type of the account: 0 user, 1 root admin, 2 domain admin"),
    Param("roleid", String(), description="Creates the account under the specified role"),
    Param("account", String(), description="Name of the account; defaults to the username"),
    Param("domainid", Uuid(Domain), description="Creates the user under the specified domain"),
    Param("networkdomain", String(), description="Network domain for the account's networks"),
    Param("timezone", String(), description="Specifies a timezone for this command"),
])
def create_account(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates an account."""
    account_type = p.accounttype
    if account_type is None and p.roleid is None:
        raise InvalidParameterValue("Either account type or role ID must be given")
    if account_type is None:
        account_type = ROLE_IDS.get(p.roleid.lower())
        if account_type is None:
            raise InvalidParameterValue(f"Unable to find role by provided id: {p.roleid}")
    if account_type not in ROLE_TYPES:
        raise InvalidParameterValue(f"Invalid account type {account_type} given; valid types are 0, 1 and 2")
    account = ctx.accounts.create_account(
        username=p.username, password=p.password, email=p.email, firstname=p.firstname,
        lastname=p.lastname, account_type=account_type, account_name=p.account,
        domain=p.domainid, network_domain=p.networkdomain, timezone=p.timezone,
    )
    return account_view(ctx, account)


@api_command("listUsers", response="user", admin_only=False, params=[
    Param("id", Uuid(User), description="List user by ID."),
    Param("username", String(), description="List user by the username"),
    Param("account", String(), description="list resources by account"),
    Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
    Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
])
def list_users(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists user accounts."""
    reads = AccountQueries(ctx)

    def render(user: User):
        return user_view(user, user.account, reads.domain(user.account.domain_id))

    return listed(reads.list_users(p), render)


def _own_or_admin(ctx: Context, user: User):
    if not ctx.is_root_admin and user.id != ctx.user.id:
        raise InvalidParameterValue("Unable to find user by id")


@api_command("registerUserKeys", response="userkeys", admin_only=False, params=[
    Param("id", Uuid(User), required=True, description="User id"),
])
def register_user_keys(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Generates a new API key and secret for a user, replacing the old ones."""
    _own_or_admin(ctx, p.id)
    ctx.accounts.register_keys(p.id)
    ctx.after_commit(ctx.engine.keys.invalidate)
    return {"apikey": p.id.api_key, "secretkey": p.id.secret_key}


@api_command("getUserKeys", response="userkeys", admin_only=False, params=[
    Param("id", Uuid(User), required=True, description="ID of the user whose keys are required"),
])
def get_user_keys(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Returns the API key and secret of a user."""
    _own_or_admin(ctx, p.id)
    return compact({"apikey": p.id.api_key, "secretkey": p.id.secret_key})


@api_command("enableUser", response="user", params=[
    Param("id", Uuid(User), required=True, description="Enables user by user ID."),
])
def enable_user(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Enables a user account: a user locked after too many incorrect logins may log in again."""
    user = ctx.accounts.enable_user(p.id)
    ctx.after_commit(ctx.engine.keys.invalidate)
    return user_view(user, user.account, ctx.session.get(Domain, user.account.domain_id))


@api_command("listDomains", response="domain", admin_only=False, params=[
    Param("id", Uuid(Domain), description="List domain by domain ID."),
    Param("name", String(), description="List domain by domain name."),
    Param("level", Integer(), description="List domains by domain level."),
    Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
    Param("details", String(), description="comma separated list of domain details requested"),
])
def list_domains(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists domains and provides detailed information for listed domains."""
    return listed(AccountQueries(ctx).list_domains(p), lambda d: domain_view(ctx, d))


@api_command("login", response=None, admin_only=False, params=[
    Param("username", String(), required=True, description="Username"),
    Param("password", String(), required=True, description="Password"),
    Param("domain", String(), description="Path of the domain that the user belongs to, e.g. ROOT/child"),
    Param("domainId", Uuid(Domain), description="The id of the domain that the user belongs to"),
])
def login(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Logs a user into the CloudStack API; answers a session key and sets session cookies."""
    domain = p.domainId
    if domain is None:
        path = (p.domain or "ROOT").strip("/") or "ROOT"
        if not path.upper().startswith("ROOT"):
            path = "ROOT/" + path
        domain = AccountQueries(ctx).domain_by_path(path)
    allowed = ctx.settings.typed("incorrect.login.attempts.allowed")
    user, record, session_key = ctx.accounts.login(p.username, p.password, domain, attempts_allowed=allowed)
    if user is None:
        raise LoginFailed(
            f"Failed to authenticate user {p.username} in domain "
            f"{domain.uuid if domain else (p.domain or 'ROOT')}; please provide valid credentials"
        )
    account = user.account
    ctx.cookies = {"JSESSIONID": record.session_id, "sessionkey": session_key}
    return compact({
        "username": user.username, "userid": user.uuid, "domainid": domain.uuid,
        "timeout": 1800, "account": account.name, "firstname": user.firstname,
        "lastname": user.lastname, "type": account.account_type, "sessionkey": session_key,
        "registered": "false", "timezone": user.timezone,
    })


@api_command("logout", response=None, admin_only=False)
def logout(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Logs out the user."""
    session_id = getattr(ctx, "cookies_in", {}).get("JSESSIONID")
    if session_id:
        ctx.accounts.logout(session_id)
    return {"description": "success"}


@api_command("getApiLimit", response="apilimit", admin_only=False, readonly=True)
def get_api_limit(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Gets API limit count for the caller."""
    throttle = ctx.engine.throttle
    if not throttle.enabled:
        raise UnsupportedAction("This api is only available when api.throttling.enabled = true.")
    issued, allowed, expires = throttle.status(ctx.user.account_id, ctx.session)
    return {"account": ctx.account.name, "accountid": ctx.account.uuid, "apiIssued": issued,
            "apiAllowed": allowed, "expireAfter": max(expires, 0)}


@api_command("resetApiLimit", params=[
    Param("account", Uuid(Account), description="the ID of the account whose limit is to be reset"),
])
def reset_api_limit(ctx: Context, p: SimpleNamespace) -> Success:
    """Reset API count."""
    throttle = ctx.engine.throttle
    if not throttle.enabled:
        raise UnsupportedAction("This api is only available when api.throttling.enabled = true.")
    throttle.reset(p.account.id if p.account is not None else None, ctx.session)
    return Success()
