"""The MariaDB test service: real server, real accounts, real privileges."""

from __future__ import annotations

import socket

import pymysql
import pytest
import sqlalchemy

from tests.support.mariadb import (
    ADMIN_URL_ENV,
    ExternalMySQLServer,
    MariaDBError,
    MariaDBServer,
    MySQLServer,
)

ACCESS_DENIED_TO_DATABASE = 1044
ACCESS_DENIED_TO_TABLE = 1142


def test_database_url_works_with_sqlalchemy_and_keeps_4_byte_text(mariadb_database):
    engine = sqlalchemy.create_engine(mariadb_database.url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE notes (body VARCHAR(40))"))
            connection.execute(
                sqlalchemy.text("INSERT INTO notes VALUES (:body)"), {"body": "zone \U0001f680"}
            )
        with engine.connect() as connection:
            stored = connection.execute(sqlalchemy.text("SELECT body FROM notes")).scalar_one()
            charset = connection.execute(
                sqlalchemy.text(
                    "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
                    "WHERE SCHEMA_NAME = DATABASE()"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored == "zone \U0001f680"
    assert charset == "utf8mb4"


def test_database_user_is_confined_to_its_database(mariadb_server, mariadb_database):
    other = mariadb_server.create_database("neighbour")
    try:
        with mariadb_database.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SHOW DATABASES")
            visible = {name for (name,) in cursor.fetchall()}
            assert visible == {"information_schema", mariadb_database.name}
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cursor.execute(f"CREATE TABLE `{other.name}`.intruder (id INT)")
            assert denied.value.args[0] == ACCESS_DENIED_TO_TABLE
            with pytest.raises(pymysql.err.OperationalError) as denied:
                cursor.execute("CREATE DATABASE another_one")
            assert denied.value.args[0] == ACCESS_DENIED_TO_DATABASE
    finally:
        mariadb_server.drop_database(other)


def test_drop_database_removes_schema_and_user_even_with_open_connections(mariadb_server):
    database = mariadb_server.create_database("dropped")
    lingering = database.connect()
    with lingering.cursor() as cursor:
        cursor.execute("CREATE TABLE t (id INT)")
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO t VALUES (1)")  # holds a lock DROP DATABASE waits on

    mariadb_server.drop_database(database)

    with pytest.raises(pymysql.err.OperationalError) as denied:
        database.connect()
    assert f"Access denied for user '{database.user}'" in denied.value.args[1]
    with mariadb_server.admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute("SHOW DATABASES LIKE %s", (database.name,))
        assert cursor.fetchall() == ()


def test_invalid_database_prefix_is_refused(mariadb_server):
    with pytest.raises(ValueError, match="database prefix"):
        mariadb_server.create_database("Bad-Name")


def test_existing_server_is_reused_through_an_admin_url(mariadb_server):
    external = ExternalMySQLServer(mariadb_server.admin_url)
    external.check()
    database = external.create_database("reused")
    try:
        with database.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT DATABASE()")
            assert cursor.fetchone() == (database.name,)
        with pytest.raises(MariaDBError, match=ADMIN_URL_ENV):
            external.stop()
    finally:
        external.close()
    with pytest.raises(pymysql.err.OperationalError):
        database.connect()


@pytest.mark.parametrize(
    "url",
    ["not a url", "postgresql://root:pw@127.0.0.1/", "mysql+pymysql://127.0.0.1:3306/"],
)
def test_external_server_url_must_be_a_mysql_admin_url(url):
    with pytest.raises(MariaDBError, match=ADMIN_URL_ENV):
        ExternalMySQLServer(url)


def test_unreachable_external_server_names_the_variable():
    with socket.socket() as closed_port_holder:
        closed_port_holder.bind(("127.0.0.1", 0))
        port = closed_port_holder.getsockname()[1]
        server = ExternalMySQLServer(f"mysql+pymysql://root:secret@127.0.0.1:{port}/")
        with pytest.raises(MariaDBError) as failure:
            server.check()
    assert ADMIN_URL_ENV in str(failure.value)
    assert "secret" not in str(failure.value)


@pytest.fixture
def private_server_log(tmp_path, mariadb_server: MySQLServer):
    """Log path for a server of the test's own; such tests need mariadbd installed."""
    if not mariadb_server.managed:
        pytest.skip(f"{ADMIN_URL_ENV} is set: the tests do not start MariaDB themselves")
    return tmp_path / "mariadbd.log"


@pytest.fixture
def private_server(private_server_log):
    server = MariaDBServer(private_server_log)
    yield server
    server.close()


def test_restart_keeps_port_and_data(private_server):
    private_server.start()
    port = private_server.port
    database = private_server.create_database("durable")
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (id INT)")
        cursor.execute("INSERT INTO t VALUES (42)")
        connection.commit()

    private_server.stop()
    assert not private_server.running
    with pytest.raises(pymysql.err.OperationalError):
        database.connect()
    private_server.stop()  # stopping twice is harmless

    private_server.start()
    assert private_server.port == port
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM t")
        assert cursor.fetchall() == ((42,),)
    assert "ready for connections" in private_server.log_file.read_text()


def test_failed_start_is_reported_and_can_be_retried(private_server_log, mariadb_server):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = MariaDBServer(private_server_log, port=port)
        try:
            with pytest.raises(MariaDBError, match="port in use"):
                server.start()
            assert not server.running
            squatter.close()

            server.start()
            database = server.create_database()
            with database.connect() as connection, connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            assert server.port == port
        finally:
            server.close()
