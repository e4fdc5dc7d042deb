"""Pytest fixtures for MariaDB: one server per session, one fresh database per test.

The server is a private ``mariadbd`` started for the session, or the server named by
STACKWRIGHT_TEST_MYSQL_URL. Tests that use these fixtures get the ``mysql`` marker,
so ``-m "not mysql"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mariadb import MySQLDatabase, MySQLServer, server_from_environment

MARIADB_FIXTURES = frozenset({"mariadb_server", "mariadb_database"})


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MySQLServer]:
    """The session's MariaDB server; `managed` tells whether tests may stop/start it."""
    log_file = tmp_path_factory.mktemp("mariadb") / "mariadbd.log"
    server = server_from_environment(log_file)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mariadb_database(mariadb_server: MySQLServer) -> Iterator[MySQLDatabase]:
    """An empty utf8mb4 database with its own user; `.url` is a mysql+pymysql URL."""
    database = mariadb_server.create_database()
    try:
        yield database
    finally:
        if mariadb_server.managed:
            # A test that stopped the server and failed before restarting it must
            # not take the rest of the session down with it.
            mariadb_server.start()
        mariadb_server.drop_database(database)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MARIADB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mysql)
