"""A real management engine process for tests: set up its database, start, stop, kill."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count, host="127.0.0.1"):
    """`count` distinct free ports: each probe stays bound until all are chosen."""
    probes = []
    try:
        for _unused in range(count):
            probe = socket.socket()
            probe.bind((host, 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def terminate(proc, timeout=10.0):
    """End a child process started by a test: SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def engine_pair(workdir: Path, db_url: str, extra_args=()):
    """Two engines `a` and `b` (not started) on one database, with one key file."""
    a = EngineProcess(Path(workdir) / "a", db_url, extra_args=extra_args)
    return a, EngineProcess(Path(workdir) / "b", db_url, extra_args=extra_args, key_file=a.key_file)


def start_pair(a, b, heartbeat_ms, threshold_ms):
    """Start `a`, set the heartbeat interval and threshold (milliseconds) through it, then start
    `b` on the same database and keys; returns a client of `a`."""
    a.start()
    api_a = a.client()
    api_a.updateConfiguration(name="cluster.heartbeat.interval", value=str(heartbeat_ms))
    api_a.updateConfiguration(name="cluster.heartbeat.threshold", value=str(threshold_ms))
    b.api_key, b.api_secret = a.api_key, a.api_secret
    b.start()
    return api_a


class EngineProcess:
    """`stackwright-management` on loopback with its own database, logs and ports."""

    def __init__(self, workdir: Path, db_url: str, extra_args=(), env=None, key_file=True):
        """`key_file`: where the key for secrets at rest is (True: in `workdir`; False: pass none,
        for an engine older than encryption at rest, as benchmarks against a base commit run)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        self.port = free_port()
        self.agent_port = free_port()
        self.endpoint = "http://127.0.0.1:%d/client/api" % self.port
        self.credentials_file = self.workdir / "cloudstack.ini"
        self.key_file = (self.workdir / "key" if key_file is True else Path(key_file)) if key_file else None
        self.log_file = self.workdir / "management-server.log"
        self.stderr_file = self.workdir / "stderr.log"
        self.extra_args = list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.api_key = self.api_secret = None

    def setup_database(self):
        out = subprocess.run(
            [str(BIN / "stackwright-setup-databases"), "--db-url", self.db_url,
             "--credentials-file", str(self.credentials_file), "--endpoint", self.endpoint,
             *self._key_args()],
            capture_output=True, text=True, timeout=120, check=False, env=self.env,
        )
        if out.returncode != 0:
            raise RuntimeError("stackwright-setup-databases failed: %s%s" % (out.stdout, out.stderr))
        cp = configparser.ConfigParser()
        cp.read(self.credentials_file)
        self.api_key, self.api_secret = cp["cloudstack"]["key"], cp["cloudstack"]["secret"]
        return out.stdout

    def start(self, timeout=30.0):
        if self.api_key is None:
            self.setup_database()
        cmd = [
            str(BIN / "stackwright-management"), "--db-url", self.db_url,
            "--listen", "127.0.0.1:%d" % self.port,
            "--agent-listen", "127.0.0.1:%d" % self.agent_port,
            "--pki-dir", str(self.workdir / "pki"), *self._key_args(),
            "--log-file", str(self.log_file), *self.extra_args,
        ]
        stderr = open(self.stderr_file, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=self.env)
        stderr.close()
        self.wait_ready(timeout)
        return self

    def _key_args(self):
        return ["--key-file", str(self.key_file)] if self.key_file is not None else []

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("engine exited with %s:\n%s" % (self.proc.returncode, self.stderr_tail()))
            try:
                with urllib.request.urlopen(self.endpoint + "?command=listApis&response=json", timeout=2):
                    pass
            except urllib.error.HTTPError:
                return  # answering (401 without a signature) is ready
            except OSError:
                time.sleep(0.1)
                continue
            return
        raise RuntimeError("engine did not answer on %s within %ss:\n%s" % (self.endpoint, timeout, self.stderr_tail()))

    def stderr_tail(self, lines=40):
        try:
            return "\n".join(self.stderr_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self, timeout=20.0):
        """SIGTERM and wait: a clean shutdown."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError("engine did not stop within %ss of SIGTERM" % timeout) from None

    def kill(self):
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, hard=False):
        self.kill() if hard else self.stop()
        return self.start()

    def client(self, **kw):
        from cs import CloudStack

        kw.setdefault("poll_interval", 0.2)
        kw.setdefault("job_timeout", 120)
        return CloudStack(endpoint=self.endpoint, key=self.api_key, secret=self.api_secret,
                          timeout=30, **kw)
