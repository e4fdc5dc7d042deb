"""Playbooks written for ngine_io.cloudstack against a live engine.

The same playbook (tests/integration/ngine_io/playbook.yml) runs with ngine_io.cloudstack's own
modules, and with only the module names changed to stackwright.cloudstack's; each run is
repeated and must then change nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.ansible import ansible_env, collection_tree

PLAYBOOK = Path(__file__).resolve().parent / "ngine_io" / "playbook.yml"
IAM_PLAYBOOK = Path(__file__).resolve().parent / "ngine_io" / "iam.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RUN_TIMEOUT = 300


def has_ngine_io():
    try:
        import ansible_collections.ngine_io.cloudstack  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def collections_path(tmp_path_factory):
    return collection_tree(tmp_path_factory.mktemp("collections"))


def run_playbook(playbook, env, cwd, prefix, *extra_vars):
    extra = [arg for var in extra_vars for arg in ("-e", var)]
    run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "-v", "-e", "prefix=%s" % prefix,
                          *extra],
                         cwd=str(cwd), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", run.stdout)
    if run.returncode != 0 or not recap:
        pytest.fail("%s failed (rc=%d):\n%s\n%s" % (
            playbook.name, run.returncode, run.stdout[-15000:], run.stderr[-5000:]), pytrace=False)
    return dict(zip(("ok", "changed", "unreachable", "failed"), (int(value) for value in recap.groups()), strict=True))


def ngine_io_playbook_as(collection, tmp_path):
    """The ngine_io playbook with its module names pointed at `collection`, nothing else changed."""
    text = PLAYBOOK.read_text()
    if collection != "ngine_io.cloudstack":
        text = text.replace("ngine_io.cloudstack.", collection + ".")
    path = tmp_path / ("%s.yml" % collection.replace(".", "_"))
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not has_ngine_io(), reason="ngine_io.cloudstack is not installed (the ansible package)")
@pytest.mark.parametrize("collection", ["stackwright.cloudstack", "ngine_io.cloudstack"])
def test_ngine_io_playbook_runs_and_is_idempotent(collection, engine, collections_path, tmp_path):
    playbook = ngine_io_playbook_as(collection, tmp_path)
    leftovers = [line for line in playbook.read_text().splitlines() if "ngine_io" in line and "#" not in line]
    assert collection == "ngine_io.cloudstack" or not leftovers
    # The stackwright collection from this tree; ngine_io from the installed ansible package.
    env = ansible_env(collections_path, tmp_path, engine, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="1")
    prefix = "ng%s" % uuid.uuid4().hex[:6]
    first = run_playbook(playbook, env, tmp_path, prefix)
    assert first["failed"] == 0 and first["changed"] >= 8, first
    second = run_playbook(playbook, env, tmp_path, prefix)
    assert second == dict(first, changed=0), second


DISK_OFFERING_PLAYBOOK = PLAYBOOK.parent / "disk_offering.yml"


@pytest.mark.slow
@pytest.mark.skipif(not has_ngine_io(), reason="ngine_io.cloudstack is not installed (the ansible package)")
def test_ngine_io_disk_offering_module(engine, collections_path, tmp_path):
    """ngine_io.cloudstack's cs_disk_offering creates, reads back and removes disk offerings,
    and a second run changes nothing."""
    env = ansible_env(collections_path, tmp_path, engine, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="1")
    prefix = "do%s" % uuid.uuid4().hex[:6]
    first = run_playbook(DISK_OFFERING_PLAYBOOK, env, tmp_path, prefix)
    assert first["failed"] == 0 and first["changed"] == 3, first
    second = run_playbook(DISK_OFFERING_PLAYBOOK, env, tmp_path, prefix, "second_run=true")
    assert second["failed"] == 0 and second["changed"] == 0, second


@pytest.mark.slow
@pytest.mark.skipif(not has_ngine_io(), reason="ngine_io.cloudstack is not installed (the ansible package)")
def test_ngine_io_accounts_and_roles(engine, collections_path, tmp_path):
    """cs_domain, cs_role, cs_role_permission, cs_account and cs_user, unmodified: create, update,
    removal, each run a second time without a change."""
    env = ansible_env(collections_path, tmp_path, engine, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="1")
    prefix = "ng%s" % uuid.uuid4().hex[:6]
    api = engine.client()

    def twice(*extra):
        first = run_playbook(IAM_PLAYBOOK, env, tmp_path, prefix, *extra)
        assert first["failed"] == 0 and first["changed"] >= 1, (extra, first)
        second = run_playbook(IAM_PLAYBOOK, env, tmp_path, prefix, *extra)
        assert second == dict(first, changed=0), (extra, second)
        return first

    created = twice("state=present", "version=1")
    assert created["changed"] == 6, created
    account = api.listAccounts(name=prefix + "-acct", listall=True)["account"][0]
    assert account["rolename"] == prefix + "-role" and account["state"] == "enabled"
    role_id = account["roleid"]
    rules = [(r["rule"], r["permission"]) for r in api.listRolePermissions(roleid=role_id)["rolepermission"]]
    assert rules == [("listZones", "allow"), ("list*", "deny")]

    twice("state=present", "version=2")
    rules = [(r["rule"], r["permission"]) for r in api.listRolePermissions(roleid=role_id)["rolepermission"]]
    assert rules == [("listZones", "deny")]
    assert api.listAccounts(id=account["id"])["account"][0]["state"] == "locked"
    assert api.listDomains(name=prefix + "dom")["domain"][0]["networkdomain"] == "v2.example"

    for stage in (1, 2, 3, 4):
        twice("state=absent", "stage=%d" % stage)
    assert "account" not in api.listAccounts(id=account["id"])
    assert "role" not in api.listRoles(id=role_id)
    assert "domain" not in api.listDomains(name=prefix + "dom")
