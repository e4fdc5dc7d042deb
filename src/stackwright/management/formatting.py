"""Values written the way CloudStack clients expect them: dates, ratios, objects without nulls.

Commands shape their answers with these, and services that store or compare such values use
the same forms; the API's envelope and JSON encoding stay in `api/render.py`.
"""

import datetime as dt
from collections.abc import Mapping
from typing import Any


def date(value: dt.datetime | None) -> str | None:
    """CloudStack's date form, always UTC: 2024-05-01T12:34:56+0000."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    # isoformat() is several times faster than strftime(), which matters on long lists.
    return value.isoformat(timespec="seconds") + "+0000"


def ratio(value: object) -> str | None:
    """Over-commit ratios and factors are strings that keep a decimal point: "1.0", "2.5"."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return repr(f) if f != int(f) else f"{f:.1f}"


def compact(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None-valued fields (CloudStack omits nulls); keeps empty lists such as zone tags."""
    return {k: v for k, v in obj.items() if v is not None}
