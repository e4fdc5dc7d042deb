"""Real libvirtd daemons for the test suite.

`SystemLibvirtd` is the host's own libvirtd on ``qemu:///system``: reused when its socket
already answers, else started here (with virtlogd, which QEMU guests log through) and
stopped at the end, by PID and only if this process started it.

`IsolatedLibvirtd` is a private libvirtd for tests that reconfigure or restart it. It runs
inside its own network namespace and mount namespace, with tmpfs over libvirt's runtime,
state, cache and log directories and a libvirtd.conf of its own, so restarting it never
disturbs the shared daemon. A holder process keeps the namespaces alive; `exec_argv`
wraps a command so it runs inside them (``nsenter``), which is how tests drive Ansible
against it.

Host prerequisites (checked by `check_host`): Debian's libvirt-daemon-system package,
which creates the ``libvirt-qemu`` user and the ``libvirt`` and ``kvm`` groups and ships
libvirtd.conf; and ``/dev/kvm`` usable by group ``kvm``, as udev sets it up on a normal
host (a machine without udev leaves it root-only; `ensure_kvm_device` fixes that).
"""

from __future__ import annotations

import grp
import logging
import os
import re
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.netns import Namespace, NamespaceSet

log = logging.getLogger(__name__)

SYSTEM_URI = "qemu:///system"
SYSTEM_CONFIG = Path("/etc/libvirt/libvirtd.conf")
LISTEN_SETTINGS = re.compile(r"^\s*(listen_tcp|listen_tls|tcp_port|listen_addr|auth_tcp|LIBVIRTD_ARGS)\s*=")

SYSTEM_PID_FILE = Path("/run/libvirtd.pid")
VIRTLOGD_PID_FILE = Path("/run/virtlogd.pid")
# Directories the isolated daemon gets fresh (tmpfs) copies of.
PRIVATE_DIRS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")

# Domain and network definitions of the host stay invisible to the isolated daemon.
PRIVATE_IF_PRESENT = ("/etc/libvirt/qemu",)
QEMU_CACHE = "/var/cache/libvirt/qemu"
ISOLATED_PID_FILE = "/run/libvirt/libvirtd.pid"
ISOLATED_VIRTLOGD_PID_FILE = "/run/libvirt/virtlogd.pid"


def _without_listen_settings(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not LISTEN_SETTINGS.match(line))


START_TIMEOUT = 30.0


class LibvirtdError(RuntimeError):
    """libvirtd could not be started, reached or stopped."""


def missing_prerequisites() -> list[str]:
    """Why a real libvirtd cannot run here (empty when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("tests need root to run libvirtd")
    for binary in ("libvirtd", "virtlogd", "virsh", "nsenter", "unshare", "ip"):
        if shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            problems.append("%s is not installed" % binary)
    try:
        pwd.getpwnam("libvirt-qemu")
        grp.getgrnam("libvirt")
        grp.getgrnam("kvm")
    except KeyError as exc:
        problems.append("%s; install libvirt-daemon-system, which creates libvirt-qemu, libvirt and kvm" % exc)
    if not SYSTEM_CONFIG.exists():
        problems.append("%s is missing; install libvirt-daemon-system" % SYSTEM_CONFIG)
    return problems


def check_host() -> None:
    problems = missing_prerequisites()
    if problems:
        raise LibvirtdError("; ".join(problems))


def ensure_kvm_device() -> None:
    """Give group kvm access to /dev/kvm as udev's rule does, so QEMU running as libvirt-qemu can use it."""
    device = Path("/dev/kvm")
    if not device.exists():
        return
    info = device.stat()
    kvm_gid = grp.getgrnam("kvm").gr_gid
    if info.st_gid != kvm_gid or not info.st_mode & stat.S_IRGRP or not info.st_mode & stat.S_IWGRP:
        log.info("giving group kvm access to /dev/kvm (mode 0660), as udev would")
        os.chown(device, 0, kvm_gid)
        os.chmod(device, 0o660)


def _sbin(binary: str) -> str:
    found = shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise LibvirtdError("%s is not installed" % binary)
    return found


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        state = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return ") Z " not in state


def _comm(pid: int) -> str:
    try:
        return Path("/proc/%d/comm" % pid).read_text().strip()
    except OSError:
        return ""


def stop_pid(pid: int, name: str, timeout: float = 20.0) -> None:
    """SIGTERM `pid` if it is still the process `name`, then SIGKILL if it lingers."""
    if not _alive(pid) or _comm(pid) != name:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", name, pid, timeout)
    os.kill(pid, signal.SIGKILL)


def virsh(uri: str, *args: str, timeout: float = 30, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    argv = [*(wrap or []), "virsh", "-c", uri, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, "LANG": "C"}, check=False)


def wait_until_answers(uri: str, timeout: float = START_TIMEOUT, wrap: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        result = virsh(uri, "version", timeout=10, wrap=wrap)
        if result.returncode == 0:
            return
        last = result.stderr.strip()
        time.sleep(0.2)
    raise LibvirtdError("libvirtd at %s did not answer within %.0fs: %s" % (uri, timeout, last))


@dataclass
class SystemLibvirtd:
    """The host's libvirtd on qemu:///system; `started` tells whether this process started it."""

    uri: str = SYSTEM_URI
    started: bool = False
    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start_or_reuse(cls) -> SystemLibvirtd:
        check_host()
        ensure_kvm_device()
        if virsh(SYSTEM_URI, "version", timeout=10).returncode == 0:
            log.info("reusing the running libvirtd at %s", SYSTEM_URI)
            return cls()
        instance = cls(started=True)
        try:
            if _read_pid(VIRTLOGD_PID_FILE) is None:
                instance._daemon("virtlogd", [_sbin("virtlogd"), "--daemon"], VIRTLOGD_PID_FILE)
            instance._daemon("libvirtd", [_sbin("libvirtd"), "--daemon"], SYSTEM_PID_FILE)
            wait_until_answers(SYSTEM_URI)
        except BaseException:
            instance.stop()
            raise
        return instance

    def _daemon(self, name: str, argv: list[str], pid_file: Path) -> None:
        # --daemon returns once the daemon is up or has failed to start.
        result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT, cwd="/", check=False)
        pid = _read_pid(pid_file)
        if result.returncode != 0 or pid is None:
            raise LibvirtdError("%s did not start (exit %s): %s" % (name, result.returncode, result.stderr.strip()))
        self.pids[name] = pid
        log.info("started %s, pid %d", name, pid)

    def stop(self) -> None:
        for name in ("libvirtd", "virtlogd"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                stop_pid(pid, name)


class IsolatedLibvirtd:
    """A libvirtd of its own in a private network + mount namespace; safe to reconfigure and restart.

    `config_file` and `defaults_file` are ordinary files in a temp directory (visible inside
    and outside); `pid_file` is the path as seen inside the namespaces.
    """

    def __init__(self, workdir: Path, settings: dict[str, str] | None = None, listen: bool = False):
        """`settings`: libvirtd.conf lines added to the packaged ones (values as written there);
        `listen`: start libvirtd with --listen (its TCP listener, as live migration needs)."""
        self.workdir = workdir
        self.settings = dict(settings or {})
        self.listen = listen
        self.config_file = workdir / "libvirtd.conf"
        self.defaults_file = workdir / "default-libvirtd"
        self.pid_file = ISOLATED_PID_FILE
        self.uri = SYSTEM_URI
        self._namespaces = NamespaceSet(prefix="swlv")
        self.namespace: Namespace | None = None
        self.holder: subprocess.Popen | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> IsolatedLibvirtd:
        check_host()
        ensure_kvm_device()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # Start from the packaged defaults whatever this machine's libvirtd was told before
        # (e.g. by a local cloud): the settings libvirt_tcp manages are left out.
        self.config_file.write_text(_without_listen_settings(SYSTEM_CONFIG.read_text())
                                    + "".join("%s = %s\n" % item for item in self.settings.items()))
        defaults = Path("/etc/default/libvirtd")
        self.defaults_file.write_text(_without_listen_settings(defaults.read_text()) if defaults.exists() else "")
        for directory in PRIVATE_DIRS:
            os.makedirs(directory, exist_ok=True)
        self.namespace = self._namespaces.create()
        ready = self.workdir / "mounts-ready"
        # QEMU's capability cache is kept: probing QEMU again costs seconds per start.
        cache = self.workdir / "qemu-cache"
        mounts = ["if [ -d %s ]; then cp -a %s %s; fi" % (QEMU_CACHE, QEMU_CACHE, cache)]
        mounts += ["mount -t tmpfs -o mode=0755 swlv %s" % d for d in PRIVATE_DIRS]
        # As the libvirt packages leave it: where guests' serial consoles are logged.
        mounts += ["mkdir -p /var/log/libvirt/qemu"]
        mounts += ["if [ -d %s ]; then cp -a %s %s; fi" % (cache, cache, QEMU_CACHE)]
        mounts += ["if [ -d %s ]; then mount -t tmpfs -o mode=0755 swlv %s; fi" % (d, d) for d in PRIVATE_IF_PRESENT]
        script = "set -e; %s; touch %s; exec sleep infinity" % ("; ".join(mounts), ready)
        self.holder = subprocess.Popen(
            self.namespace.exec_argv(["unshare", "--mount", "--propagation", "private", "sh", "-c", script]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise LibvirtdError("namespace holder did not come up: %s" % (self.holder.stderr.read() or "timeout"))
            time.sleep(0.05)
        self.start_daemons()

    def start_daemons(self) -> None:
        """Start virtlogd and libvirtd in the namespaces (again, after they were killed)."""
        self.run([_sbin("virtlogd"), "--daemon", "--pid-file", ISOLATED_VIRTLOGD_PID_FILE])
        self.start_libvirtd()

    def start_libvirtd(self) -> None:
        """Start libvirtd in the namespaces (again, after it was stopped) and wait until it answers."""
        self.run([_sbin("libvirtd"), "--daemon", *(["--listen"] if self.listen else []), "--config",
                  str(self.config_file), "--pid-file", self.pid_file])
        wait_until_answers(self.uri, wrap=self.nsenter_prefix())

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            for name, pid_file in (("libvirtd", self.pid_file), ("virtlogd", ISOLATED_VIRTLOGD_PID_FILE)):
                pid = self.daemon_pid(pid_file)
                if pid is not None:
                    stop_pid(pid, name)
            self.holder.terminate()
            try:
                self.holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait(timeout=10)
        self._namespaces.close()

    # -- inside the namespaces ----------------------------------------------------------

    def nsenter_prefix(self) -> list[str]:
        if self.holder is None:
            raise LibvirtdError("isolated libvirtd is not started")
        return ["nsenter", "--target", str(self.holder.pid), "--mount", "--net", "--"]

    def exec_argv(self, argv: list[str]) -> list[str]:
        return self.nsenter_prefix() + list(argv)

    def run(self, argv: list[str], check: bool = True, timeout: float = START_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        result = subprocess.run(self.exec_argv(argv), timeout=timeout, cwd="/", check=False, **kwargs)
        if check and result.returncode != 0:
            raise LibvirtdError("%s failed inside %s (exit %d): %s" % (
                " ".join(argv), self.namespace.name if self.namespace else "?", result.returncode,
                (result.stderr or result.stdout or "").strip()))
        return result

    def daemon_pid(self, pid_file: str | None = None) -> int | None:
        """PID of a daemon of this instance, read through the holder's view of the filesystem."""
        if self.holder is None:
            return None
        inside = Path("/proc/%d/root" % self.holder.pid) / (pid_file or self.pid_file).lstrip("/")
        pid = _read_pid(inside)
        if pid is None or not self._in_our_namespace(pid):
            return None
        return pid

    def processes(self, prefix: str) -> list[int]:
        """The pids of the processes of this instance's network namespace whose name starts with
        `prefix` (its guests' QEMU: "qemu")."""
        pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
        return sorted(pid for pid in pids if _comm(pid).startswith(prefix) and self._in_our_namespace(pid))

    def _in_our_namespace(self, pid: int) -> bool:
        try:
            return os.readlink("/proc/%d/ns/net" % pid) == os.readlink("/proc/%d/ns/net" % self.holder.pid)
        except OSError:
            return False


def isolated_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="swlv-"))
