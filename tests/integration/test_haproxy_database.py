"""The haproxy role's database listener in front of two real MariaDB servers: every connection
goes to the first while it is up, to the backup while it is down, and back to the first when it
returns, with the sessions left on the backup closed, so one server takes the writes at a time."""

from __future__ import annotations

import time

import pymysql
import pytest

from tests.support.ansible import private_supervisor, role_playbook, shutdown_supervisor
from tests.support.engine import free_port
from tests.support.mariadb import MariaDBServer

RUN_TIMEOUT = 300
WRITER, PASSWORD = "writer", "writer-password"

pytestmark = [pytest.mark.mysql, pytest.mark.slow]


@pytest.fixture
def servers(tmp_path):
    started = []
    try:
        for name in ("db1", "db2"):
            server = MariaDBServer(tmp_path / ("%s.log" % name))
            started.append(server)
            server.start()
            with server.admin_connection() as connection, connection.cursor() as cursor:
                cursor.execute("CREATE USER IF NOT EXISTS 'haproxy_check'@'127.0.0.1'")
                cursor.execute("CREATE USER IF NOT EXISTS %s@'127.0.0.1' IDENTIFIED BY %s", (WRITER, PASSWORD))
        yield started
    finally:
        for server in started:
            server.close()


@pytest.fixture
def listener(tmp_path, servers):
    port = free_port()
    play_vars = {
        "haproxy_bind_address": "127.0.0.1",
        "haproxy_log_target": "",
        "haproxy_config_file": str(tmp_path / "etc" / "haproxy.cfg"),
        "haproxy_database_enabled": True,
        "haproxy_database_port": port,
        "haproxy_database_servers": [{"name": "db%d" % (index + 1), "address": "127.0.0.1", "port": server.port}
                                     for index, server in enumerate(servers)],
        "haproxy_daemon_name": "test-haproxy-db",
        "haproxy_service_manager": "supervisor",
        **private_supervisor(tmp_path),
    }
    run = role_playbook("haproxy", play_vars, work=tmp_path, timeout=RUN_TIMEOUT).run()
    try:
        assert run.returncode == 0, run.stdout[-10000:] + run.stderr[-3000:]
        yield port
    finally:
        shutdown_supervisor(tmp_path)


def connect(port):
    return pymysql.connect(host="127.0.0.1", port=port, user=WRITER, password=PASSWORD, connect_timeout=5,
                           read_timeout=5)


def served_by(port):
    """The port of the MariaDB server a new connection through the balancer reaches."""
    with connect(port) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT @@port")
        return cursor.fetchone()[0]


def until_served_by(port, expected, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = served_by(port)
            if last == expected:
                return
        except pymysql.MySQLError as error:
            last = error
        time.sleep(0.3)
    pytest.fail("connections reach %r, not port %d" % (last, expected), pytrace=False)


@pytest.mark.timeout(300)
def test_one_database_server_takes_the_writes(listener, servers):
    first, backup = servers
    until_served_by(listener, first.port)
    assert {served_by(listener) for _unused in range(10)} == {first.port}

    # The first server stops: new connections reach the backup.
    first.stop()
    until_served_by(listener, backup.port)
    session = connect(listener)
    with session.cursor() as cursor:
        cursor.execute("SELECT @@port")
        assert cursor.fetchone()[0] == backup.port

    # It comes back: connections return to it, and the session left on the backup is closed.
    first.start()
    until_served_by(listener, first.port)
    with pytest.raises(pymysql.MySQLError):
        with session.cursor() as cursor:
            cursor.execute("SELECT @@port")
    session.close()
