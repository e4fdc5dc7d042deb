"""Pytest fixtures for a live management engine, on SQLite and on MariaDB.

`engine` is parametrized over the database backends named by STACKWRIGHT_TEST_DB
(`sqlite`, `mysql`, or `both`, the default), so every test that uses it runs on each.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support.engine import EngineProcess


def _backends():
    wanted = os.environ.get("STACKWRIGHT_TEST_DB", "both").lower()
    return ["sqlite", "mysql"] if wanted == "both" else [wanted]


def _db_url(request, backend, workdir):
    if backend == "sqlite":
        return "sqlite:///%s" % (workdir / "cloud.db")
    server = request.getfixturevalue("mariadb_server")
    return server.create_database(prefix="engine").url


@pytest.fixture(scope="session", params=_backends())
def engine(request, tmp_path_factory):
    """A running engine (session-wide per backend); tests use unique names."""
    backend = request.param
    workdir = tmp_path_factory.mktemp("engine-%s" % backend)
    proc = EngineProcess(workdir, _db_url(request, backend, workdir))
    proc.backend = backend
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(engine):
    """A `cs` client (the independent PyPI CloudStack client) bound to the engine."""
    return engine.client()


@pytest.fixture
def fresh_engine(request, tmp_path):
    """A private engine for tests that restart or kill it (SQLite)."""
    proc = EngineProcess(tmp_path / "engine", "sqlite:///%s" % (tmp_path / "engine" / "cloud.db"))
    proc.backend = "sqlite"
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def unique():
    """A short unique suffix for names, so tests sharing one engine never collide."""
    return uuid.uuid4().hex[:8]
