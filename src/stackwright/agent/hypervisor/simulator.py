"""A hypervisor that exists only in memory.

It backs hosts of hypervisor ``Simulator``: playbook rehearsals without
hardware, and scale tests with thousands of hosts in one process.  It follows
the same semantics as the libvirt driver (see `HypervisorDriver`) and refuses a
guest when the host's memory is exhausted, so capacity mistakes show up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import weakref
from dataclasses import dataclass

from stackwright.agent.errors import HypervisorError, InsufficientCapacity, InvalidSpec, VmNotFound
from stackwright.agent.hypervisor.base import (
    DiskSpec,
    HostInfo,
    HostStats,
    HypervisorDriver,
    VmSpec,
    VmState,
    check_sizing,
)

SIMULATOR_VERSION = "1.0"

# The simulated migration network: every simulator driver of this process by its hostname
# (a simulated host's guid), so one can hand a running guest to another.
_PEERS: weakref.WeakValueDictionary[str, SimulatorDriver] = weakref.WeakValueDictionary()
_PEERS_LOCK = threading.Lock()


@dataclass
class _Guest:
    spec: VmSpec
    state: VmState
    boots: int = 0


class SimulatorDriver(HypervisorDriver):
    kind = "simulator"

    def __init__(
        self,
        *,
        hostname: str | None = None,
        cpus: int = 8,
        cpu_sockets: int = 1,
        cpu_mhz: int = 2400,
        memory_mb: int = 16384,
        private_ip: str | None = "127.0.0.1",
        private_mac: str | None = None,
        bridges: list[str] | tuple[str, ...] = ("cloudbr0",),
    ):
        if cpus < 1 or cpu_sockets < 1 or cpus % cpu_sockets:
            raise InvalidSpec(f"simulator: {cpus} CPUs cannot be split over {cpu_sockets} sockets")
        if cpu_mhz < 1 or memory_mb < 1:
            raise InvalidSpec("simulator: cpu_mhz and memory_mb must be positive")
        self.hostname = hostname or socket.gethostname()
        self.cpus = cpus
        self.cpu_sockets = cpu_sockets
        self.cpu_mhz = cpu_mhz
        self.memory_mb = memory_mb
        self.private_ip = private_ip
        self.private_mac = private_mac or _stable_mac(self.hostname)
        self.bridges = list(bridges)
        self._guests: dict[str, _Guest] = {}
        self._lock = threading.Lock()
        with _PEERS_LOCK:
            _PEERS[self.hostname] = self

    def host_info(self) -> HostInfo:
        return HostInfo(
            hostname=self.hostname,
            hypervisor="Simulator",
            hypervisor_version=SIMULATOR_VERSION,
            arch="x86_64",
            cpu_sockets=self.cpu_sockets,
            cpu_cores=self.cpus // self.cpu_sockets,
            cpu_threads=1,
            cpus=self.cpus,
            cpu_mhz=self.cpu_mhz,
            memory_bytes=self.memory_mb << 20,
            private_ip=self.private_ip,
            private_mac=self.private_mac,
            bridges=list(self.bridges),
            accel="none",
        )

    def host_stats(self) -> HostStats:
        with self._lock:
            running = [g.spec for g in self._guests.values() if g.state is VmState.RUNNING]
        used_mb = sum(spec.reserved_memory_mb for spec in running)
        busy_vcpus = sum(spec.vcpus for spec in running)
        return HostStats(
            cpu_utilization=min(100.0, 100.0 * busy_vcpus / self.cpus),
            memory_total_bytes=self.memory_mb << 20,
            memory_free_bytes=max(0, self.memory_mb - used_mb) << 20,
        )

    def start(self, spec: VmSpec) -> VmState:
        if not spec.name or spec.vcpus < 1 or spec.memory_mb < 1:
            raise InvalidSpec(f"VM {spec.name!r}: name, vcpus >= 1 and memory_mb >= 1 are required")
        check_sizing(spec)
        with self._lock:
            guest = self._guests.get(spec.name)
            if guest is not None and guest.state is VmState.RUNNING:
                return VmState.RUNNING
            self._check_room(spec)
            boots = guest.boots if guest else 0
            self._guests[spec.name] = _Guest(spec=spec, state=VmState.RUNNING, boots=boots + 1)
            return VmState.RUNNING

    def stop(self, name: str, force: bool = False) -> VmState:
        with self._lock:
            guest = self._guests.get(name)
            if guest is not None:
                guest.state = VmState.STOPPED
            return VmState.STOPPED

    def reboot(self, name: str) -> None:
        with self._lock:
            guest = self._require(name)
            if guest.state is not VmState.RUNNING:
                raise HypervisorError(f"VM {name} is not running on host {self.hostname}; start it instead of rebooting")
            guest.boots += 1

    def query(self, name: str) -> VmState:
        with self._lock:
            return self._require(name).state

    def list_vms(self) -> dict[str, VmState]:
        with self._lock:
            return {name: guest.state for name, guest in self._guests.items()}

    # -- disks of running guests -------------------------------------------------------------

    def _running(self, name: str) -> _Guest:
        guest = self._require(name)
        if guest.state is not VmState.RUNNING:
            raise HypervisorError(f"VM {name} is not running on host {self.hostname}")
        return guest

    def disks(self, name: str) -> list[str]:
        with self._lock:
            return [disk.device for disk in self._running(name).spec.disks]

    def attach_disk(self, name: str, disk: DiskSpec) -> None:
        with self._lock:
            guest = self._running(name)
            if disk.device not in {d.device for d in guest.spec.disks}:
                guest.spec.disks.append(disk)

    def detach_disk(self, name: str, device: str, timeout: float) -> None:
        with self._lock:
            guest = self._running(name)
            guest.spec.disks = [d for d in guest.spec.disks if d.device != device]

    def resize_disk(self, name: str, device: str, size_bytes: int) -> None:
        with self._lock:
            for disk in self._running(name).spec.disks:
                if disk.device == device:
                    disk.size_bytes = size_bytes
                    return
            raise HypervisorError(f"VM {name} has no disk {device}")

    # -- live migration, in simulation: the same rules as libvirt's ------------------------

    def prepare_migration(self, spec: VmSpec) -> None:
        with self._lock:
            self._check_room(spec, incoming=True)
            guest = self._guests.get(spec.name)
            if guest is not None and guest.state is not VmState.RUNNING:
                del self._guests[spec.name]

    def migrate(self, name: str, address: str, guid: str, vnc_listen: str, timeout: float) -> VmState:
        with _PEERS_LOCK:
            peer = _PEERS.get(guid)
        if peer is None:
            raise HypervisorError(f"unable to migrate {name}: cannot connect to destination host {guid} at {address}")
        if peer is self:
            raise HypervisorError(f"unable to migrate {name}: the destination is this host")
        with self._lock:
            guest = self._require(name)
            if guest.state is not VmState.RUNNING:
                raise HypervisorError(f"unable to migrate {name}: it is not running on host {self.hostname}")
            del self._guests[name]
        try:
            peer._receive(guest, vnc_listen)
        except Exception:
            with self._lock:
                self._guests[name] = guest      # it never left
            raise
        return VmState.STOPPED

    def _receive(self, guest: _Guest, vnc_listen: str) -> None:
        with self._lock:
            self._check_room(guest.spec, incoming=True)
            spec = dataclasses.replace(guest.spec, vnc_listen=vnc_listen)
            # The same guest goes on running: no boot.
            self._guests[spec.name] = _Guest(spec=spec, state=VmState.RUNNING, boots=guest.boots)

    def _check_room(self, spec: VmSpec, incoming: bool = False) -> None:
        """Raise unless a guest `spec` fits next to the running ones (lock held)."""
        guest = self._guests.get(spec.name)
        if incoming and guest is not None and guest.state is VmState.RUNNING:
            raise HypervisorError(f"VM {spec.name} already runs on host {self.hostname}")
        missing = sorted({nic.bridge for nic in spec.nics} - set(self.bridges))
        if incoming and missing:
            raise HypervisorError(f"VM {spec.name}: host {self.hostname} has no bridge {', '.join(missing)}")
        # A guest of an over-provisioned cluster takes what the engine planned for it, its
        # minimum memory, as a balloon would leave it on a real host.
        used_mb = sum(g.spec.reserved_memory_mb for g in self._guests.values() if g.state is VmState.RUNNING)
        if used_mb + spec.reserved_memory_mb > self.memory_mb:
            raise InsufficientCapacity(
                f"VM {spec.name}: needs {spec.reserved_memory_mb} MiB but host {self.hostname} has "
                f"{self.memory_mb - used_mb} MiB free of {self.memory_mb} MiB"
            )

    def boot_count(self, name: str) -> int:
        """How often a guest was booted (start or reboot); lets tests see that nothing restarted it."""
        with self._lock:
            return self._require(name).boots

    def _require(self, name: str) -> _Guest:
        guest = self._guests.get(name)
        if guest is None:
            raise VmNotFound(f"VM {name} does not exist on host {self.hostname}")
        return guest


def _stable_mac(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
