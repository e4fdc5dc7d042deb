"""Resource limits: listResourceLimits, updateResourceLimit, updateResourceCount.

A request names an account (account with domainid), or a domain (domainid alone); without
either it is about the caller's account. Limits of primary and secondary storage are in GiB,
their counts in bytes, as in CloudStack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.params import Boolean, Integer, Long, Param, String, Uuid
from ..api.registry import ListResult, api_command
from ..errors import InvalidParameterValue, PermissionDenied
from ..formatting import compact
from ..persistence.models import Domain
from ..services.queries import check_paging
from ..services.resource_limits import RESOURCE_TYPES, resource_type

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context
    from ..persistence.models import Account
    from ..services.resource_limits import ResourceType

LIMIT_FIELDS = (
    ("resourcetype", "resource type. Values include 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11."),
    ("resourcetypename", "resource type name. Values include user_vm, public_ip, volume, snapshot, template, "
                         "network, vpc, cpu, memory, primary_storage, secondary_storage."),
    ("max", "the maximum number of the resource. A -1 means the resource currently has no limit.", "long"),
    ("account", "the account of the resource limit"), ("domainid", "the domain ID of the resource limit"),
    ("domain", "the domain name of the resource limit"), ("domainpath", "path of the domain of the resource limit"),
)
COUNT_FIELDS = (
    ("resourcetype", "resource type. Values include 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11."),
    ("resourcetypename", "resource type name"), ("resourcecount", "resource count", "long"),
    ("account", "the account for which resource count's are updated"),
    ("domainid", "the domain ID for which resource count's are updated"),
    ("domain", "the domain name for which resource count's are updated"),
)
TYPE_PARAMS = [
    Param("resourcetype", Integer(), description="Type of resource: 0 instances, 1 public IPs, 2 volumes, 3 snapshots, "
                                                 "4 templates, 5 projects, 6 networks, 7 VPCs, 8 CPU, 9 memory, "
                                                 "10 primary storage (GiB), 11 secondary storage (GiB)"),
]
OWNER_PARAMS = [
    Param("account", String(), description="the name of the account; must be used with domainid"),
    Param("domainid", Uuid(Domain), description="the ID of the domain; alone, the domain's own limits"),
    Param("projectid", String(), description="the ID of a project (projects are not supported)"),
]
PACKAGE = "org.apache.cloudstack.api.command."


def _owner(ctx: Context, p: SimpleNamespace) -> tuple[Account | None, Domain | None]:
    """(account, None) or (None, domain): whose limits the request is about."""
    if p.projectid is not None:
        raise InvalidParameterValue("Projects are not supported: name an account or a domain")
    if p.account is not None:
        return ctx.vms.owner(p.account, p.domainid), None
    if p.domainid is not None:
        if not ctx.is_root_admin and p.domainid.id != ctx.account.domain_id:
            raise PermissionDenied(f"Account {ctx.account.name} does not have permission to see the limits of "
                                   f"domain {p.domainid.name}")
        return None, p.domainid
    return ctx.account, None


def _owner_fields(account: Account | None, domain: Domain | None) -> dict[str, Any]:
    domain = account.domain if account is not None else domain
    return {"account": account.name if account is not None else None, "domainid": domain.uuid,
            "domain": domain.name, "domainpath": domain.path}


def limit_view(rtype: ResourceType, maximum: int, account: Account | None, domain: Domain | None) -> dict[str, Any]:
    return compact({"resourcetype": str(rtype.number), "resourcetypename": rtype.name, "max": maximum,
                    **_owner_fields(account, domain)})


def _types(p: SimpleNamespace) -> list[ResourceType]:
    if p.resourcetype is None and getattr(p, "resourcetypename", None) is None:
        return list(RESOURCE_TYPES)
    return [resource_type(p.resourcetype, getattr(p, "resourcetypename", None))]


@api_command("listResourceLimits", response="resourcelimit", admin_only=False, fields=LIMIT_FIELDS,
             cmd_class=PACKAGE + "user.resource.ListResourceLimitsCmd", params=[
                 Param("id", Long(), description="Lists resource limits by ID."),
                 *TYPE_PARAMS,
                 Param("resourcetypename", String(), description="Type of resource, by name: user_vm, public_ip, "
                                                                 "volume, snapshot, template, project, network, vpc, "
                                                                 "cpu, memory, primary_storage, secondary_storage"),
                 *OWNER_PARAMS,
                 Param("listall", Boolean(), description="If set to false, list only resources belonging to the "
                                                         "command's caller"),
                 Param("isrecursive", Boolean(), description="defaults to false"),
             ])
def list_resource_limits(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists resource limits."""
    account, domain = _owner(ctx, p)
    limits = ctx.limits
    rows = [limit_view(t, limits.account_limit(account, t) if account is not None else limits.domain_limit(domain, t),
                       account, domain) for t in _types(p)]
    offset, size = check_paging(ctx, p)
    return ListResult(rows[offset:] if size is None else rows[offset:offset + size], len(rows))


@api_command("updateResourceLimit", response="resourcelimit", admin_only=True, fields=LIMIT_FIELDS,
             cmd_class=PACKAGE + "user.resource.UpdateResourceLimitCmd", params=[
                 Param("resourcetype", Integer(), required=True, description=TYPE_PARAMS[0].description),
                 Param("max", Long(), description="Maximum resource limit; -1 (the default): no limit"),
                 *OWNER_PARAMS,
             ])
def update_resource_limit(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates resource limits for an account or domain."""
    rtype = resource_type(p.resourcetype)
    account, domain = _owner(ctx, p)
    value = ctx.limits.set_limit(rtype, p.max, account=account, domain=domain)
    owner = f"account {account.name}" if account is not None else f"domain {domain.name}"
    ctx.event("RESOURCE.LIMIT.UPDATE", f"Set the {rtype.name} limit of {owner} to {value}")
    return limit_view(rtype, value, account, domain)


@api_command("updateResourceCount", response="resourcecount", returns_list=True, admin_only=True,
             fields=COUNT_FIELDS, cmd_class=PACKAGE + "user.resource.UpdateResourceCountCmd", params=[
                 Param("domainid", Uuid(Domain), required=True,
                       description="If account parameter specified then updates resource counts for a specified "
                                   "account in this domain else update resource counts for all accounts & child "
                                   "domains in specified domain."),
                 Param("account", String(), description="Update resource count for a specified account. Must be "
                                                        "used with the domainId parameter."),
                 *TYPE_PARAMS,
                 Param("projectid", String(), description="Update resource limits for project (not supported)"),
             ])
def update_resource_count(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Recalculate and update resource count for an account or domain."""
    account, domain = _owner(ctx, p)
    counted = ctx.limits.recount(_types(p), account=account, domain=domain)
    rows = [compact({"resourcetype": str(t.number), "resourcetypename": t.name, "resourcecount": value,
                     **_owner_fields(account, domain)}) for t, value in counted]
    return ListResult(rows, len(rows))
