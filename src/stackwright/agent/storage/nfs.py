"""NFS primary and secondary storage.

Two ways to reach an export, chosen per pool (``mode``) or detected (``auto``):

* ``kernel``: mount it under ``<mount_root>/<pool uuid>`` with the kernel NFS
  client and treat it as a local directory; guests get file disks.  This is
  the usual production path and needs ``nfs``/``nfs4`` in /proc/filesystems
  and ``mount.nfs``.
* ``userspace``: never mount; talk NFS from user space with libnfs, the
  client QEMU links, and give guests network disks (``protocol='nfs'``).
  Capacity comes from FSSTAT (``nfs_statvfs64``), images are made with
  ``qemu-img create nfs://...``.  QEMU's NFS client speaks NFSv3 through the
  server's portmapper and has no port option, so pools used this way must be
  served on the standard ports.

Attaching proves write access by creating and removing a probe file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid as uuid_module
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stackwright.agent.errors import (
    InvalidSpec,
    StorageError,
    StorageNotWritable,
    StorageUnreachable,
    VolumeExists,
)
from stackwright.agent.hypervisor.base import DiskSpec, FileSource, NfsSource, nfs_url
from stackwright.agent.storage import libnfs
from stackwright.agent.storage.base import POOL_MODES, PoolSpec, PoolStats, StorageDriver

log = logging.getLogger(__name__)

VOLUME_FORMATS = ("qcow2", "raw")
# Volume names become file names on the export: keep them to one plain path component.
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
PROBE_PREFIX = ".stackwright-probe-"
# A host's heartbeat on a pool: a file at the pool's root named after the host's guid.
HEARTBEAT_PREFIX = ".stackwright-heartbeat-"


@dataclass(frozen=True)
class NfsLocation:
    """Where an export lives: ``nfs://server[:port]/export``."""

    server: str
    export: str
    port: int | None = None

    def describe(self) -> str:
        where = f"{self.server}:{self.export}"
        return where if self.port is None else f"{where} (port {self.port})"


def unreachable(location: NfsLocation, reason: str) -> StorageUnreachable:
    return StorageUnreachable(
        f"NFS export {location.describe()} is unreachable: {reason}; check that the server is "
        "running, exports that path and allows this host"
    )


def not_writable(location: NfsLocation, reason: str) -> StorageNotWritable:
    return StorageNotWritable(
        f"NFS export {location.describe()} is not writable: {reason}; export it read-write "
        "with root squashing off (no_root_squash)"
    )


def parse_nfs_url(url: str) -> NfsLocation:
    """Split an ``nfs://`` URL, naming what is wrong when it is not one."""
    parts = urlsplit(url or "")
    if parts.scheme != "nfs":
        raise InvalidSpec(f"storage URL {url!r} is not an NFS URL; expected nfs://SERVER/EXPORT/PATH")
    try:
        port = parts.port
    except ValueError:
        raise InvalidSpec(f"storage URL {url!r} has an invalid port; expected nfs://SERVER[:PORT]/EXPORT") from None
    if not parts.hostname:
        raise InvalidSpec(f"storage URL {url!r} names no server; expected nfs://SERVER/EXPORT")
    export = "/" + parts.path.strip("/")
    if export == "/" or parts.query or parts.fragment:
        raise InvalidSpec(
            f"storage URL {url!r} must name an export path and nothing else; expected nfs://SERVER/EXPORT"
        )
    return NfsLocation(server=parts.hostname, export=export, port=port)


def kernel_nfs_available(proc_filesystems: str = "/proc/filesystems") -> bool:
    """Whether this kernel can mount NFS (the filesystem is registered and mount.nfs exists)."""
    try:
        with open(proc_filesystems) as handle:
            names = {line.split()[-1] for line in handle if line.strip()}
    except OSError:
        return False
    return bool(names & {"nfs", "nfs4"}) and shutil.which("mount.nfs") is not None


def _stats_from(blocks: int, free: int, available: int, fragment: int) -> PoolStats:
    return PoolStats(
        capacity_bytes=blocks * fragment,
        used_bytes=(blocks - free) * fragment,
        available_bytes=available * fragment,
    )


class NfsStorageDriver(StorageDriver):
    """NFS pools through the kernel client or libnfs, per pool mode."""

    kind = "nfs"

    def __init__(
        self,
        mount_root: str = "/mnt",
        timeout: float = 10.0,
        qemu_img: str = "qemu-img",
        kernel_available: Callable[[], bool] = kernel_nfs_available,
    ) -> None:
        self.mount_root = Path(mount_root)
        self.timeout = timeout
        self.qemu_img = qemu_img
        self._kernel_available = kernel_available

    # -- interface ---------------------------------------------------------

    def attach(self, pool: PoolSpec) -> PoolStats:
        location = parse_nfs_url(pool.url)
        if self._mode(pool) == "kernel":
            mount_point = self._kernel_mount(pool, location)
            self._probe_local(location, mount_point)
            stats = self._local_stats(mount_point)
        else:
            self._require_standard_ports(location, pool)
            with self._userspace(location) as export:
                self._probe_remote(location, export)
                stats = self._remote_stats(export)
        log.info("attached NFS pool %s (%s) capacity=%s available=%s",
                 pool.uuid, location.describe(), stats.capacity_bytes, stats.available_bytes)
        return stats

    def stats(self, pool: PoolSpec) -> PoolStats:
        location = parse_nfs_url(pool.url)
        if self._mode(pool) == "kernel":
            return self._local_stats(self._kernel_mount(pool, location))
        with self._userspace(location) as export:
            return self._remote_stats(export)

    def detach(self, pool: PoolSpec) -> None:
        location = parse_nfs_url(pool.url)
        if self._mode(pool) != "kernel":
            return  # nothing is held between calls in user space
        mount_point = self.mount_point(pool)
        if os.path.ismount(mount_point):
            self._run(["umount", str(mount_point)], location, "unmount")
            log.info("unmounted NFS pool %s from %s", pool.uuid, mount_point)
        try:
            mount_point.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("left mount point %s in place: %s", mount_point, exc)

    def create_volume(self, pool: PoolSpec, name: str, size_bytes: int, fmt: str = "qcow2") -> DiskSpec:
        self._check_volume(name, fmt, size_bytes)
        location = parse_nfs_url(pool.url)
        if self._mode(pool) == "kernel":
            path = self._kernel_mount(pool, location) / name
            if path.exists():
                raise VolumeExists(f"volume {name} already exists on storage pool {pool.uuid}")
            target, source = str(path), FileSource(path=str(path))
        else:
            self._require_standard_ports(location, pool)
            with self._userspace(location) as export:
                if export.stat(name) is not None:
                    raise VolumeExists(f"volume {name} already exists on storage pool {pool.uuid}")
            source = NfsSource(server=location.server, export=location.export, path=name)
            target = nfs_url(source)
        try:
            self._run([self.qemu_img, "create", "-q", "-f", fmt, target, str(size_bytes)], location, "create volume")
        except StorageError:
            # Leave no half-made image behind under a name the engine may reuse.
            try:
                self.delete_volume(pool, name)
            except StorageError as cleanup:
                log.warning("could not remove partial volume %s: %s", name, cleanup)
            raise
        log.info("created %s volume %s (%s bytes) on pool %s", fmt, name, size_bytes, pool.uuid)
        return DiskSpec(device="vda", source=source, format=fmt, size_bytes=size_bytes)

    def delete_volume(self, pool: PoolSpec, name: str) -> None:
        self._check_volume_name(name)
        location = parse_nfs_url(pool.url)
        if self._mode(pool) == "kernel":
            (self._kernel_mount(pool, location) / name).unlink(missing_ok=True)
        else:
            with self._userspace(location) as export:
                try:
                    export.unlink(name, missing_ok=True)
                except OSError as exc:
                    raise StorageError(f"cannot remove volume {name} from pool {pool.uuid}: {exc}") from None
        log.info("deleted volume %s from pool %s", name, pool.uuid)

    def check_secondary(self, url: str) -> PoolStats:
        location = parse_nfs_url(url)
        if self._kernel_available():
            with tempfile.TemporaryDirectory(prefix="secondary-", dir=self.mount_root) as scratch:
                mount_point = Path(scratch)
                self._mount(location, mount_point)
                try:
                    self._probe_local(location, mount_point)
                    return self._local_stats(mount_point)
                finally:
                    self._run(["umount", str(mount_point)], location, "unmount")
        with self._userspace(location) as export:
            self._probe_remote(location, export)
            return self._remote_stats(export)

    # -- heartbeats ---------------------------------------------------------

    def write_heartbeat(self, pool: PoolSpec, host: str) -> None:
        name = self._heartbeat_name(host)
        data = f"{host}\n".encode()
        location = parse_nfs_url(pool.url)
        try:
            if self._mode(pool) == "kernel":
                (self._kernel_mount(pool, location) / name).write_bytes(data)
            else:
                with self._userspace(location) as export:
                    export.write_file(name, data, mode=0o644)
        except (OSError, libnfs.LibNfsError) as exc:
            raise not_writable(location, exc.strerror or str(exc)) from None

    def heartbeat_age(self, pool: PoolSpec, host: str) -> float | None:
        """The pool's own clock is read from a probe written now, so the hosts' clocks never matter."""
        name = self._heartbeat_name(host)
        probe = f"{PROBE_PREFIX}{uuid_module.uuid4().hex}"
        location = parse_nfs_url(pool.url)
        try:
            if self._mode(pool) == "kernel":
                directory = self._kernel_mount(pool, location)
                (directory / probe).write_bytes(b"stackwright clock probe\n")
                try:
                    now = (directory / probe).stat().st_mtime_ns
                finally:
                    (directory / probe).unlink(missing_ok=True)
                try:
                    beat = (directory / name).stat().st_mtime_ns
                except FileNotFoundError:
                    return None
                return (now - beat) / 1e9
            with self._userspace(location) as export:
                export.write_file(probe, b"stackwright clock probe\n")
                try:
                    now = _mtime_ns(export.stat(probe))
                finally:
                    export.unlink(probe, missing_ok=True)
                beat = export.stat(name)
                return None if beat is None else (now - _mtime_ns(beat)) / 1e9
        except (OSError, libnfs.LibNfsError) as exc:
            raise unreachable(location, exc.strerror or str(exc)) from None

    def volume_times(self, pool: PoolSpec, names: list[str]) -> dict[str, float]:
        for name in names:
            self._check_volume_name(name)
        location = parse_nfs_url(pool.url)
        out = {}
        try:
            if self._mode(pool) == "kernel":
                directory = self._kernel_mount(pool, location)
                for name in names:
                    try:
                        out[name] = (directory / name).stat().st_mtime_ns / 1e9
                    except FileNotFoundError:
                        pass
                return out
            with self._userspace(location) as export:
                for name in names:
                    attributes = export.stat(name)
                    if attributes is not None:
                        out[name] = _mtime_ns(attributes) / 1e9
            return out
        except (OSError, libnfs.LibNfsError) as exc:
            raise unreachable(location, exc.strerror or str(exc)) from None

    @staticmethod
    def _heartbeat_name(host: str) -> str:
        if not VOLUME_NAME.fullmatch(host or ""):
            raise InvalidSpec(f"host guid {host!r} cannot name a heartbeat file")
        return HEARTBEAT_PREFIX + host

    # -- mode and validation ----------------------------------------------

    def mount_point(self, pool: PoolSpec) -> Path:
        try:
            return self.mount_root / str(uuid_module.UUID(pool.uuid))
        except ValueError:
            raise InvalidSpec(f"storage pool uuid {pool.uuid!r} is not a UUID") from None

    def _mode(self, pool: PoolSpec) -> str:
        if pool.mode not in POOL_MODES:
            raise InvalidSpec(f"storage pool mode {pool.mode!r} is not one of: {', '.join(POOL_MODES)}")
        if pool.mode == "auto":
            return "kernel" if self._kernel_available() else "userspace"
        if pool.mode == "kernel" and not self._kernel_available():
            raise InvalidSpec(
                "storage pool mode 'kernel' needs the kernel NFS client (nfs in /proc/filesystems "
                "and mount.nfs from nfs-common); use mode 'userspace' or 'auto' on this host"
            )
        return pool.mode

    @staticmethod
    def _require_standard_ports(location: NfsLocation, pool: PoolSpec) -> None:
        if location.port is not None:
            raise InvalidSpec(
                f"storage pool {pool.uuid}: QEMU's user-space NFS client cannot use port "
                f"{location.port}; serve {location.export} on the standard ports (portmapper) "
                "and drop the port from the URL, or use mode 'kernel'"
            )

    @staticmethod
    def _check_volume_name(name: str) -> None:
        if not VOLUME_NAME.fullmatch(name or "") or name.startswith(PROBE_PREFIX):
            raise InvalidSpec(
                f"volume name {name!r} is not allowed; use letters, digits, '.', '_' and '-' "
                "(up to 255, starting with a letter or digit)"
            )

    def _check_volume(self, name: str, fmt: str, size_bytes: int) -> None:
        self._check_volume_name(name)
        if fmt not in VOLUME_FORMATS:
            raise InvalidSpec(f"volume format {fmt!r} is not one of: {', '.join(VOLUME_FORMATS)}")
        if not isinstance(size_bytes, int) or size_bytes <= 0:
            raise InvalidSpec(f"volume size {size_bytes!r} must be a positive number of bytes")

    # -- kernel client -----------------------------------------------------

    def _kernel_mount(self, pool: PoolSpec, location: NfsLocation) -> Path:
        mount_point = self.mount_point(pool)
        if not os.path.ismount(mount_point):
            mount_point.mkdir(parents=True, exist_ok=True)
            self._mount(location, mount_point)
            log.info("mounted %s on %s", location.describe(), mount_point)
        return mount_point

    def _mount(self, location: NfsLocation, mount_point: Path) -> None:
        # soft + bounded retries: a dead server must fail the command, not hang the agent.
        seconds = max(1, int(self.timeout))
        options = f"soft,timeo={seconds * 10},retrans=1"
        if location.port is not None:
            options += f",port={location.port}"
        self._run(
            ["mount", "-t", "nfs", "-o", options, f"{location.server}:{location.export}", str(mount_point)],
            location,
            "mount",
            unreachable=True,
        )

    def _probe_local(self, location: NfsLocation, directory: Path) -> None:
        probe = directory / f"{PROBE_PREFIX}{uuid_module.uuid4().hex}"
        try:
            probe.write_bytes(b"stackwright write probe\n")
            probe.unlink()
        except OSError as exc:
            raise not_writable(location, exc.strerror or str(exc)) from None

    @staticmethod
    def _local_stats(directory: Path) -> PoolStats:
        result = os.statvfs(directory)
        return _stats_from(result.f_blocks, result.f_bfree, result.f_bavail, result.f_frsize)

    # -- user-space client -------------------------------------------------

    @contextmanager
    def _userspace(self, location: NfsLocation):
        try:
            with libnfs.mount(location.server, location.export, location.port, self.timeout) as export:
                yield export
        except libnfs.LibNfsMountError as exc:
            raise unreachable(location, exc.strerror) from None
        except libnfs.LibNfsError as exc:
            raise StorageError(f"NFS export {location.describe()}: {exc.strerror or exc}") from None

    def _probe_remote(self, location: NfsLocation, export: libnfs.NfsMount) -> None:
        probe = f"{PROBE_PREFIX}{uuid_module.uuid4().hex}"
        try:
            export.write_file(probe, b"stackwright write probe\n")
            export.unlink(probe)
        except libnfs.LibNfsError as exc:
            raise not_writable(location, exc.strerror or str(exc)) from None

    @staticmethod
    def _remote_stats(export: libnfs.NfsMount) -> PoolStats:
        result = export.statvfs("/")
        return _stats_from(result.f_blocks, result.f_bfree, result.f_bavail, result.f_frsize)

    # -- commands ----------------------------------------------------------

    def _run(self, argv: list[str], location: NfsLocation, action: str, unreachable: bool = False) -> None:
        env = dict(os.environ, LC_ALL="C")
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True, timeout=self.timeout * 3, env=env)
        except FileNotFoundError:
            raise StorageError(f"cannot {action} on {location.describe()}: {argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise unreachable(location, f"{action} did not finish within {self.timeout * 3:.0f}s") from None
        except subprocess.CalledProcessError as exc:
            reason = (exc.stderr or exc.stdout or f"exit status {exc.returncode}").strip().splitlines()
            message = reason[-1] if reason else f"exit status {exc.returncode}"
            if unreachable or "Failed to mount nfs share" in message or "nfs_service" in message:
                raise unreachable(location, message) from None
            raise StorageError(f"cannot {action} on {location.describe()}: {message}") from None


def _mtime_ns(attributes: libnfs.NfsStat64) -> int:
    return attributes.nfs_mtime * 1_000_000_000 + attributes.nfs_mtime_nsec
