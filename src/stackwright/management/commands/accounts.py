"""Accounts, users, domains, API keys, session login, API limits.

A root admin acts on everything; a domain admin on the domains at and below its own and
on their accounts and users; a user on itself. Which commands a caller may call at all is
its role's business (api.authorize)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Integer, Param, String, Uuid
from ..api.registry import Success, api_command
from ..errors import InvalidParameterValue, LoginFailed, PermissionDenied, UnsupportedAction
from ..formatting import compact, date
from ..persistence.models import Account, Domain, Role, User
from ..services import vm_lifecycle as lifecycle
from ..services.accounts import DISABLED, ENABLED, LOCKED, ROLE_TYPES, AccountQueries, check_password
from ..services.roles import (
    ADMIN,
    DEFAULT_ROLE_OF_ACCOUNT_TYPE,
    DOMAIN_ADMIN,
    RESOURCE_ADMIN,
    ROLE_TYPE_OF_ACCOUNT_TYPE,
    role_of,
)
from ..services.steps import DbStep

if TYPE_CHECKING:
    from ..api.registry import ListResult
    from types import SimpleNamespace
    from ..context import Context
    from ..services.steps import Steps

# Who administers accounts, users and domains (CloudStack's APICommand.authorized).
ADMINS = (ADMIN, RESOURCE_ADMIN, DOMAIN_ADMIN)


def role_fields(account: Account, role: Role | None) -> dict[str, Any]:
    """The role an account's calls are checked against, as its account and user answers show it."""
    return {"roleid": role.uuid if role else None, "rolename": role.name if role else None,
            "roletype": role.role_type if role else ROLE_TYPES.get(account.account_type)}


def user_view(user: User, account: Account, domain: Domain, role: Role | None = None) -> dict[str, Any]:
    return compact({
        "id": user.uuid, "username": user.username, "firstname": user.firstname,
        "lastname": user.lastname, "email": user.email, "created": date(user.created),
        "state": user.state, "account": account.name, "accountid": account.uuid,
        "accounttype": account.account_type, **role_fields(account, role),
        "domainid": domain.uuid, "domain": domain.name, "timezone": user.timezone,
        "apikey": user.api_key, "iscallerchilddomain": False, "isdefault": user.username == "admin"
        and account.name == "admin" and domain.parent_id is None,
    })


def one_user(ctx: Context, user: User) -> dict[str, Any]:
    account = user.account
    return user_view(user, account, ctx.session.get(Domain, account.domain_id),
                     ctx.session.get(Role, role_of(account)))


def account_view(ctx: Context, account: Account) -> dict[str, Any]:
    domain = AccountQueries(ctx).domain(account.domain_id)
    role = ctx.session.get(Role, role_of(account))
    return compact({
        "id": account.uuid, "name": account.name, "accounttype": account.account_type,
        **role_fields(account, role), "domainid": domain.uuid,
        "domain": domain.name, "domainpath": domain.path, "state": account.state,
        "networkdomain": account.network_domain, "created": date(account.created),
        "isdefault": account.name == "admin" and domain.parent_id is None,
        "user": [user_view(u, account, domain, role) for u in ctx.accounts.users_of(account)],
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


# The default roles by the account type's number or name, as older clients pass `roleid`.
LEGACY_ROLE_NAMES = {"0": 0, "user": 0, "1": 1, "admin": 1, "2": 2, "domainadmin": 2}


def account_role(ctx: Context, roleid: str | None, account_type: int | None) -> Role:
    """The role an account is created under: `roleid` (a role's id, or a legacy type name),
    else the default role of `account_type`."""
    if roleid is None and account_type is None:
        raise InvalidParameterValue("Either account type or role ID must be given")
    if roleid is not None:
        role = ctx.session.query(Role).filter_by(uuid=roleid).one_or_none()
        if role is None and roleid.lower() in LEGACY_ROLE_NAMES:
            role = ctx.session.get(Role, DEFAULT_ROLE_OF_ACCOUNT_TYPE[LEGACY_ROLE_NAMES[roleid.lower()]])
        if role is None or role.removed is not None:
            raise InvalidParameterValue(f"Unable to find role by provided id: {roleid}")
        if account_type is not None and ROLE_TYPE_OF_ACCOUNT_TYPE.get(account_type) != role.role_type:
            raise InvalidParameterValue(
                f"Account type {account_type} does not match the type {role.role_type} of role {role.name}")
    else:
        if account_type not in DEFAULT_ROLE_OF_ACCOUNT_TYPE:
            raise InvalidParameterValue(f"Invalid account type {account_type} given; valid types are 0, 1, 2 and 3")
        role = ctx.session.get(Role, DEFAULT_ROLE_OF_ACCOUNT_TYPE[account_type])
    if not ctx.is_root_admin and role.role_type in (ADMIN, RESOURCE_ADMIN):
        raise PermissionDenied(f"Account {ctx.account.name} may not create accounts of the {role.role_type} type")
    return role


def _domain_or_own(ctx: Context, domain: Domain | None) -> Domain:
    reads = AccountQueries(ctx)
    return reads.check_domain(domain or reads.domain(ctx.account.domain_id))


@api_command("createAccount", response="account", authorized=ADMINS, params=[
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
    role = account_role(ctx, p.roleid, p.accounttype)
    account = ctx.accounts.create_account(
        username=p.username, password=p.password, email=p.email, firstname=p.firstname,
        lastname=p.lastname, role=role, account_name=p.account,
        domain=_domain_or_own(ctx, p.domainid), network_domain=p.networkdomain, timezone=p.timezone,
    )
    return account_view(ctx, account)


def named_account(ctx: Context, p: SimpleNamespace) -> Account:
    """The account a command names by `id`, or by `account` and `domainid`; checked for the caller."""
    reads = AccountQueries(ctx)
    if p.id is not None:
        account = p.id
    elif p.account:
        account = reads.account_by_name(p.account, p.domainid)
    else:
        raise InvalidParameterValue("Either id or account name (with domainid) must be given")
    return reads.check_account(account)


ACCOUNT_BY = [
    Param("id", Uuid(Account), description="Account id"),
    Param("account", String(), description="Account name"),
    Param("domainid", Uuid(Domain), description="Domain ID of the account"),
]


def _changes_after_commit(ctx: Context) -> None:
    """A change of who may call what holds from the next request: cached keys and roles go."""
    ctx.after_commit(ctx.engine.keys.invalidate)
    ctx.after_commit(ctx.engine.roles.invalidate)


@api_command("updateAccount", response="account", authorized=ADMINS, params=[
    *ACCOUNT_BY,
    Param("newname", String(), description="New name for the account"),
    Param("networkdomain", String(), description="Network domain for the account's networks"),
    Param("roleid", Uuid(Role), description="The UUID of the dynamic role to set for the account"),
])
def update_account(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates account information for the authenticated user."""
    account = named_account(ctx, p)
    if p.newname is not None and p.newname != account.name:
        if not p.newname.strip():
            raise InvalidParameterValue("The new account name must not be empty")
        if ctx.accounts.account_named(p.newname, account.domain) is not None:
            raise InvalidParameterValue(
                f"There already exists an account with the name: {p.newname} in the domain {account.domain.path}")
        account.name = p.newname
    if p.networkdomain is not None:
        account.network_domain = p.networkdomain or None
    if p.roleid is not None:
        role = p.roleid
        if role.removed is not None:
            raise InvalidParameterValue(f"Unable to find role by provided id: {role.uuid}")
        if role.role_type != ROLE_TYPE_OF_ACCOUNT_TYPE.get(account.account_type):
            raise InvalidParameterValue(
                f"Role type {role.role_type} does not match the account's type "
                f"{ROLE_TYPE_OF_ACCOUNT_TYPE.get(account.account_type)}; changing the type of an account is not "
                "supported")
        if not ctx.is_root_admin and role.role_type in (ADMIN, RESOURCE_ADMIN):
            raise PermissionDenied(f"Account {ctx.account.name} may not assign the role {role.name}")
        account.role_id = role.id
        _changes_after_commit(ctx)
    ctx.session.flush()
    return account_view(ctx, account)


def _not_own(ctx: Context, account: Account, action: str) -> None:
    if account.id == ctx.principal.account_id:
        raise PermissionDenied(f"Caller's account may not {action} itself")


def _admit_disable(ctx: Context, p: SimpleNamespace) -> None:
    """Disabling or locking holds at once: the account's users are refused from the next request."""
    account = named_account(ctx, p)
    _not_own(ctx, account, "disable or lock")
    if account.name == "admin" and account.domain.parent_id is None:
        raise PermissionDenied("The system admin account cannot be disabled or locked")
    account.state = LOCKED if p.lock else DISABLED
    ctx.session.flush()
    _changes_after_commit(ctx)


@api_command("disableAccount", response="account", async_job=True, instance_type="Account", authorized=ADMINS,
             admit=_admit_disable, params=[
                 *ACCOUNT_BY,
                 Param("lock", Boolean(), required=True,
                       description="If true, only lock the account; else disable the account and stop its guests"),
             ])
def disable_account(ctx: Context, p: SimpleNamespace) -> Steps:
    """Disables an account: its users can no longer log in or call the API; disabling (not
    locking) also stops its running guests."""
    account_id = p.id.id if p.id is not None else named_account(ctx, p).id
    if not p.lock:
        for vm_id in (yield DbStep(_running_guests, account_id)):
            yield from lifecycle.stop_vm(vm_id)
    return (yield DbStep(_account_view_by_id, account_id))


def _running_guests(ctx: Context, account_id: int) -> list[int]:
    return ctx.accounts.running_guests(ctx.session.get(Account, account_id))


def _account_view_by_id(ctx: Context, account_id: int) -> dict[str, Any]:
    return account_view(ctx, ctx.session.get(Account, account_id))


@api_command("enableAccount", response="account", authorized=ADMINS, params=ACCOUNT_BY)
def enable_account(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Enables an account."""
    account = named_account(ctx, p)
    account.state = ENABLED
    ctx.session.flush()
    _changes_after_commit(ctx)
    return account_view(ctx, account)


def _admit_delete(ctx: Context, p: SimpleNamespace) -> None:
    """Deleting an account revokes its keys and sessions at once; its guests go in the job."""
    account = AccountQueries(ctx).check_account(p.id)
    _not_own(ctx, account, "delete")
    if account.name == "admin" and account.domain.parent_id is None:
        raise PermissionDenied("The system admin account cannot be deleted")
    account.state = DISABLED
    ctx.accounts.revoke_keys(account)
    _changes_after_commit(ctx)


@api_command("deleteAccount", async_job=True, instance_type="Account", authorized=ADMINS, admit=_admit_delete,
             params=[Param("id", Uuid(Account), required=True, description="Account id")])
def delete_account(ctx: Context, p: SimpleNamespace) -> Steps:
    """Deletes an account and all its users; its guests are stopped and expunged."""
    yield from remove_account(p.id.id)
    return Success()


def remove_account(account_id: int) -> Steps:
    """Expunge the account's guests, then remove the account and its users."""
    for vm_id in (yield DbStep(_all_guests, account_id)):
        yield from lifecycle.destroy_vm(vm_id, expunge=True)
    yield DbStep(_remove_account, account_id)


def _all_guests(ctx: Context, account_id: int) -> list[int]:
    return ctx.accounts.guests_of(ctx.session.get(Account, account_id))


def _remove_account(ctx: Context, account_id: int) -> None:
    account = ctx.session.get(Account, account_id)
    ctx.accounts.remove_account(account)
    ctx.event("ACCOUNT.DELETE", f"Deleted account {account.name}", account.uuid)
    _changes_after_commit(ctx)


@api_command("listUsers", response="user", admin_only=False, params=[
    Param("id", Uuid(User), description="List user by ID."),
    Param("username", String(), description="List user by the username"),
    Param("account", String(), description="list resources by account"),
    Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
    Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
])
def list_users(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists user accounts."""
    return listed(AccountQueries(ctx).list_users(p), lambda user: one_user(ctx, user))


def _own_or_admin(ctx: Context, user: User):
    AccountQueries(ctx).check_user(user)


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


@api_command("createUser", response="user", authorized=ADMINS, params=[
    Param("account", String(), required=True,
          description="Creates the user under the specified account. If no account is specified, the username will "
                      "be used as the account name."),
    Param("domainid", Uuid(Domain), description="Creates the user under the specified domain. Has to be accompanied "
                                                "with the account parameter"),
    Param("username", String(), required=True, description="Unique username."),
    Param("password", String(), required=True, description="Clear text password"),
    Param("email", String(), description="email"),
    Param("firstname", String(), required=True, description="firstname"),
    Param("lastname", String(), required=True, description="lastname"),
    Param("timezone", String(), description="Specifies a timezone for this command"),
])
def create_user(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a user for an account that already exists."""
    reads = AccountQueries(ctx)
    account = reads.check_account(reads.account_by_name(p.account, p.domainid))
    user = ctx.accounts.create_user(account, username=p.username, password=p.password, email=p.email,
                                    firstname=p.firstname, lastname=p.lastname, timezone=p.timezone)
    return one_user(ctx, user)


USER_ID = Param("id", Uuid(User), required=True, description="User id")


@api_command("updateUser", response="user", admin_only=False, params=[
    USER_ID,
    Param("username", String(), description="Unique username"),
    Param("password", String(), description="Clear text password (default hashed to SHA256SALT)"),
    Param("currentpassword", String(), description="Current password that was being used by the user. You must "
                                                   "inform the current password when updating the password."),
    Param("email", String(), description="email"),
    Param("firstname", String(), description="first name"),
    Param("lastname", String(), description="last name"),
    Param("timezone", String(), description="Specifies a timezone for this command"),
])
def update_user(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a user account."""
    user = AccountQueries(ctx).check_user(p.id)
    if p.password is not None and user.id == ctx.principal.user_id and not ctx.is_root_admin:
        if not p.currentpassword or not check_password(p.currentpassword, user.password_hash):
            raise InvalidParameterValue("Current password is incorrect; it is required to change the password")
    ctx.accounts.update_user(user, username=p.username, password=p.password, email=p.email,
                             firstname=p.firstname, lastname=p.lastname, timezone=p.timezone)
    return one_user(ctx, user)


def _other_user(ctx: Context, user: User, action: str) -> User:
    user = AccountQueries(ctx).check_user(user)
    if user.id == ctx.principal.user_id:
        raise PermissionDenied(f"Caller may not {action} itself")
    return user


@api_command("deleteUser", authorized=ADMINS, params=[USER_ID])
def delete_user(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a user for an account."""
    ctx.accounts.delete_user(_other_user(ctx, p.id, "delete"))
    _changes_after_commit(ctx)
    return Success()


@api_command("enableUser", response="user", authorized=ADMINS, params=[
    Param("id", Uuid(User), required=True, description="Enables user by user ID."),
])
def enable_user(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Enables a user account: a user locked after too many incorrect logins may log in again."""
    user = ctx.accounts.enable_user(AccountQueries(ctx).check_user(p.id))
    _changes_after_commit(ctx)
    return one_user(ctx, user)


def _admit_disable_user(ctx: Context, p: SimpleNamespace) -> None:
    ctx.accounts.set_user_state(_other_user(ctx, p.id, "disable"), DISABLED)
    _changes_after_commit(ctx)


@api_command("disableUser", response="user", async_job=True, instance_type="User", authorized=ADMINS,
             admit=_admit_disable_user, params=[USER_ID])
def disable_user(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Disables a user account: it can no longer log in or call the API."""
    return one_user(ctx, p.id)


@api_command("lockUser", response="user", authorized=ADMINS, params=[USER_ID])
def lock_user(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Locks a user account: it can no longer log in or call the API until it is enabled."""
    user = ctx.accounts.set_user_state(_other_user(ctx, p.id, "lock"), LOCKED)
    _changes_after_commit(ctx)
    return one_user(ctx, user)


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


@api_command("listDomainChildren", response="domain", authorized=ADMINS, params=[
    Param("id", Uuid(Domain), description="list children domain by parent domain ID."),
    Param("name", String(), description="list children domains by name"),
    Param("isrecursive", Boolean(), description="to return the entire tree, use the value \"true\". To return the "
                                                "first level children, use the value \"false\"."),
    Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
])
def list_domain_children(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all children domains belonging to a specified domain."""
    parent = _domain_or_own(ctx, p.id)
    return listed(AccountQueries(ctx).list_children(p, parent, bool(p.isrecursive or p.listall)),
                  lambda d: domain_view(ctx, d))


@api_command("createDomain", response="domain", authorized=ADMINS, params=[
    Param("name", String(), required=True, description="creates domain with this name"),
    Param("parentdomainid", Uuid(Domain), description="assigns new domain a parent domain by domain ID of the "
                                                      "parent.  If no parent domain is specified, the ROOT domain "
                                                      "is assumed."),
    Param("networkdomain", String(), description="Network domain for networks in the domain"),
    Param("domainid", String(), description="Domain UUID, required for adding domain from another Region"),
])
def create_domain(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a domain."""
    parent = _domain_or_own(ctx, p.parentdomainid)
    if p.domainid is not None and ctx.session.query(Domain).filter_by(uuid=p.domainid).first() is not None:
        raise InvalidParameterValue(f"Domain with uuid {p.domainid} already exists")
    domain = ctx.accounts.create_domain(p.name, parent, p.networkdomain, uuid=p.domainid)
    ctx.event("DOMAIN.CREATE", f"Created domain {domain.path}", domain.uuid)
    return domain_view(ctx, domain)


@api_command("updateDomain", response="domain", authorized=ADMINS, params=[
    Param("id", Uuid(Domain), required=True, description="ID of domain to update"),
    Param("name", String(), description="updates domain with this name"),
    Param("networkdomain", String(), description="Network domain for the domain's networks; empty string will "
                                                 "update domainName with NULL value"),
])
def update_domain(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a domain with a new name."""
    domain = AccountQueries(ctx).check_domain(p.id)
    if p.name is not None and domain.id == ctx.account.domain_id and not ctx.is_root_admin:
        raise PermissionDenied("A domain admin may not rename its own domain")
    ctx.accounts.update_domain(domain, p.name, p.networkdomain)
    return domain_view(ctx, domain)


def _admit_delete_domain(ctx: Context, p: SimpleNamespace) -> None:
    """Refuse at once what the job would refuse: ROOT, the caller's own domain, children without cleanup."""
    domain = AccountQueries(ctx).check_domain(p.id)
    if domain.id == ctx.account.domain_id and domain.parent_id is not None:
        raise PermissionDenied("Caller may not delete its own domain")
    ctx.accounts.check_domain_deletable(domain, bool(p.cleanup))


@api_command("deleteDomain", async_job=True, instance_type="Domain", authorized=ADMINS, admit=_admit_delete_domain,
             params=[
                 Param("id", Uuid(Domain), required=True, description="ID of domain to delete"),
                 Param("cleanup", Boolean(), description="true if all domain resources (child domains, accounts) "
                                                         "have to be cleaned up, false otherwise"),
             ])
def delete_domain(ctx: Context, p: SimpleNamespace) -> Steps:
    """Deletes a specified domain; with cleanup, its child domains and their accounts (guests expunged) too."""
    domain_ids = yield DbStep(_domains_to_delete, p.id.id, bool(p.cleanup))
    for domain_id in domain_ids:
        for account_id in (yield DbStep(_accounts_of_domain, domain_id)):
            yield from remove_account(account_id)
        yield DbStep(_remove_domain, domain_id)
    return Success()


def _domains_to_delete(ctx: Context, domain_id: int, cleanup: bool) -> list[int]:
    domain = ctx.session.get(Domain, domain_id)
    ctx.accounts.check_domain_deletable(domain, cleanup)
    # Deepest first, so that every domain is empty when it is removed.
    return [d.id for d in ctx.accounts.subtree(domain)]


def _accounts_of_domain(ctx: Context, domain_id: int) -> list[int]:
    domain = ctx.session.get(Domain, domain_id)
    accounts = ctx.accounts.accounts_in(domain)
    for account in accounts:
        account.state = DISABLED
        ctx.accounts.revoke_keys(account)
    _changes_after_commit(ctx)
    return [a.id for a in accounts]


def _remove_domain(ctx: Context, domain_id: int) -> None:
    domain = ctx.session.get(Domain, domain_id)
    ctx.accounts.remove_domain(domain)
    ctx.event("DOMAIN.DELETE", f"Deleted domain {domain.path}", domain.uuid)


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
