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

from typing import BinaryIO

from stackwright.agent.errors import InsufficientCapacity, InvalidSpec, VolumeExists, VolumeNotFound
from stackwright.agent.hypervisor.base import BackingSpec, DiskSpec, FileSource, NfsSource, TemplateLocation
from stackwright.agent.storage.base import PoolSpec, PoolStats, StorageDriver

DEFAULT_CAPACITY = 1 << 40      # 1 TiB per pool
# Heartbeats on simulated pools, shared by the simulated hosts of one process as a real pool
# is shared by its hosts: (pool uuid, host guid) -> monotonic time of the last one.
_HEARTBEATS: dict[tuple[str, str], float] = {}
_HEARTBEATS_LOCK = threading.Lock()
# A template's first bytes are kept, so its format is told the way qemu-img tells it.
HEADER, HEADER_BYTES = ".header", 512
VOLUME_FORMATS = ("qcow2", "raw")


class SimulatorStorageDriver(StorageDriver):
    kind = "simulator"

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY):
        if capacity_bytes <= 0:
            raise InvalidSpec("simulator storage: capacity_bytes must be positive")
        self.capacity_bytes = capacity_bytes
        self._volumes: dict[str, dict[str, int]] = {}      # pool uuid -> {volume name: bytes}
        # (store url, directory) -> {file name: bytes}; the image's size, the properties' text
        self._stores: dict[tuple[str, str], dict[str, bytes | int]] = {}
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

    def create_volume(self, pool: PoolSpec, name: str, size_bytes: int, fmt: str = "qcow2",
                      backing: str | None = None) -> DiskSpec:
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
            if backing is not None and backing not in volumes:
                raise VolumeNotFound(f"volume {backing} is not on storage pool {pool.uuid}")
            if sum(volumes.values()) + size_bytes > self.capacity_bytes:
                raise InsufficientCapacity(f"storage pool {pool.uuid} has no room for {size_bytes} more bytes")
            volumes[name] = size_bytes
        return DiskSpec(device="vda", source=_source(pool, name), format=fmt, size_bytes=size_bytes,
                        backing=BackingSpec(source=_source(pool, backing)) if backing else None)

    def copy_template(self, pool: PoolSpec, template: TemplateLocation, name: str) -> DiskSpec:
        with self._lock:
            files = self._stores.get((template.store_url, template.directory), {})
            size = files.get(template.file_name)
            if not isinstance(size, int) or "template.properties" not in files:
                raise VolumeNotFound(f"template {template.directory}/{template.file_name} is not on the image "
                                     f"store {template.store_url}")
            self._volumes.setdefault(pool.uuid, {})[name] = size
        return DiskSpec(device="vda", source=_source(pool, name), format="qcow2", size_bytes=size)

    def write_template(self, template: TemplateLocation, source: BinaryIO) -> int:
        size, header = 0, b""
        while chunk := source.read(1 << 20):
            if len(header) < HEADER_BYTES:
                header += chunk[:HEADER_BYTES - len(header)]
            size += len(chunk)
        with self._lock:
            self._stores[(template.store_url, template.directory)] = {template.file_name: size, HEADER: header}
        return size

    def inspect_template(self, template: TemplateLocation) -> dict:
        with self._lock:
            files = self._stores.get((template.store_url, template.directory), {})
        size, header = files.get(template.file_name), files.get(HEADER)
        if not isinstance(size, int) or not isinstance(header, bytes):
            raise VolumeNotFound(f"template {template.directory}/{template.file_name} is not on the image store "
                                 f"{template.store_url}")
        if header[:4] == b"QFI\xfb" and len(header) >= 32:
            return {"format": "qcow2", "virtual-size": int.from_bytes(header[24:32], "big"), "actual-size": size}
        return {"format": "raw", "virtual-size": size, "actual-size": size}

    def finish_template(self, template: TemplateLocation, properties: str) -> None:
        with self._lock:
            self._stores.setdefault((template.store_url, template.directory), {})["template.properties"] = (
                properties.encode())

    def template_properties(self, template: TemplateLocation) -> str | None:
        with self._lock:
            text = self._stores.get((template.store_url, template.directory), {}).get("template.properties")
        return text.decode() if isinstance(text, bytes) else None

    def delete_template(self, template: TemplateLocation) -> None:
        with self._lock:
            self._stores.pop((template.store_url, template.directory), None)

    def templates(self) -> dict[tuple[str, str], dict[str, bytes | int]]:
        """What the image stores hold, by (store URL, directory) (for tests and diagnostics)."""
        with self._lock:
            return {key: dict(files) for key, files in self._stores.items()}

    def delete_volume(self, pool: PoolSpec, name: str) -> None:
        with self._lock:
            self._volumes.get(pool.uuid, {}).pop(name, None)

    def resize_volume(self, pool: PoolSpec, name: str, size_bytes: int, shrink: bool = False) -> int:
        with self._lock:
            volumes = self._volumes.get(pool.uuid, {})
            if name not in volumes:
                raise VolumeNotFound(f"volume {name} is not on storage pool {pool.uuid}")
            if size_bytes < volumes[name] and not shrink:
                raise InvalidSpec(f"volume {name}: {size_bytes} bytes would shrink it from {volumes[name]}; "
                                  "shrinking must be asked for")
            if sum(volumes.values()) - volumes[name] + size_bytes > self.capacity_bytes:
                raise InsufficientCapacity(f"storage pool {pool.uuid} has no room to grow {name} to {size_bytes} bytes")
            volumes[name] = size_bytes
            return size_bytes

    def volume_size(self, pool: PoolSpec, name: str) -> int:
        with self._lock:
            size = self._volumes.get(pool.uuid, {}).get(name)
        if size is None:
            raise VolumeNotFound(f"volume {name} is not on storage pool {pool.uuid}")
        return size

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
