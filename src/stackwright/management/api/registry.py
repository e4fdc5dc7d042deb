"""The command registry: every API command is declared once, next to its family.

`@api_command` records the name, parameters, response object and execution mode. The HTTP
layer finds commands here, validation reads the parameter declarations, and `listApis` is
generated from the same records, so documentation cannot drift from behaviour.
"""

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .params import Declared, Param

H = TypeVar("H", bound=Callable[..., Any])


@dataclass
class ResponseField:
    name: str
    description: str = ""
    type: str = "string"


@dataclass
class Command:
    name: str
    handler: Callable
    params: list
    description: str
    response: str | None = None          # object name, e.g. "zone"; None: success / job result
    response_key: str | None = None      # overrides "<lowercase name>response"
    returns_list: bool = False           # handler returns a ListResult
    async_job: bool = False              # runs as an async job
    prepare: Callable | None = None      # async create: runs in the request, returns instance ids
    admit: Callable | None = None        # async: runs in the request (checks, immediate effects)
    instance_type: str | None = None     # jobinstancetype of its jobs
    cmd_class: str = ""                  # Java class name reported as the job's `cmd`
    admin_only: bool = True
    # The role types the command is meant for: what a role without a matching rule may call.
    authorized: frozenset = frozenset({"Admin"})
    readonly: bool = False
    cacheable: bool = False              # answer depends only on the database, caller and params
    login_free: bool = False
    since: str = "4.0.0"
    related: tuple = ()
    fields: list = field(default_factory=list)

    @functools.cached_property
    def key(self) -> str:
        return self.response_key or self.name.lower() + "response"

    @functools.cached_property
    def declared(self) -> Declared:
        """The parameter names the command reads (api.cache keys its answers by them)."""
        return Declared(self.params)


REGISTRY: dict[str, Command] = {}


def api_command(
    name: str,
    *,
    params: Iterable[Param] = (),
    response: str | None = None,
    description: str = "",
    returns_list: bool | None = None,
    async_job: bool = False,
    prepare: Callable[..., Any] | None = None,
    admit: Callable[..., Any] | None = None,
    instance_type: str | None = None,
    response_key: str | None = None,
    admin_only: bool = True,
    authorized: Iterable[str] | None = None,
    readonly: bool | None = None,
    cacheable: bool = False,
    cmd_class: str | None = None,
    since: str = "4.0.0",
    related: Iterable[str] = (),
    fields: Iterable[ResponseField | tuple[str, ...]] = (),
) -> Callable[[H], H]:
    """Declare an API command; the decorated function is `handler(ctx, p)`.

    `authorized` names the role types the command is meant for (CloudStack's
    `APICommand.authorized`); by default Admin alone when `admin_only`, else every type."""

    def wrap(fn: H) -> H:
        if name in REGISTRY:
            raise ValueError(f"command {name} is declared twice")
        is_list = name.startswith("list") if returns_list is None else returns_list
        all_params = list(params)
        if is_list and name.startswith("list") and name != "listApis":
            names = {p.name for p in all_params}
            from .params import Integer, String

            for extra in (
                Param("keyword", String(), description="List by keyword"),
                Param("page", Integer(), description="Page number, 1-based"),
                Param("pagesize", Integer(), description="Items per page"),
            ):
                if extra.name not in names:
                    all_params.append(extra)
        REGISTRY[name] = Command(
            name=name,
            handler=fn,
            params=all_params,
            description=description or ((fn.__doc__ or "").strip().splitlines() or [name])[0],
            response=response,
            response_key=response_key,
            returns_list=is_list,
            async_job=async_job,
            prepare=prepare,
            admit=admit,
            instance_type=instance_type,
            cmd_class=cmd_class or _java_class(name),
            admin_only=admin_only,
            authorized=frozenset(authorized if authorized is not None else (
                ("Admin",) if admin_only else ("Admin", "ResourceAdmin", "DomainAdmin", "User"))),
            login_free=name in ("login", "logout"),
            readonly=(name.startswith(("list", "get", "query")) if readonly is None else readonly),
            cacheable=cacheable,
            since=since,
            related=tuple(related),
            fields=[f if isinstance(f, ResponseField) else ResponseField(*f) for f in fields],
        )
        return fn

    return wrap


def _java_class(name: str) -> str:
    return f"org.apache.cloudstack.api.command.admin.{name[0].upper() + name[1:]}Cmd"


@dataclass
class ListResult:
    """A page of items and the total number of matches."""

    items: list
    count: int


@dataclass
class Success:
    displaytext: str | None = None
