"""Fault: one node of a three-node MariaDB Galera cluster is stopped under write load and
started again; no committed change is lost.

Three writers, one per node, insert rows (each row's key chosen by its writer) as fast as
they can, each commit acknowledged or failed as its client sees it. Node 2 is stopped
(SIGTERM) while they write, the other two keep taking writes, and node 2 is started again:
it rejoins by an incremental state transfer. Once every node is Synced, every acknowledged
row must be on every node, and the three nodes must hold the same rows. Node 2's writer
fails while its node is down; those writes were never acknowledged.

With STACKWRIGHT_RECORD=1 the stop and rejoin are repeated (RECORD_RUNS) on the same
cluster and the figures go to docs/reliability.md.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid

import pymysql
import pytest

from bench.report import table
from tests.support.galera import GaleraCluster

pytestmark = [pytest.mark.slow, pytest.mark.mysql]

RECORD = os.environ.get("STACKWRIGHT_RECORD") == "1"
RECORD_RUNS = 5
DOWN_SECONDS = 3.0            # writes taken by the other two while node 2 is down


class Writer:
    """Inserts into `node` in a loop; `acknowledged` holds the keys whose COMMIT returned."""

    def __init__(self, node, database):
        self.node, self.database = node, database
        self.acknowledged, self.failures = set(), 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name="writer-%s" % node.name, daemon=True)

    def connect(self):
        return pymysql.connect(host="127.0.0.1", port=self.node.port, user=self.database.user,
                               password=self.database.password, database=self.database.name,
                               connect_timeout=2, read_timeout=5, write_timeout=5)

    def run(self):
        connection = None
        while not self.done.is_set():
            key = uuid.uuid4().hex
            try:
                if connection is None:
                    connection = self.connect()
                with connection.cursor() as cursor:
                    cursor.execute("INSERT INTO acknowledged (id, node) VALUES (%s, %s)", (key, self.node.name))
                connection.commit()
                self.acknowledged.add(key)
            except pymysql.MySQLError:
                self.failures += 1
                if connection is not None:
                    connection.close()
                    connection = None
                time.sleep(0.1)
        if connection is not None:
            connection.close()

    def stop(self):
        self.done.set()
        self.thread.join(30)


def rows(node, database):
    with node.admin_connection() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM `%s`.acknowledged" % database.name)
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.timeout(600 if RECORD else 300)
def test_galera_node_stopped_under_writes_loses_no_commit(tmp_path, record_reliability):
    cluster = GaleraCluster(tmp_path / "galera").start()
    try:
        first, stopped, _third = cluster.nodes
        database = first.create_database(prefix="galera_fault")
        with database.connect() as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE acknowledged (id CHAR(32) PRIMARY KEY, node VARCHAR(16) NOT NULL)")
        writers = [Writer(node, database) for node in cluster.nodes]
        for writer in writers:
            writer.thread.start()
        runs = []
        for _run in range(RECORD_RUNS if RECORD else 1):
            time.sleep(1.0)
            during = sum(len(w.acknowledged) for w in writers)
            stopped.stop()
            time.sleep(DOWN_SECONDS)
            restarted = time.monotonic()
            stopped.start()
            stopped.wait_synced(len(cluster.nodes))
            runs.append({"rejoin": time.monotonic() - restarted,
                         "while_down": sum(len(w.acknowledged) for w in writers) - during})
        time.sleep(1.0)
        for writer in writers:
            writer.stop()
        for node in cluster.nodes:
            node.wait_synced(len(cluster.nodes))
        acknowledged = set().union(*(w.acknowledged for w in writers))
        held = {node.name: rows(node, database) for node in cluster.nodes}
        for name, keys in held.items():
            missing = acknowledged - keys
            assert not missing, "%s lacks %d acknowledged rows, e.g. %s" % (name, len(missing), sorted(missing)[:3])
        assert len({frozenset(keys) for keys in held.values()}) == 1, {n: len(k) for n, k in held.items()}
        assert all(len(w.acknowledged) > 0 for w in writers)
        assert writers[1].failures > 0, "node 2's writer never saw its node down"

        rejoins = [r["rejoin"] for r in runs]
        body = ("Three MariaDB Galera nodes on loopback (`tests/support/galera.py`: the galera role's wsrep "
                "settings, rsync state transfers), one writer per node inserting rows with autocommit; node 2 "
                "stopped (SIGTERM) for %.0f s under the writes and started again, %d time(s).\n\n%s" % (
                    DOWN_SECONDS, len(runs), table(["measure", "value"], [
                        ["acknowledged commits (all writers)", len(acknowledged)],
                        ["of them while node 2 was down (per stop)",
                         ", ".join(str(r["while_down"]) for r in runs)],
                        ["failed writes (node 2's writer, its node down)", writers[1].failures],
                        ["start of node 2 to Synced (median, max)",
                         "%.1f s, %.1f s" % (statistics.median(rejoins), max(rejoins))],
                        ["acknowledged commits missing on any node after the rejoin", 0],
                        ["rows that differ between nodes", 0],
                    ])))
        record_reliability("Galera node stopped under writes and rejoining", body)
    finally:
        cluster.close()
