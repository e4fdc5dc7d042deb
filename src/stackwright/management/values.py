"""One strict parser per value type, shared by API parameters and configuration values.

CloudStack reads numbers with Java's `Integer.parseInt`, `Long.parseLong` and
`Float.parseFloat` and booleans as `true`/`false`: ASCII digits only. Python's own `int()`
and `float()` also take `1_000`, full-width or other Unicode digits and surrounding Unicode
spaces, so they are never used on outside input; these functions are. Each raises ValueError
with a short reason, which the caller turns into its own 431 text; ranges are checked here,
so an out-of-range value never reaches the database.
"""

from __future__ import annotations

import ipaddress
import math
import re

INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)
JAVA_FLOAT_MAX = 3.4028235e38

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
_IPV4_CIDR = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}/[0-9]{1,2}", re.ASCII)


def _ascii_text(text: str):
    if not isinstance(text, str):
        raise ValueError("not text")
    return text.strip(" \t\r\n")


def parse_int(text: str, minimum: int = INT64[0], maximum: int = INT64[1]) -> int:
    """A whole number in ASCII digits, within [minimum, maximum] (a Java long by default)."""
    text = _ascii_text(text)
    if not _INTEGER.fullmatch(text):
        raise ValueError("not an integer")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValueError("out of range")
    return value


def parse_decimal(text: str, minimum: float = -JAVA_FLOAT_MAX, maximum: float = JAVA_FLOAT_MAX) -> float:
    """A finite decimal number (digits, one point, an exponent), within [minimum, maximum]."""
    text = _ascii_text(text)
    if not _DECIMAL.fullmatch(text):
        raise ValueError("not a decimal number")
    value = float(text)
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ValueError("out of range")
    return value


def parse_plain_decimal(
    text: str, minimum: float = -JAVA_FLOAT_MAX, maximum: float = JAVA_FLOAT_MAX
) -> float:
    """A non-negative decimal written as digits with at most one point ("2", "1.5"): no sign,
    exponent or bare point, within [minimum, maximum]."""
    if not _PLAIN_DECIMAL.fullmatch(_ascii_text(text)):
        raise ValueError("not a plain decimal number")
    return parse_decimal(text, minimum, maximum)


def parse_bool(text: str) -> bool:
    """`true` or `false` in any case."""
    text = _ascii_text(text).lower()
    if text not in ("true", "false"):
        raise ValueError("not true or false")
    return text == "true"


def parse_size(text: str, unit: int = 1, maximum: int = INT64[1]) -> int:
    """A non-negative count of `unit`s (bytes, MiB, GiB) whose size in bytes fits a Java long,
    so that a column or a computation on it can never overflow."""
    value = parse_int(text, 0, INT64[1])
    if value * unit > maximum:
        raise ValueError("out of range")
    return value


def parse_cidr(text: str) -> ipaddress.IPv4Network:
    """An IPv4 network `a.b.c.d/n` in ASCII; the host bits may be set (as a gateway's CIDR)."""
    text = _ascii_text(text)
    if not _IPV4_CIDR.fullmatch(text):
        raise ValueError("not a CIDR")
    return ipaddress.IPv4Network(text, strict=False)
