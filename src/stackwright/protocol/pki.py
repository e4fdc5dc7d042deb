"""The engine's small certificate authority, enrollment tokens, and TLS contexts.

Trust model: the engine owns a private CA.  Its listener presents a server
certificate issued by that CA; every agent presents a client certificate issued
by it, whose common name is the host's ``guid``.  An agent obtains its
certificate once, by enrolling with a one-time token.

A token reads ``<secret>.<ca-fingerprint>``: the secret authorises one
enrollment (the engine stores only its SHA-256), the fingerprint (SHA-256 of the
CA certificate) lets the agent check it is talking to the right engine before
it sends the secret.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import ipaddress
import json
import os
import secrets
import asyncio.sslproto
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.crt"
SERVER_KEY_FILE = "server.key"
PEER_CERT_FILE = "peer.crt"
PEER_KEY_FILE = "peer.key"
CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 1095
RENEW_BEFORE = datetime.timedelta(days=30)

T = TypeVar("T")


class CertificateError(Exception):
    """A certificate, key or CSR is invalid or was not issued by this CA."""


class EnrollmentRefused(Exception):
    """A token or CSR was rejected; the message is safe to send to the agent."""


# -- files -------------------------------------------------------------------------


def write_file_atomic(path: Path | str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step, created with ``mode`` from the start."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- keys, CSRs, certificates --------------------------------------------------------


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_key_and_csr(common_name: str) -> tuple[bytes, bytes]:
    """A fresh private key and a CSR for ``common_name``, both PEM."""
    key = new_private_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return key_to_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def load_cert(data: bytes | str) -> x509.Certificate:
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise CertificateError(f"not a valid certificate: {exc}") from None


def fingerprint(cert: x509.Certificate | bytes | str) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex."""
    if not isinstance(cert, x509.Certificate):
        cert = load_cert(cert)
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def check_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Raise `CertificateError` unless ``ca_cert`` signed ``cert`` and ``cert`` is within its validity."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(
            f"certificate {common_name(cert)!r} was not issued by CA {fingerprint(ca_cert)}"
        ) from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate {common_name(cert)!r} is not valid now (valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
        )


def csr_public_key(csr_pem: str | bytes):
    """The public key of a well-formed, self-consistent CSR with a strong key; else `CertificateError`."""
    raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as exc:
        raise CertificateError(f"not a valid PEM certificate signing request ({exc})") from None
    if not csr.is_signature_valid:
        raise CertificateError("the certificate signing request's signature does not verify")
    public_key = csr.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        strong = public_key.key_size >= 256
    elif isinstance(public_key, rsa.RSAPublicKey):
        strong = public_key.key_size >= 2048
    else:
        strong = False
    if not strong:
        raise CertificateError("the certificate signing request needs an EC key of 256+ bits or RSA of 2048+ bits")
    return public_key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


class CertificateAuthority:
    """A CA key and certificate kept in ``directory`` (key 0600), issuing engine and agent certificates."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.directory = directory
        self.key = key
        self.cert = cert

    @classmethod
    def load(cls, directory: Path | str) -> CertificateAuthority:
        """Load an existing CA; `CertificateError` names what is missing or wrong."""
        directory = Path(directory)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if not key_path.exists() or not cert_path.exists():
            raise CertificateError(f"{directory} holds no complete CA ({CA_KEY_FILE} and {CA_CERT_FILE})")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, OSError) as exc:
            raise CertificateError(f"{key_path}: not a readable private key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{key_path}: expected an EC private key")
        cert = load_cert(cert_path.read_bytes())
        if cert.public_key() != key.public_key():
            raise CertificateError(f"{cert_path} does not belong to {key_path}; restore the matching pair")
        return cls(directory, key, cert)

    @classmethod
    def load_or_create(cls, directory: Path | str, common_name: str = "Stackwright engine CA") -> CertificateAuthority:
        """Load the CA in ``directory``, creating it (key 0600) the first time."""
        directory = Path(directory)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if key_path.exists() and cert_path.exists():
            return cls.load(directory)
        if key_path.exists() or cert_path.exists():
            raise CertificateError(
                f"{directory} holds only one of {CA_KEY_FILE} and {CA_CERT_FILE}; restore the other or remove both "
                "to create a new CA (every agent must then enroll again)"
            )
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = new_private_key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_file_atomic(key_path, key_to_pem(key), 0o600)
        write_file_atomic(cert_path, cert_to_pem(cert), 0o644)
        return cls(directory, key, cert)

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def ca_pem(self) -> str:
        return cert_to_pem(self.cert).decode()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def _issue(self, public_key, cn: str, days: int, usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier],
               names: Iterable[str] = ()):
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage if isinstance(usage, list) else [usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        names = list(names)
        if names:
            builder = builder.add_extension(_san(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def sign_csr(self, csr_pem: str | bytes, cn: str, days: int = CLIENT_DAYS) -> str:
        """Issue an agent (client) certificate for ``cn`` from a CSR; the CSR's own subject is ignored."""
        public_key = csr_public_key(csr_pem)
        return cert_to_pem(self._issue(public_key, cn, days, ExtendedKeyUsageOID.CLIENT_AUTH)).decode()

    def issue_client_cert(self, cn: str, days: int = CLIENT_DAYS) -> tuple[bytes, bytes]:
        """Key and certificate for an in-process agent (simulated hosts), both PEM."""
        key = new_private_key()
        cert = self._issue(key.public_key(), cn, days, ExtendedKeyUsageOID.CLIENT_AUTH)
        return key_to_pem(key), cert_to_pem(cert)

    def ensure_server_cert(self, names: Iterable[str]) -> tuple[Path, Path]:
        """Issue (or keep) the listener's certificate covering ``names``; return (cert, key) paths."""
        names = sorted(set(names) | {"localhost", "127.0.0.1"})
        cert_path, key_path = self.directory / SERVER_CERT_FILE, self.directory / SERVER_KEY_FILE
        if cert_path.exists() and key_path.exists():
            try:
                current = load_cert(cert_path.read_bytes())
                check_issued_by(current, self.cert)
                san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                covered = {str(v) for v in san.get_values_for_type(x509.DNSName)}
                covered |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
                fresh = current.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE
                if fresh and set(names) <= covered:
                    return cert_path, key_path
            except (CertificateError, x509.ExtensionNotFound):
                pass
        key = new_private_key()
        cert = self._issue(key.public_key(), names[0] if names else "localhost", SERVER_DAYS,
                           ExtendedKeyUsageOID.SERVER_AUTH, names)
        write_file_atomic(key_path, key_to_pem(key), 0o600)
        write_file_atomic(cert_path, cert_to_pem(cert), 0o644)
        return cert_path, key_path

    def issue_peer_cert(self, cn: str, names: Iterable[str]) -> tuple[Path, Path]:
        """A certificate (server and client authentication) with which one management server
        talks to another over mutual TLS; only servers hold a server-auth certificate of the CA,
        agents only client-auth ones. Issued afresh at each start; returns (cert, key) paths."""
        key = new_private_key()
        names = sorted(set(names) | {"localhost", "127.0.0.1"})
        cert = self._issue(key.public_key(), cn, SERVER_DAYS,
                           [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], names)
        cert_path, key_path = self.directory / PEER_CERT_FILE, self.directory / PEER_KEY_FILE
        write_file_atomic(key_path, key_to_pem(key), 0o600)
        write_file_atomic(cert_path, cert_to_pem(cert), 0o644)
        return cert_path, key_path

    def verify(self, cert_pem: str | bytes) -> str:
        """Check a certificate was issued by this CA and is valid now; return its common name."""
        cert = load_cert(cert_pem)
        check_issued_by(cert, self.cert)
        return common_name(cert)


# -- enrollment tokens ------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRecord:
    """What the engine keeps about an unused token (never the token itself)."""

    expires_at: float
    guid: str | None = None
    note: str = ""


class TokenStore(Protocol):
    """Persistence for tokens, keyed by the SHA-256 hex digest of the secret.

    Methods may be plain or ``async``.  ``take`` must be atomic: it removes and
    returns the record, so two concurrent enrollments cannot both use one token.
    """

    def add(self, digest: str, record: TokenRecord) -> None | Awaitable[None]: ...

    def take(self, digest: str) -> TokenRecord | None | Awaitable[TokenRecord | None]: ...


class MemoryTokenStore:
    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}
        self._lock = threading.Lock()

    def add(self, digest: str, record: TokenRecord) -> None:
        with self._lock:
            self._records[digest] = record

    def take(self, digest: str) -> TokenRecord | None:
        with self._lock:
            return self._records.pop(digest, None)


class FileTokenStore:
    """Tokens in a JSON file (0600), rewritten atomically; for single-process engines and tests."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CertificateError(f"{self.path}: unreadable token file ({exc}); remove it and issue new tokens") from None
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, dict]) -> None:
        write_file_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode(), 0o600)

    def add(self, digest: str, record: TokenRecord) -> None:
        with self._lock:
            data = self._load()
            data[digest] = asdict(record)
            self._save(data)

    def take(self, digest: str) -> TokenRecord | None:
        with self._lock:
            data = self._load()
            raw = data.pop(digest, None)
            if raw is None:
                return None
            self._save(data)
            return TokenRecord(**raw)


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """``<secret>.<ca-fingerprint>`` -> (secret, fingerprint); raise ValueError naming the problem."""
    secret, sep, ca_fingerprint = token.strip().rpartition(".")
    if not sep or not secret or len(ca_fingerprint) != 64 or any(c not in "0123456789abcdef" for c in ca_fingerprint):
        raise ValueError(
            "the enrollment token is malformed: expected <secret>.<64 hex digits of the CA fingerprint>, "
            "as printed by the engine when the token was issued"
        )
    return secret, ca_fingerprint


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


class EnrollmentTokens:
    """Issues and redeems one-time enrollment tokens against a `TokenStore`."""

    def __init__(self, store: TokenStore, ca: CertificateAuthority, clock: Callable[[], float] = time.time):
        self.store = store
        self.ca = ca
        self.clock = clock

    async def issue(self, ttl: float = 3600, guid: str | None = None, note: str = "") -> str:
        """A new token valid for ``ttl`` seconds, optionally only for host ``guid``."""
        secret = secrets.token_urlsafe(32)
        await _maybe_await(self.store.add(token_digest(secret), TokenRecord(self.clock() + ttl, guid, note)))
        return f"{secret}.{self.ca.fingerprint}"

    async def redeem(self, secret: str, guid: str) -> TokenRecord:
        """Consume a token for ``guid``; raise `EnrollmentRefused` when it cannot be used."""
        record = await _maybe_await(self.store.take(token_digest(secret)))
        if record is None:
            raise EnrollmentRefused("enrollment token is unknown or was already used; issue a new token on the engine")
        if record.expires_at < self.clock():
            raise EnrollmentRefused("enrollment token has expired; issue a new token on the engine")
        if record.guid and record.guid != guid:
            raise EnrollmentRefused(f"enrollment token was issued for host guid {record.guid}, not {guid}")
        return record


# -- TLS contexts ------------------------------------------------------------------------


# asyncio gives every TLS connection a read buffer of SSLProtocol.max_size (256 KiB),
# allocated and zeroed when the connection opens. The agent channel's frames are small
# and a TLS record carries at most 16 KiB, so 32 KiB loses nothing; for an engine holding
# ten thousand agents it saves over 2 GiB and a share of every reconnect storm's CPU.
TLS_READ_BUFFER = 32 * 1024


def use_small_tls_buffers() -> None:
    """Give this process's asyncio TLS connections TLS_READ_BUFFER-sized read buffers."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def _base_context(purpose: int) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(cert_file: Path | str, key_file: Path | str, ca_file: Path | str) -> ssl.SSLContext:
    """The engine listener's context.

    Client certificates are *optional* at the TLS layer so that an agent
    without one can enroll; any certificate presented must chain to the CA, and
    the session refuses everything except enrollment when none was presented.
    """
    context = _base_context(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_file), str(key_file))
    context.load_verify_locations(cafile=str(ca_file))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(ca_file: Path | str, cert_file: Path | str, key_file: Path | str) -> ssl.SSLContext:
    """An agent's context: trust only the engine's CA, present the agent certificate.

    Host names are not checked: the private CA is the trust anchor and only the
    engine holds a server-auth certificate from it.
    """
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def peer_server_context(cert_file: Path | str, key_file: Path | str, ca_file: Path | str) -> ssl.SSLContext:
    """A management server's engine-to-engine listener: a client certificate of the CA is required
    (`is_server_certificate` then tells a peer server's from an agent's)."""
    context = server_context(cert_file, key_file, ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def is_server_certificate(der: bytes | None) -> bool:
    """Whether a (verified) peer certificate allows server authentication: a management server's."""
    if not der:
        return False
    cert = x509.load_der_x509_certificate(der)
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usages


def enrollment_context() -> ssl.SSLContext:
    """Context for enrolling: the CA is not known yet; the token's fingerprint is checked instead."""
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_common_name(ssl_object: ssl.SSLObject | None) -> str | None:
    """Common name of a verified peer certificate, or None when the peer presented none."""
    if ssl_object is None:
        return None
    peer = ssl_object.getpeercert()
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None
