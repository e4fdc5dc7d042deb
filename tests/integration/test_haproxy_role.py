"""The haproxy role on loopback: two small HTTP servers stand for the engines' API, two TCP
servers for their agent port. The role's haproxy.cfg passes `haproxy -c`, and the HAProxy it
runs balances calls, keeps a JSESSIONID session on its engine, leaves an engine whose health
check fails, and spreads agent connections."""

from __future__ import annotations

import http.cookies
import http.server
import re
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.ansible import private_supervisor, role_playbook, shutdown_supervisor
from tests.support.engine import free_ports

RUN_TIMEOUT = 300
HEALTH_PATH = "/client/api/health"

pytestmark = pytest.mark.slow


class Engine(http.server.ThreadingHTTPServer):
    """Answers like the engine does where the balancer looks: 200 on its health path while its
    database answers (`healthy`), 503 otherwise; `login` sets JSESSIONID."""

    daemon_threads = True

    def __init__(self, name):
        self.name, self.healthy, self.sessions = name, True, 0
        super().__init__(("127.0.0.1", 0), EngineHandler)


class EngineHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        query = parse_qs(urlsplit(self.path).query)
        headers = {}
        if urlsplit(self.path).path == HEALTH_PATH:
            status, body = (200 if server.healthy else 503), "health"
        elif query.get("command") == ["login"]:
            server.sessions += 1
            status, body = 200, server.name
            headers["Set-Cookie"] = "JSESSIONID=%s-%d; Path=/client; HttpOnly" % (server.name, server.sessions)
        else:
            cookie = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
            session = cookie["JSESSIONID"].value if "JSESSIONID" in cookie else ""
            status, body = 200, "%s %s" % (server.name, session)
        data = body.encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class AgentPort(socketserver.ThreadingTCPServer):
    """Sends its name to each connection and holds it until the client closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name):
        self.name = name
        super().__init__(("127.0.0.1", 0), AgentHandler)


class AgentHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(self.server.name.encode() + b"\n")
        self.request.settimeout(60)
        try:
            while self.request.recv(1024):
                pass
        except OSError:
            pass


def serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def balancer(tmp_path):
    engines = [serve(Engine("mgmt1")), serve(Engine("mgmt2"))]
    agents = [serve(AgentPort("mgmt1")), serve(AgentPort("mgmt2"))]
    api_port, agent_port, database_port, db1, db2 = free_ports(5)
    play_vars = {
        "haproxy_bind_address": "127.0.0.1",
        "haproxy_api_port": api_port,
        "haproxy_agent_port": agent_port,
        "haproxy_api_check_interval": "500ms",
        "haproxy_log_target": "",
        "haproxy_config_file": str(tmp_path / "etc" / "haproxy.cfg"),
        "haproxy_management_servers": [
            {"name": engine.name, "address": "127.0.0.1", "api_port": engine.server_address[1],
             "agent_port": agent.server_address[1]} for engine, agent in zip(engines, agents, strict=True)],
        # Nothing listens there: the listener is written and validated, its servers stay down.
        "haproxy_database_enabled": True,
        "haproxy_database_port": database_port,
        "haproxy_database_servers": [{"name": "db1", "address": "127.0.0.1", "port": db1},
                                     {"name": "db2", "address": "127.0.0.1", "port": db2}],
        "haproxy_daemon_name": "test-haproxy",
        "haproxy_service_manager": "supervisor",
        **private_supervisor(tmp_path),
    }
    playbook = role_playbook("haproxy", play_vars, work=tmp_path, timeout=RUN_TIMEOUT)

    def converge(*extra):
        return playbook.converge(*extra)["localhost"]

    state = {"converge": converge, "engines": engines, "api_port": api_port, "agent_port": agent_port,
             "config": Path(play_vars["haproxy_config_file"]), "database_port": database_port}
    try:
        yield state
    finally:
        shutdown_supervisor(tmp_path)
        for server in engines + agents:
            server.shutdown()
            server.server_close()


def call(port, query, cookie=None):
    request = urllib.request.Request("http://127.0.0.1:%d/client/api?%s" % (port, query))
    if cookie:
        request.add_header("Cookie", cookie)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode(), response.headers.get_all("Set-Cookie") or []


def until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    return False


@pytest.mark.timeout(300)
def test_haproxy_balances_and_keeps_sessions(balancer):
    port = balancer["api_port"]
    assert balancer["converge"]() > 0
    checked = subprocess.run(["haproxy", "-c", "-f", str(balancer["config"])], capture_output=True, text=True,
                             timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = balancer["config"].read_text()
    assert "cookie JSESSIONID prefix nocache" in config and "option mysql-check user haproxy_check" in config
    assert re.search(r"server db1 \S+ check on-marked-up shutdown-backup-sessions\n\s+server db2 \S+ check backup",
                     config)
    # A second run changes nothing.
    assert balancer["converge"]() == 0

    # Calls without a session go round robin over both engines once both pass the check.
    seen = set()
    assert until(lambda: seen.add(call(port, "command=listZones")[0].split()[0]) or seen == {"mgmt1", "mgmt2"})

    # A session stays on the engine that opened it; the engine sees its own cookie value.
    body, cookies = call(port, "command=login")
    owner = body
    jsession = http.cookies.SimpleCookie(cookies[0])["JSESSIONID"].value
    assert jsession.startswith(owner + "~"), jsession
    for _unused in range(10):
        answer = call(port, "command=listZones", cookie="JSESSIONID=%s" % jsession)[0]
        assert answer == "%s %s-1" % (owner, owner), answer

    # An engine whose health check fails (its database gone) gets no more calls, sessions included.
    engines = {engine.name: engine for engine in balancer["engines"]}
    engines[owner].healthy = False
    other = ({"mgmt1", "mgmt2"} - {owner}).pop()
    assert until(lambda: all(call(port, "command=listZones", cookie="JSESSIONID=%s" % jsession)[0].startswith(other)
                             for _unused in range(4)), timeout=20)
    engines[owner].healthy = True

    # Agents: each new connection goes to the engine holding fewer.
    with socket.create_connection(("127.0.0.1", balancer["agent_port"]), timeout=10) as first:
        first_name = first.makefile().readline().strip()
        with socket.create_connection(("127.0.0.1", balancer["agent_port"]), timeout=10) as second:
            second_name = second.makefile().readline().strip()
    assert {first_name, second_name} == {"mgmt1", "mgmt2"}
