"""agent.properties: reading, validating, and rewriting it without losing anything.

Key names follow CloudStack's agent (``host``, ``port``, ``zone``, ``pod``,
``cluster``, ``guid``, ``*.network.device``, ``workers``); Stackwright's own keys
are listed in `OWN_KEYS` and documented in docs/agent.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from stackwright import properties
from stackwright.agent.errors import ConfigError
from stackwright.agent.link import LB_ALGORITHMS, parse_endpoints
from stackwright.protocol.pki import write_file_atomic

CONFIG_DIR = Path("/etc/cloudstack/agent")
DEFAULT_PROPERTIES = CONFIG_DIR / "agent.properties"
DEFAULT_LOG_FILE = Path("/var/log/cloudstack/agent/agent.log")
DEFAULT_PORT = 8250
DEFAULT_POOLS_FILE = Path("/var/lib/stackwright/agent/pools.json")

# Stackwright keys (CloudStack's own keys are read by their usual names).
OWN_KEYS = {
    "hypervisor.driver": "libvirt | simulator (default libvirt)",
    "libvirt.uri": "libvirt connection URI (default qemu:///system)",
    "tls.enabled": "true | false (default true); false means plain TCP",
    "tls.key.file": "agent private key (default /etc/cloudstack/agent/cloud.key)",
    "tls.cert.file": "agent certificate (default /etc/cloudstack/agent/cloud.crt)",
    "tls.ca.file": "engine CA certificate (default /etc/cloudstack/agent/cloud.ca.crt)",
    "guest.accel": "libvirt: how guests run: auto | kvm | tcg (default auto: kvm where libvirt offers it)",
    "storage.mode": "NFS primary storage attach mode: auto | kernel | userspace (default auto)",
    "storage.mount.dir": "where kernel NFS mounts go (default: the storage driver's)",
    "ha.pools.file": "where the agent lists the primary pools it attached, for the heartbeat service "
                     "(default /var/lib/stackwright/agent/pools.json)",
    "ha.heartbeat.interval": "seconds between two heartbeats of stackwright-heartbeat (default 60)",
    "reconnect.backoff.initial": "first reconnect delay in seconds (default 2, at most 5)",
    "reconnect.backoff.max": "longest reconnect delay in seconds (default 5, like CloudStack's agent)",
    "simulator.cpus": "simulator: logical CPUs (default 8)",
    "simulator.cpu.mhz": "simulator: CPU speed in MHz (default 2400)",
    "simulator.memory.mb": "simulator: memory in MiB (default 16384)",
}

SECRET_KEY_PATTERN = re.compile(r"(pass|secret|token|password|passphrase)", re.IGNORECASE)
HYPERVISOR_DRIVERS = ("libvirt", "simulator")
STORAGE_MODES = ("auto", "kernel", "userspace")
GUEST_ACCELS = ("auto", "kvm", "tcg")


# -- the file format ---------------------------------------------------------------


class PropertiesFile(properties.PropertiesFile):
    """agent.properties as lines (see `stackwright.properties`); saved owner-only when it holds secrets."""

    @classmethod
    def read(cls, path: Path | str) -> PropertiesFile:
        try:
            return super().read(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None

    def holds_secrets(self) -> bool:
        return any(SECRET_KEY_PATTERN.search(key) for key in self.as_dict())

    def save(self) -> bool:
        """Write atomically if the content differs; 0600 when it holds secrets. True when written."""
        data = self.render().encode()
        try:
            current = self.path.read_bytes()
            current_mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            current, current_mode = None, None
        mode = 0o600 if self.holds_secrets() else (current_mode if current_mode is not None else 0o644)
        if current == data and current_mode == mode:
            return False
        write_file_atomic(self.path, data, mode)
        return True


# -- typed configuration -------------------------------------------------------------


@dataclass
class AgentConfig:
    """The agent's settings, validated."""

    hosts: list[str]
    port: int = DEFAULT_PORT
    zone: str = ""
    pod: str = ""
    cluster: str = ""
    guid: str = ""
    private_network_device: str = ""
    public_network_device: str = ""
    guest_network_device: str = ""
    workers: int = 5
    hypervisor_driver: str = "libvirt"
    libvirt_uri: str = "qemu:///system"
    guest_accel: str = "auto"
    tls: bool = True
    key_file: Path = CONFIG_DIR / "cloud.key"
    cert_file: Path = CONFIG_DIR / "cloud.crt"
    ca_file: Path = CONFIG_DIR / "cloud.ca.crt"
    storage_mode: str = "auto"
    storage_mount_dir: str = ""
    pools_file: Path = DEFAULT_POOLS_FILE
    heartbeat_interval: float = 60.0
    backoff_initial: float = 2.0
    backoff_max: float = 5.0
    simulator_cpus: int = 8
    simulator_cpu_mhz: int = 2400
    simulator_memory_mb: int = 16384
    # The order engines of `host` are tried in, and how often (s) an agent away from its
    # preferred engine looks whether it can go back (0: never); as the engine's settings.
    lb_algorithm: str = "static"
    lb_check_interval: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> AgentConfig:
        path = Path(path)
        if not path.exists():
            raise ConfigError(
                f"{path} does not exist; create it with stackwright-setup-agent "
                "(or pass --properties with the right path)"
            )
        return cls.from_properties(PropertiesFile.read(path).as_dict(), source=str(path))

    @classmethod
    def from_properties(cls, props: dict[str, str], source: str = "agent.properties") -> AgentConfig:
        reader = _Reader(props, source)
        hosts = [h.strip() for h in reader.text("host", "").split(",") if h.strip()]
        if not hosts:
            raise ConfigError(f"{source}: host is not set; set host to the engine address(es), comma separated")
        try:
            parse_endpoints(hosts, DEFAULT_PORT)
        except ValueError as e:
            raise ConfigError(f"{source}: host={','.join(hosts)!r}: {e}") from None
        guid = reader.text("guid", "")
        if not guid:
            raise ConfigError(f"{source}: guid is not set; run stackwright-setup-agent to generate one")
        config = cls(
            hosts=hosts,
            port=reader.integer("port", DEFAULT_PORT, 1, 65535),
            zone=reader.text("zone", ""),
            pod=reader.text("pod", ""),
            cluster=reader.text("cluster", ""),
            guid=guid,
            private_network_device=reader.text("private.network.device", ""),
            public_network_device=reader.text("public.network.device", ""),
            guest_network_device=reader.text("guest.network.device", ""),
            workers=reader.integer("workers", 5, 1, 256),
            hypervisor_driver=reader.choice("hypervisor.driver", "libvirt", HYPERVISOR_DRIVERS),
            libvirt_uri=reader.text("libvirt.uri", "qemu:///system"),
            guest_accel=reader.choice("guest.accel", "auto", GUEST_ACCELS),
            tls=reader.boolean("tls.enabled", True),
            key_file=Path(reader.text("tls.key.file", str(CONFIG_DIR / "cloud.key"))),
            cert_file=Path(reader.text("tls.cert.file", str(CONFIG_DIR / "cloud.crt"))),
            ca_file=Path(reader.text("tls.ca.file", str(CONFIG_DIR / "cloud.ca.crt"))),
            storage_mode=reader.choice("storage.mode", "auto", STORAGE_MODES),
            storage_mount_dir=reader.text("storage.mount.dir", ""),
            pools_file=Path(reader.text("ha.pools.file", str(DEFAULT_POOLS_FILE))),
            heartbeat_interval=reader.number("ha.heartbeat.interval", 60.0, 1.0, 3600.0),
            backoff_initial=reader.number("reconnect.backoff.initial", 2.0, 0.1, 5.0),
            backoff_max=reader.number("reconnect.backoff.max", 5.0, 1.0, 3600.0),
            simulator_cpus=reader.integer("simulator.cpus", 8, 1, 4096),
            simulator_cpu_mhz=reader.integer("simulator.cpu.mhz", 2400, 100, 10000),
            simulator_memory_mb=reader.integer("simulator.memory.mb", 16384, 64, 1 << 24),
            lb_algorithm=reader.choice("indirect.agent.lb.algorithm", "static", LB_ALGORITHMS),
            lb_check_interval=reader.number("indirect.agent.lb.check.interval", 0.0, 0.0, 86400.0),
        )
        config.extra = {k: v for k, v in props.items() if k not in reader.used}
        return config

    def tls_problems(self) -> list[str]:
        """What is missing for a TLS connection, phrased for the operator."""
        problems = []
        for label, path in (("key", self.key_file), ("certificate", self.cert_file), ("CA certificate", self.ca_file)):
            if not path.is_file():
                problems.append(f"agent {label} {path} is missing")
            elif not os.access(path, os.R_OK):
                problems.append(f"agent {label} {path} is not readable")
        return problems


class _Reader:
    def __init__(self, props: dict[str, str], source: str):
        self.props = props
        self.source = source
        self.used: set[str] = set()

    def text(self, key: str, default: str) -> str:
        self.used.add(key)
        return self.props.get(key, default).strip() or default

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        return self._ranged(key, default, low, high, int, "a whole number")

    def number(self, key: str, default: float, low: float, high: float) -> float:
        return self._ranged(key, default, low, high, float, "a number")

    def _ranged(self, key: str, default, low, high, parse, kind: str):
        raw = self.text(key, str(default))
        try:
            value = parse(raw)
        except ValueError:
            raise ConfigError(f"{self.source}: {key}={raw!r} is not {kind}; use {_number(low)}..{_number(high)}") from None
        if not low <= value <= high:
            raise ConfigError(f"{self.source}: {key}={_number(value)} is out of range; use {_number(low)}..{_number(high)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.text(key, "true" if default else "false").lower()
        if raw in ("true", "yes", "1", "on"):
            return True
        if raw in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{self.source}: {key}={raw!r} is not a boolean; use true or false")

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in allowed:
            raise ConfigError(f"{self.source}: {key}={value!r} is not supported; use one of: {', '.join(allowed)}")
        return value


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
