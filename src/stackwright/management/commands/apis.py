"""listApis (generated from the registry) and listHypervisors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.params import Param, String, Uuid
from ..api.registry import REGISTRY, ListResult, api_command
from ..persistence.models import Zone

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import Command
    from ..context import Context


def api_view(cmd: Command) -> dict[str, Any]:
    return {
        "name": cmd.name,
        "description": cmd.description,
        "isasync": cmd.async_job,
        "since": cmd.since,
        "related": ",".join(cmd.related),
        "params": [
            {
                "name": p.name,
                "description": p.description,
                "type": p.type.api_type,
                "length": p.length or (255 if p.type.api_type == "string" else 0),
                "required": p.required,
                "related": "",
                "since": p.since or "",
            }
            for p in cmd.params
        ],
        "response": [
            {"name": f.name, "description": f.description, "type": f.type} for f in cmd.fields
        ],
        "type": "",
    }


@api_command("listApis", response="api", admin_only=False, readonly=True, returns_list=True, params=[
    Param("name", String(), description="API name"),
])
def list_apis(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all available APIs and their parameters, for the caller's role."""
    policy = ctx.engine.roles.policy(ctx.session, ctx.principal.role_id)
    commands = [c for c in sorted(REGISTRY.values(), key=lambda c: c.name)
                if c.login_free or (policy is not None and policy.allows(c.name))]
    if p.name:
        commands = [c for c in commands if c.name == p.name]
        if not commands:
            from ..errors import InvalidParameterValue

            raise InvalidParameterValue(f"Unable to find API: {p.name}")
    return ListResult([api_view(c) for c in commands], len(commands))


@api_command("listHypervisors", response="hypervisor", admin_only=False, params=[
    Param("zoneid", Uuid(Zone), description="the zone id for listing hypervisors."),
])
def list_hypervisors(ctx: Context, p: SimpleNamespace) -> ListResult:
    """List hypervisors."""
    if p.zoneid is not None:
        names = ctx.hierarchy.hypervisors_in(p.zoneid)
    else:
        names = [h.strip() for h in ctx.settings.get("hypervisor.list").split(",") if h.strip()]
    return ListResult([{"name": n} for n in names], len(names))


# The Apache CloudStack release whose API the engine answers as (clients compare versions).
CLOUDSTACK_VERSION = "4.19.0.0"


@api_command("listCapabilities", response="capability", admin_only=False, readonly=True, returns_list=False)
def list_capabilities(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Lists capabilities."""
    return {
        "cloudstackversion": CLOUDSTACK_VERSION, "dynamicrolesenabled": True, "securitygroupsenabled": False,
        "userpublictemplateenabled": False, "allowusercreateprojects": False, "allowuserviewdestroyedvm": False,
        "allowuserexpungerecovervm": False, "kvmsnapshotenabled": False, "projectinviterequired": False,
        "apilimitinterval": ctx.settings.typed("api.throttling.interval"),
        "apilimitmax": ctx.settings.typed("api.throttling.max"),
    }
