"""CloudStack request signing: canonical query, HMAC-SHA1, expiry (signatureVersion 3).

The canonical form encodes each value like Java's URLEncoder (unreserved: A-Z a-z 0-9 - _ . *,
space as %20), joins the parameters sorted by name, and lower-cases the whole string.
Real clients differ in two characters: `cs` and the Go clients leave `~` raw, the Go clients
encode `*` as %2A. A signature computed under any of these variants is accepted.
"""

import base64
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from urllib.parse import quote

SIGNING_KEYS = ("apikey", "signature", "signatureversion", "expires")


# Values that encode to themselves under every variant (most values: names, UUIDs, numbers).
_PLAIN = re.compile(r"[A-Za-z0-9_.\-]*")


def encode_value(value: str, tilde_raw: bool = False, star_raw: bool = True) -> str:
    if _PLAIN.fullmatch(value):
        return value
    safe = "-_."
    if star_raw:
        safe += "*"
    if tilde_raw:
        safe += "~"
    encoded = quote(value, safe=safe)
    if not tilde_raw:
        encoded = encoded.replace("~", "%7E")
    return encoded


def canonical_query(params: Mapping[str, str], tilde_raw: bool = False, star_raw: bool = True) -> str:
    """The string that is signed: sorted name=value pairs, lower-cased, without `signature`."""
    items = sorted((k, v) for k, v in params.items() if k.lower() != "signature")
    return "&".join(
        f"{k}={encode_value(v, tilde_raw, star_raw)}" for k, v in items
    ).lower()


def sign(params: Mapping[str, str], secret: str, **variant: bool) -> str:
    digest = hmac.new(
        secret.encode(), canonical_query(params, **variant).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def _variants(params: Mapping[str, str]) -> Iterator[dict[str, bool]]:
    values = "".join(params.values())
    tildes = (False, True) if "~" in values else (False,)
    stars = (True, False) if "*" in values else (True,)
    for tilde_raw in tildes:
        for star_raw in stars:
            yield {"tilde_raw": tilde_raw, "star_raw": star_raw}


def verify(params: Mapping[str, str], secret: str | None, signature: str | None) -> bool:
    """True when `signature` signs `params` with `secret` under an accepted encoding."""
    if not signature or not secret:
        return False
    given = signature.encode()
    ok = False
    for variant in _variants(params):
        # Compare every variant, so timing does not reveal which one matched.
        ok |= hmac.compare_digest(sign(params, secret, **variant).encode(), given)
    return ok


_LEGACY_Z = re.compile(r"Z([+-]\d{4})$")
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})$")


def parse_expires(text: str) -> dt.datetime | None:
    """Parse `expires` in any form the clients send; None when it cannot be parsed.

    Accepted: ISO 8601 with an offset or Z, `yyyy-MM-dd'T'HH:mm:ssZ` (+0000), with
    fractional seconds, and the legacy `...Z+0000`.
    """
    s = text.strip()
    s = _LEGACY_Z.sub(r"\1", s)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    s = _OFFSET.sub(r"\1\2:\3", s)
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when


# How far ahead `expires` may be when enforce.post.requests.and.timestamps is on.
MAX_AHEAD = dt.timedelta(minutes=15)


def expired(expires_text: str, now: dt.datetime | None = None,
            max_ahead: dt.timedelta | None = None) -> str | None:
    """None when the request may go on, else the reason it is refused.

    `max_ahead` (a timedelta; MAX_AHEAD under enforce.post.requests.and.timestamps) also
    refuses an `expires` further in the future than that.
    """
    when = parse_expires(expires_text)
    if when is None:
        return "the expires parameter cannot be parsed"
    now = now or dt.datetime.now(dt.timezone.utc)
    if when <= now:
        return f"the request expired at {when.isoformat()}"
    if max_ahead is not None and when > now + max_ahead:
        return f"the request expires at {when.isoformat()}, more than {max_ahead} ahead"
    return None
