"""The haproxy role in front of a real engine on its own MariaDB: the balancer's health check
is the engine's /client/api/health, which answers 200 while the engine reaches its database
and its management-server record is Up. When the database goes away the engine answers 503
and HAProxy marks it down; when the database is back, up again and calls pass."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.error
import urllib.request

import pytest
from cs import CloudStack

from tests.support.ansible import private_supervisor, role_playbook, shutdown_supervisor
from tests.support.engine import EngineProcess, free_ports
from tests.support.mariadb import MariaDBServer
from tests.support.waiting import wait_for

RUN_TIMEOUT = 300
# HAProxy checks every CHECK_INTERVAL, three failures mark a server down and two successes up.
CHECK_INTERVAL = 0.5

pytestmark = [pytest.mark.mysql, pytest.mark.slow]


def health(url):
    """(status, body) of a GET of the health endpoint at `url`."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def backend_status(stats_port, backend, server):
    """The status HAProxy's statistics page gives `server` of `backend` (UP, DOWN, ...)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/;csv" % stats_port, timeout=5) as response:
        rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
        for row in rows:
            if row["pxname"] == backend and row["svname"] == server:
                return row["status"].split()[0]
    return None


@pytest.fixture
def database_server(tmp_path):
    server = MariaDBServer(tmp_path / "mariadbd.log")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def engine(tmp_path, database_server):
    proc = EngineProcess(tmp_path / "engine", database_server.create_database(prefix="health").url)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def balancer(tmp_path, engine):
    api_port, agent_port, stats_port = free_ports(3)
    play_vars = {
        "haproxy_bind_address": "127.0.0.1",
        "haproxy_api_port": api_port,
        "haproxy_agent_port": agent_port,
        "haproxy_api_check_interval": "%dms" % (CHECK_INTERVAL * 1000),
        "haproxy_stats_listen": "127.0.0.1:%d" % stats_port,
        "haproxy_log_target": "",
        "haproxy_config_file": str(tmp_path / "etc" / "haproxy.cfg"),
        "haproxy_management_servers": [{"name": "mgmt1", "address": "127.0.0.1", "api_port": engine.port,
                                        "agent_port": engine.agent_port}],
        "haproxy_daemon_name": "test-haproxy-health",
        "haproxy_service_manager": "supervisor",
        **private_supervisor(tmp_path),
    }
    run = role_playbook("haproxy", play_vars, work=tmp_path, timeout=RUN_TIMEOUT).run()
    try:
        assert run.returncode == 0, run.stdout[-10000:] + run.stderr[-3000:]
        yield {"api_port": api_port, "stats_port": stats_port}
    finally:
        shutdown_supervisor(tmp_path)


@pytest.mark.timeout(300)
def test_an_engine_without_its_database_is_taken_out_of_the_balancer(balancer, engine, database_server):
    health_url = "http://127.0.0.1:%d/client/api/health" % engine.port
    status, body = health(health_url)
    assert status == 200 and body == {"health": {"status": "UP", "database": "reachable",
                                                 "managementserverstate": "Up"}}, body
    stats = balancer["stats_port"]
    wait_for("engine UP in HAProxy", lambda: backend_status(stats, "cloudstack_api", "mgmt1") == "UP", 20)
    through = CloudStack(endpoint="http://127.0.0.1:%d/client/api" % balancer["api_port"], key=engine.api_key,
                         secret=engine.api_secret, timeout=30)
    assert "capability" in through.listCapabilities()

    # The database goes away: the engine says so, and HAProxy stops sending it calls.
    database_server.stop()
    status, body = health(health_url)
    assert status == 503 and body == {"health": {"status": "DOWN", "database": "unreachable"}}, body
    gone = time.monotonic()
    wait_for("engine DOWN in HAProxy", lambda: backend_status(stats, "cloudstack_api", "mgmt1") == "DOWN", 20)
    marked_down = time.monotonic() - gone
    # Three failed checks, the first within one interval, each bounded by the 5 s check timeout.
    assert marked_down < 3 * CHECK_INTERVAL + 6, marked_down
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen("http://127.0.0.1:%d/client/api?command=listCapabilities" % balancer["api_port"],
                               timeout=10)
    assert refused.value.code == 503          # HAProxy: no server available

    # The database is back: the engine reconnects and HAProxy sends it calls again.
    database_server.start()
    wait_for("engine healthy again", lambda: health(health_url)[0] == 200, 30)
    wait_for("engine UP in HAProxy again", lambda: backend_status(stats, "cloudstack_api", "mgmt1") == "UP", 20)
    assert "capability" in through.listCapabilities()
    assert "Traceback" not in engine.log_file.read_text()
