"""The neutral storage driver interface used by the agent's command handlers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import BinaryIO

from stackwright.agent.errors import UnsupportedCommand
from stackwright.agent.hypervisor.base import DiskSpec, TemplateLocation
from stackwright.protocol.messages import PoolSpec, PoolStats

__all__ = ["POOL_MODES", "PoolSpec", "PoolStats", "StorageDriver"]

# PoolSpec.mode: mount with the kernel, use QEMU's user-space client, or detect.
POOL_MODES = ("auto", "kernel", "userspace")


class StorageDriver(ABC):
    """Operations the agent performs on primary and secondary storage."""

    kind: str = ""

    @abstractmethod
    def attach(self, pool: PoolSpec) -> PoolStats:
        """Make a pool usable on this host (mount if needed) and prove it is writable."""

    @abstractmethod
    def stats(self, pool: PoolSpec) -> PoolStats:
        """Report a pool's capacity and usage."""

    @abstractmethod
    def detach(self, pool: PoolSpec) -> None:
        """Release a pool (unmount if this driver mounted it)."""

    @abstractmethod
    def create_volume(self, pool: PoolSpec, name: str, size_bytes: int, fmt: str = "qcow2",
                      backing: str | None = None) -> DiskSpec:
        """Create an empty volume on a pool, or with ``backing`` (a volume of the same pool) a
        qcow2 overlay on it; return how a guest reaches it.

        The returned ``DiskSpec`` has ``device`` left as ``"vda"``; callers set the device name.
        """

    @abstractmethod
    def delete_volume(self, pool: PoolSpec, name: str) -> None:
        """Remove a volume; removing a volume that is already gone is not an error."""

    def resize_volume(self, pool: PoolSpec, name: str, size_bytes: int, shrink: bool = False) -> int:
        """Grow a volume to ``size_bytes`` (shrink it only with ``shrink``); return its new virtual size."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot resize volumes")

    def volume_size(self, pool: PoolSpec, name: str) -> int:
        """The virtual size of a volume (VolumeNotFound when it is not on the pool)."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot inspect volumes")

    @abstractmethod
    def check_secondary(self, url: str) -> PoolStats:
        """Prove a secondary storage URL is reachable and writable; report its capacity."""

    # -- heartbeats (HA): what proves a host alive to the other hosts of its pools --

    def write_heartbeat(self, pool: PoolSpec, host: str) -> None:
        """Write host `host`'s heartbeat on the pool (its time is the pool's clock)."""
        raise UnsupportedCommand(f"{self.kind or 'this'} storage keeps no heartbeats")

    def heartbeat_age(self, pool: PoolSpec, host: str) -> float | None:
        """Seconds since host `host`'s last heartbeat on the pool, by the pool's clock; None
        when it never wrote one."""
        raise UnsupportedCommand(f"{self.kind or 'this'} storage keeps no heartbeats")

    def volume_times(self, pool: PoolSpec, names: list[str]) -> dict[str, float]:
        """The last write time of each existing volume of `names` (pool clock)."""
        raise UnsupportedCommand(f"{self.kind or 'this'} storage cannot tell when volumes were written")

    # -- templates: secondary storage and their copies on primary pools ------------

    def copy_template(self, pool: PoolSpec, template: TemplateLocation, name: str) -> DiskSpec:
        """Copy a template from its image store onto a pool as qcow2 volume ``name``."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot copy templates")

    def write_template(self, template: TemplateLocation, source: BinaryIO) -> int:
        """Write a template's image, read from ``source``, to its image store (no template.properties
        yet); returns its bytes. A failure, or an exception raised by ``source``, leaves nothing."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot store templates")

    def inspect_template(self, template: TemplateLocation) -> dict:
        """What ``qemu-img info --output=json`` says of the template's image on its store."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot store templates")

    def finish_template(self, template: TemplateLocation, properties: str) -> None:
        """Write template.properties beside the image: from now on the template is complete."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot store templates")

    def template_properties(self, template: TemplateLocation) -> str | None:
        """The template.properties of a complete template on its store, or None."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot store templates")

    def delete_template(self, template: TemplateLocation) -> None:
        """Remove a template's files and directory from its store; nothing there is not an error."""
        raise UnsupportedCommand(f"the {self.kind} storage driver cannot store templates")
