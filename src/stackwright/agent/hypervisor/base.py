"""The neutral hypervisor driver interface used by the agent's command handlers.

Drivers (libvirt, simulator) implement :class:`HypervisorDriver`; handlers only
see the typed specs and results re-exported here, never driver-specific objects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from stackwright.agent.errors import InvalidSpec, UnsupportedCommand

# The value types travel between engine and agent, so the protocol owns them;
# drivers take and return exactly those objects.
from stackwright.protocol.messages import (
    BackingSpec,
    DiskSpec,
    FileSource,
    HostInfo,
    HostStats,
    NfsSource,
    NicSpec,
    TemplateLocation,
    VmSpec,
    VmState,
)

__all__ = [
    "BackingSpec",
    "DiskSpec",
    "FileSource",
    "HostInfo",
    "HostStats",
    "HypervisorDriver",
    "NfsSource",
    "NicSpec",
    "TemplateLocation",
    "VmSpec",
    "VmState",
    "check_sizing",
    "join_export_path",
    "nfs_path",
    "nfs_url",
]


def check_sizing(spec: VmSpec) -> None:
    """Reject a minimum memory outside 1..memory_mb or a CPU cap outside (0, 1]."""
    if spec.min_memory_mb is not None and not 1 <= spec.min_memory_mb <= spec.memory_mb:
        raise InvalidSpec(f"VM {spec.name}: min_memory_mb must be between 1 and memory_mb ({spec.memory_mb}), "
                          f"got {spec.min_memory_mb}")
    if spec.cpu_cap is not None and not 0 < spec.cpu_cap <= 1:
        raise InvalidSpec(f"VM {spec.name}: cpu_cap must be above 0 and at most 1, got {spec.cpu_cap}")


def join_export_path(export: str, path: str) -> str:
    """Join an export and a path inside it into one absolute server path."""
    return "/" + "/".join(part for part in (export.strip("/"), path.strip("/")) if part)


def nfs_path(source: NfsSource) -> str:
    """Absolute path of the image on the server, as libvirt's ``name`` attribute wants it."""
    return join_export_path(source.export, source.path)


def nfs_url(source: NfsSource) -> str:
    """The ``nfs://`` URL of the image, as qemu-img and libnfs take it."""
    authority = source.server if source.port is None else f"{source.server}:{source.port}"
    return f"nfs://{authority}{nfs_path(source)}"


class HypervisorDriver(ABC):
    """Operations the agent performs on its hypervisor.

    Semantics every driver follows (so the simulator and libvirt agree):

    * ``start`` of a guest that is already running returns ``RUNNING`` without change.
    * ``stop`` of a guest the hypervisor does not know returns ``STOPPED``
      (stopping is idempotent, as CloudStack's StopCommand is).
    * ``query`` and ``reboot`` of an unknown guest raise
      :class:`stackwright.agent.errors.VmNotFound`.
    * A stopped guest may be forgotten: libvirt undefines it on ``stop`` (the
      engine keeps the definition), so it leaves ``list_vms`` and ``query``
      raises ``VmNotFound``; the simulator keeps it as ``STOPPED``.  Callers
      read ``VmNotFound`` and absence from ``list_vms`` as ``STOPPED``.
    * Failures raise :class:`stackwright.agent.errors.AgentError` subclasses;
      no driver-specific exception escapes.
    """

    kind: str = ""

    @abstractmethod
    def host_info(self) -> HostInfo:
        """Describe the host: CPU topology, memory, hypervisor, private NIC, bridges."""

    @abstractmethod
    def host_stats(self) -> HostStats:
        """Sample CPU utilisation and memory."""

    @abstractmethod
    def start(self, spec: VmSpec) -> VmState:
        """Define and boot a guest; return its state afterwards."""

    @abstractmethod
    def stop(self, name: str, force: bool = False) -> VmState:
        """Shut a guest down (ACPI, then power off after a bounded grace), or power it off at once when forced."""

    @abstractmethod
    def reboot(self, name: str) -> None:
        """Reboot a running guest."""

    @abstractmethod
    def query(self, name: str) -> VmState:
        """Return the power state of one guest."""

    @abstractmethod
    def list_vms(self) -> dict[str, VmState]:
        """Return every guest the hypervisor knows, by instance name."""

    def io_paused(self) -> list[str]:
        """Guests paused because their storage failed (the disks' error policy), by name."""
        return []

    def resume_io_paused(self) -> list[str]:
        """Resume the guests paused because their storage failed; their names."""
        return []

    def console(self, name: str) -> tuple[str, int]:
        """The address and port where running guest ``name``'s VNC display listens."""
        raise UnsupportedCommand(f"the {self.kind} driver has no guest consoles")

    def disks(self, name: str) -> list[str]:
        """The disk devices (vda, vdb, ...) of running guest ``name``."""
        raise UnsupportedCommand(f"the {self.kind} driver cannot list a guest's disks")

    def attach_disk(self, name: str, disk: DiskSpec) -> None:
        """Hot-plug ``disk`` into running guest ``name`` as ``disk.device`` (a virtio disk); a
        device the guest has already is left alone."""
        raise UnsupportedCommand(f"the {self.kind} driver cannot hot-plug disks")

    def detach_disk(self, name: str, device: str, timeout: float) -> None:
        """Hot-unplug disk ``device`` from running guest ``name``, waiting up to ``timeout`` seconds
        for the guest to release it; a device the guest does not have is done."""
        raise UnsupportedCommand(f"the {self.kind} driver cannot hot-unplug disks")

    def resize_disk(self, name: str, device: str, size_bytes: int) -> None:
        """Grow disk ``device`` of running guest ``name`` (its image too) to ``size_bytes`` live."""
        raise UnsupportedCommand(f"the {self.kind} driver cannot resize a running guest's disks")

    def prepare_migration(self, spec: VmSpec) -> None:
        """As the destination of a live migration: check the guest can run here (bridges,
        memory) and no copy of it runs here; forget a stale stopped definition of it."""
        raise UnsupportedCommand(f"the {self.kind} driver cannot receive live migrations")

    def migrate(self, name: str, address: str, guid: str, vnc_listen: str, timeout: float) -> VmState:
        """Live-migrate running guest ``name`` to the host at ``address`` (``guid``); its
        state here afterwards (``STOPPED``: it left). On failure it keeps running here."""
        raise UnsupportedCommand(f"the {self.kind} driver cannot live-migrate guests")

    def close(self) -> None:  # noqa: B027 - optional: drivers without connections keep this
        """Release connections held by the driver."""

    def __enter__(self) -> HypervisorDriver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
