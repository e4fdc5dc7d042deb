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

Secondary storage (an image store) holds templates in CloudStack's layout,
``template/tmpl/<account id>/<template id>/<file>`` with a ``template.properties``
beside the image; the properties file is written last, so a directory without one
holds no complete template. A kernel-mounted store stays mounted under
``<mount_root>/<uuid5 of its URL>``.

A root volume made from a template is a qcow2 overlay (``qemu-img create -b``) on the
template's copy on the same pool, named relative to it, so both modes resolve it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid as uuid_module
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from stackwright.agent.errors import (
    InvalidSpec,
    StorageError,
    StorageNotWritable,
    StorageUnreachable,
    VolumeExists,
    VolumeNotFound,
)
from stackwright.agent.hypervisor.base import BackingSpec, DiskSpec, FileSource, NfsSource, TemplateLocation, nfs_url
from stackwright.agent.storage import libnfs
from stackwright.agent.storage.base import POOL_MODES, PoolSpec, PoolStats, StorageDriver

log = logging.getLogger(__name__)

VOLUME_FORMATS = ("qcow2", "raw")
# Volume names become file names on the export: keep them to one plain path component.
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
PROBE_PREFIX = ".stackwright-probe-"
# A host's heartbeat on a pool: a file at the pool's root named after the host's guid.
HEARTBEAT_PREFIX = ".stackwright-heartbeat-"
PROPERTIES = "template.properties"
# A template's directory on a store: template/tmpl/<account id>/<template id> (or an ISO's).
TEMPLATE_DIRECTORY = re.compile(r"template/tmpl/[0-9]+/[0-9]+")


class LocalFiles:
    """Files under a local (kernel-mounted) directory, by path relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def makedirs(self, path: str) -> None:
        (self.root / path).mkdir(parents=True, exist_ok=True)

    def write_stream(self, path: str, source: BinaryIO) -> int:
        with open(self.root / path, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
            return target.tell()

    def write_file(self, path: str, data: bytes) -> None:
        (self.root / path).write_bytes(data)

    def read_file(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, path: str) -> int | None:
        try:
            return (self.root / path).stat().st_size
        except FileNotFoundError:
            return None

    def unlink(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)

    def rmdir(self, path: str) -> None:
        try:
            (self.root / path).rmdir()
        except FileNotFoundError:
            pass


class RemoteFiles:
    """The same operations on an export reached from user space (libnfs)."""

    def __init__(self, export: libnfs.NfsMount) -> None:
        self.export = export

    def makedirs(self, path: str) -> None:
        self.export.makedirs(path)

    def write_stream(self, path: str, source: BinaryIO) -> int:
        return self.export.write_stream(path, source)

    def write_file(self, path: str, data: bytes) -> None:
        self.export.write_file(path, data, mode=0o644)

    def read_file(self, path: str) -> bytes | None:
        return self.export.read_file(path)

    def size(self, path: str) -> int | None:
        found = self.export.stat(path)
        return None if found is None else found.nfs_size

    def unlink(self, path: str) -> None:
        self.export.unlink(path, missing_ok=True)

    def rmdir(self, path: str) -> None:
        self.export.rmdir(path, missing_ok=True)


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


# `_run` takes a flag of the same name.
unreachable_error = unreachable


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

    def create_volume(self, pool: PoolSpec, name: str, size_bytes: int, fmt: str = "qcow2",
                      backing: str | None = None) -> DiskSpec:
        self._check_volume(name, fmt, size_bytes)
        location = parse_nfs_url(pool.url)
        backing_spec = None
        if backing is not None:
            self._check_volume_name(backing)
            if fmt != "qcow2":
                raise InvalidSpec(f"volume {name}: an overlay on {backing} must be qcow2, not {fmt}")
        if self._mode(pool) == "kernel":
            root = self._kernel_mount(pool, location)
            path = root / name
            if path.exists():
                raise VolumeExists(f"volume {name} already exists on storage pool {pool.uuid}")
            if backing is not None and not (root / backing).exists():
                raise VolumeNotFound(f"volume {backing} is not on storage pool {pool.uuid}")
            target, source = str(path), FileSource(path=str(path))
            if backing is not None:
                backing_spec = BackingSpec(source=FileSource(path=str(root / backing)))
        else:
            self._require_standard_ports(location, pool)
            with self._userspace(location) as export:
                if export.stat(name) is not None:
                    raise VolumeExists(f"volume {name} already exists on storage pool {pool.uuid}")
                if backing is not None and export.stat(backing) is None:
                    raise VolumeNotFound(f"volume {backing} is not on storage pool {pool.uuid}")
            source = NfsSource(server=location.server, export=location.export, path=name)
            target = nfs_url(source)
            if backing is not None:
                backing_spec = BackingSpec(source=NfsSource(server=location.server, export=location.export,
                                                            path=backing))
        # The backing file is named relative to the overlay: both sit in the pool's root.
        options = ["-b", backing, "-F", "qcow2"] if backing is not None else []
        try:
            self._run([self.qemu_img, "create", "-q", "-f", fmt, *options, target, str(size_bytes)], location,
                      "create volume")
        except StorageError:
            # Leave no half-made image behind under a name the engine may reuse.
            try:
                self.delete_volume(pool, name)
            except StorageError as cleanup:
                log.warning("could not remove partial volume %s: %s", name, cleanup)
            raise
        log.info("created %s volume %s (%s bytes%s) on pool %s", fmt, name, size_bytes,
                 f", overlay on {backing}" if backing else "", pool.uuid)
        return DiskSpec(device="vda", source=source, format=fmt, size_bytes=size_bytes, backing=backing_spec)

    def copy_template(self, pool: PoolSpec, template: TemplateLocation, name: str) -> DiskSpec:
        self._check_volume_name(name)
        self._check_template(template)
        location = parse_nfs_url(pool.url)
        with self._template_source(template) as source_path:
            if self._mode(pool) == "kernel":
                path = self._kernel_mount(pool, location) / name
                target, source = str(path), FileSource(path=str(path))
            else:
                self._require_standard_ports(location, pool)
                source = NfsSource(server=location.server, export=location.export, path=name)
                target = nfs_url(source)
            try:
                self._run([self.qemu_img, "convert", "-q", "-f", _image_format(template.format), "-O", "qcow2",
                           source_path, target], location, "copy template", timeout=3600)
            except StorageError:
                try:
                    self.delete_volume(pool, name)
                except StorageError as cleanup:
                    log.warning("could not remove partial template copy %s: %s", name, cleanup)
                raise
            size = self._virtual_size(target, location)
        log.info("copied template %s/%s to pool %s as %s", template.directory, template.file_name, pool.uuid, name)
        return DiskSpec(device="vda", source=source, format="qcow2", size_bytes=size)

    # -- secondary storage: templates --------------------------------------

    def write_template(self, template: TemplateLocation, source: BinaryIO) -> int:
        self._check_template(template)
        with self._store_files(template.store_url) as files:
            try:
                files.makedirs(template.directory)
                return files.write_stream(f"{template.directory}/{template.file_name}", source)
            except BaseException as exc:
                self._remove_template(files, template)
                if isinstance(exc, OSError):
                    raise StorageError(f"cannot write template {template.directory} to the image store "
                                       f"{template.store_url}: {exc.strerror or exc}") from None
                raise

    def inspect_template(self, template: TemplateLocation) -> dict:
        self._check_template(template)
        location = parse_nfs_url(template.store_url)
        with self._template_source(template) as source:
            return json.loads(self._run([self.qemu_img, "info", "--output=json", source], location,
                                        "inspect template"))

    def finish_template(self, template: TemplateLocation, properties: str) -> None:
        self._check_template(template)
        with self._store_files(template.store_url) as files:
            try:
                files.write_file(f"{template.directory}/{PROPERTIES}", properties.encode())
            except OSError as exc:
                self._remove_template(files, template)
                raise StorageError(f"cannot write template {template.directory} to the image store "
                                   f"{template.store_url}: {exc.strerror or exc}") from None

    def template_properties(self, template: TemplateLocation) -> str | None:
        self._check_template(template)
        with self._store_files(template.store_url) as files:
            data = files.read_file(f"{template.directory}/{PROPERTIES}")
        return None if data is None else data.decode(errors="replace")

    def delete_template(self, template: TemplateLocation) -> None:
        self._check_template(template)
        with self._store_files(template.store_url) as files:
            self._remove_template(files, template)
        log.info("deleted template %s from %s", template.directory, template.store_url)

    @staticmethod
    def _remove_template(files: LocalFiles | RemoteFiles, template: TemplateLocation) -> None:
        files.unlink(f"{template.directory}/{PROPERTIES}")
        files.unlink(f"{template.directory}/{template.file_name}")
        files.rmdir(template.directory)

    @contextmanager
    def _store_files(self, url: str) -> Iterator[LocalFiles | RemoteFiles]:
        location = parse_nfs_url(url)
        if self._kernel_available():
            yield LocalFiles(self._kernel_mount(self._store_spec(url), location))
        else:
            with self._userspace(location) as export:
                yield RemoteFiles(export)

    @contextmanager
    def _template_source(self, template: TemplateLocation) -> Iterator[str]:
        """The template's image as qemu-img takes it: a path on the mounted store, or an nfs:// URL."""
        location = parse_nfs_url(template.store_url)
        relative = f"{template.directory}/{template.file_name}"
        if self._kernel_available():
            path = self._kernel_mount(self._store_spec(template.store_url), location) / relative
            if not path.exists():
                raise VolumeNotFound(f"template {relative} is not on the image store {template.store_url}")
            yield str(path)
            return
        self._require_standard_ports(location, PoolSpec(uuid="image store", url=template.store_url))
        with self._userspace(location) as export:
            if export.stat(relative) is None:
                raise VolumeNotFound(f"template {relative} is not on the image store {template.store_url}")
        yield nfs_url(NfsSource(server=location.server, export=location.export, path=relative))

    @staticmethod
    def _store_spec(url: str) -> PoolSpec:
        return PoolSpec(uuid=str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, url)), url=url)

    @staticmethod
    def _check_template(template: TemplateLocation) -> None:
        if not TEMPLATE_DIRECTORY.fullmatch(template.directory or ""):
            raise InvalidSpec(f"template directory {template.directory!r} is not template/tmpl/<account>/<id>")
        if not VOLUME_NAME.fullmatch(template.file_name or "") or template.file_name == PROPERTIES:
            raise InvalidSpec(f"template file name {template.file_name!r} is not allowed")

    def _virtual_size(self, target: str, location: NfsLocation) -> int:
        info = self._run([self.qemu_img, "info", "-U", "--output=json", target], location, "inspect volume")
        return int(json.loads(info).get("virtual-size") or 0)

    def _volume_target(self, pool: PoolSpec, name: str) -> tuple[str, NfsLocation]:
        """(what qemu-img opens for volume `name` of `pool`, the pool's location); VolumeNotFound
        when it is not there."""
        self._check_volume_name(name)
        location = parse_nfs_url(pool.url)
        if self._mode(pool) == "kernel":
            path = self._kernel_mount(pool, location) / name
            if not path.exists():
                raise VolumeNotFound(f"volume {name} is not on storage pool {pool.uuid}")
            return str(path), location
        self._require_standard_ports(location, pool)
        with self._userspace(location) as export:
            if export.stat(name) is None:
                raise VolumeNotFound(f"volume {name} is not on storage pool {pool.uuid}")
        return nfs_url(NfsSource(server=location.server, export=location.export, path=name)), location

    def resize_volume(self, pool: PoolSpec, name: str, size_bytes: int, shrink: bool = False) -> int:
        if not isinstance(size_bytes, int) or size_bytes <= 0:
            raise InvalidSpec(f"volume size {size_bytes!r} must be a positive number of bytes")
        target, location = self._volume_target(pool, name)
        current = self._virtual_size(target, location)
        if size_bytes < current and not shrink:
            raise InvalidSpec(f"volume {name}: {size_bytes} bytes would shrink it from {current}; "
                              "shrinking must be asked for")
        if size_bytes != current:
            self._run([self.qemu_img, "resize", "-q", *(["--shrink"] if size_bytes < current else []), target,
                       str(size_bytes)], location, "resize volume")
            log.info("resized volume %s on pool %s from %s to %s bytes", name, pool.uuid, current, size_bytes)
        return self._virtual_size(target, location)

    def volume_size(self, pool: PoolSpec, name: str) -> int:
        target, location = self._volume_target(pool, name)
        return self._virtual_size(target, location)

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
        # soft + bounded retries: a dead server must fail the command, not hang the agent (a hard
        # mount leaves the agent in uninterruptible sleep and cannot be unmounted). A guest's I/O
        # that fails so pauses the guest (its disks' error policy, "stop") instead of reaching its
        # OS; the engine has it resumed once the pool answers again (ResumeIoPaused).
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

    def _run(self, argv: list[str], location: NfsLocation, action: str, unreachable: bool = False,
             timeout: float | None = None) -> str:
        env = dict(os.environ, LC_ALL="C")
        limit = timeout or self.timeout * 3
        try:
            return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=limit, env=env).stdout
        except FileNotFoundError:
            raise StorageError(f"cannot {action} on {location.describe()}: {argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise unreachable_error(location, f"{action} did not finish within {limit:.0f}s") from None
        except subprocess.CalledProcessError as exc:
            reason = (exc.stderr or exc.stdout or f"exit status {exc.returncode}").strip().splitlines()
            message = reason[-1] if reason else f"exit status {exc.returncode}"
            if unreachable or "Failed to mount nfs share" in message or "nfs_service" in message:
                raise unreachable_error(location, message) from None
            raise StorageError(f"cannot {action} on {location.describe()}: {message}") from None


def _mtime_ns(attributes: libnfs.NfsStat64) -> int:
    return attributes.nfs_mtime * 1_000_000_000 + attributes.nfs_mtime_nsec


def _image_format(fmt: str) -> str:
    """qemu-img's name of a template format (an ISO is read as raw)."""
    return "qcow2" if fmt.lower() == "qcow2" else "raw"
