"""Configuration: listConfigurations, updateConfiguration, resetConfiguration.

A request names at most one scope through its id parameter (zoneid, clusterid, storageid,
accountid, domainid, imagestoreuuid). With a scope, listings show only the keys valid
there, with their effective value (the scoped value, else the global one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.params import Param, String, Uuid
from ..api.registry import ListResult, api_command
from ..errors import InvalidParameterValue
from ..formatting import compact
from ..persistence.models import Account, Cluster, Domain, ImageStore, StoragePool, Zone
from ..services.configuration import KEYS, key
from ..services.queries import check_paging

if TYPE_CHECKING:
    from ..services.configuration import Key, ScopeResource
    from types import SimpleNamespace
    from ..context import Context

# (request parameter, scope name, model); the order is CloudStack's precedence.
SCOPE_PARAMS = (
    ("zoneid", "zone", Zone, "the ID of the Zone to update the parameter value for corresponding zone"),
    ("clusterid", "cluster", Cluster, "the ID of the Cluster to update the parameter value for corresponding cluster"),
    ("storageid", "storagepool", StoragePool,
     "the ID of the Storage pool to update the parameter value for corresponding storage pool"),
    ("accountid", "account", Account, "the ID of the Account to update the parameter value for corresponding account"),
    ("domainid", "domain", Domain, "the ID of the Domain to update the parameter value for corresponding domain"),
    ("imagestoreuuid", "imagestore", ImageStore,
     "the ID of the Image Store to update the parameter value for corresponding image store"),
)
SCOPE_ID_PARAMS = [Param(name, Uuid(model), description=text) for name, _scope, model, text in SCOPE_PARAMS]

# configuration.id is the one numeric id CloudStack shows; ours is the key's stable position.
_KEY_IDS = {name: i for i, name in enumerate(KEYS, 1)}

CONFIGURATION_FIELDS = (
    ("id", "the id of the configuration", "long"), ("name", "the name of the configuration"),
    ("value", "the value of the configuration"), ("defaultvalue", "the default value of the configuration"),
    ("scope", "scope(zone/cluster/storagepool/account/domain/imagestore) of the parameter"),
    ("category", "the category of the configuration"), ("description", "the description of the configuration"),
    ("isdynamic", "true if the configuration is dynamic", "boolean"),
    ("component", "the component of the configuration"), ("group", "the group of the configuration"),
    ("subgroup", "the subgroup of the configuration"), ("type", "the type of the configuration value"),
)


# What a secret setting (a password, a key) shows for its value once one is set.
MASKED = "*****"


def shown(k: Key, value: str | None) -> str | None:
    """The value a view shows: a secret setting's never leaves the engine."""
    return MASKED if k.secret and value not in (None, "") else value


def configuration_view(k: Key, value: str | None, scope: str | None = None) -> dict[str, Any]:
    """`scope` is the request's scope; unscoped views show where the key may be set."""
    return compact({
        "id": _KEY_IDS[k.name],
        "name": k.name,
        "value": shown(k, value),
        "defaultvalue": k.default,
        "scope": scope or (k.scopes[0] if k.scopes else "global"),
        "category": k.category,
        "description": k.text,
        "isdynamic": k.dynamic,
        "component": k.component,
        "group": k.group,
        "subgroup": k.subgroup,
        "type": k.type,
    })


def requested_scope(p: SimpleNamespace) -> tuple[str, ScopeResource] | tuple[None, None]:
    """(scope, resource) named by the request, or (None, None); more than one is an error."""
    named = [(scope, getattr(p, param)) for param, scope, _model, _text in SCOPE_PARAMS if getattr(p, param) is not None]
    if len(named) > 1:
        raise InvalidParameterValue("cannot handle multiple IDs, provide only one ID corresponding to the scope")
    return named[0] if named else (None, None)


@api_command("listConfigurations", response="configuration", fields=CONFIGURATION_FIELDS, params=[
    Param("name", String(), description="lists configuration by name (any part of it, any case)"),
    Param("category", String(), description="lists configurations by category"),
    *SCOPE_ID_PARAMS,
    Param("group", String(), description="lists configurations by group name"),
    Param("subgroup", String(), description="lists configurations by subgroup name"),
    Param("parent", String(), description="lists configuration by parent name"),
])
def list_configurations(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all configurations."""
    scope, resource = requested_scope(p)
    offset, limit = check_paging(ctx, p)
    entries = ctx.settings.listing(scope, resource)
    name = (p.name or "").lower()
    keyword = (p.keyword or "").lower()

    def wanted(k: Key, value: str | None) -> bool:
        if name and name not in k.name.lower():
            return False
        for wanted_value, actual in ((p.category, k.category), (p.group, k.group), (p.subgroup, k.subgroup)):
            if wanted_value and wanted_value.lower() != actual.lower():
                return False
        if keyword:
            texts = (k.name, k.description, k.category, k.component, shown(k, value) or "")
            return any(keyword in text.lower() for text in texts)
        return True

    matches = [(k, value) for k, value in entries if wanted(k, value)]
    page = matches[offset:] if limit is None else matches[offset:offset + limit]
    return ListResult([configuration_view(k, value, scope) for k, value in page], len(matches))


@api_command("updateConfiguration", response="configuration", fields=CONFIGURATION_FIELDS, params=[
    Param("name", String(), required=True, description="the name of the configuration"),
    Param("value", String(4096), description="the value of the configuration"),
    *SCOPE_ID_PARAMS,
])
def update_configuration(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates a configuration."""
    k = key(p.name)
    scope, resource = requested_scope(p)
    if p.value is None:
        # No value: nothing changes; answer with the current one.
        current = (ctx.settings.scoped_value(k.name, scope, resource) if scope
                   else ctx.settings.global_value(k.name))
        return configuration_view(k, current, scope)
    value = None if p.value.strip() == "" or p.value == "null" else p.value
    if scope is None:
        ctx.settings.set_global(k.name, value)
        # Another request may have reloaded the cache before this commit; load it again after.
        ctx.after_commit(ctx.settings.invalidate)
    else:
        ctx.settings.set_scoped(k.name, value, scope, resource)
    ctx.event("CONFIGURATION.VALUE.EDIT", f"Successfully edited configuration value {k.name}")
    return configuration_view(k, value, scope)


@api_command("resetConfiguration", response="configuration", fields=CONFIGURATION_FIELDS, since="4.16.0", params=[
    Param("name", String(), required=True, description="the name of the configuration"),
    *SCOPE_ID_PARAMS,
])
def reset_configuration(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Resets a configuration: a global value to its default, a scoped value to the global one."""
    k = key(p.name)
    scope, resource = requested_scope(p)
    value = ctx.settings.reset(k.name, scope, resource)
    if scope is None:
        ctx.after_commit(ctx.settings.invalidate)
    ctx.event("CONFIGURATION.VALUE.EDIT", f"Successfully reset configuration value {k.name}")
    return configuration_view(k, value, scope)
