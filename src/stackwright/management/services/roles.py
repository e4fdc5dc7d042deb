"""Dynamic roles: roles, their ordered allow/deny rules, and what a role may call.

A rule names an API command or a wildcard (`*` stands for any run of letters and digits, as
CloudStack's `Rule.matches`), compared without regard to case. A caller's command is allowed
by the first rule of its role that matches it; where none matches, by the command's own
declaration of the role types it is meant for. The default Root Admin role is allowed
everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..errors import InvalidParameterValue, PermissionDenied
from ..persistence.models import Account, Role, RolePermission, utcnow
from .queries import NOCASE, ROW, Filter, filtered, keyword, page

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import SimpleNamespace

    from sqlalchemy.orm import Session

    from ..context import Context
    from .queries import Page

ADMIN, RESOURCE_ADMIN, DOMAIN_ADMIN, USER = "Admin", "ResourceAdmin", "DomainAdmin", "User"
ROLE_TYPES = (ADMIN, RESOURCE_ADMIN, DOMAIN_ADMIN, USER)
# The default roles' ids (migration 0014): Root Admin is allowed everything.
ROOT_ADMIN_ROLE = 1
# Account type (0 user, 1 root admin, 2 domain admin, 3 resource admin) <-> role type.
ACCOUNT_TYPE_OF_ROLE_TYPE = {ADMIN: 1, RESOURCE_ADMIN: 3, DOMAIN_ADMIN: 2, USER: 0}
ROLE_TYPE_OF_ACCOUNT_TYPE = {v: k for k, v in ACCOUNT_TYPE_OF_ROLE_TYPE.items()}
DEFAULT_ROLE_OF_ACCOUNT_TYPE = {1: 1, 3: 2, 2: 3, 0: 4}
ALLOW, DENY = "allow", "deny"
RULE_SYNTAX = re.compile(r"[a-zA-Z0-9*]+")


def role_of(account: Account) -> int:
    """The id of the role `account`'s calls are checked against."""
    return account.role_id or DEFAULT_ROLE_OF_ACCOUNT_TYPE.get(account.account_type, DEFAULT_ROLE_OF_ACCOUNT_TYPE[0])


def role_type(text: str | None) -> str | None:
    """A role type as CloudStack accepts it (any case), or None when not given."""
    if text is None:
        return None
    for known in ROLE_TYPES:
        if known.lower() == text.strip().lower():
            return known
    raise InvalidParameterValue(f"Invalid role type provided: {text}; valid types are {', '.join(ROLE_TYPES)}")


def rule_matcher(rule: str) -> re.Pattern:
    """The pattern a rule matches command names with."""
    return re.compile(rule.replace("*", r"\w*"), re.IGNORECASE)


def checked_rule(rule: str, commands: Iterable[str]) -> str:
    """`rule` when it names a known command or is a wildcard matching at least one, else 431."""
    rule = (rule or "").strip()
    if not RULE_SYNTAX.fullmatch(rule):
        raise InvalidParameterValue(f"Only API names and wildcards are allowed, invalid rule provided: {rule}")
    matcher = rule_matcher(rule)
    matched = [name for name in commands if matcher.fullmatch(name)]
    if not matched:
        if "*" in rule:
            raise InvalidParameterValue(f"Invalid rule provided: the wildcard {rule} matches no API command")
        raise InvalidParameterValue(f"Invalid rule provided: {rule} is not an API command")
    return rule


def permission_of(text: str) -> str:
    value = (text or "").strip().lower()
    if value not in (ALLOW, DENY):
        raise InvalidParameterValue(f"Invalid permission provided: {text}; valid values are allow and deny")
    return value


@dataclass(frozen=True)
class Policy:
    """What one version of a role may call: `allowed` names, or None for everything."""

    role_id: int
    version: int
    allowed: frozenset[str] | None

    def allows(self, command: str) -> bool:
        return self.allowed is None or command in self.allowed


def compile_policy(role: Role, rules: list[tuple[str, str]], authorized: Mapping[str, frozenset[str]]) -> Policy:
    """The policy of `role` with its ordered (rule, permission) pairs, over every command and
    the role types each is declared for: computed once, then a set lookup per request."""
    if role.id == ROOT_ADMIN_ROLE:
        return Policy(role.id, role.version, None)
    matchers = [(rule_matcher(rule), permission == ALLOW) for rule, permission in rules]
    allowed = set()
    for name, types in authorized.items():
        for matcher, allow in matchers:
            if matcher.fullmatch(name):
                if allow:
                    allowed.add(name)
                break
        else:
            if role.role_type in types:
                allowed.add(name)
    return Policy(role.id, role.version, frozenset(allowed))


def load_rules(session: Session, role_id: int) -> list[tuple[str, str]]:
    return [tuple(row) for row in session.execute(
        select(RolePermission.rule, RolePermission.permission)
        .where(RolePermission.role_id == role_id).order_by(RolePermission.sort_order, RolePermission.id)
    )]


ROLE_FILTERS = (
    Filter("id", Role.id, ROW),
    Filter("name", Role.name, NOCASE),
    Filter("type", Role.role_type, NOCASE),
    keyword(Role.name),
)


class RoleService:
    """Roles and their rules, for the caller of `ctx`; every change bumps the role's version."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.session = ctx.session

    # --- reads ----------------------------------------------------------------------

    def list_roles(self, p: SimpleNamespace) -> Page:
        q = filtered(select(Role).where(Role.removed.is_(None)), ROLE_FILTERS, p)
        if not self.ctx.is_root_admin:
            # CloudStack shows Admin roles to root admins only.
            q = q.where(Role.role_type != ADMIN)
        return page(self.ctx, p, q, Role.id)

    def rules(self, role: Role) -> list[RolePermission]:
        return list(self.session.execute(
            select(RolePermission).where(RolePermission.role_id == role.id)
            .order_by(RolePermission.sort_order, RolePermission.id)
        ).scalars())

    def in_use(self, role: Role) -> bool:
        return self.session.execute(
            select(Account.id).where(Account.role_id == role.id, Account.removed.is_(None)).limit(1)
        ).first() is not None

    def live(self, role: Role | None) -> Role:
        if role is None or role.removed is not None:
            raise InvalidParameterValue("Invalid role id provided")
        return role

    # --- changes --------------------------------------------------------------------

    def create(self, name: str, kind: str, description: str | None, clone: Role | None = None) -> Role:
        if not (name or "").strip():
            raise InvalidParameterValue("Invalid role name provided")
        role = Role(name=name.strip(), role_type=clone.role_type if clone else kind,
                    description=description, is_default=False, version=1)
        self.session.add(role)
        self.session.flush()
        if clone is not None:
            for order, rule in enumerate(self.rules(clone)):
                self.session.add(RolePermission(role_id=role.id, rule=rule.rule, permission=rule.permission,
                                                description=rule.description, sort_order=order))
            self.session.flush()
        return role

    def _changeable(self, role: Role, what: str) -> None:
        if role.is_default:
            raise PermissionDenied(what)

    def update(self, role: Role, name: str | None, kind: str | None, description: str | None) -> Role:
        self._changeable(role, "Default roles cannot be updated")
        if name:
            role.name = name.strip()
        if kind is not None and kind != role.role_type:
            if self.in_use(role):
                raise PermissionDenied("Found accounts that have role in use, won't allow to change role type")
            role.role_type = kind
        if description:
            role.description = description
        role.version += 1
        self.session.flush()
        return role

    def delete(self, role: Role) -> None:
        self._changeable(role, "Default roles cannot be deleted")
        if self.in_use(role):
            raise PermissionDenied("Found accounts that have role in use, won't allow to delete role")
        for rule in self.rules(role):
            self.session.delete(rule)
        role.removed = utcnow()
        role.version += 1
        self.session.flush()

    def add_rule(self, role: Role, rule: str, permission: str, description: str | None) -> RolePermission:
        self._changeable(role, "Role permission cannot be added for Default roles")
        if any(existing.rule.lower() == rule.lower() for existing in self.rules(role)):
            raise PermissionDenied(f"Rule already exists for the role: {role.name}")
        last = self.session.execute(
            select(func.max(RolePermission.sort_order)).where(RolePermission.role_id == role.id)
        ).scalar()
        added = RolePermission(role_id=role.id, rule=rule, permission=permission, description=description,
                               sort_order=(last + 1) if last is not None else 0)
        self.session.add(added)
        role.version += 1
        self.session.flush()
        return added

    def set_permission(self, role: Role, rule: RolePermission, permission: str) -> None:
        self._changeable(role, "Role permission cannot be updated for Default roles")
        if rule.role_id != role.id:
            raise InvalidParameterValue("Role permission doesn't belong to the role")
        rule.permission = permission
        role.version += 1
        self.session.flush()

    def reorder(self, role: Role, order: list[RolePermission]) -> None:
        """The rules of `role` in the order given, which must name each of them once."""
        self._changeable(role, "Role permission cannot be updated for Default roles")
        current = {rule.id for rule in self.rules(role)}
        given = [rule.id for rule in order]
        if len(set(given)) != len(given) or set(given) != current:
            raise InvalidParameterValue(
                "Provided role permission(s) do not match the current list of role permissions; "
                "the rule order must name every rule of the role once")
        for position, rule in enumerate(order):
            rule.sort_order = position
        role.version += 1
        self.session.flush()

    def delete_rule(self, rule: RolePermission) -> None:
        role = self.session.get(Role, rule.role_id)
        self._changeable(role, "Role permission cannot be deleted for Default roles")
        self.session.delete(rule)
        role.version += 1
        self.session.flush()
