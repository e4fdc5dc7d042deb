"""``stackwright-setup-agent``: write agent.properties and enroll the host with the engine.

Idempotent, like ``cloudstack-setup-agent``: keys given on the command line are
set, every other line of the file (unknown keys, comments) is kept, and the file
is rewritten only when something changes.  With ``--token`` the host enrolls:
it generates a key and a CSR, checks the engine's CA against the fingerprint
carried in the token, and stores key, certificate and CA certificate (0600).
A host that already holds a valid certificate for its guid from that CA is not
enrolled again unless ``--force-enroll`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import ssl
import sys
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from stackwright.agent.config import DEFAULT_PROPERTIES, AgentConfig, PropertiesFile
from stackwright.agent.errors import AgentError, ConfigError, EnrollmentError
from stackwright.agent.link import parse_endpoints
from stackwright.protocol.channel import Channel, ChannelClosed, RemoteError
from stackwright.protocol.messages import CaAnswer, Enroll, EnrollAnswer, GetCa
from stackwright.protocol.pki import (
    CertificateError,
    check_issued_by,
    common_name,
    enrollment_context,
    fingerprint,
    load_cert,
    new_key_and_csr,
    split_token,
    write_file_atomic,
)

log = logging.getLogger(__name__)

# command-line option -> agent.properties key
OPTION_KEYS = {
    "host": "host",
    "port": "port",
    "zone": "zone",
    "pod": "pod",
    "cluster": "cluster",
    "guid": "guid",
    "private_device": "private.network.device",
    "public_device": "public.network.device",
    "guest_device": "guest.network.device",
    "workers": "workers",
    "hypervisor_driver": "hypervisor.driver",
    "libvirt_uri": "libvirt.uri",
    "storage_mode": "storage.mode",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stackwright-setup-agent",
        description="Configure agent.properties and enroll this host with the Stackwright engine.",
    )
    parser.add_argument("--properties", type=Path, default=DEFAULT_PROPERTIES, help="agent.properties path")
    parser.add_argument("--host", "-m", help="engine address(es), comma separated")
    parser.add_argument("--port", type=int, help="engine agent port (8250)")
    parser.add_argument("--zone", "-z")
    parser.add_argument("--pod", "-p")
    parser.add_argument("--cluster", "-c")
    parser.add_argument("--guid", "-g", help="host guid (generated once when absent)")
    parser.add_argument("--private-device", help="private.network.device (e.g. cloudbr0)")
    parser.add_argument("--public-device", help="public.network.device")
    parser.add_argument("--guest-device", help="guest.network.device")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--hypervisor-driver", choices=("libvirt", "simulator"))
    parser.add_argument("--libvirt-uri")
    parser.add_argument("--storage-mode", choices=("auto", "kernel", "userspace"))
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls", dest="tls", action="store_const", const=True, help="use TLS (the default)")
    tls.add_argument("--no-tls", dest="tls", action="store_const", const=False, help="plain TCP (trusted networks only)")
    parser.add_argument("--cert-dir", type=Path, help="where the key and certificates go (default: next to agent.properties)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other key; repeatable")
    parser.add_argument("--token", help="one-time enrollment token issued by the engine")
    parser.add_argument("--token-file", type=Path, help="read the enrollment token from a file")
    parser.add_argument("--force-enroll", action="store_true", help="enroll even if a valid certificate exists")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the engine")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def desired_settings(args: argparse.Namespace, current: dict[str, str]) -> dict[str, str]:
    """The keys this run sets, as strings."""
    wanted: dict[str, str] = {}
    for option, key in OPTION_KEYS.items():
        value = getattr(args, option)
        if value is not None:
            wanted[key] = str(value)
    if args.tls is not None:
        wanted["tls.enabled"] = "true" if args.tls else "false"
    if args.cert_dir is not None:
        cert_dir = args.cert_dir.resolve()
        wanted["tls.key.file"] = str(cert_dir / "cloud.key")
        wanted["tls.cert.file"] = str(cert_dir / "cloud.crt")
        wanted["tls.ca.file"] = str(cert_dir / "cloud.ca.crt")
    elif "tls.key.file" not in current and args.properties.resolve().parent != DEFAULT_PROPERTIES.parent:
        # Keep the credentials beside a non-default agent.properties rather than in /etc.
        base = args.properties.resolve().parent
        wanted.update({"tls.key.file": str(base / "cloud.key"), "tls.cert.file": str(base / "cloud.crt"),
                       "tls.ca.file": str(base / "cloud.ca.crt")})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        wanted[key.strip()] = value.strip()
    if not wanted.get("guid") and not current.get("guid"):
        wanted["guid"] = str(uuid.uuid4())
    return wanted


def configure(args: argparse.Namespace) -> tuple[AgentConfig, bool]:
    """Apply the command line to agent.properties; return the validated config and whether the file changed."""
    props = PropertiesFile.read(args.properties)
    wanted = desired_settings(args, props.as_dict())
    for key, value in wanted.items():
        props.set(key, value)
    config = AgentConfig.from_properties(props.as_dict(), source=str(args.properties))
    return config, props.save()


def already_enrolled(config: AgentConfig, ca_fingerprint: str) -> bool:
    """True when key, certificate and CA on disk belong together, to this guid, and to the token's CA."""
    if config.tls_problems():
        return False
    try:
        ca = load_cert(config.ca_file.read_bytes())
        cert = load_cert(config.cert_file.read_bytes())
        key = serialization.load_pem_private_key(config.key_file.read_bytes(), password=None)
        check_issued_by(cert, ca)
    except (CertificateError, ValueError, OSError):
        return False
    return fingerprint(ca) == ca_fingerprint and common_name(cert) == config.guid and cert.public_key() == key.public_key()


async def enroll(config: AgentConfig, token: str, timeout: float = 15.0) -> str:
    """Obtain and store a certificate; return the engine endpoint that issued it."""
    try:
        secret, ca_fingerprint = split_token(token)
    except ValueError as exc:
        raise EnrollmentError(str(exc)) from None
    failures = []
    try:
        endpoints = parse_endpoints(config.hosts, config.port)
    except ValueError as exc:
        raise EnrollmentError(str(exc)) from None
    # Each address of `host` with its own port, or `port` (HOST or HOST:PORT, as the agent connects).
    for host, port in endpoints:
        endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            await _enroll_with(endpoint, host, port, config, secret, ca_fingerprint, timeout)
            return endpoint
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            failures.append(f"{endpoint}: {exc or type(exc).__name__}")
    raise EnrollmentError("cannot reach any engine to enroll: " + "; ".join(failures))


async def _enroll_with(endpoint: str, host: str, port: int, config: AgentConfig, secret: str, ca_fp: str,
                       timeout: float) -> None:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, ssl=enrollment_context())

    async def no_requests(frame):
        return None

    channel = Channel(reader, writer, peer=f"engine {endpoint}", on_request=no_requests)
    reader_task = asyncio.create_task(channel.run())
    try:
        ca_answer = await channel.request(GetCa(), timeout)
        assert isinstance(ca_answer, CaAnswer)
        ca = load_cert(ca_answer.ca_pem)
        if fingerprint(ca) != ca_fp:
            raise EnrollmentError(
                f"engine {endpoint} presents CA {fingerprint(ca)}, but the token expects {ca_fp}; "
                "check the host setting or ask for a token from this engine"
            )
        server_cert = load_cert(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        check_issued_by(server_cert, ca)
        key_pem, csr_pem = new_key_and_csr(config.guid)
        answer = await channel.request(
            Enroll(token=secret, csr_pem=csr_pem.decode(), guid=config.guid, hostname=socket.gethostname()), timeout
        )
        assert isinstance(answer, EnrollAnswer)
        cert = load_cert(answer.cert_pem)
        check_issued_by(cert, ca)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if cert.public_key() != key.public_key() or common_name(cert) != config.guid:
            raise EnrollmentError(f"engine {endpoint} returned a certificate that does not match this host's key")
    except RemoteError as exc:
        raise EnrollmentError(f"engine {endpoint} refused enrollment: {exc.message}") from None
    except ChannelClosed as exc:
        raise EnrollmentError(f"engine {endpoint} closed the connection during enrollment: {exc}") from None
    except CertificateError as exc:
        raise EnrollmentError(f"engine {endpoint}: {exc}") from None
    finally:
        await channel.close("enrollment finished")
        await asyncio.gather(reader_task, return_exceptions=True)
    write_file_atomic(config.ca_file, answer.ca_pem.encode(), 0o600)
    write_file_atomic(config.key_file, key_pem, 0o600)
    write_file_atomic(config.cert_file, answer.cert_pem.encode(), 0o600)


def run(args: argparse.Namespace) -> dict[str, object]:
    config, properties_changed = configure(args)
    result: dict[str, object] = {
        "properties": str(args.properties),
        "properties_changed": properties_changed,
        "guid": config.guid,
        "enrolled": False,
    }
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
    if token:
        if not config.tls:
            raise ConfigError("--token given but tls.enabled is false; enrollment needs TLS")
        try:
            _secret, ca_fp = split_token(token)
        except ValueError as exc:
            raise EnrollmentError(str(exc)) from None
        if args.force_enroll or not already_enrolled(config, ca_fp):
            result["engine"] = asyncio.run(enroll(config, token, args.timeout))
            result["enrolled"] = True
    result["changed"] = bool(properties_changed or result["enrolled"])
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (AgentError, OSError) as exc:
        if isinstance(exc, OSError):
            exc = ConfigError(f"{exc.filename or 'file'}: {exc.strerror or exc}")
        if args.json:
            print(json.dumps({"failed": True, "msg": str(exc)}))
        else:
            print(f"stackwright-setup-agent: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{result['properties']}: {'updated' if result['properties_changed'] else 'unchanged'} (guid {result['guid']})")
        if result["enrolled"]:
            print(f"enrolled with engine {result['engine']}; certificate saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
