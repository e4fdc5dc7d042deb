"""Stored credentials encrypted at rest with a key kept outside the database.

Columns typed `Encrypted` (API secret keys, storage URLs that may carry a Ceph secret) or
`EncryptedJSON` (image store details, which may carry S3 keys) hold a Fernet token (AES-128-CBC with an HMAC-SHA256), never the value itself. The key is a file,
/etc/cloudstack/management/key by default (next to the database for an SQLite database given
no other path), mode 0600, written once by `stackwright-setup-databases` and read by the
engine at start; its content is never logged. A copy of the database without the key file
reveals no secret.

The key is process-wide (`install`): one engine process serves one database.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import String, Text
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect

log = logging.getLogger(__name__)

DEFAULT_KEY_FILE = "/etc/cloudstack/management/key"
TOKEN_PREFIX = "gAAAAA"      # every Fernet token (version byte 0x80 and a 64-bit timestamp)


class KeyFileError(Exception):
    pass


def default_key_file(db_url: str) -> str:
    """Where the key lives unless configured: next to an SQLite database file, else
    /etc/cloudstack/management/key."""
    if db_url.startswith("sqlite") and ":///" in db_url:
        path = db_url.split(":///", 1)[1]
        if path and path != ":memory:":
            return os.path.join(os.path.dirname(os.path.abspath(path)), "key")
    return DEFAULT_KEY_FILE


def read_key(path: str) -> bytes | None:
    """The key in `path`, or None when there is no such file."""
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise KeyFileError(f"cannot read the key file {path}: {e.strerror}") from None
    try:
        Fernet(key)
    except ValueError:
        raise KeyFileError(f"the key file {path} does not hold a valid key") from None
    return key


def ensure_key(path: str) -> tuple[bytes | None, bool]:
    """The key in `path`, created (mode 0600, atomically) when there is none yet. An existing
    key is kept, whatever else changes: the stored secrets depend on it. Returns (key, created)."""
    key = read_key(path)
    if key is not None:
        os.chmod(path, 0o600)
        return key, False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:        # created meanwhile by another run: use that one
        return read_key(path), False
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)
    return key, True


class SecretBox:
    # Tokens decrypted so far: every load of a row with an encrypted column (a user's, on
    # each request that reads it) would otherwise verify and decrypt the same token again.
    # A token has one clear text under one key; the box, and this memo with it, is per key.
    MEMO_SIZE = 4096

    def __init__(self, key: bytes):
        self._fernet = Fernet(key)
        self._clear: dict[str, str] = {}

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        clear = self._clear.get(token)
        if clear is None:
            clear = self._fernet.decrypt(token.encode()).decode()
            if len(self._clear) >= self.MEMO_SIZE:
                self._clear.clear()
            self._clear[token] = clear
        return clear


_box = None


def install(key: bytes | None) -> None:
    """Use `key` (bytes, or None for no key) for every Encrypted column of this process."""
    global _box
    _box = SecretBox(key) if key is not None else None


def installed() -> bool:
    return _box is not None


def seal(text: str) -> str:
    """`text` as a Fernet token, for a secret that passes through plain records (a job's step
    outcomes) on its way to an agent; `unseal` gives it back."""
    if _box is None:
        raise KeyFileError("no key to encrypt stored credentials: run stackwright-setup-databases")
    return _box.encrypt(text)


def unseal(token: str) -> str:
    if _box is None:
        raise KeyFileError("no key to decrypt stored credentials: run stackwright-setup-databases")
    return _box.decrypt(token)


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


class Encrypted(TypeDecorator):
    """A string column stored as a Fernet token. A value written before encryption was
    introduced (clear text) still reads until `stackwright-setup-databases` encrypts it."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if _box is None:
            raise KeyFileError("no key to encrypt stored credentials: run stackwright-setup-databases")
        return _box.encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not is_encrypted(value):
            return value
        if _box is None:
            log.error("a stored credential is encrypted but no key file was loaded")
            return None
        try:
            return _box.decrypt(value)
        except InvalidToken:
            log.error("a stored credential does not decrypt with the key file in use")
            return None


def encrypt_in_place(connection: Connection, table: str, column: str, key_column: str = "id") -> int:
    """Encrypt the clear values left in `table.column` (a database written before encryption
    at rest); returns how many were encrypted. Needs the key installed."""
    from sqlalchemy import column as col
    from sqlalchemy import select, table as tbl, update

    t = tbl(table, col(key_column), col(column))
    rows = connection.execute(select(t.c[key_column], t.c[column])).all()
    done = 0
    for row_id, value in rows:
        if value is None or is_encrypted(value):
            continue
        connection.execute(update(t).where(t.c[key_column] == row_id).values({column: _box.encrypt(value)}))
        done += 1
    return done


class EncryptedJSON(Encrypted):
    """A JSON value (an image store's details, which may hold S3 access and secret keys) stored
    as a Fernet token of its JSON text. Clear JSON written before encryption still reads."""

    impl = Text
    cache_ok = True

    def __init__(self) -> None:
        super().__init__()

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return super().process_bind_param(json.dumps(value, sort_keys=True), dialect)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        text = super().process_result_value(value, dialect)
        return None if text is None else json.loads(text)
