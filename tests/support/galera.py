"""A MariaDB Galera cluster on loopback for tests and benchmarks: each node a private
``mariadbd`` (`MariaDBServer`) with the wsrep settings of the galera role's configuration
(ROW binlog, interleaved auto-increment locks, rsync state transfers), on ports of its own.

The first node bootstraps the cluster (`--wsrep-new-cluster`), the others join it with a full
state transfer; a node stopped and started again rejoins by an incremental one. Every node
has the same administration account (created once, replicated), so `admin_connection` and
`create_database` work on any of them.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.mariadb import LOOPBACK, MariaDBError, MariaDBServer, _free_port

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
# State transfers are rsyncs of the data directory; the buffer pool stays small, as for the
# session's MariaDB.
WSREP_OPTIONS = ("--binlog-format=ROW", "--innodb-autoinc-lock-mode=2", "--wsrep-on=ON",
                 "--wsrep-provider=" + PROVIDER, "--wsrep-sst-method=rsync")


class GaleraNode(MariaDBServer):
    """One node: `MariaDBServer` with wsrep on, its cluster's peers in `cluster_address`."""

    def __init__(self, log_file: Path, name: str, cluster_name: str, **kw) -> None:
        super().__init__(log_file, port=_free_port(), startup_timeout=180.0, **kw)
        self.name, self.cluster_name = name, cluster_name
        self.wsrep_port, self.ist_port, self.sst_port = _free_port(), _free_port(), _free_port()
        self.cluster_address = "gcomm://"
        self.bootstrap = False

    def _command(self, program: str, *options: str) -> list[str]:
        command = super()._command(program, *options)
        if program != self._mariadbd:
            return command
        command += [
            *WSREP_OPTIONS, "--wsrep-cluster-name=" + self.cluster_name, "--wsrep-node-name=" + self.name,
            "--wsrep-cluster-address=" + self.cluster_address,
            "--wsrep-node-address=%s:%d" % (LOOPBACK, self.wsrep_port),
            "--wsrep-node-incoming-address=%s:%d" % (LOOPBACK, self.port),
            "--wsrep-provider-options=gmcast.listen_addr=tcp://%s:%d;ist.recv_addr=%s:%d" % (
                LOOPBACK, self.wsrep_port, LOOPBACK, self.ist_port),
            "--wsrep-sst-receive-address=%s:%d" % (LOOPBACK, self.sst_port),
        ]
        if self.bootstrap:
            command.append("--wsrep-new-cluster")
        return command

    def _create_admin_account(self) -> None:
        # A joining node has the account already: its state transfer copied the first node's.
        if self.bootstrap:
            super()._create_admin_account()

    def status(self, name: str) -> str | None:
        """A `SHOW STATUS` value (e.g. wsrep_local_state_comment), None when the node does not answer."""
        try:
            with self.admin_connection() as connection, connection.cursor() as cursor:
                cursor.execute("SHOW STATUS LIKE %s", (name,))
                row = cursor.fetchone()
        except Exception:  # a node that is down or joining answers nothing yet
            return None
        return row[1] if row else None

    def wait_synced(self, size: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.status("wsrep_local_state_comment"), self.status("wsrep_cluster_size")) == ("Synced", str(size)):
                return
            time.sleep(0.2)
        raise MariaDBError("Galera node %s not Synced in a cluster of %d within %ss:\n%s" % (
            self.name, size, timeout, self._log_tail()))


class GaleraCluster:
    """`size` nodes on loopback; `start` bootstraps the first and joins the others."""

    def __init__(self, workdir: Path, size: int = 3, name: str = "stackwright_test") -> None:
        self.nodes = [GaleraNode(Path(workdir) / ("node%d.log" % n), "node%d" % n, name) for n in range(1, size + 1)]
        address = "gcomm://" + ",".join("%s:%d" % (LOOPBACK, node.wsrep_port) for node in self.nodes)
        for node in self.nodes:
            node.cluster_address = address
            node._admin_password = self.nodes[0]._admin_password

    def start(self) -> GaleraCluster:
        try:
            first = self.nodes[0]
            first.bootstrap = True
            first.start()
            for count, node in enumerate(self.nodes, 1):
                if count > 1:
                    first.bootstrap = False
                    node.start()
                node.wait_synced(count)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.close()
