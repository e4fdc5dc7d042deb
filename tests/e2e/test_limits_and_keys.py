"""Resource limits, SSH key pairs and user data over the CloudStack API, through the `cs` client."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cs import CloudStack
from cryptography.hazmat.primitives import serialization

from tests.e2e.test_vms import World, vm_job
from tests.support.hierarchy import api_error
from tests.support.jobs import run_job

GiB = 1024 ** 3


@pytest.fixture
def world(api, unique):
    return World(api, unique, hosts=1)


@pytest.fixture
def tenant(api, engine, unique):
    """A fresh user account of the ROOT domain: (its account, its own `cs` client)."""
    account = api.createAccount(username="l-" + unique, password="secret-" + unique, email="l@example.org",
                                firstname="L", lastname="Imit", accounttype=0)["account"]
    keys = api.registerUserKeys(id=account["user"][0]["id"])["userkeys"]
    return account, CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)


def limits_of(api, **owner):
    return {int(limit["resourcetype"]): limit for limit in api.listResourceLimits(**owner)["resourcelimit"]}


def test_limits_listed_with_defaults_and_updated(api, tenant):
    account, user = tenant
    owner = {"account": account["name"], "domainid": account["domainid"]}
    limits = limits_of(api, **owner)
    assert sorted(limits) == list(range(12))
    assert (limits[0]["resourcetypename"], limits[0]["max"], limits[0]["account"]) == ("user_vm", 20, account["name"])
    assert (limits[8]["max"], limits[9]["max"], limits[10]["max"]) == (40, 40960, 200)
    assert limits[0]["domainid"] == account["domainid"] and limits[0]["domain"] == "ROOT"
    # What the user sees of its own limits, unasked.
    assert limits_of(user)[0]["max"] == 20
    updated = api.updateResourceLimit(resourcetype=0, max=3, **owner)["resourcelimit"]
    assert (updated["resourcetype"], updated["max"], updated["account"]) == ("0", 3, account["name"])
    assert limits_of(api, resourcetype=0, **owner)[0]["max"] == 3
    assert api.updateResourceLimit(resourcetype=0, **owner)["resourcelimit"]["max"] == -1
    # The ROOT domain and the root admin are never limited.
    assert {limit["max"] for limit in api.listResourceLimits(domainid=account["domainid"])["resourcelimit"]} == {-1}
    api_error(api.updateResourceLimit, 531, resourcetype=0, max=5, domainid=account["domainid"])
    api_error(api.updateResourceLimit, 431, cserrorcode=4350, resourcetype=12, max=5, **owner)
    api_error(api.updateResourceLimit, 431, "Please specify either '-1' for an infinite limit, or a limit that is at "
                                            "least '0'.", resourcetype=8, max=-5, **owner)
    # Users may not set limits.
    api_error(user.updateResourceLimit, 432, resourcetype=0, max=50)


def test_deploy_over_the_limit_is_refused_and_counts_follow_the_guests(api, world, tenant):
    account, _user = tenant
    owner = {"account": account["name"], "domainid": account["domainid"]}
    api.updateResourceLimit(resourcetype=0, max=1, **owner)
    first = world.deploy(**owner)
    error = api_error(api.deployVirtualMachine, 535, cserrorcode=4370, serviceofferingid=world.offering["id"],
                      templateid=world.template["id"], zoneid=world.zone["id"], **owner)
    assert error["errortext"] == (
        f"Maximum amount of resources of Type = 'user_vm' for {account['name']} in Domain Id = {account['domainid']} "
        f"is exceeded: Account Resource Limit = 1, Current Account Resource Amount = 1, Requested Resource Amount = 1.")
    counts = {int(c["resourcetype"]): c["resourcecount"]
              for c in api.updateResourceCount(**owner)["resourcecount"]}
    assert (counts[0], counts[8], counts[9], counts[2]) == (1, 1, 512, 1)
    assert counts[10] == int(world.template["size"])
    # The ROOT domain counts what all its accounts use.
    [root] = api.updateResourceCount(domainid=account["domainid"], resourcetype=0)["resourcecount"]
    assert (root["resourcetypename"], "account" in root, root["domain"]) == ("user_vm", False, "ROOT")
    assert root["resourcecount"] >= 1
    # Below current usage: refused, the limit stays.
    error = api_error(api.updateResourceLimit, 431, resourcetype=9, max=256, **owner)
    assert "below its current usage of 512" in error["errortext"]
    assert limits_of(api, **owner)[9]["max"] == 40960
    vm_job(api, "destroyVirtualMachine", id=first["id"], expunge=True)
    second = world.deploy(**owner)
    counts = {int(c["resourcetype"]): c["resourcecount"]
              for c in api.updateResourceCount(resourcetype=0, **owner)["resourcecount"]}
    assert counts == {0: 1}
    vm_job(api, "destroyVirtualMachine", id=second["id"], expunge=True)
    api.updateResourceLimit(resourcetype=0, max=-1, **owner)


def test_ssh_key_pairs_of_an_account(api, tenant, unique):
    _account, user = tenant
    created = user.createSSHKeyPair(name="gen-" + unique)["keypair"]
    private = serialization.load_pem_private_key(created["privatekey"].encode(), password=None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.md5(base64.b64decode(public.split()[1])).hexdigest()
    assert created["fingerprint"] == ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    listed = user.listSSHKeyPairs(name="gen-" + unique)["sshkeypair"]
    assert [k["fingerprint"] for k in listed] == [created["fingerprint"]] and "privatekey" not in listed[0]
    # Register the same public key under another name: refused; a new key: accepted.
    api_error(user.registerSSHKeyPair, 431, name="again-" + unique, publickey=public.decode())
    other = serialization.load_pem_private_key(user.createSSHKeyPair(name="tmp-" + unique)["keypair"]["privatekey"]
                                               .encode(), password=None)
    other_public = other.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                   serialization.PublicFormat.OpenSSH).decode()
    user.deleteSSHKeyPair(name="tmp-" + unique)
    registered = user.registerSSHKeyPair(name="reg-" + unique, publickey=other_public + " me@host")["keypair"]
    assert user.listSSHKeyPairs(fingerprint=registered["fingerprint"])["sshkeypair"][0]["name"] == "reg-" + unique
    api_error(user.registerSSHKeyPair, 431, name="bad-" + unique, publickey="ssh-rsa bm90IGEga2V5")
    # Another account does not see them; the admin sees them when naming the account.
    assert api.listSSHKeyPairs(name="gen-" + unique) == {}
    assert api.listSSHKeyPairs(name="gen-" + unique, listall=True)["count"] == 1
    assert user.deleteSSHKeyPair(name="gen-" + unique)["success"] in (True, "true")
    api_error(user.deleteSSHKeyPair, 431, name="gen-" + unique)


def test_deploy_with_key_pairs_and_user_data(api, world, tenant, unique):
    account, user = tenant
    owner = {"account": account["name"], "domainid": account["domainid"]}
    user.createSSHKeyPair(name="a-" + unique)
    user.createSSHKeyPair(name="b-" + unique)
    data = base64.b64encode(b"#cloud-config\nhostname: test\n").decode()
    vm = world.deploy(keypair="a-" + unique, keypairs="b-" + unique, userdata=data, **owner)
    assert (vm["keypairs"], vm["userdata"]) == ("a-%s,b-%s" % (unique, unique), data)
    shown = user.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    assert (shown["keypairs"], shown["userdata"]) == (vm["keypairs"], data)
    assert user.getVirtualMachineUserData(virtualmachineid=vm["id"])["virtualmachineuserdata"]["userdata"] == data
    for params, text in (({"keypair": "none-" + unique}, "'none-%s' was not found" % unique),
                         ({"userdata": "not base64!"}, "User data is not base64 encoded")):
        error = api_error(api.deployVirtualMachine, 431, serviceofferingid=world.offering["id"],
                          templateid=world.template["id"], zoneid=world.zone["id"], **owner, **params)
        assert text in error["errortext"]
    _answer, job = run_job(api, "destroyVirtualMachine", id=vm["id"], expunge=True)
    assert job["jobstatus"] == 1
