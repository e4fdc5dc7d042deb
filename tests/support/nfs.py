"""A real NFS server for the tests: nfs-ganesha with its VFS backend on loopback.

The sandbox has no kernel NFS, so the tests serve NFS from user space:

* ``ganesha.nfsd`` exports ``primary`` and ``secondary`` read-write with
  root squashing off (and ``readonly`` read-only), over NFSv3 and NFSv4,
  TCP only, bound to 127.0.0.1 (NFS on 2049, MOUNT on 20048).
* NFSv3 needs a portmapper: QEMU's NFS driver (and so libvirt network disks)
  speaks only v3 and asks the portmapper on port 111 for the MOUNT port, and
  ganesha refuses to start when it cannot register v3 with one.  If no portmapper
  answers on 127.0.0.1:111, Debian's ``rpcbind`` is started with sockets handed to
  it the way socket activation does (``LISTEN_FDS``), so that it listens on
  loopback and its local socket only; its ``-h`` option would still leave TCP on
  every address.
* ganesha runs in the foreground (``-F``) with its log and PID file in the state
  directory; NFSv4 grace is skipped (``Graceless``) so the export is writable at
  once; D-Bus and Kerberos are not needed.

Only one such server can run on a machine (port 2049), so the state lives in a
fixed directory guarded by a lock: a second test session finds the running
server and reuses it, and only the session that started a process stops it, by
its PID.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STATE_DIR_ENV = "STACKWRIGHT_TEST_NFS_DIR"
DEFAULT_STATE_DIR = Path("/var/tmp/stackwright-test-nfs")
LOOPBACK = "127.0.0.1"
NFS_PORT = 2049
MOUNT_PORT = 20048
PORTMAP_PORT = 111
PMAP_PROGRAM = 100000
NFS_PROGRAM = 100003
MOUNT_PROGRAM = 100005
RPCBIND_SOCKET = Path("/run/rpcbind.sock")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

# The nfs_server role's launcher: opens the portmapper's sockets on the given address
# (and ::1) and hands them to rpcbind the way socket activation does.
RPCBIND_LISTEN = Path(__file__).resolve().parents[2] / "roles" / "nfs_server" / "files" / "rpcbind-listen"

GANESHA_CONFIG = """\
NFS_CORE_PARAM {{
    Bind_addr = {host};
    NFS_Port = {nfs_port};
    MNT_Port = {mount_port};
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = {recovery};
}}
{exports}
"""

EXPORT_BLOCK = """\
EXPORT {{
    Export_Id = {export_id};
    Path = {path};
    Pseudo = {path};
    Access_Type = {access};
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    # Tests also look at the exported directories directly; never serve stale attributes.
    Attr_Expiration_Time = 0;
    FSAL {{
        Name = VFS;
    }}
}}
"""


class NfsServerError(RuntimeError):
    """The test NFS server could not be started or stopped."""


@dataclass(frozen=True)
class NfsExport:
    """One exported directory, seen both locally and as an NFS URL."""

    host: str
    path: Path

    @property
    def url(self) -> str:
        return f"nfs://{self.host}{self.path}"


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pmap_getport(host: str, program: int, version: int, timeout: float = 2.0) -> int:
    """Ask the portmapper on ``host`` (PMAPPROC_GETPORT over TCP); 0 means not registered."""
    call = struct.pack(
        ">10I",
        0x5357,  # xid
        0,  # CALL
        2,  # RPC version
        PMAP_PROGRAM,
        2,  # portmapper version
        3,  # GETPORT
        0, 0,  # AUTH_NONE credentials
        0, 0,  # AUTH_NONE verifier
    ) + struct.pack(">4I", program, version, 6, 0)  # protocol TCP, port unused
    with socket.create_connection((host, PORTMAP_PORT), timeout=timeout) as sock:
        sock.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
        reply = b""
        while len(reply) < 4 + 28:
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
    # marker, xid, REPLY, MSG_ACCEPTED, verifier flavor + length, SUCCESS, port
    fields = struct.unpack(">8I", reply[:32])
    if fields[2:4] != (1, 0) or fields[6] != 0:
        raise OSError(f"portmapper on {host} refused GETPORT: {fields}")
    return fields[7]


def _registered(host: str, program: int, version: int) -> bool:
    try:
        return pmap_getport(host, program, version) != 0
    except (OSError, struct.error):
        return False


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` is a live process whose command line mentions ``name``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited already; it only waits for its parent.
    return name.encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _terminate(pid: int, name: str, timeout: float = STOP_TIMEOUT) -> None:
    if not _alive(pid, name):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, name):
            return
        time.sleep(0.1)
    log.warning("%s (pid %s) ignored SIGTERM for %ss; killing it", name, pid, timeout)
    os.kill(pid, signal.SIGKILL)


class NfsTestServer:
    """ganesha (and, when needed, rpcbind) serving two scratch exports on loopback."""

    host = LOOPBACK

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = Path(state_dir or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)
        self.primary = NfsExport(self.host, self.state_dir / "exports" / "primary")
        self.secondary = NfsExport(self.host, self.state_dir / "exports" / "secondary")
        # Exported read-only, for tests of the write probe.
        self.readonly = NfsExport(self.host, self.state_dir / "exports" / "readonly")
        self.config_path = self.state_dir / "ganesha.conf"
        self.log_path = self.state_dir / "ganesha.log"
        self.ganesha_pid_path = self.state_dir / "ganesha.pid"
        self.rpcbind_pid_path = self.state_dir / "rpcbind.pid"
        self._started: list[tuple[int, str]] = []
        self._processes: list[subprocess.Popen] = []

    @property
    def started_here(self) -> bool:
        return bool(self._started)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> NfsTestServer:
        """Start the server, or adopt the one another session already runs."""
        ganesha = shutil.which("ganesha.nfsd")
        if ganesha is None:
            raise NfsServerError("ganesha.nfsd not found; install nfs-ganesha and nfs-ganesha-vfs")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pid = _read_pid(self.ganesha_pid_path)
            if pid and _alive(pid, "ganesha.nfsd") and self._ready():
                log.info("reusing nfs-ganesha pid %s serving %s", pid, self.state_dir)
                return self
            if not self._port_frees(NFS_PORT):
                raise NfsServerError(
                    f"port {NFS_PORT} on {self.host} is taken by a server these tests did not "
                    f"start; stop it, or point {STATE_DIR_ENV} at its state directory"
                )
            self._ensure_portmapper()
            self._start_ganesha(ganesha)
        return self

    def stop(self) -> None:
        """Stop the processes this object started, newest first; leave the rest alone."""
        for pid, name in reversed(self._started):
            _terminate(pid, name)
            if name == "rpcbind":
                RPCBIND_SOCKET.unlink(missing_ok=True)
                self.rpcbind_pid_path.unlink(missing_ok=True)
            else:
                self.ganesha_pid_path.unlink(missing_ok=True)
        for process in self._processes:
            process.wait(timeout=STOP_TIMEOUT)
        self._started.clear()
        self._processes.clear()

    @contextmanager
    def outage(self) -> Iterator[None]:
        """nfs-ganesha stops answering for the block: frozen (SIGSTOP), it keeps its sockets and
        answers nothing, as a hung server does; it goes on (SIGCONT) after the block, whatever
        happens in it. Only a server this object started is frozen (one adopted from another
        run is not ours). A frozen server, not a killed one: ganesha restarted refuses to mount
        subdirectories of its exports that it served before (MNT3ERR_ACCES), which the tests'
        pools are."""
        mine = [pid for pid, name in self._started if name == "ganesha.nfsd" and _alive(pid, name)]
        if not mine:
            raise NfsServerError("nfs-ganesha was not started by this test run; it is not stopped")
        pid = mine[-1]
        os.kill(pid, signal.SIGSTOP)
        log.info("froze nfs-ganesha pid %s (outage)", pid)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)
            log.info("nfs-ganesha pid %s answers again", pid)

    def __enter__(self) -> NfsTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers for tests -------------------------------------------------

    def scratch(self, export: NfsExport, name: str) -> NfsExport:
        """A fresh subdirectory of an export, so tests sharing the server do not collide.

        Remove it with `discard` when done.
        """
        path = export.path / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return NfsExport(export.host, path)

    @staticmethod
    def discard(scratch: NfsExport) -> None:
        shutil.rmtree(scratch.path, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- internals ---------------------------------------------------------

    def _port_frees(self, port: int, timeout: float = STOP_TIMEOUT) -> bool:
        """Whether ``port`` is free, or becomes free soon (a server still shutting down)."""
        deadline = time.monotonic() + timeout
        while _port_open(self.host, port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def _ready(self) -> bool:
        return _registered(self.host, MOUNT_PROGRAM, 3) and _port_open(self.host, NFS_PORT)

    def _ensure_portmapper(self) -> None:
        if _registered(self.host, PMAP_PROGRAM, 2):
            log.info("using the portmapper already listening on %s:%s", self.host, PORTMAP_PORT)
            return
        if shutil.which("rpcbind") is None:
            raise NfsServerError("rpcbind not found; NFSv3 needs it (apt-get install rpcbind)")
        with open(self.state_dir / "rpcbind.log", "ab") as output:
            process = subprocess.Popen(
                [sys.executable, str(RPCBIND_LISTEN), self.host],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        self._processes.append(process)
        self._started.append((process.pid, "rpcbind"))
        self.rpcbind_pid_path.write_text(f"{process.pid}\n")
        self._wait(lambda: _registered(self.host, PMAP_PROGRAM, 2), process, "rpcbind")
        log.info("started rpcbind pid %s on %s:%s", process.pid, self.host, PORTMAP_PORT)

    def _write_config(self) -> None:
        recovery = self.state_dir / "recovery"
        recovery.mkdir(parents=True, exist_ok=True)
        # A fresh server starts from empty exports, whatever an aborted run left.
        shutil.rmtree(self.primary.path.parent, ignore_errors=True)
        exports = []
        for export_id, export in enumerate((self.primary, self.secondary, self.readonly), start=1):
            export.path.mkdir(parents=True, exist_ok=True)
            access = "RO" if export is self.readonly else "RW"
            exports.append(EXPORT_BLOCK.format(export_id=export_id, path=export.path, access=access))
        self.config_path.write_text(
            GANESHA_CONFIG.format(
                host=self.host,
                nfs_port=NFS_PORT,
                mount_port=MOUNT_PORT,
                recovery=recovery,
                exports="".join(exports),
            )
        )

    def _start_ganesha(self, ganesha: str) -> None:
        self._write_config()
        self.log_path.write_text("")
        process = subprocess.Popen(
            [
                ganesha, "-F",
                "-f", str(self.config_path),
                "-L", str(self.log_path),
                "-p", str(self.ganesha_pid_path),
                "-N", "NIV_EVENT",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._processes.append(process)
        self._started.append((process.pid, "ganesha.nfsd"))
        self.ganesha_pid_path.write_text(f"{process.pid}\n")
        self._wait(self._ready, process, "nfs-ganesha")
        log.info("started nfs-ganesha pid %s exporting %s", process.pid, self.state_dir / "exports")

    def _wait(self, ready, process: subprocess.Popen, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready():
                return
            if process.poll() is not None:
                self.stop()
                raise NfsServerError(
                    f"{name} exited with status {process.returncode} while starting; "
                    f"see {self.state_dir}:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self.stop()
        raise NfsServerError(f"{name} did not answer within {START_TIMEOUT}s; see {self.state_dir}")
