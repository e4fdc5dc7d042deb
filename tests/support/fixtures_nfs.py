"""Pytest plugin: a session-wide NFS server (nfs-ganesha on loopback).

Load it with ``pytest_plugins = ["tests.support.fixtures_nfs"]``.
"""

from __future__ import annotations

import shutil

import pytest

from tests.support.nfs import NfsServerError, NfsTestServer


@pytest.fixture(scope="session")
def nfs_server():
    """An :class:`NfsTestServer` with ``primary`` and ``secondary`` exports."""
    if shutil.which("ganesha.nfsd") is None:
        pytest.skip("nfs-ganesha is not installed")
    server = NfsTestServer()
    try:
        server.start()
    except NfsServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "nfs_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.nfs)
