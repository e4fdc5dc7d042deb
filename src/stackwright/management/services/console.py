"""Guest consoles: VNC passwords, one-time console tokens, and the RFB handshake of the proxy.

Every guest gets a VNC password of its own on its first start (`vnc_password_for`), kept
encrypted in the database. It reaches the agent inside the StartVm spec; on the way it sits in
the job's recorded step outcomes, so it is sealed there (a Fernet token, `seal`) and opened
only when the request is sent (`opened`).

`createConsoleEndpoint` issues a token (`ConsoleTokens.issue`) bound to one VM; the console
proxy (api/console.py) redeems it once, within `consoleproxy.token.timeout` seconds. The
proxy connects to the guest's VNC display, answers its VNC authentication challenge with the
password (`to_server`), and offers the browser the security type None
(`to_browser`): the password never reaches the browser. After both
handshakes the bytes are relayed unchanged.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from stackwright.protocol import messages as m

from ..persistence import crypto
from ..persistence.models import Host, VmInstance
from .gateway import HostRef

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.orm import Session

# VNC authentication uses the first 8 bytes of the password only.
VNC_PASSWORD_LENGTH = 8
VNC_PASSWORD_ALPHABET = string.ascii_letters + string.digits
TOKEN_BYTES = 32


# --- the guest's VNC password -----------------------------------------------------------


def new_vnc_password() -> str:
    return "".join(secrets.choice(VNC_PASSWORD_ALPHABET) for _unused in range(VNC_PASSWORD_LENGTH))


def vnc_password_for(vm: VmInstance) -> str:
    """The guest's VNC password, created on first use (the caller holds the VM's row locked)."""
    if not vm.vnc_password:
        vm.vnc_password = new_vnc_password()
    return vm.vnc_password


def seal(password: str) -> str:
    return crypto.seal(password)


def opened(spec: m.VmSpec) -> m.VmSpec:
    """`spec` with its sealed VNC password opened, as the agent gets it."""
    if spec.vnc_password and crypto.is_encrypted(spec.vnc_password):
        return dataclasses.replace(spec, vnc_password=crypto.unseal(spec.vnc_password))
    return spec


# --- one-time tokens ------------------------------------------------------------------------


class TokenRefused(Exception):
    """A console token that cannot be used; the text says why, for the browser."""


@dataclass(frozen=True)
class ConsoleGrant:
    token: str
    vm_id: int
    vm_uuid: str
    expires: float          # time.monotonic() deadline


class ConsoleTokens:
    """The engine's console tokens, in memory: each names one VM, is good once, and expires
    `timeout` seconds after it was issued. A used or expired token is remembered for
    `REMEMBER` seconds more, so its refusal says which it was."""

    REMEMBER = 3600.0
    USED = "this console URL was already used; request a new one (createConsoleEndpoint)"
    EXPIRED = "this console URL has expired; request a new one (createConsoleEndpoint)"
    UNKNOWN = "this console URL is not valid; request a new one (createConsoleEndpoint)"

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, ConsoleGrant] = {}
        self._ended: dict[str, tuple[float, str]] = {}     # token -> (when to forget it, why it ended)

    def issue(self, vm_id: int, vm_uuid: str, timeout: float) -> ConsoleGrant:
        now = self._clock()
        grant = ConsoleGrant(secrets.token_urlsafe(TOKEN_BYTES), vm_id, vm_uuid, now + timeout)
        with self._lock:
            self._sweep(now)
            self._live[grant.token] = grant
        return grant

    def redeem(self, token: str) -> ConsoleGrant:
        """The grant of `token`, which cannot be used again; TokenRefused when it is unknown,
        used or expired."""
        now = self._clock()
        with self._lock:
            self._sweep(now)
            grant = self._live.pop(token, None)
            if grant is None:
                ended = self._ended.get(token)
                raise TokenRefused(ended[1] if ended else self.UNKNOWN)
            self._ended[token] = (now + self.REMEMBER, self.USED)
            return grant

    def _sweep(self, now: float) -> None:
        for token, grant in list(self._live.items()):
            if now > grant.expires:
                del self._live[token]
                self._ended[token] = (now + self.REMEMBER, self.EXPIRED)
        for token, (forget, _why) in list(self._ended.items()):
            if now > forget:
                del self._ended[token]


# --- the RFB handshakes ---------------------------------------------------------------------

RFB_38 = b"RFB 003.008\n"
SECURITY_NONE = 1
SECURITY_VNC = 2


class VncError(Exception):
    """The guest's VNC server refused or broke the handshake."""


def vnc_response(password: str, challenge: bytes) -> bytes:
    """VNC authentication's answer: the 16-byte challenge encrypted with DES (ECB) under the
    password's first 8 bytes (zero-padded), each key byte's bits reversed as VNC does."""
    if len(challenge) != 16:
        raise VncError(f"VNC challenge of {len(challenge)} bytes (16 expected)")
    key = password.encode("latin-1", "replace")[:8].ljust(8, b"\0")
    key = bytes(int(f"{byte:08b}"[::-1], 2) for byte in key)
    # Single DES: Triple DES with the same key three times is DES.
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def _version(text: bytes) -> tuple[int, int]:
    if len(text) != 12 or not text.startswith(b"RFB ") or text[7:8] != b"." or text[11:12] != b"\n":
        raise VncError(f"not an RFB protocol version: {text!r}")
    try:
        return int(text[4:7]), int(text[8:11])
    except ValueError:
        raise VncError(f"not an RFB protocol version: {text!r}") from None


async def _reason(receive: Callable[[int], Awaitable[bytes]]) -> str:
    (length,) = struct.unpack(">I", await receive(4))
    return (await receive(min(length, 4096))).decode("utf-8", "replace")


async def to_server(receive: Callable[[int], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]],
                    password: str | None) -> None:
    """As the client of the guest's VNC server: agree on RFB 3.8 (or 3.7/3.3) and authenticate
    with `password` (VNC authentication), or with None when the server offers it."""
    major, minor = _version(await receive(12))
    if (major, minor) < (3, 3):
        raise VncError(f"VNC server speaks RFB {major}.{minor}, older than 3.3")
    minor = 8 if (major, minor) >= (3, 8) else 7 if minor >= 7 else 3
    await send(b"RFB 003.%03d\n" % minor)
    if minor == 3:
        (chosen,) = struct.unpack(">I", await receive(4))
        if chosen == 0:
            raise VncError(f"VNC server refused the connection: {await _reason(receive)}")
    else:
        (count,) = await receive(1)
        if count == 0:
            raise VncError(f"VNC server refused the connection: {await _reason(receive)}")
        offered = await receive(count)
        if password and SECURITY_VNC in offered:
            chosen = SECURITY_VNC
        elif SECURITY_NONE in offered:
            chosen = SECURITY_NONE
        elif SECURITY_VNC in offered:
            raise VncError("the guest's VNC display asks for a password and none is known for it")
        else:
            raise VncError(f"VNC server offers no supported security type (offered {list(offered)})")
        await send(bytes([chosen]))
    if chosen == SECURITY_VNC:
        if not password:
            raise VncError("the guest's VNC display asks for a password and none is known for it")
        await send(vnc_response(password, await receive(16)))
    elif chosen != SECURITY_NONE:
        raise VncError(f"VNC server chose security type {chosen}, which the proxy does not speak")
    if chosen == SECURITY_VNC or minor == 8:
        (result,) = struct.unpack(">I", await receive(4))
        if result != 0:
            reason = await _reason(receive) if minor == 8 else "authentication failed"
            raise VncError(f"VNC authentication failed: {reason}")


async def to_browser(receive: Callable[[int], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]],
                     refusal: str | None = None) -> None:
    """As the server the browser sees: RFB 3.8 with the security type None, the guest already
    authenticated behind it. With `refusal`, the handshake fails with that reason instead
    (noVNC shows it)."""
    await send(RFB_38)
    major, minor = _version(await receive(12))
    if refusal is not None:
        reason = refusal.encode()
        if (major, minor) >= (3, 7):
            await send(b"\0" + struct.pack(">I", len(reason)) + reason)
        else:
            await send(struct.pack(">II", 0, len(reason)) + reason)
        return
    if (major, minor) >= (3, 7):
        await send(bytes([1, SECURITY_NONE]))
        (chosen,) = await receive(1)
        if chosen != SECURITY_NONE:
            raise VncError(f"the browser chose security type {chosen}; only None is offered")
        if (major, minor) >= (3, 8):
            await send(struct.pack(">I", 0))
    else:
        await send(struct.pack(">I", SECURITY_NONE))


# --- where a console leads --------------------------------------------------------------------

CONSOLE_TIMEOUT = 30.0      # seconds the host's agent has to say where a display listens


@dataclass(frozen=True)
class ConsoleTarget:
    host: HostRef
    host_address: str
    instance_name: str
    password: str | None


def console_target(session: Session, vm_id: int) -> ConsoleTarget:
    """Where the console of VM `vm_id` is now: its host and its password; TokenRefused when it
    has none (not Running any more, expunged)."""
    vm = session.get(VmInstance, vm_id)
    if vm is None or vm.removed is not None:
        raise TokenRefused("the VM of this console URL no longer exists")
    if vm.state != "Running" or vm.host_id is None:
        raise TokenRefused(f"VM {vm.instance_name} is {vm.state}; its console is available while it is Running")
    host = session.get(Host, vm.host_id)
    return ConsoleTarget(HostRef(host.guid or "", host.name), host.ip_address or "", vm.instance_name,
                         vm.vnc_password)


def display_address(target: ConsoleTarget, answer: m.VmConsoleAnswer) -> tuple[str, int]:
    """Where to connect to the display the agent described: its listen address, or the host's
    management address when it listens on every address."""
    address = answer.address
    if not address or address in ("0.0.0.0", "::"):
        address = target.host_address or "127.0.0.1"
    return address, answer.port
