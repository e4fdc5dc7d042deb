"""Secrets kept out of error texts and logs: passwords, keys, tokens, signatures.

Every error text an answer carries and every line the engine logs passes through
`redact_text`; a value refused by name (a password with a control character, say) is shown
through `redacted_value`. Log files are created owner read-write, group read (0640).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping

T = TypeVar("T")

MASK = "******"

# Parameter and field names whose values are secret (compared in lower case).
SECRET_NAMES = frozenset({
    "password", "currentpassword", "newpassword", "secretkey", "secret", "apikey", "signature",
    "sessionkey", "token", "jsessionid", "userkey", "privatekey", "encryptionkey",
})

_NAMES = "|".join(sorted((re.escape(n) for n in SECRET_NAMES), key=len, reverse=True))
# name=value (query strings, ini lines), name: value, "name": "value" (JSON, dict reprs).
_ASSIGNED = re.compile(
    rf"""(?P<name>\b(?:{_NAMES}))(?P<sep>["']?\s*[=:]\s*["']?)(?P<value>[^\s&"',}}\]]+)""",
    re.IGNORECASE,
)
# Credentials inside URLs: scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<value>[^@\s/]+)(?=@)")
# Fernet tokens (stored encrypted credentials) never appear either.
_FERNET = re.compile(r"gAAAAA[A-Za-z0-9_=-]{40,}")


def is_secret(name: str) -> bool:
    name = (name or "").lower()
    return name in SECRET_NAMES or name.endswith("password") or name.endswith("secret")


def redacted_value(name: str, value: T) -> T | str:
    """`value` as an error text may show it: masked when parameter `name` is a secret."""
    return MASK if is_secret(name) else value


def redact_text(text: str) -> str:
    """`text` with every secret it recognisably carries replaced by the mask."""
    if not text:
        return text
    text = _ASSIGNED.sub(lambda m: m["name"] + m["sep"] + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _FERNET.sub(MASK, text)


def redact_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A request's parameters with secret values masked, for logging."""
    return {k: redacted_value(k, v) for k, v in raw.items()}


class RedactingFormatter(logging.Formatter):
    """Formats a record, its arguments and any traceback included, then masks secrets."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class PrivateFileHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler whose file, when it creates one, is 0640 whatever the umask; an
    existing file is brought to 0640 when opened."""

    MODE = 0o640

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self.MODE)
        os.fchmod(fd, self.MODE)
        return os.fdopen(fd, self.mode.replace("w", "a"), encoding=self.encoding, errors=self.errors)
