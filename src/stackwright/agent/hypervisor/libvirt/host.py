"""The libvirt connection and what it says about the host.

`Host` owns the connection: it connects on first use, reconnects when
libvirtd restarted, caches the capabilities, and turns ``libvirtError`` into
agent errors at this boundary.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import libvirt

from stackwright.agent.errors import HypervisorError, HypervisorUnavailable, VmNotFound

log = logging.getLogger(__name__)

SYS_CLASS_NET = Path("/sys/class/net")
KVM_DEVICE = "/dev/kvm"
# Error codes that mean the connection itself is gone, not that a call failed.
CONNECTION_ERRORS = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_INTERNAL_ERROR,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
}


def _silence_libvirt(_context: object, _error: object) -> None:
    """Libvirt prints every error to stderr by default; errors are raised and logged instead."""


libvirt.registerErrorHandler(_silence_libvirt, None)


def format_version(number: int) -> str:
    """Libvirt encodes versions as major * 1,000,000 + minor * 1,000 + micro."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


@dataclass(frozen=True)
class CpuTopology:
    arch: str
    sockets: int
    cores: int
    threads: int
    cpus: int
    mhz: int


@dataclass(frozen=True)
class NicAddress:
    device: str | None
    ip: str | None
    mac: str | None


def list_bridges(sys_class_net: Path = SYS_CLASS_NET) -> list[str]:
    """Linux bridges present on the host (devices with a ``bridge`` directory in sysfs)."""
    try:
        return sorted(entry.name for entry in sys_class_net.iterdir() if (entry / "bridge").is_dir())
    except OSError:
        return []


def _ip_json(*args: str) -> list[dict]:
    try:
        result = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=True,
                                env=dict(os.environ, LC_ALL="C"))
        return json.loads(result.stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("ip %s failed: %s", " ".join(args), exc)
        return []


def default_route_device() -> str | None:
    """The device of the IPv4 default route, used when no private device is configured."""
    for route in _ip_json("-4", "route", "show", "default"):
        if route.get("dev"):
            return route["dev"]
    return None


def nic_address(device: str | None, sys_class_net: Path = SYS_CLASS_NET) -> NicAddress:
    """First IPv4 address and the MAC of ``device`` (the default-route device when None)."""
    device = device or default_route_device()
    if not device:
        return NicAddress(None, None, None)
    try:
        mac = (sys_class_net / device / "address").read_text().strip() or None
    except OSError:
        log.warning("private network device %s does not exist", device)
        return NicAddress(device, None, None)
    ip = None
    for link in _ip_json("-4", "addr", "show", "dev", device):
        for address in link.get("addr_info", []):
            if address.get("family") == "inet" and address.get("local"):
                ip = address["local"]
                break
        if ip:
            break
    return NicAddress(device, ip, mac)


def kvm_device_usable(path: str = KVM_DEVICE) -> bool:
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


class Host:
    """One libvirt connection, opened lazily and reopened after libvirtd restarts."""

    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        self._connection: libvirt.virConnect | None = None
        self._capabilities: ET.Element | None = None
        self._lock = threading.RLock()

    # -- connection --------------------------------------------------------

    def get_connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._connection is not None:
                try:
                    if self._connection.isAlive():
                        return self._connection
                except libvirt.libvirtError:
                    pass
                log.warning("libvirt connection to %s was lost; reconnecting", self.uri)
                self._drop()
            try:
                self._connection = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorUnavailable(
                    f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()}; "
                    "check that libvirtd (and virtlogd) are running"
                ) from None
            log.info("connected to libvirt at %s", self.uri)
            return self._connection

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except libvirt.libvirtError:
                pass
        self._connection = None
        self._capabilities = None

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn libvirt failures inside the block into agent errors."""
        try:
            yield
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            message = exc.get_error_message() or str(exc)
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                raise VmNotFound(f"{action}: {message}") from None
            if code in CONNECTION_ERRORS and self._connection is not None and not self._alive():
                self.close()
                raise HypervisorUnavailable(f"{action}: libvirt at {self.uri} went away: {message}") from None
            raise HypervisorError(f"{action}: {message}") from None

    def _alive(self) -> bool:
        try:
            return bool(self._connection and self._connection.isAlive())
        except libvirt.libvirtError:
            return False

    # -- domains -----------------------------------------------------------

    def find_domain(self, name: str) -> libvirt.virDomain | None:
        connection = self.get_connection()
        try:
            return connection.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            with self.errors(f"look up {name}"):
                raise

    def get_domain(self, name: str) -> libvirt.virDomain:
        domain = self.find_domain(name)
        if domain is None:
            raise VmNotFound(f"virtual machine {name} is not defined on this host ({self.uri})")
        return domain

    def list_domains(self) -> list[libvirt.virDomain]:
        with self.errors("list domains"):
            return self.get_connection().listAllDomains()

    def define(self, xml: str) -> libvirt.virDomain:
        with self.errors("define domain"):
            return self.get_connection().defineXML(xml)

    # -- host facts --------------------------------------------------------

    @property
    def capabilities(self) -> ET.Element:
        with self._lock:
            if self._capabilities is None:
                with self.errors("read capabilities"):
                    self._capabilities = ET.fromstring(self.get_connection().getCapabilities())
            return self._capabilities

    @property
    def driver_type(self) -> str:
        """Libvirt's name for the hypervisor driver: ``QEMU`` or ``TEST``."""
        with self.errors("read hypervisor type"):
            return self.get_connection().getType()

    def hypervisor_version(self) -> str:
        with self.errors("read hypervisor version"):
            return format_version(self.get_connection().getVersion())

    def hostname(self) -> str:
        try:
            return self.get_connection().getHostname()
        except libvirt.libvirtError:
            return socket.gethostname()

    def cpu_topology(self) -> CpuTopology:
        with self.errors("read node info"):
            model, _memory_mib, cpus, mhz, nodes, sockets, cores, threads = self.get_connection().getInfo()
        arch = self.capabilities.findtext("host/cpu/arch") or model
        # getInfo counts sockets per NUMA node.
        return CpuTopology(arch=arch, sockets=max(1, nodes) * sockets, cores=cores, threads=threads,
                           cpus=cpus, mhz=mhz)

    def memory(self) -> tuple[int, int]:
        """(total, free) bytes: node memory stats where the driver has them, else getInfo/freeMemory."""
        connection = self.get_connection()
        try:
            stats = connection.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            free = stats.get("free", 0) + stats.get("buffers", 0) + stats.get("cached", 0)
            return stats["total"] * 1024, free * 1024
        except libvirt.libvirtError:
            pass
        with self.errors("read node memory"):
            total = connection.getInfo()[1] * 1024 * 1024
            try:
                free = connection.getFreeMemory()
            except libvirt.libvirtError:
                free = total
        return total, free

    def cpu_times(self) -> tuple[int, int]:
        """(busy, total) nanoseconds across all CPUs since boot."""
        with self.errors("read CPU statistics"):
            stats = self.get_connection().getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
        idle = stats.get("idle", 0) + stats.get("iowait", 0)
        total = sum(stats.get(key, 0) for key in ("kernel", "user", "idle", "iowait"))
        return total - idle, total

    def kvm_available(self, arch: str) -> bool:
        """/dev/kvm opens and libvirt offers the ``kvm`` domain type for ``arch``."""
        if not kvm_device_usable():
            return False
        try:
            self.get_connection().getDomainCapabilities(None, arch, None, "kvm")
            return True
        except libvirt.libvirtError as exc:
            log.info("libvirt offers no kvm domains for %s: %s", arch, exc.get_error_message())
            return False
