"""A small ctypes binding to libnfs, the user-space NFS client QEMU itself uses.

Only the synchronous calls the storage driver needs are bound: mount,
statvfs, create/open/read/write/close, stat, unlink, mkdir and rmdir.  No CLI in libnfs-utils
reports a filesystem's capacity and usage separately (``nfs-ls -s`` prints
free and total only), so FSSTAT goes through ``nfs_statvfs64`` here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from contextlib import contextmanager
from collections.abc import Iterator
from typing import BinaryIO

LIBRARY_NAMES = ("libnfs.so.13", "libnfs.so.14", "libnfs.so")


class NfsStatvfs64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
            "f_ffree", "f_favail", "f_fsid", "f_flag", "f_namemax",
        )
    ]


class NfsStat64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "nfs_dev", "nfs_ino", "nfs_mode", "nfs_nlink", "nfs_uid", "nfs_gid", "nfs_rdev",
            "nfs_size", "nfs_blksize", "nfs_blocks", "nfs_atime", "nfs_mtime", "nfs_ctime",
            "nfs_atime_nsec", "nfs_mtime_nsec", "nfs_ctime_nsec", "nfs_used",
        )
    ]


class LibNfsError(OSError):
    """A libnfs call failed; ``errno`` holds the (positive) error number."""


class LibNfsMountError(LibNfsError):
    """The export could not be mounted: server down, port closed, path not exported."""


_library: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """Load libnfs once and declare the signatures used here."""
    global _library
    if _library is not None:
        return _library
    candidates = list(LIBRARY_NAMES)
    found = ctypes.util.find_library("nfs")
    if found:
        candidates.insert(0, found)
    last_error: OSError | None = None
    for name in candidates:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            break
        except OSError as exc:
            last_error = exc
    else:
        raise LibNfsError(
            errno.ENOSYS,
            f"libnfs is not installed ({last_error}); install libnfs13 (Debian) to use user-space NFS",
        )
    ctx, fh = ctypes.c_void_p, ctypes.c_void_p
    lib.nfs_init_context.restype = ctx
    lib.nfs_init_context.argtypes = []
    lib.nfs_destroy_context.argtypes = [ctx]
    lib.nfs_destroy_context.restype = None
    lib.nfs_get_error.argtypes = [ctx]
    lib.nfs_get_error.restype = ctypes.c_char_p
    lib.nfs_set_timeout.argtypes = [ctx, ctypes.c_int]
    lib.nfs_set_timeout.restype = None
    lib.nfs_set_version.argtypes = [ctx, ctypes.c_int]
    lib.nfs_set_version.restype = ctypes.c_int
    lib.nfs_set_autoreconnect.argtypes = [ctx, ctypes.c_int]
    lib.nfs_set_autoreconnect.restype = None
    lib.nfs_parse_url_dir.argtypes = [ctx, ctypes.c_char_p]
    lib.nfs_parse_url_dir.restype = ctypes.c_void_p
    lib.nfs_destroy_url.argtypes = [ctypes.c_void_p]
    lib.nfs_destroy_url.restype = None
    lib.nfs_mount.argtypes = [ctx, ctypes.c_char_p, ctypes.c_char_p]
    lib.nfs_umount.argtypes = [ctx]
    lib.nfs_statvfs64.argtypes = [ctx, ctypes.c_char_p, ctypes.POINTER(NfsStatvfs64)]
    lib.nfs_stat64.argtypes = [ctx, ctypes.c_char_p, ctypes.POINTER(NfsStat64)]
    lib.nfs_creat.argtypes = [ctx, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(fh)]
    lib.nfs_write.argtypes = [ctx, fh, ctypes.c_uint64, ctypes.c_void_p]
    lib.nfs_close.argtypes = [ctx, fh]
    lib.nfs_unlink.argtypes = [ctx, ctypes.c_char_p]
    lib.nfs_open.argtypes = [ctx, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(fh)]
    lib.nfs_read.argtypes = [ctx, fh, ctypes.c_uint64, ctypes.c_void_p]
    lib.nfs_mkdir.argtypes = [ctx, ctypes.c_char_p]
    lib.nfs_rmdir.argtypes = [ctx, ctypes.c_char_p]
    for name in ("nfs_mount", "nfs_umount", "nfs_statvfs64", "nfs_stat64", "nfs_creat",
                 "nfs_write", "nfs_close", "nfs_unlink", "nfs_open", "nfs_read", "nfs_mkdir", "nfs_rmdir"):
        getattr(lib, name).restype = ctypes.c_int
    _library = lib
    return lib


class NfsMount:
    """One mounted export; paths are relative to the export root."""

    def __init__(self, lib: ctypes.CDLL, context: int) -> None:
        self._lib = lib
        self._context = context

    def _check(self, result: int, what: str) -> int:
        if result < 0:
            detail = (self._lib.nfs_get_error(self._context) or b"").decode(errors="replace")
            raise LibNfsError(-result, f"{what}: {detail or os.strerror(-result)}")
        return result

    def statvfs(self, path: str = "/") -> NfsStatvfs64:
        result = NfsStatvfs64()
        self._check(self._lib.nfs_statvfs64(self._context, path.encode(), ctypes.byref(result)),
                    f"statvfs {path}")
        return result

    def stat(self, path: str) -> NfsStat64 | None:
        """Attributes of ``path``, or None when it does not exist."""
        result = NfsStat64()
        code = self._lib.nfs_stat64(self._context, path.encode(), ctypes.byref(result))
        if code == -errno.ENOENT:
            return None
        self._check(code, f"stat {path}")
        return result

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        handle = ctypes.c_void_p()
        self._check(
            self._lib.nfs_creat(self._context, path.encode(), mode, ctypes.byref(handle)),
            f"create {path}",
        )
        try:
            buffer = ctypes.create_string_buffer(data, len(data))
            written = self._check(
                self._lib.nfs_write(self._context, handle, len(data), buffer), f"write {path}"
            )
            if written != len(data):
                raise LibNfsError(errno.EIO, f"write {path}: short write ({written} of {len(data)})")
        finally:
            self._check(self._lib.nfs_close(self._context, handle), f"close {path}")

    def write_stream(self, path: str, source: BinaryIO, chunk: int = 1 << 20, mode: int = 0o644) -> int:
        """Create ``path`` (truncating it) with everything read from ``source``; returns the bytes written."""
        handle = ctypes.c_void_p()
        self._check(
            self._lib.nfs_creat(self._context, path.encode(), mode, ctypes.byref(handle)),
            f"create {path}",
        )
        total = 0
        try:
            while data := source.read(chunk):
                buffer = ctypes.create_string_buffer(data, len(data))
                done = 0
                while done < len(data):
                    written = self._check(self._lib.nfs_write(
                        self._context, handle, len(data) - done, ctypes.byref(buffer, done)), f"write {path}")
                    if written <= 0:
                        raise LibNfsError(errno.EIO, f"write {path}: no progress")
                    done += written
                total += len(data)
        finally:
            self._check(self._lib.nfs_close(self._context, handle), f"close {path}")
        return total

    def read_file(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """The first ``limit`` bytes of ``path``, or None when it does not exist."""
        handle = ctypes.c_void_p()
        code = self._lib.nfs_open(self._context, path.encode(), os.O_RDONLY, ctypes.byref(handle))
        if code == -errno.ENOENT:
            return None
        self._check(code, f"open {path}")
        chunks = []
        try:
            remaining = limit
            while remaining > 0:
                buffer = ctypes.create_string_buffer(min(remaining, 1 << 16))
                count = self._check(self._lib.nfs_read(self._context, handle, len(buffer), buffer), f"read {path}")
                if count == 0:
                    break
                chunks.append(buffer.raw[:count])
                remaining -= count
        finally:
            self._check(self._lib.nfs_close(self._context, handle), f"close {path}")
        return b"".join(chunks)

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its missing parents (relative to the export root)."""
        current = ""
        for part in [p for p in path.split("/") if p]:
            current = f"{current}/{part}"
            code = self._lib.nfs_mkdir(self._context, current.encode())
            if code < 0 and code != -errno.EEXIST:
                self._check(code, f"mkdir {current}")

    def rmdir(self, path: str, missing_ok: bool = False) -> None:
        code = self._lib.nfs_rmdir(self._context, path.encode())
        if code == -errno.ENOENT and missing_ok:
            return
        self._check(code, f"rmdir {path}")

    def unlink(self, path: str, missing_ok: bool = False) -> None:
        code = self._lib.nfs_unlink(self._context, path.encode())
        if code == -errno.ENOENT and missing_ok:
            return
        self._check(code, f"remove {path}")


@contextmanager
def mount(server: str, export: str, port: int | None = None, timeout: float = 10.0) -> Iterator[NfsMount]:
    """Mount ``server:export`` in user space for the duration of the block.

    Without ``port`` this is NFSv3 through the server's portmapper, exactly
    what QEMU does.  A port is a single NFSv4 port, which needs no portmapper.
    """
    lib = load()
    context = lib.nfs_init_context()
    if not context:
        raise LibNfsError(errno.ENOMEM, "cannot create an NFS context")
    try:
        # libnfs takes whole seconds; never wait forever on a dead server.
        lib.nfs_set_timeout(context, max(1000, int(timeout) * 1000))
        lib.nfs_set_autoreconnect(context, 0)
        if port is not None:
            url = lib.nfs_parse_url_dir(context, f"nfs://{server}{export}?version=4&nfsport={port}".encode())
            if not url:
                detail = (lib.nfs_get_error(context) or b"").decode(errors="replace")
                raise LibNfsError(errno.EINVAL, f"bad NFS location {server}:{port}{export}: {detail}")
            lib.nfs_destroy_url(url)
        session = NfsMount(lib, context)
        code = lib.nfs_mount(context, server.encode(), export.encode())
        if code < 0:
            detail = (lib.nfs_get_error(context) or b"").decode(errors="replace")
            if "nfs_service failed" in detail:
                # libnfs's words for "no portmapper, MOUNT or NFS service answered"
                detail = "no NFS service answered (connection refused or timed out)"
            raise LibNfsMountError(-code, detail or os.strerror(-code))
        try:
            yield session
        finally:
            lib.nfs_umount(context)
    finally:
        lib.nfs_destroy_context(context)
