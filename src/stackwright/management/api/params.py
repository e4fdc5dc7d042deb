"""Parameter declarations and their validation, with CloudStack's rules and error texts.

A command declares its parameters as data (`Param(name, Type, ...)`); `parse()` turns the raw
request strings into typed values and raises the contract's 431 errors. UUID parameters are
resolved to database rows here, so a handler never sees an id that names nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from .. import values
from ..redaction import redacted_value
from ..errors import InvalidParameterValue, ParameterError, PermissionDenied

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import SimpleNamespace

    from sqlalchemy import Select

    from ..api.registry import Command
    from ..context import Context
    from ..persistence.models import Base

_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")
_MAP_KEY = re.compile(r"^(?P<name>[^\[]+)\[(?P<index>\d+)\]\.(?P<key>.+)$")


class ParamType:
    api_type = "string"

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> str:
        return raw


class String(ParamType):
    def __init__(self, length: int = 255):
        self.length = length

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> str:
        if len(raw) > self.length:
            raise InvalidParameterValue(
                f"Value greater than max allowed length {self.length} for param: {name}"
            )
        if _CONTROL.search(raw):
            raise InvalidParameterValue(
                f"Received value {redacted_value(name, raw)!r} for parameter {name} is invalid, contains illegal ASCII "
                "non-printable characters"
            )
        return raw


def _invalid(cmd: Command, name: str, raw: str):
    return ParameterError(
        f"Unable to execute API command {cmd.lower()} due to invalid value {redacted_value(name, raw)} for parameter {name}"
    )


class Boolean(ParamType):
    api_type = "boolean"

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> bool | None:
        if raw.strip() == "":
            return None
        try:
            return values.parse_bool(raw)
        except ValueError:
            raise _invalid(cmd, name, raw) from None


class _Number(ParamType):
    """A number parsed by `values`; integers outside the Java int/long they stand for are
    invalid, as in CloudStack, and so is anything outside [minimum, maximum]."""

    bounds = values.INT64

    def __init__(self, minimum: float | None = None, maximum: float | None = None):
        self.minimum = self.bounds[0] if minimum is None else minimum
        self.maximum = self.bounds[1] if maximum is None else maximum

    def parse(self, raw: str) -> float:
        return values.parse_int(raw, self.minimum, self.maximum)

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> float | None:
        if raw.strip() == "":
            return None
        try:
            return self.parse(raw)
        except ValueError:
            raise _invalid(cmd, name, raw) from None


class Integer(_Number):
    api_type = "integer"
    bounds = values.INT32


class Long(_Number):
    api_type = "long"


class Size(Long):
    """A non-negative count of `unit` bytes (a disk size in GB, say) whose byte count fits a
    Java long: the database and the arithmetic on it never see a larger one."""

    def __init__(self, unit: str = 1):
        super().__init__(0, values.INT64[1] // unit)


class Float(_Number):
    api_type = "float"
    bounds = (-values.JAVA_FLOAT_MAX, values.JAVA_FLOAT_MAX)

    def parse(self, raw: str) -> float:
        return values.parse_decimal(raw, self.minimum, self.maximum)


class Uuid(ParamType):
    """A UUID naming a row of `model`; the parsed value is the row itself.

    `owned`: the row belongs to an account (it has `account_id`) and only a root admin or that
    account may name it. The check runs while the request is parsed, so a refused request is
    answered at once (531) and never becomes a job."""

    api_type = "uuid"

    def __init__(self, model: type[Base] | None = None, owned: bool = False):
        self.model = model
        self.owned = owned

    @functools.cached_property
    def _by_uuid(self) -> Select[Any]:
        """The select of the row a value names, built once: a statement reused keeps its cache key."""
        return select(self.model).where(self.model.uuid == bindparam("uuid"))

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> object:
        try:
            parsed = uuidlib.UUID(raw)
        except ValueError:
            return _ABSENT
        # CloudStack only recognises the canonical lower-case form.
        if str(parsed) != raw:
            return _ABSENT
        if self.model is None or ctx is None:
            return raw
        row = ctx.session.execute(self._by_uuid, {"uuid": raw}).unique().scalar_one_or_none()
        if row is None:
            raise InvalidParameterValue(
                f"Unable to execute API command {cmd.lower()} due to invalid value. Invalid parameter {name} "
                f"value={raw} due to incorrect long value format, or entity does not exist or due "
                "to incorrect parameter annotation for the field in api cmd class."
            )
        if self.owned:
            check_owner(ctx, row)
        return row


def check_owner(ctx: Context, row: Base) -> None:
    """Refuse (531, CloudStack's text) a caller other than a root admin or the row's account."""
    principal = ctx.principal
    if principal is None or principal.root_admin or row.account_id == principal.account_id:
        return
    raise PermissionDenied(f"Account {ctx.account.name} does not have permission to operate with resource {row.uuid}")


class Date(ParamType):
    """A date as CloudStack's list commands take it: `yyyy-MM-dd`, `yyyy-MM-dd HH:mm:ss`, or
    the ISO form with `T` and an optional zone (`+0000`, `Z`); the value is a naive UTC datetime."""

    api_type = "date"
    FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> dt.datetime:
        text = raw.strip().replace("Z", "+0000")
        for form in self.FORMATS:
            try:
                value = dt.datetime.strptime(text, form)
            except ValueError:
                continue
            if value.tzinfo is not None:
                value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
            return value
        raise InvalidParameterValue(
            f"Unable to parse date {redacted_value(name, raw)} for parameter {name}: use yyyy-MM-dd or "
            f"yyyy-MM-dd HH:mm:ss")


class List(ParamType):
    api_type = "list"

    def __init__(self, item: ParamType | None = None):
        self.item = item or String()

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> list[object]:
        out = []
        for part in raw.split(","):
            part = part.strip()
            if part == "":
                continue
            value = self.item.convert(cmd, name, part, ctx)
            if value is not _ABSENT and value is not None:
                out.append(value)
        return out


class Tags(String):
    """Comma-separated storage or host tags ("ssd,fast"): each item is a tag, so an empty one
    ("ssd,,fast", a trailing comma) is refused rather than dropped; an empty value is no tags."""

    def __init__(self) -> None:
        super().__init__(4096)

    def convert(self, cmd: Command, name: str, raw: str, ctx: Context) -> list[str]:
        raw = super().convert(cmd, name, raw, ctx)
        if raw.strip() == "":
            return []
        items = [item.strip() for item in raw.split(",")]
        if not all(items):
            raise InvalidParameterValue(
                f"Invalid value {raw!r} for parameter {name}: tags are comma-separated names and none of them may "
                "be empty")
        return items


class Map(ParamType):
    """`name[0].key=k&name[0].value=v` or `name[0].k=v`, grouped by index."""

    api_type = "map"


_ABSENT = object()


@dataclass
class Param:
    name: str
    type: ParamType = field(default_factory=String)
    required: bool = False
    default: object = None
    description: str = ""
    since: str | None = None

    def __post_init__(self):
        if isinstance(self.type, type):
            self.type = self.type()

    @property
    def length(self) -> int | None:
        return getattr(self.type, "length", None)


def _maps(raw: str):
    """Collect map-typed parameters: {name: [ {key: value, ...} ordered by index ]}."""
    groups = {}
    for key, value in raw.items():
        m = _MAP_KEY.match(key)
        if not m:
            continue
        groups.setdefault(m["name"], {}).setdefault(int(m["index"]), {})[m["key"]] = value
    return {name: [entry for _index, entry in sorted(by_index.items())] for name, by_index in groups.items()}


class Declared:
    """The names a list of parameter declarations reads, worked out once per command
    (Command.declared) rather than on every request."""

    __slots__ = ("names", "maps")

    def __init__(self, params: Sequence[Param]):
        self.names = frozenset(p.name for p in params if not isinstance(p.type, Map))
        self.maps = frozenset(p.name for p in params if isinstance(p.type, Map))

    def used(self, raw: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The raw strings `parse` reads for these parameters: exactly the declared parameters
        the request carries, map entries included, as sorted (name, value) pairs. Anything else
        in `raw` (an unknown or differently spelt name, credentials) changes nothing and is
        left out."""
        names = self.names
        out = [(k, v) for k, v in raw.items() if k in names]
        if self.maps:
            maps = self.maps
            out += [(k, v) for k, v in raw.items() if (m := _MAP_KEY.match(k)) and m["name"] in maps]
        out.sort()
        return tuple(out)


def parse(cmd: Command, params: Sequence[Param], raw: Mapping[str, str], ctx: Context) -> SimpleNamespace:
    """Validate `raw` (str -> str) against `params`; returns a namespace of typed values."""
    values = {}
    maps = None
    for p in params:
        if isinstance(p.type, Map):
            if maps is None:
                maps = _maps(raw)
            present = p.name in maps
            value = maps.get(p.name)
        else:
            present = p.name in raw
            value = None
            if present:
                value = p.type.convert(cmd, p.name, raw[p.name], ctx)
                if value is _ABSENT:
                    if p.required:
                        raise InvalidParameterValue(
                            f"Unable to execute API command {cmd.lower()} due to invalid value. Invalid "
                            f"parameter {p.name} value={raw[p.name]} due to incorrect long value format, or "
                            "entity does not exist or due to incorrect parameter annotation "
                            "for the field in api cmd class."
                        )
                    present, value = False, None
        if p.required and not present:
            raise ParameterError(
                f"Unable to execute API command {cmd.lower()} due to missing parameter {p.name}"
            )
        if value is None and p.default is not None:
            value = p.default
        values[p.name] = value
    ns = SimpleNamespace(**values)
    ns._given = {p.name for p in params if values[p.name] is not None and (p.name in raw or (maps and p.name in maps))}
    return ns


def given(p: SimpleNamespace, name: str) -> bool:
    """True when the request carried parameter `name` (with a usable value)."""
    return name in p._given


def map_dict(entries: Sequence[Mapping[str, str]] | None) -> dict[str, str]:
    """A map parameter as one dict: entries are {key, value} pairs or {<key>: <value>} groups."""
    out = {}
    for entry in entries or ():
        if set(entry) == {"key", "value"}:
            out[entry["key"]] = entry["value"]
        else:
            out.update(entry)
    return out
