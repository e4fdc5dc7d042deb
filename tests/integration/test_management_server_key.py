"""The management_server role shares the key of the stored credentials among the management
servers of one database: created once on the first host, copied to the others with mode 0600,
never shown (no_log, no diff), idempotent, and harmless in check mode. Two hosts on this
machine (local connections), each with a key path of its own; the role's `key` entry point
runs with this test's Python as the engine's."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.support.ansible import changed_per_host, role_playbook

HOSTS = ("mgmt1", "mgmt2")

pytestmark = pytest.mark.slow


@pytest.fixture
def play(tmp_path):
    venv = tmp_path / "install" / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text('#!/bin/sh\nexec %s "$@"\n' % sys.executable)
    (venv / "python").chmod(0o755)
    hosts = {name: {"ansible_connection": "local",
                    "management_server_key_file": str(tmp_path / name / "etc" / "key")} for name in HOSTS}
    inventory = {"management": {"hosts": hosts, "vars": {"management_server_install_dir": str(tmp_path / "install")}}}
    playbook = role_playbook("management_server", hosts="management", inventory=inventory, tasks_from="key",
                             work=tmp_path)
    keys = {name: Path(hosts[name]["management_server_key_file"]) for name in HOSTS}
    for key in keys.values():
        key.parent.mkdir(parents=True)        # the role's main entry point creates it

    def run(*extra):
        done = playbook.run(*extra)
        assert done.returncode == 0, done.stdout[-10000:] + done.stderr[-3000:]
        for key in keys.values():
            if key.exists():
                assert key.read_text().strip() not in done.stdout + done.stderr
        return changed_per_host(done.stdout)

    return run, keys


def test_one_key_is_created_and_shared_without_being_shown(play):
    run, keys = play

    # Check mode before anything exists: the creation is announced, nothing is written.
    assert run("--check", "--diff")["mgmt1"] == 1
    assert not any(key.exists() for key in keys.values())

    assert run("--diff") == {"mgmt1": 1, "mgmt2": 1}      # created on mgmt1, copied to mgmt2
    key = keys["mgmt1"].read_bytes()
    Fernet(key.strip())
    for path in keys.values():
        assert path.read_bytes() == key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # Nothing to do on a second run, nor in check mode.
    assert run() == {"mgmt1": 0, "mgmt2": 0}
    assert run("--check", "--diff") == {"mgmt1": 0, "mgmt2": 0}

    # A host with another key gets the first host's (its own is kept beside it); the first
    # host's key never changes.
    keys["mgmt2"].write_bytes(Fernet.generate_key() + b"\n")
    before = keys["mgmt2"].read_bytes()
    assert run("--check", "--diff") == {"mgmt1": 0, "mgmt2": 1}
    assert keys["mgmt2"].read_bytes() == before
    assert run("--diff") == {"mgmt1": 0, "mgmt2": 1}
    assert keys["mgmt2"].read_bytes() == keys["mgmt1"].read_bytes() == key
    backups = [p for p in keys["mgmt2"].parent.iterdir() if p.name.startswith("key.")]
    assert [p.read_bytes() for p in backups] == [before]
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
