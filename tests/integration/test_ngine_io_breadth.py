"""ngine_io.cloudstack's cs_resourcelimit, cs_sshkeypair, cs_configuration, cs_disk_offering and
cs_volume modules, unmodified, against a live engine: create, a second run that changes nothing,
an update, and removal."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.test_vms import World
from tests.integration.test_ngine_io import has_ngine_io, run_playbook
from tests.support.ansible import ansible_env, collection_tree

PLAYBOOK = Path(__file__).resolve().parent / "ngine_io" / "limits_keys_settings.yml"
VOLUMES_PLAYBOOK = PLAYBOOK.parent / "volumes.yml"


def has_sshpubkeys():
    try:
        import sshpubkeys  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not has_ngine_io(), reason="ngine_io.cloudstack is not installed (the ansible package)")
@pytest.mark.skipif(not has_sshpubkeys(), reason="cs_sshkeypair needs the sshpubkeys package")
def test_ngine_io_limits_keys_and_settings(engine, tmp_path_factory, tmp_path):
    api = engine.client()
    unique = uuid.uuid4().hex[:6]
    account = api.createAccount(username="ng" + unique, password="pw-" + unique, email="ng@example.org",
                                firstname="N", lastname="G", accounttype=0)["account"]["name"]
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    digest = hashlib.md5(base64.b64decode(public.split()[1])).hexdigest()
    fingerprint = ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    env = ansible_env(collection_tree(tmp_path_factory.mktemp("collections")), tmp_path, engine,
                      ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="1")

    def run(state="present", instance_limit=10, memory_limit=4096, expunge_delay="120"):
        (tmp_path / "vars.yml").write_text(
            "account: %s\npublic_key: %s\npublic_key_fingerprint: '%s'\nstate: %s\ninstance_limit: %d\n"
            "memory_limit: %d\nexpunge_delay: '%s'\n"
            % (account, public, fingerprint, state, instance_limit, memory_limit, expunge_delay))
        return run_playbook(PLAYBOOK, env, tmp_path, unique, "@%s" % (tmp_path / "vars.yml"))

    try:
        created = run()
        assert created["failed"] == 0 and created["changed"] == 6, created
        again = run()
        assert again == dict(created, changed=0), again
        owner = {"account": account, "domainid": api.listDomains(name="ROOT")["domain"][0]["id"]}
        assert api.listResourceLimits(resourcetype=0, **owner)["resourcelimit"][0]["max"] == 10
        updated = run(instance_limit=15, memory_limit=8192, expunge_delay="240")
        assert updated["changed"] == 3, updated
        assert api.listResourceLimits(resourcetype=9, **owner)["resourcelimit"][0]["max"] == 8192
        assert api.listConfigurations(name="expunge.delay")["configuration"][0]["value"] == "240"
        keys = {k["name"]: k["fingerprint"] for k in api.listSSHKeyPairs(**owner)["sshkeypair"]}
        assert keys[account + "-registered"] == fingerprint and len(keys) == 2
        removed = run(state="absent")
        assert removed["changed"] == 6, removed
        assert api.listSSHKeyPairs(**owner) == {}
        assert api.listResourceLimits(resourcetype=0, **owner)["resourcelimit"][0]["max"] == -1
        assert run(state="absent")["changed"] == 0
    finally:
        api.resetConfiguration(name="expunge.delay")


@pytest.mark.slow
@pytest.mark.skipif(not has_ngine_io(), reason="ngine_io.cloudstack is not installed (the ansible package)")
def test_ngine_io_disk_offering_and_volume(engine, tmp_path_factory, tmp_path):
    api = engine.client()
    unique = uuid.uuid4().hex[:6]
    world = World(api, unique, hosts=1)
    vm = world.deploy(name="ng-" + unique)
    env = ansible_env(collection_tree(tmp_path_factory.mktemp("collections")), tmp_path, engine,
                      ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="1")

    def run(volume_state, size=1):
        return run_playbook(VOLUMES_PLAYBOOK, env, tmp_path, "ng" + unique, "zone=%s" % world.zone["name"],
                            "vm=%s" % vm["name"], "volume_state=%s" % volume_state, "size=%d" % size)

    def volume():
        listed = api.listVolumes(name="ng%s-data" % unique, type="DATADISK")
        return listed["volume"][0] if listed else None

    created = run("present")
    assert created["failed"] == 0 and created["changed"] == 2, created
    assert volume()["state"] == "Allocated"
    assert run("present") == dict(created, changed=0)
    assert run("present", size=2)["changed"] == 1
    assert volume()["size"] == 2 * 1024 ** 3
    assert run("attached", size=2)["changed"] == 1
    assert (volume()["virtualmachineid"], volume()["state"]) == (vm["id"], "Ready")
    assert run("detached", size=2)["changed"] == 1
    assert "virtualmachineid" not in volume()
    assert run("absent", size=2)["changed"] == 2
    assert volume() is None and api.listDiskOfferings(name="ng%s-custom" % unique) == {}
    api.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)
