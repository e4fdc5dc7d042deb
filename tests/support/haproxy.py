"""HAProxy on loopback with the haproxy role's own configuration (its template rendered with
its defaults and the test's servers), run in the foreground by the test that starts it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import jinja2
import yaml

from tests.support.engine import free_port, terminate

ROLE = Path(__file__).resolve().parents[2] / "roles" / "haproxy"
HAPROXY = "/usr/sbin/haproxy"


def role_config(**overrides) -> str:
    """The role's haproxy.cfg for its defaults with `overrides` applied."""
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables.update(ansible_managed="haproxy role template, rendered for a test", **overrides)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    return environment.get_template("haproxy.cfg.j2").render(**variables)


class Balancer:
    """The API (HTTP, sticky, health-checked) and agent (TCP) listeners of the role in front of
    engines (`EngineProcess`es), on free loopback ports; `check_interval` is HAProxy's `inter`.
    With `databases` (MariaDB servers, e.g. Galera nodes, each with the password-less
    `haproxy_check` user of the galera role) also its database listener on `database_port`:
    one server takes every connection, the next ones are backups."""

    def __init__(self, workdir: Path, engines, check_interval="500ms", databases=()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_port, self.agent_port, self.database_port = free_port(), free_port(), free_port()
        self.endpoint = "http://127.0.0.1:%d/client/api" % self.api_port
        self.config_file = self.workdir / "haproxy.cfg"
        self.config_file.write_text(role_config(
            haproxy_bind_address="127.0.0.1", haproxy_log_target="", haproxy_api_port=self.api_port,
            haproxy_agent_port=self.agent_port, haproxy_api_check_interval=check_interval,
            haproxy_database_enabled=bool(databases), haproxy_database_port=self.database_port,
            haproxy_database_servers=[{"name": "db%d" % index, "address": "127.0.0.1", "port": server.port}
                                      for index, server in enumerate(databases, 1)],
            haproxy_management_servers=[
                {"name": "ms%d" % index, "address": "127.0.0.1", "api_port": engine.port,
                 "agent_port": engine.agent_port} for index, engine in enumerate(engines, 1)]))
        self.proc = None

    def start(self, timeout=10.0) -> Balancer:
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.config_file)], capture_output=True, text=True,
                               timeout=30, check=False)
        if check.returncode != 0:
            raise RuntimeError("haproxy refuses %s: %s%s" % (self.config_file, check.stdout, check.stderr))
        with open(self.workdir / "haproxy.log", "ab") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config_file)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("haproxy exited with %s" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.api_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("haproxy did not listen on %d within %ss" % (self.api_port, timeout))

    def client(self, engine, **kw):
        """A `cs` client for the API through the balancer, with `engine`'s keys."""
        from cs import CloudStack

        kw.setdefault("poll_interval", 0.2)
        kw.setdefault("job_timeout", 120)
        return CloudStack(endpoint=self.endpoint, key=engine.api_key, secret=engine.api_secret, timeout=30, **kw)

    def stop(self):
        terminate(self.proc)
