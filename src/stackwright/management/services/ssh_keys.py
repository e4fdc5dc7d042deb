"""SSH key pairs of accounts and the user data of guests.

A key pair is an account's named OpenSSH public key with its fingerprint, computed as
CloudStack does (the MD5 digest of the key blob, as colon-separated hex). createSSHKeyPair
generates an RSA key pair: the private key is in the answer once and is never stored.
Guests name their key pairs and carry base64 user data at deploy time; both are stored and
shown. Handing them to the guest (a config drive or metadata service) is not done yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from ..errors import InvalidParameterValue
from ..persistence.models import SshKeyPair

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..context import Context
    from ..persistence.models import Account

KEY_BITS = 2048
MAX_USER_DATA_SETTING = "vm.userdata.max.length"
# What vm.userdata.max.length may be raised to (CloudStack's ceiling).
USER_DATA_CEILING = 1048576
INVALID_KEY = ("Public key is invalid: expected an OpenSSH public key, its type (ssh-rsa, ssh-ed25519, "
               "ecdsa-sha2-nistp256 ...) then the base64 key, optionally followed by a comment")


def fingerprint(blob: bytes) -> str:
    """CloudStack's fingerprint of a public key blob: MD5, as colon-separated lower-case hex."""
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def parse_public_key(text: str) -> tuple[str, str]:
    """(the key as stored: type and base64, without comment; its fingerprint), or a clear error."""
    parts = (text or "").strip().split()
    if len(parts) < 2:
        raise InvalidParameterValue(INVALID_KEY)
    try:
        blob = base64.b64decode(parts[1], validate=True)
        serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise InvalidParameterValue(INVALID_KEY) from None
    return f"{parts[0]} {parts[1]}", fingerprint(blob)


def generate_key_pair() -> tuple[str, str, str]:
    """A new RSA key pair: (OpenSSH public key, its fingerprint, PEM private key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode("ascii")
    stored, print_ = parse_public_key(public)
    return stored, print_, private


class SshKeyService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    def find(self, owner: Account, name: str) -> SshKeyPair | None:
        return self.session.execute(
            select(SshKeyPair).where(SshKeyPair.account_id == owner.id,
                                     func.lower(SshKeyPair.name) == name.lower())).scalars().first()

    def _check_new(self, owner: Account, name: str, print_: str) -> None:
        if not name or not name.strip():
            raise InvalidParameterValue("Please give the key pair a name")
        if self.find(owner, name) is not None:
            raise InvalidParameterValue(f"A key pair with name '{name}' already exists for account {owner.name}.")
        same = self.session.execute(select(SshKeyPair.name).where(
            SshKeyPair.account_id == owner.id, SshKeyPair.fingerprint == print_)).scalars().first()
        if same is not None:
            raise InvalidParameterValue(
                f"A key pair with the same public key already exists for account {owner.name}: '{same}'.")

    def _add(self, owner: Account, name: str, public_key: str, print_: str) -> SshKeyPair:
        pair = SshKeyPair(name=name, fingerprint=print_, public_key=public_key, account_id=owner.id,
                          domain_id=owner.domain_id)
        self.session.add(pair)
        self.session.flush()
        return pair

    def create(self, owner: Account, name: str) -> tuple[SshKeyPair, str]:
        """createSSHKeyPair: the stored pair and the private key, which is not kept."""
        public, print_, private = generate_key_pair()
        self._check_new(owner, name, print_)
        pair = self._add(owner, name, public, print_)
        self.ctx.event("REGISTER.SSH.KEYPAIR", f"Created SSH key pair {name} for account {owner.name}", pair.uuid)
        return pair, private

    def register(self, owner: Account, name: str, public_key: str) -> SshKeyPair:
        stored, print_ = parse_public_key(public_key)
        self._check_new(owner, name, print_)
        pair = self._add(owner, name, stored, print_)
        self.ctx.event("REGISTER.SSH.KEYPAIR", f"Registered SSH key pair {name} for account {owner.name}", pair.uuid)
        return pair

    def delete(self, owner: Account, name: str) -> None:
        pair = self.find(owner, name)
        if pair is None:
            raise InvalidParameterValue(
                f"A key pair with name '{name}' does not exist for account {owner.name} in the specified domain")
        self.ctx.event("DELETE.SSH.KEYPAIR", f"Deleted SSH key pair {pair.name} of account {owner.name}", pair.uuid)
        self.session.delete(pair)
        self.session.flush()

    def named(self, owner: Account, names: Sequence[str]) -> list[SshKeyPair]:
        """The owner's key pairs named for a deployment, in order, each once."""
        pairs: list[SshKeyPair] = []
        for name in names:
            pair = self.find(owner, name)
            if pair is None:
                raise InvalidParameterValue(f"A key pair with name '{name}' was not found for account {owner.name}.")
            if pair not in pairs:
                pairs.append(pair)
        return pairs

    def checked_user_data(self, user_data: str | None) -> str | None:
        """Base64 user data as given, after checking it decodes and is not too long."""
        if user_data is None or user_data == "":
            return None
        limit = min(int(self.ctx.settings.typed(MAX_USER_DATA_SETTING)), USER_DATA_CEILING)
        if len(user_data) > limit:
            raise InvalidParameterValue(
                f"User data is too long: {len(user_data)} characters of base64, more than "
                f"{MAX_USER_DATA_SETTING} ({limit})")
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameterValue("User data is not base64 encoded") from None
        return user_data
