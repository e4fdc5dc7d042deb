"""Dynamic roles: listRoles, createRole, updateRole, deleteRole, listRolePermissions,
createRolePermission, updateRolePermission, deleteRolePermission.

Every change bumps the role's version and, once committed, drops the engine's compiled
roles (api.authorize), so it holds from the next request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..api.listing import listed
from ..api.params import List, Param, String, Uuid
from ..api.registry import REGISTRY, ListResult, Success, api_command
from ..errors import InvalidParameterValue
from ..formatting import compact
from ..persistence.models import Role, RolePermission
from ..services.roles import ADMIN, DOMAIN_ADMIN, RESOURCE_ADMIN, RoleService, checked_rule, permission_of, role_type

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context

ROLE_FIELDS = (
    ("id", "the ID of the role"), ("name", "the name of the role"), ("type", "the type of the role"),
    ("description", "the description of the role"), ("isdefault", "true if role is default, false otherwise", "boolean"),
)
PERMISSION_FIELDS = (
    ("id", "the ID of the role permission"), ("roleid", "the ID of the role to which the role permission belongs"),
    ("rolename", "the name of the role to which the role permission belongs"), ("rule", "the api name or wildcard rule"),
    ("permission", "the permission type of the api name or wildcard rule, allow/deny"),
    ("description", "the description of the role permission"),
)
ACL = "org.apache.cloudstack.api.command.admin.acl."


def role_view(role: Role) -> dict[str, Any]:
    return compact({"id": role.uuid, "name": role.name, "type": role.role_type, "description": role.description,
                    "isdefault": bool(role.is_default), "ispublic": True})


def permission_view(role: Role, rule: RolePermission) -> dict[str, Any]:
    return compact({"id": rule.uuid, "roleid": role.uuid, "rolename": role.name, "rule": rule.rule,
                    "permission": rule.permission, "description": rule.description})


def _live(ctx: Context, role: Role | None) -> Role:
    role = RoleService(ctx).live(role)
    if role.role_type == ADMIN and not ctx.is_root_admin:
        raise InvalidParameterValue("Invalid role id provided")
    return role


def _changed(ctx: Context) -> None:
    ctx.after_commit(ctx.engine.roles.invalidate)


def _unique_name(ctx: Context, name: str, other_than: Role | None = None) -> None:
    clash = ctx.session.execute(
        select(Role).where(func.lower(Role.name) == name.strip().lower(), Role.removed.is_(None))
    ).scalars().first()
    if clash is not None and clash is not other_than:
        raise InvalidParameterValue(f"A role with the name {name.strip()} already exists")


@api_command("listRoles", response="role", authorized=(ADMIN, RESOURCE_ADMIN, DOMAIN_ADMIN), fields=ROLE_FIELDS,
             since="4.9.0", cmd_class=ACL + "ListRolesCmd", params=[
                 Param("id", Uuid(Role), description="List role by role ID."),
                 Param("name", String(), description="List role by role name."),
                 Param("type", String(), description="List role by role type, valid options are: Admin, "
                                                     "ResourceAdmin, DomainAdmin, User.")])
def list_roles(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists dynamic roles in CloudStack."""
    if p.type:
        p.type = role_type(p.type)
    return listed(RoleService(ctx).list_roles(p), role_view)


@api_command("createRole", response="role", fields=ROLE_FIELDS, since="4.9.0", cmd_class=ACL + "CreateRoleCmd", params=[
    Param("name", String(), required=True, description="Creates a role with this unique name"),
    Param("type", String(), description="The type of the role, valid options are: Admin, ResourceAdmin, "
                                        "DomainAdmin, User"),
    Param("roleid", Uuid(Role), description="ID of the role to be cloned from. Either roleid or type must be passed "
                                            "in"),
    Param("description", String(), description="The description of the role"),
])
def create_role(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Creates a role, of a type or as a copy of another role and its rules."""
    if (p.type is None) == (p.roleid is None):
        raise InvalidParameterValue("Either role type or role ID should be specified, and not both")
    clone = _live(ctx, p.roleid) if p.roleid is not None else None
    _unique_name(ctx, p.name)
    role = RoleService(ctx).create(p.name, role_type(p.type) if clone is None else None, p.description, clone)
    ctx.event("ROLE.CREATE", f"Created role {role.name}", role.uuid)
    return role_view(role)


@api_command("updateRole", response="role", fields=ROLE_FIELDS, since="4.9.0", cmd_class=ACL + "UpdateRoleCmd", params=[
    Param("id", Uuid(Role), required=True, description="ID of the role"),
    Param("name", String(), description="creates a role with this unique name"),
    Param("type", String(), description="The type of the role, valid options are: Admin, ResourceAdmin, "
                                        "DomainAdmin, User"),
    Param("description", String(), description="The description of the role"),
])
def update_role(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a role."""
    role = _live(ctx, p.id)
    if p.name:
        _unique_name(ctx, p.name, other_than=role)
    RoleService(ctx).update(role, p.name, role_type(p.type), p.description)
    _changed(ctx)
    return role_view(role)


@api_command("deleteRole", since="4.9.0", cmd_class=ACL + "DeleteRoleCmd", params=[
    Param("id", Uuid(Role), required=True, description="ID of the role"),
])
def delete_role(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a role; default roles and roles of accounts are kept."""
    role = _live(ctx, p.id)
    RoleService(ctx).delete(role)
    ctx.event("ROLE.DELETE", f"Deleted role {role.name}", role.uuid)
    _changed(ctx)
    return Success()


@api_command("listRolePermissions", response="rolepermission", returns_list=True, fields=PERMISSION_FIELDS,
             since="4.9.0", cmd_class=ACL + "ListRolePermissionsCmd", params=[
                 Param("roleid", Uuid(Role), description="ID of the role"),
             ])
def list_role_permissions(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists role permissions, in the order they are evaluated."""
    service = RoleService(ctx)
    if p.roleid is not None:
        roles = [_live(ctx, p.roleid)]
    else:
        roles = list(ctx.session.execute(select(Role).where(Role.removed.is_(None)).order_by(Role.id)).scalars())
    items = [permission_view(role, rule) for role in roles for rule in service.rules(role)]
    return ListResult(items, len(items))


@api_command("createRolePermission", response="rolepermission", fields=PERMISSION_FIELDS, since="4.9.0",
             cmd_class=ACL + "CreateRolePermissionCmd", params=[
                 Param("roleid", Uuid(Role), required=True, description="ID of the role"),
                 Param("rule", String(), required=True, description="The API name or wildcard rule such as list*"),
                 Param("permission", String(), required=True,
                       description="The rule permission, allow or deny. Default: deny."),
                 Param("description", String(), description="The description of the role permission"),
             ])
def create_role_permission(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Adds an API permission to a role, evaluated after its other rules."""
    role = _live(ctx, p.roleid)
    rule = checked_rule(p.rule, REGISTRY)
    added = RoleService(ctx).add_rule(role, rule, permission_of(p.permission), p.description)
    _changed(ctx)
    return permission_view(role, added)


@api_command("updateRolePermission", since="4.9.0", cmd_class=ACL + "UpdateRolePermissionCmd", params=[
    Param("roleid", Uuid(Role), required=True, description="ID of the role"),
    Param("ruleorder", List(Uuid(RolePermission)), description="The parent role permission uuid, use 0 to move this rule at the top of the list"),
    Param("ruleid", Uuid(RolePermission), description="Role permission rule id"),
    Param("permission", String(), description="Rule permission, can be: allow or deny"),
])
def update_role_permission(ctx: Context, p: SimpleNamespace) -> Success:
    """Updates the order of a role's rules (ruleorder) or the permission of one rule (ruleid, permission)."""
    role = _live(ctx, p.roleid)
    service = RoleService(ctx)
    if p.ruleorder is not None and (p.ruleid is not None or p.permission is not None):
        raise InvalidParameterValue("Parameters permission and ruleid must be mutually exclusive with ruleorder")
    if p.ruleorder is not None:
        service.reorder(role, p.ruleorder)
    elif p.ruleid is not None and p.permission is not None:
        service.set_permission(role, p.ruleid, permission_of(p.permission))
    else:
        raise InvalidParameterValue("Either the ruleorder, or both ruleid and permission, must be given")
    _changed(ctx)
    return Success()


@api_command("deleteRolePermission", since="4.9.0", cmd_class=ACL + "DeleteRolePermissionCmd", params=[
    Param("id", Uuid(RolePermission), required=True, description="ID of the role permission"),
])
def delete_role_permission(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a role permission."""
    _live(ctx, ctx.session.get(Role, p.id.role_id))
    RoleService(ctx).delete_rule(p.id)
    _changed(ctx)
    return Success()
