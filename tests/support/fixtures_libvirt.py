"""Pytest fixtures for a real libvirtd.

``libvirtd`` (session): the host's libvirtd on qemu:///system, reused when it answers,
else started for the session and stopped at its end.
``isolated_libvirtd`` (per test): a private libvirtd in its own network and mount
namespace, for tests that change its configuration or restart it.

Tests that use them get the ``libvirt`` marker; without the host prerequisites (root,
libvirt-daemon-system) they are skipped with the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.libvirtd import IsolatedLibvirtd, SystemLibvirtd, isolated_workdir, missing_prerequisites

LIBVIRT_FIXTURES = frozenset({"libvirtd", "isolated_libvirtd"})


def _skip_without_prerequisites() -> None:
    problems = missing_prerequisites()
    if problems:
        pytest.skip("no real libvirtd here: " + "; ".join(problems))


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[SystemLibvirtd]:
    """The host's libvirtd; `.uri` is qemu:///system, `.started` whether this session started it."""
    _skip_without_prerequisites()
    daemon = SystemLibvirtd.start_or_reuse()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def isolated_libvirtd() -> Iterator[IsolatedLibvirtd]:
    """A private libvirtd; drive it through `.exec_argv([...])`, find it by `.daemon_pid()`."""
    _skip_without_prerequisites()
    workdir = isolated_workdir()
    instance = IsolatedLibvirtd(workdir)
    try:
        yield instance.start()
    finally:
        instance.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LIBVIRT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.libvirt)
