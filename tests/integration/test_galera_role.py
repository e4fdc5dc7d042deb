"""The galera role on one machine: three MariaDB Galera nodes on 127.0.0.1, each a mariadbd of
its own (ports, data directory, socket, private supervisord).

One test walks the life of the cluster, each step depending on the one before: bootstrap and
joins with full state transfers, a second run and a check-mode run that change nothing, a row
written on node 1 read on node 3, node 2 stopped under writes and brought back by the role
with every committed row, a clean stop of every node and the restart from the node Galera
marked safe_to_bootstrap, then a crash of every node: the role stops with the recovered
positions, and bootstraps the node with the highest seqno when told to.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymysql
import pytest

from tests.support.ansible import changed_per_host, role_playbook
from tests.support.engine import free_ports

BIN = Path(sys.executable).parent
NODES = ("node1", "node2", "node3")
RUN_TIMEOUT = 600
PASSWORD = "galera-test-password"

pytestmark = [pytest.mark.mysql, pytest.mark.slow]


class Cluster:
    """Three nodes' inventory, the playbook that applies the role, and the processes to end."""

    def __init__(self, work: Path):
        self.work = work
        ports = free_ports(4 * len(NODES))
        self.nodes = {}
        for index, name in enumerate(NODES):
            base = work / name
            port, wsrep, ist, sst = ports[4 * index:4 * index + 4]
            self.nodes[name] = {
                "ansible_connection": "local",
                "galera_node_address": "127.0.0.1",
                "galera_port": port,
                "galera_wsrep_port": wsrep,
                "galera_ist_port": ist,
                "galera_sst_port": sst,
                "galera_datadir": str(base / "data"),
                "galera_socket": str(base / "run" / "mysqld.sock"),
                "galera_pid_file": str(base / "run" / "mysqld.pid"),
                "galera_log_file": str(base / "log" / "mysqld.log"),
                "galera_config_dir": str(base / "etc"),
                "galera_daemon_name": "galera-%s" % name,
                "galera_service_manager": "supervisor",
                "galera_start_timeout": 240,
                "galera_mysqld_settings": {"innodb_buffer_pool_size": "32M", "innodb_log_file_size": "16M",
                                           "max_connections": 50},
                "runtime_supervisor_dir": str(base / "supervisor"),
                "runtime_supervisor_run_dir": str(base / "supervisor-run"),
                "runtime_log_dir": str(base / "supervisor-log"),
            }
        inventory = {"galera": {
            "hosts": self.nodes,
            "vars": {
                "galera_cluster_name": "stackwright-test",
                "galera_databases": [{"name": "ha"}],
                "galera_users": [{"name": "ha", "password": PASSWORD, "host": "127.0.0.1", "database": "ha"}],
                "galera_check_hosts": ["127.0.0.1"],
            },
        }}
        self.playbook = role_playbook("galera", hosts="galera", inventory=inventory, work=work, timeout=RUN_TIMEOUT)

    def converge(self, *extra, expect_failure=False):
        run = self.playbook.run(*extra)
        if (run.returncode != 0) != expect_failure:
            pytest.fail("ansible-playbook %s rc=%d:\n%s\n%s\n%s" % (
                " ".join(extra), run.returncode, run.stdout[-15000:], run.stderr[-3000:], self.logs()), pytrace=False)
        return run

    def changed(self, run):
        recaps = changed_per_host(run.stdout)
        assert set(recaps) == set(NODES), run.stdout[-3000:]
        return recaps

    def logs(self):
        tails = []
        for name in NODES:
            log = Path(self.nodes[name]["galera_log_file"])
            if log.exists():
                tails.append("--- %s\n%s" % (log, "\n".join(log.read_text(errors="replace").splitlines()[-25:])))
        return "\n".join(tails)

    def connect(self, name, user="ha", password=PASSWORD, database="ha"):
        return pymysql.connect(host="127.0.0.1", port=self.nodes[name]["galera_port"], user=user, password=password,
                               database=database, autocommit=True, connect_timeout=10, read_timeout=30)

    def status(self, name, variable):
        with self.connect(name) as connection, connection.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE %s", (variable,))
            return cursor.fetchone()[1]

    def supervisorctl(self, name, *args):
        conf = Path(self.nodes[name]["runtime_supervisor_dir"]) / "supervisord.conf"
        return subprocess.run(["supervisorctl", "-c", str(conf), *args], capture_output=True, text=True,
                              timeout=180, check=False)

    def stop_node(self, name):
        """A clean stop through the node's supervisord (SIGTERM, mariadbd saves its position)."""
        result = self.supervisorctl(name, "stop", "galera-%s" % name)
        assert "stopped" in result.stdout, result.stdout + result.stderr

    def grastate(self, name):
        text = (Path(self.nodes[name]["galera_datadir"]) / "grastate.dat").read_text()
        return {key: value.strip() for key, value in re.findall(r"^(\w+):\s*(.*)$", text, re.MULTILINE)}

    def pid(self, path):
        try:
            return int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_everything(self, sig=signal.SIGKILL):
        """SIGKILL of each node's supervisord, then of its mariadbd: a crash of every node."""
        for name in NODES:
            for path in (Path(self.nodes[name]["runtime_supervisor_run_dir"]) / "supervisord.pid",
                         self.nodes[name]["galera_pid_file"]):
                pid = self.pid(path)
                if pid is not None:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(self.answers(name) for name in NODES):
            time.sleep(0.5)

    def answers(self, name):
        try:
            with socket.create_connection(("127.0.0.1", self.nodes[name]["galera_port"]), timeout=1):
                return True
        except OSError:
            return False

    def close(self):
        for name in NODES:
            if (Path(self.nodes[name]["runtime_supervisor_dir"]) / "supervisord.conf").exists():
                self.supervisorctl(name, "shutdown")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(self.answers(name) for name in NODES):
            time.sleep(0.5)
        self.kill_everything()


@pytest.fixture
def cluster(tmp_path):
    # mariadbd runs as mysql: its directories must be reachable through every parent.
    work = Path(tempfile.mkdtemp(prefix="sw-galera-", dir="/tmp"))
    work.chmod(0o755)
    cluster = Cluster(work)
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)


class Writer(threading.Thread):
    """Inserts rows one by one through `node`, remembering the ids of committed inserts."""

    def __init__(self, cluster, node):
        super().__init__(daemon=True)
        self.cluster, self.node = cluster, node
        self.committed, self.errors = [], []
        self.halt = threading.Event()

    def run(self):
        connection = self.cluster.connect(self.node)
        with connection:
            cursor = connection.cursor()
            while not self.halt.is_set():
                try:
                    cursor.execute("INSERT INTO writes (payload) VALUES (%s)", ("x" * 64,))
                    self.committed.append(cursor.lastrowid)
                except pymysql.MySQLError as error:
                    self.errors.append(repr(error))
                    time.sleep(0.1)
                time.sleep(0.005)

    def stop(self):
        self.halt.set()
        self.join(30)


def ids(cluster, name):
    with cluster.connect(name) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM writes")
        return {row[0] for row in cursor.fetchall()}


def assert_cluster_of_three(cluster):
    for name in NODES:
        assert cluster.status(name, "wsrep_cluster_size") == "3", name
        assert cluster.status(name, "wsrep_local_state_comment") == "Synced", name


@pytest.mark.timeout(1500)
def test_galera_cluster_life(cluster):
    # Bootstrap of node 1, joins of nodes 2 and 3 (full state transfer by rsync).
    cluster.converge()
    assert_cluster_of_three(cluster)
    # HAProxy's check user exists on every node (replicated).
    with pymysql.connect(host="127.0.0.1", port=cluster.nodes["node3"]["galera_port"], user="haproxy_check",
                         connect_timeout=10):
        pass

    # Nothing to do on a second run, nor in check mode.
    assert cluster.changed(cluster.converge()) == dict.fromkeys(NODES, 0)
    assert cluster.changed(cluster.converge("--check")) == dict.fromkeys(NODES, 0)

    # A write on node 1 is read on node 3.
    with cluster.connect("node1") as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64))")
        cursor.execute("INSERT INTO writes (payload) VALUES ('first')")
        first = cursor.lastrowid
    assert first in ids(cluster, "node3")

    # Node 2 stops under writes and the role brings it back: it holds every committed row.
    writer = Writer(cluster, "node1")
    writer.start()
    try:
        time.sleep(2)
        cluster.stop_node("node2")
        time.sleep(3)
        assert cluster.status("node1", "wsrep_cluster_size") == "2"
        run = cluster.converge()
        assert cluster.changed(run)["node2"] > 0
        time.sleep(2)
    finally:
        writer.stop()
    assert writer.committed and not writer.errors, writer.errors[:5]
    committed = set(writer.committed) | {first}
    assert_cluster_of_three(cluster)
    for name in NODES:
        assert committed <= ids(cluster, name), name

    # Every node stops cleanly, node 3 last: Galera marks it alone safe to bootstrap, and the
    # role starts the cluster again from it.
    for name in NODES:
        cluster.stop_node(name)
    states = {name: cluster.grastate(name) for name in NODES}
    assert [states[name]["safe_to_bootstrap"] for name in NODES] == ["0", "0", "1"], states
    run = cluster.converge()
    assert_cluster_of_three(cluster)
    for name in NODES:
        assert committed <= ids(cluster, name), name

    # A crash of every node: none is safe to bootstrap. The role lists each node's recovered
    # seqno and stops; told to, it bootstraps the node with the highest seqno.
    with cluster.connect("node2") as connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO writes (payload) VALUES ('before the crash')")
        last = cursor.lastrowid
    cluster.kill_everything()
    assert all(cluster.grastate(name)["safe_to_bootstrap"] == "0" for name in NODES)
    refused = cluster.converge(expect_failure=True)
    assert "Last committed seqno per node" in refused.stdout, refused.stdout[-3000:]
    assert not any(cluster.answers(name) for name in NODES)
    cluster.converge("-e", "galera_bootstrap_after_crash=true")
    assert_cluster_of_three(cluster)
    for name in NODES:
        assert committed | {last} <= ids(cluster, name), name
