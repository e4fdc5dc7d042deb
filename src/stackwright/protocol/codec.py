"""Dataclasses to JSON-able values and back, checked against their type hints.

Decoding is strict about types (an ``int`` field refuses ``"5"``) and names the
offending path in the error, so a malformed message is reported precisely.
Fields the receiver does not know are ignored, which lets a newer peer add
optional fields without breaking an older one.  Unions of dataclasses (a disk's
source) are tagged with the class name under ``"@type"``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

TYPE_TAG = "@type"


class CodecError(ValueError):
    """A value does not match the declared shape; ``str()`` names the path."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# What the decoder needs to know about a type is worked out once per type, not once per
# message: every ping of every agent goes through here.
@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _init_fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type hint, required) of the fields ``cls()`` takes."""
    hints = _hints(cls)
    return tuple(
        (f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls) if f.init
    )


@functools.cache
def _shape(annotation: Any) -> tuple[str, Any]:
    """How to decode ``annotation``: ("any"|"union"|"list"|"dict"|"dataclass"|"enum"|"scalar", detail)."""
    if annotation is Any:
        return "any", None
    members = _union_members(annotation)
    if members:
        return "union", members
    origin = typing.get_origin(annotation)
    if origin is list:
        return "list", typing.get_args(annotation)[0]
    if origin is dict:
        return "dict", typing.get_args(annotation)[1]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return "dataclass", None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "enum", None
    return "scalar", None


def encode(value: Any) -> Any:
    """Turn dataclasses, enums, lists and dicts into JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: encode(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    return value


def _encode_tagged(value: Any) -> Any:
    encoded = encode(value)
    encoded[TYPE_TAG] = type(value).__name__
    return encoded


def encode_as(value: Any, annotation: Any) -> Any:
    """Encode ``value`` declared as ``annotation`` (tags members of dataclass unions)."""
    members = _union_members(annotation)
    if members and value is not None and dataclasses.is_dataclass(value):
        if sum(1 for m in members if dataclasses.is_dataclass(m)) > 1:
            return _encode_tagged(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = _hints(type(value))
        return {name: encode_as(getattr(value, name), hints[name]) for name in _field_names(type(value))}
    origin = typing.get_origin(annotation)
    if origin is list and isinstance(value, (list, tuple)):
        (item_type,) = typing.get_args(annotation)
        return [encode_as(item, item_type) for item in value]
    if origin is dict and isinstance(value, dict):
        _key_type, item_type = typing.get_args(annotation)
        return {str(key): encode_as(item, item_type) for key, item in value.items()}
    return encode(value)


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return ()


def decode(cls: type, data: Any, path: str | None = None) -> Any:
    """Build an instance of dataclass ``cls`` from ``data``; raise `CodecError` naming the bad path."""
    return _decode(cls, data, path or cls.__name__)


def _decode(annotation: Any, data: Any, path: str) -> Any:
    kind, detail = _shape(annotation)
    if kind == "any":
        return data
    if kind == "union":
        return _decode_union(detail, data, path)
    if kind == "list":
        if not isinstance(data, list):
            raise CodecError(f"{path}: expected a list, got {_kind(data)}")
        return [_decode(detail, item, f"{path}[{index}]") for index, item in enumerate(data)]
    if kind == "dict":
        if not isinstance(data, dict):
            raise CodecError(f"{path}: expected an object, got {_kind(data)}")
        return {key: _decode(detail, item, f"{path}.{key}") for key, item in data.items()}
    if kind == "dataclass":
        return _decode_dataclass(annotation, data, path)
    if kind == "enum":
        try:
            return annotation(data)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in annotation)
            raise CodecError(f"{path}: {data!r} is not one of: {allowed}") from None
    return _decode_scalar(annotation, data, path)


def _decode_scalar(annotation: Any, data: Any, path: str) -> Any:
    if annotation is type(None):
        if data is not None:
            raise CodecError(f"{path}: expected null, got {_kind(data)}")
        return None
    if annotation is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        raise CodecError(f"{path}: expected a number, got {_kind(data)}")
    if annotation is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        raise CodecError(f"{path}: expected an integer, got {_kind(data)}")
    if annotation in (str, bool):
        # Exact type: decoded JSON holds plain str and bool; a subclass is refused, not passed through.
        if type(data) is annotation:  # pylint: disable=unidiomatic-typecheck
            return data
        raise CodecError(f"{path}: expected {annotation.__name__}, got {_kind(data)}")
    raise TypeError(f"{path}: cannot decode type {annotation!r}")


def _decode_union(members: tuple[Any, ...], data: Any, path: str) -> Any:
    if data is None:
        if type(None) in members:
            return None
        raise CodecError(f"{path}: a value is required")
    candidates = [m for m in members if m is not type(None)]
    classes = [m for m in candidates if isinstance(m, type) and dataclasses.is_dataclass(m)]
    if len(classes) > 1:
        if not isinstance(data, dict) or TYPE_TAG not in data:
            raise CodecError(f"{path}: expected an object tagged with {TYPE_TAG!r}")
        tag = data[TYPE_TAG]
        for cls in classes:
            if cls.__name__ == tag:
                return _decode_dataclass(cls, data, path)
        allowed = ", ".join(cls.__name__ for cls in classes)
        raise CodecError(f"{path}: {TYPE_TAG} {tag!r} is not one of: {allowed}")
    if len(candidates) == 1:
        return _decode(candidates[0], data, path)
    errors = []
    for member in candidates:
        try:
            return _decode(member, data, path)
        except CodecError as exc:
            errors.append(str(exc))
    raise CodecError("; ".join(errors))


def _decode_dataclass(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise CodecError(f"{path}: expected an object, got {_kind(data)}")
    kwargs = {}
    for name, hint, required in _init_fields(cls):
        if name in data:
            kwargs[name] = _decode(hint, data[name], f"{path}.{name}")
        elif required:
            raise CodecError(f"{path}.{name}: missing required field")
    return cls(**kwargs)


def _kind(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, (int, float)):
        return f"the number {data!r}"
    if isinstance(data, str):
        return f"the string {data[:40]!r}"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, dict):
        return "an object"
    return type(data).__name__
