"""MariaDB for the test suite: a private server the tests start, or one named by URL.

`MariaDBServer` runs Debian's ``mariadbd`` with its own data directory, listening on
127.0.0.1 at a free port and on a socket beside the data; it can be stopped and
started again on the same port and data, which fault tests rely on.
`ExternalMySQLServer` wraps a server that is already running, given by an admin URL.

Both hand out databases with `create_database`: a fresh utf8mb4 schema and a user
whose privileges cover only that schema.
"""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pymysql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

log = logging.getLogger(__name__)

ADMIN_URL_ENV = "STACKWRIGHT_TEST_MYSQL_URL"
LOOPBACK = "127.0.0.1"
DRIVER = "mysql+pymysql"
# The account the tests themselves use for administration over TCP.
ADMIN_USER = "stackwright_admin"
# Unix socket paths longer than this do not fit in sockaddr_un.
MAX_SOCKET_PATH = 100
DATABASE_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
SERVER_OPTIONS = (
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=16M",
    # Commits reach the OS at once and the disk within a second: a killed server
    # loses nothing, and tests do not wait on fsync.
    "--innodb-flush-log-at-trx-commit=2",
    "--max-connections=500",
)


class MariaDBError(RuntimeError):
    """The test database server could not be started, reached or used."""


@dataclass(frozen=True)
class MySQLDatabase:
    """One schema and the only user allowed into it."""

    name: str
    user: str
    password: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return URL.create(
            DRIVER,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.name,
        ).render_as_string(hide_password=False)

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.name,
            charset="utf8mb4",
            connect_timeout=10,
        )


class MySQLServer:
    """Administration shared by managed and external servers."""

    #: Whether the tests own the server process and may stop and start it.
    managed = False
    #: Host part of the accounts created for databases.
    account_host = "%"

    def __init__(self) -> None:
        self._databases: dict[str, MySQLDatabase] = {}

    @property
    def admin_url(self) -> str:
        raise NotImplementedError

    def admin_connection(self) -> pymysql.connections.Connection:
        url = make_url(self.admin_url)
        connection = pymysql.connect(
            host=url.host or LOOPBACK,
            port=url.port or 3306,
            user=url.username or "",
            password=url.password or "",
            charset="utf8mb4",
            connect_timeout=10,
            autocommit=True,
        )
        with connection.cursor() as cursor:
            # Never hang a test run on a lock held by a connection someone left open.
            cursor.execute("SET SESSION lock_wait_timeout = 30")
        return connection

    def create_database(self, prefix: str = "stackwright") -> MySQLDatabase:
        """Create an empty utf8mb4 database and a user with privileges on it alone."""
        if not DATABASE_PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError(
                f"database prefix {prefix!r} must be 1-40 characters of a-z, 0-9 and _, "
                "starting with a letter"
            )
        name = f"{prefix}_{secrets.token_hex(4)}"
        database = MySQLDatabase(
            name=name,
            user=name,
            password=secrets.token_urlsafe(18),
            host=make_url(self.admin_url).host or LOOPBACK,
            port=make_url(self.admin_url).port or 3306,
        )
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            cursor.execute(
                "CREATE USER %s@%s IDENTIFIED BY %s",
                (database.user, self.account_host, database.password),
            )
            cursor.execute(
                f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@%s",
                (database.user, self.account_host),
            )
        self._databases[name] = database
        log.info("created database %s on %s", name, self.describe())
        return database

    def drop_database(self, database: MySQLDatabase) -> None:
        """Drop the database and its user, closing the user's open connections first."""
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s",
                (database.user,),
            )
            for (connection_id,) in cursor.fetchall():
                try:
                    cursor.execute("KILL CONNECTION %s", (connection_id,))
                except pymysql.err.OperationalError:
                    pass  # it ended between the listing and the kill
            cursor.execute(f"DROP DATABASE IF EXISTS `{database.name}`")
            cursor.execute(
                "DROP USER IF EXISTS %s@%s", (database.user, self.account_host)
            )
        self._databases.pop(database.name, None)
        log.info("dropped database %s on %s", database.name, self.describe())

    def drop_all_databases(self) -> None:
        """Drop every database this object created and has not dropped yet."""
        for database in list(self._databases.values()):
            self.drop_database(database)

    def describe(self) -> str:
        return make_url(self.admin_url).render_as_string(hide_password=True)

    def start(self) -> None:
        raise self._not_managed("start")

    def stop(self) -> None:
        raise self._not_managed("stop")

    def close(self) -> None:
        self.drop_all_databases()

    def _not_managed(self, action: str) -> MariaDBError:
        return MariaDBError(
            f"cannot {action} {self.describe()}: the tests do not manage that server; "
            f"unset {ADMIN_URL_ENV} to let them start their own"
        )


class ExternalMySQLServer(MySQLServer):
    """A server that was already running, reached through an administrator URL."""

    def __init__(self, admin_url: str) -> None:
        super().__init__()
        try:
            url = make_url(admin_url)
        except ArgumentError:
            raise MariaDBError(
                f"{ADMIN_URL_ENV} is not a database URL; expected "
                f"{DRIVER}://USER:PASSWORD@127.0.0.1:PORT/"
            ) from None
        if url.get_backend_name() not in ("mysql", "mariadb") or not url.username:
            raise MariaDBError(
                f"{ADMIN_URL_ENV}={url.render_as_string(hide_password=True)} must be a "
                f"MySQL URL with a user, like {DRIVER}://root:PASSWORD@127.0.0.1:3306/"
            )
        self._admin_url = url.set(drivername=DRIVER, database=None)

    @property
    def admin_url(self) -> str:
        return self._admin_url.render_as_string(hide_password=False)

    def check(self) -> None:
        """Fail with a clear message when the server cannot be reached as administrator."""
        try:
            with self.admin_connection() as connection, connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except pymysql.err.MySQLError as error:
            raise MariaDBError(
                f"cannot use {self.describe()} from {ADMIN_URL_ENV}: {error}"
            ) from None


class MariaDBServer(MySQLServer):
    """A mariadbd process owned by the tests, with its data in a directory of its own."""

    managed = True
    # The server listens on loopback only, so its accounts need no wider host.
    account_host = LOOPBACK

    def __init__(
        self,
        log_file: Path,
        *,
        port: int | None = None,
        startup_timeout: float = 60.0,
        mariadbd: str = "/usr/sbin/mariadbd",
        install_db: str = "/usr/bin/mariadb-install-db",
    ) -> None:
        super().__init__()
        self.log_file = Path(log_file)
        self.startup_timeout = startup_timeout
        self._mariadbd = mariadbd
        self._install_db = install_db
        self._fixed_port = port
        self.port = port or 0
        self._process: subprocess.Popen[bytes] | None = None
        # Set once the server has been up: from then on port and accounts are fixed.
        self._started_once = False
        self._admin_password = secrets.token_urlsafe(18)
        # As root the server drops to the mysql account, which must reach every path it
        # uses; pytest's own temporary tree is private to root, so the data lives apart.
        self._run_as = "mysql" if os.geteuid() == 0 else None
        self.workdir = Path(tempfile.mkdtemp(prefix="stackwright-mariadb-"))
        if self._run_as:
            account = pwd.getpwnam(self._run_as)
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
        self.datadir = self.workdir / "data"
        self.socket_path = self.workdir / "mysqld.sock"
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            shutil.rmtree(self.workdir)
            raise MariaDBError(
                f"socket path {self.socket_path} is too long for a Unix socket; "
                "set TMPDIR to a shorter directory"
            )

    @property
    def admin_url(self) -> str:
        return URL.create(
            DRIVER,
            username=ADMIN_USER,
            password=self._admin_password,
            host=LOOPBACK,
            port=self.port,
        ).render_as_string(hide_password=False)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server, initialising the data directory on the first start.

        A restart reuses the data directory and the port of the first start.
        """
        if self.running:
            return
        if not self.datadir.exists():
            self._install_data_directory()
        # A free port can be taken by someone else before mariadbd binds it: retry
        # with another one, but only while the port has not been handed out yet.
        choose_port = self._fixed_port is None and not self._started_once
        attempts = 3 if choose_port else 1
        for attempt in range(1, attempts + 1):
            if choose_port:
                self.port = _free_port()
            try:
                self._spawn_and_wait()
                break
            except _PortInUse:
                if attempt == attempts:
                    raise MariaDBError(
                        f"mariadbd could not bind 127.0.0.1:{self.port}: port in use; "
                        f"see {self.log_file}"
                    ) from None
                log.warning("port %s was taken, retrying on another", self.port)
        if not self._started_once:
            self._create_admin_account()
            self._started_once = True
        log.info("mariadbd %s ready on %s:%s", self.pid, LOOPBACK, self.port)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server: SIGTERM, wait up to `timeout` seconds, then SIGKILL."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("mariadbd %s ignored SIGTERM for %ss, killing it", process.pid, timeout)
            process.kill()
            process.wait()
        log.info("mariadbd %s stopped", process.pid)

    def close(self) -> None:
        """Stop the server and remove its data; the log file stays."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self) -> str:
        return f"the test MariaDB server on {LOOPBACK}:{self.port}"

    def _install_data_directory(self) -> None:
        command = self._command(
            self._install_db,
            "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={self._socket_user()}",
            "--skip-test-db",
        )
        with self._open_log(command) as output:
            try:
                result = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=self.startup_timeout,
                    check=False,
                )
            except FileNotFoundError:
                raise MariaDBError(
                    f"{self._install_db} not found: install mariadb-server "
                    f"(make system-deps) or point {ADMIN_URL_ENV} at a running server"
                ) from None
        if result.returncode != 0:
            raise MariaDBError(
                f"mariadb-install-db failed with status {result.returncode}:\n"
                f"{self._log_tail()}"
            )

    def _spawn_and_wait(self) -> None:
        command = self._command(
            self._mariadbd,
            f"--socket={self.socket_path}",
            f"--pid-file={self.workdir / 'mysqld.pid'}",
            f"--bind-address={LOOPBACK}",
            f"--port={self.port}",
        )
        # Without --log-error mariadbd logs to stderr, which is our log file: it is
        # opened here, so it can live anywhere, whatever account the server runs as.
        with self._open_log(command) as output:
            log_offset = output.tell()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                status = self._process.returncode
                self._process = None
                tail = self._log_tail(since=log_offset)
                if "Bind on TCP/IP port" in tail:
                    raise _PortInUse()
                raise MariaDBError(f"mariadbd exited with status {status}:\n{tail}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise MariaDBError(
                    f"mariadbd was not ready after {self.startup_timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            self._socket_connection().close()
        except pymysql.err.OperationalError:
            return False
        return True

    def _create_admin_account(self) -> None:
        with self._socket_connection() as connection, connection.cursor() as cursor:
            cursor.execute(
                "CREATE OR REPLACE USER %s@%s IDENTIFIED BY %s",
                (ADMIN_USER, LOOPBACK, self._admin_password),
            )
            cursor.execute(
                "GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION",
                (ADMIN_USER, LOOPBACK),
            )

    def _socket_connection(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            unix_socket=str(self.socket_path),
            user=self._socket_user(),
            connect_timeout=5,
            autocommit=True,
        )

    def _socket_user(self) -> str:
        # unix_socket authentication matches the MariaDB account to the OS account.
        return "root" if os.geteuid() == 0 else getpass.getuser()

    def _command(self, program: str, *options: str) -> list[str]:
        """A mariadbd or mariadb-install-db command line for this server's data."""
        command = [
            program,
            "--no-defaults",  # the machine's my.cnf is for its own server
            f"--datadir={self.datadir}",
            "--skip-name-resolve",
            *options,
            *SERVER_OPTIONS,
        ]
        if self._run_as:
            command.append(f"--user={self._run_as}")
        return command

    def _open_log(self, command: list[str]) -> BinaryIO:
        """Open the log for appending, headed by the command about to write to it."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        stream = open(self.log_file, "ab")
        stream.write(f"--- {' '.join(command)}\n".encode())
        stream.flush()
        return stream

    def _log_tail(self, lines: int = 30, since: int = 0) -> str:
        try:
            with open(self.log_file, "rb") as log_stream:
                log_stream.seek(since)
                text = log_stream.read().decode(errors="replace")
        except OSError:
            return f"(no log at {self.log_file})"
        return "\n".join(text.splitlines()[-lines:])


class _PortInUse(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def server_from_environment(log_file: Path) -> MySQLServer:
    """The server named by STACKWRIGHT_TEST_MYSQL_URL, else a started private one."""
    admin_url = os.environ.get(ADMIN_URL_ENV)
    if admin_url:
        server = ExternalMySQLServer(admin_url)
        server.check()
        return server
    server = MariaDBServer(log_file)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
