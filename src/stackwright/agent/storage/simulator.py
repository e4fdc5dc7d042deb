"""A storage driver that exists only in memory, for hosts of hypervisor ``Simulator``.

Volumes are names with sizes; nothing is written anywhere. It answers with the same
shapes as the NFS driver (an ``nfs://`` pool yields disks with an `NfsSource`), refuses
a duplicate volume and runs out of space, so the engine's bookkeeping is exercised the
way real storage exercises it.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

from stackwright.agent.errors import InsufficientCapacity, InvalidSpec, VolumeExists
from stackwright.agent.hypervisor.base import DiskSpec, FileSource, NfsSource
from stackwright.agent.storage.base import PoolSpec, PoolStats, StorageDriver

DEFAULT_CAPACITY = 1 << 40      # 1 TiB per pool
# Heartbeats on simulated pools, shared by the simulated hosts of one process as a real pool
# is shared by its hosts: (pool uuid, host guid) -> monotonic time of the last one.
_HEARTBEATS: dict[tuple[str, str], float] = {}
_HEARTBEATS_LOCK = threading.Lock()
VOLUME_FORMATS = ("qcow2", "raw")


class SimulatorStorageDriver(StorageDriver):
    kind = "simulator"

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY):
        if capacity_bytes <= 0:
            raise InvalidSpec("simulator storage: capacity_bytes must be positive")
        self.capacity_bytes = capacity_bytes
        self._volumes: dict[str, dict[str, int]] = {}      # pool uuid -> {volume name: bytes}
        self._lock = threading.Lock()

    def _stats(self, pool: PoolSpec) -> PoolStats:
        used = sum(self._volumes.get(pool.uuid, {}).values())
        return PoolStats(capacity_bytes=self.capacity_bytes, used_bytes=used,
                         available_bytes=max(0, self.capacity_bytes - used))

    def attach(self, pool: PoolSpec) -> PoolStats:
        with self._lock:
            self._volumes.setdefault(pool.uuid, {})
            return self._stats(pool)

    def stats(self, pool: PoolSpec) -> PoolStats:
        with self._lock:
            return self._stats(pool)

    def detach(self, pool: PoolSpec) -> None:
        """Volumes stay: detaching a pool does not delete what is on it."""

    def create_volume(self, pool: PoolSpec, name: str, size_bytes: int, fmt: str = "qcow2") -> DiskSpec:
        if not name or "/" in name:
            raise InvalidSpec(f"volume name {name!r} is not allowed")
        if fmt not in VOLUME_FORMATS:
            raise InvalidSpec(f"volume format {fmt!r} is not one of: {', '.join(VOLUME_FORMATS)}")
        if size_bytes <= 0:
            raise InvalidSpec(f"volume size {size_bytes!r} must be a positive number of bytes")
        with self._lock:
            volumes = self._volumes.setdefault(pool.uuid, {})
            if name in volumes:
                raise VolumeExists(f"volume {name} already exists on storage pool {pool.uuid}")
            if sum(volumes.values()) + size_bytes > self.capacity_bytes:
                raise InsufficientCapacity(f"storage pool {pool.uuid} has no room for {size_bytes} more bytes")
            volumes[name] = size_bytes
        return DiskSpec(device="vda", source=_source(pool, name), format=fmt, size_bytes=size_bytes)

    def delete_volume(self, pool: PoolSpec, name: str) -> None:
        with self._lock:
            self._volumes.get(pool.uuid, {}).pop(name, None)

    def volumes(self, pool_uuid: str) -> dict[str, int]:
        """The volumes of a pool, by name (for tests and diagnostics)."""
        with self._lock:
            return dict(self._volumes.get(pool_uuid, {}))

    def check_secondary(self, url: str) -> PoolStats:
        return PoolStats(capacity_bytes=self.capacity_bytes, used_bytes=0, available_bytes=self.capacity_bytes)

    def write_heartbeat(self, pool: PoolSpec, host: str) -> None:
        with _HEARTBEATS_LOCK:
            _HEARTBEATS[(pool.uuid, host)] = time.monotonic()

    def heartbeat_age(self, pool: PoolSpec, host: str) -> float | None:
        with _HEARTBEATS_LOCK:
            beat = _HEARTBEATS.get((pool.uuid, host))
        return None if beat is None else time.monotonic() - beat

    def volume_times(self, pool: PoolSpec, names: list[str]) -> dict[str, float]:
        """Simulated volumes are never written after their creation."""
        with self._lock:
            volumes = self._volumes.get(pool.uuid, {})
            return {name: 0.0 for name in names if name in volumes}


def _source(pool: PoolSpec, name: str) -> NfsSource | FileSource:
    parts = urlsplit(pool.url)
    if parts.scheme.lower() == "nfs" and parts.hostname:
        return NfsSource(server=parts.hostname, port=parts.port, export=parts.path or "/", path=name)
    return FileSource(path=f"/simulator/{pool.uuid}/{name}")
