"""Parameter declarations and their validation, with CloudStack's rules and error texts.

A command declares its parameters as data (`Param(name, Type, ...)`); `parse()` turns the raw
request strings into typed values and raises the contract's 431 errors. UUID parameters are
resolved to database rows here, so a handler never sees an id that names nothing.
"""

import re
import uuid as uuidlib
from dataclasses import dataclass, field
from types import SimpleNamespace

from ..errors import InvalidParameterValue, ParameterError

_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")
_MAP_KEY = re.compile(r"^(?P<name>[^\[]+)\[(?P<index>\d+)\]\.(?P<key>.+)$")


class ParamType:
    api_type = "string"

    def convert(self, cmd, name, raw, ctx):
        return raw


class String(ParamType):
    def __init__(self, length=255):
        self.length = length

    def convert(self, cmd, name, raw, ctx):
        if len(raw) > self.length:
            raise InvalidParameterValue(
                "Value greater than max allowed length %d for param: %s" % (self.length, name)
            )
        if _CONTROL.search(raw):
            raise InvalidParameterValue(
                "Received value %r for parameter %s is invalid, contains illegal ASCII "
                "non-printable characters" % (raw, name)
            )
        return raw


class Boolean(ParamType):
    api_type = "boolean"

    def convert(self, cmd, name, raw, ctx):
        return raw.strip().lower() == "true"


class _Number(ParamType):
    pytype = int
    bits = None     # integers outside a Java int/long of this size are invalid, as in CloudStack

    def convert(self, cmd, name, raw, ctx):
        if raw.strip() == "":
            return None
        try:
            value = self.pytype(raw.strip())
            if self.bits and not -(1 << (self.bits - 1)) <= value < (1 << (self.bits - 1)):
                raise ValueError(raw)
            return value
        except ValueError:
            raise ParameterError(
                "Unable to execute API command %s due to invalid value %s for parameter %s"
                % (cmd.lower(), raw, name)
            ) from None


class Integer(_Number):
    api_type = "integer"
    bits = 32


class Long(_Number):
    api_type = "long"
    bits = 64


class Float(_Number):
    api_type = "float"
    pytype = float


class Uuid(ParamType):
    """A UUID naming a row of `model`; the parsed value is the row itself."""

    api_type = "uuid"

    def __init__(self, model=None):
        self.model = model

    def convert(self, cmd, name, raw, ctx):
        try:
            parsed = uuidlib.UUID(raw)
        except ValueError:
            return _ABSENT
        # CloudStack only recognises the canonical lower-case form.
        if str(parsed) != raw:
            return _ABSENT
        if self.model is None or ctx is None:
            return raw
        row = ctx.session.query(self.model).filter_by(uuid=raw).one_or_none()
        if row is None:
            raise InvalidParameterValue(
                "Unable to execute API command %s due to invalid value. Invalid parameter %s "
                "value=%s due to incorrect long value format, or entity does not exist or due "
                "to incorrect parameter annotation for the field in api cmd class."
                % (cmd.lower(), name, raw)
            )
        return row


class List(ParamType):
    api_type = "list"

    def __init__(self, item=None):
        self.item = item or String()

    def convert(self, cmd, name, raw, ctx):
        out = []
        for part in raw.split(","):
            part = part.strip()
            if part == "":
                continue
            value = self.item.convert(cmd, name, part, ctx)
            if value is not _ABSENT and value is not None:
                out.append(value)
        return out


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
    def length(self):
        return getattr(self.type, "length", None)


def _maps(raw):
    """Collect map-typed parameters: {name: [ {key: value, ...} ordered by index ]}."""
    groups = {}
    for key, value in raw.items():
        m = _MAP_KEY.match(key)
        if not m:
            continue
        groups.setdefault(m["name"], {}).setdefault(int(m["index"]), {})[m["key"]] = value
    return {name: [entry for _index, entry in sorted(by_index.items())] for name, by_index in groups.items()}


def parse(cmd, params, raw, ctx):
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
                            "Unable to execute API command %s due to invalid value. Invalid "
                            "parameter %s value=%s due to incorrect long value format, or "
                            "entity does not exist or due to incorrect parameter annotation "
                            "for the field in api cmd class." % (cmd.lower(), p.name, raw[p.name])
                        )
                    present, value = False, None
        if p.required and not present:
            raise ParameterError(
                "Unable to execute API command %s due to missing parameter %s" % (cmd.lower(), p.name)
            )
        if value is None and p.default is not None:
            value = p.default
        values[p.name] = value
    ns = SimpleNamespace(**values)
    ns._given = {p.name for p in params if values[p.name] is not None and (p.name in raw or (maps and p.name in maps))}
    return ns


def given(p, name):
    """True when the request carried parameter `name` (with a usable value)."""
    return name in p._given


def map_dict(entries):
    """A map parameter as one dict: entries are {key, value} pairs or {<key>: <value>} groups."""
    out = {}
    for entry in entries or ():
        if set(entry) == {"key", "value"}:
            out[entry["key"]] = entry["value"]
        else:
            out.update(entry)
    return out
