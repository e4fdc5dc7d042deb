"""Domains, accounts, users and dynamic roles, with the `cs` client, against a live engine."""

from __future__ import annotations

import pytest
from cs import CloudStack, CloudStackApiException

from tests.e2e.test_vms import World, vm_of
from tests.support.hierarchy import api_error
from tests.support.jobs import job_of, run_job

READ_ONLY_USER, READ_ONLY_ADMIN = "Read-Only User - Default", "Read-Only Admin - Default"
SUPPORT_USER, SUPPORT_ADMIN = "Support User - Default", "Support Admin - Default"


def role_named(api, name):
    return next(r for r in api.listRoles(name=name)["role"] if r["name"] == name)


def new_account(api, engine, unique, prefix="a", **params):
    """(account, a `cs` client of its first user)."""
    if "roleid" not in params:
        params.setdefault("accounttype", 0)
    account = api.createAccount(username=prefix + unique, password="pw-" + unique, email="a@example.org",
                                firstname="A", lastname="Count", **params)["account"]
    keys = api.registerUserKeys(id=account["user"][0]["id"])["userkeys"]
    client = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)
    return account, client


def refused(call, command, account, **params):
    """The call is refused by the caller's role: 432 and CloudStack's text."""
    api_error(call, 432, "The API [%s] does not exist or is not available for the account %s." % (command, account),
              **params)


# --- domains ----------------------------------------------------------------------------------


def test_domain_tree_create_update_children_delete(api, unique):
    top = api.createDomain(name="d" + unique, networkdomain="top.example")["domain"]
    assert top["path"] == "ROOT/d" + unique and top["level"] == 1 and top["parentdomainname"] == "ROOT"
    assert top["networkdomain"] == "top.example" and top["haschild"] is False
    child = api.createDomain(name="c" + unique, parentdomainid=top["id"])["domain"]
    assert child["path"] == "ROOT/d%s/c%s" % (unique, unique) and child["level"] == 2
    grand = api.createDomain(name="g" + unique, parentdomainid=child["id"])["domain"]
    api_error(api.createDomain, 431, "Domain with name c%s already exists for the parent id=%s" % (unique, top["id"]),
              name="c" + unique, parentdomainid=top["id"])
    assert api.listDomains(id=top["id"])["domain"][0]["haschild"] is True
    assert [d["id"] for d in api.listDomainChildren(id=top["id"])["domain"]] == [child["id"]]
    assert {d["id"] for d in api.listDomainChildren(id=top["id"], isrecursive=True)["domain"]} == {
        child["id"], grand["id"]}
    # A rename moves the paths below it.
    renamed = api.updateDomain(id=top["id"], name="r" + unique, networkdomain="")["domain"]
    assert renamed["path"] == "ROOT/r" + unique and "networkdomain" not in renamed
    assert api.listDomains(id=grand["id"])["domain"][0]["path"] == "ROOT/r%s/c%s/g%s" % (unique, unique, unique)
    root = api.listDomains(name="ROOT")["domain"][0]
    api_error(api.updateDomain, 431, "ROOT domain can not be edited with a new name", id=root["id"], name="X")
    # Children without cleanup: refused, nothing removed.
    error = api_error(api.deleteDomain, 530, id=top["id"])
    assert "please make sure all users and sub domains have been removed" in error["errortext"]
    assert api.listDomains(id=grand["id"])["count"] == 1
    api_error(api.deleteDomain, 531, "Can't delete ROOT domain", id=root["id"])
    # A leaf goes without cleanup; the rest, with an account inside, with it.
    _answer, job = run_job(api, "deleteDomain", id=grand["id"])
    assert job["jobstatus"] == 1 and job["jobresult"]["success"] is True, job
    account = api.createAccount(username="in" + unique, password="pw", email="a@example.org", firstname="A",
                                lastname="B", accounttype=0, domainid=child["id"])["account"]
    _answer, job = run_job(api, "deleteDomain", id=top["id"], cleanup=True)
    assert job["jobstatus"] == 1, job
    assert "domain" not in api.listDomains(name="r" + unique)
    assert "domain" not in api.listDomains(name="c" + unique)
    assert "account" not in api.listAccounts(id=account["id"])


def test_domain_admin_sees_and_acts_within_its_subtree(api, engine, unique):
    mine = api.createDomain(name="da" + unique)["domain"]
    below = api.createDomain(name="sub" + unique, parentdomainid=mine["id"])["domain"]
    other = api.createDomain(name="other" + unique)["domain"]
    admin, client = new_account(api, engine, unique, prefix="dadm", accounttype=2, domainid=mine["id"])
    assert admin["roletype"] == "DomainAdmin" and admin["rolename"] == "Domain Admin"
    outsider = api.createAccount(username="out" + unique, password="pw", email="o@example.org", firstname="O",
                                 lastname="Ut", accounttype=0, domainid=other["id"])["account"]
    assert {d["id"] for d in client.listDomains()["domain"]} == {mine["id"], below["id"]}
    created = client.createAccount(username="kid" + unique, password="pw", email="k@example.org", firstname="K",
                                   lastname="Id", accounttype=0, domainid=below["id"])["account"]
    assert created["domainid"] == below["id"]
    assert {a["id"] for a in client.listAccounts(listall=True)["account"]} == {admin["id"], created["id"]}
    subdomain = client.createDomain(name="own" + unique, parentdomainid=below["id"])["domain"]
    assert subdomain["path"].endswith("/sub%s/own%s" % (unique, unique))
    # Outside the subtree: refused, and not seen.
    api_error(client.createDomain, 531, name="x" + unique, parentdomainid=other["id"])
    api_error(client.disableAccount, 531, id=outsider["id"], lock=True)
    api_error(client.createAccount, 531, username="y" + unique, password="pw", email="y@example.org", firstname="Y",
              lastname="Y", accounttype=0, domainid=other["id"])
    # A domain admin may not make root admins.
    api_error(client.createAccount, 531, username="z" + unique, password="pw", email="z@example.org", firstname="Z",
              lastname="Z", accounttype=1)
    refused(client.createZone, "createZone", "dadm" + unique, name="z" + unique, dns1="8.8.8.8",
            networktype="Basic")
    _answer, job = run_job(client, "deleteAccount", id=created["id"])
    assert job["jobstatus"] == 1, job


# --- accounts and users -----------------------------------------------------------------------


def test_account_update_disable_lock_enable(api, engine, unique):
    account, client = new_account(api, engine, unique)
    assert client.listZones() is not None
    updated = api.updateAccount(id=account["id"], newname="renamed" + unique, networkdomain="acct.example")["account"]
    assert updated["name"] == "renamed" + unique and updated["networkdomain"] == "acct.example"
    # lock=true: locked at once, before its job runs to the end.
    answer = api.disableAccount(id=account["id"], lock=True)
    with pytest.raises(CloudStackApiException) as e:
        client.listZones()
    assert e.value.response.status_code == 401
    job = job_of(api, answer["jobid"])
    assert job["jobstatus"] == 1 and job["jobresult"]["account"]["state"] == "locked", job
    enabled = api.enableAccount(account="renamed" + unique, domainid=account["domainid"])["account"]
    assert enabled["state"] == "enabled"
    assert client.listZones() is not None
    _answer, job = run_job(api, "disableAccount", account="renamed" + unique, domainid=account["domainid"],
                           lock=False)
    assert job["jobresult"]["account"]["state"] == "disabled"
    with pytest.raises(CloudStackApiException):
        client.listZones()
    api.enableAccount(id=account["id"])
    # The ROOT domain's admin account already has that name.
    api_error(api.updateAccount, 431, id=account["id"], newname="admin")


def test_users_create_update_lock_disable_enable_delete(api, engine, unique):
    account, _client = new_account(api, engine, unique)
    user = api.createUser(account=account["name"], domainid=account["domainid"], username="second" + unique,
                          password="pw-one", email="s@example.org", firstname="Sec", lastname="Ond")["user"]
    assert user["account"] == account["name"] and user["state"] == "enabled" and user["roletype"] == "User"
    api_error(api.createUser, 431, "The user second%s already exists in domain ROOT" % unique,
              account=account["name"], username="second" + unique, password="x", firstname="a", lastname="b")
    updated = api.updateUser(id=user["id"], firstname="Second", email="second@example.org", timezone="UTC")["user"]
    assert (updated["firstname"], updated["email"], updated["timezone"]) == ("Second", "second@example.org", "UTC")
    keys = api.registerUserKeys(id=user["id"])["userkeys"]
    client = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)
    assert client.listUsers()["user"][0]["id"] == user["id"]
    # A user changes its own password only with the current one.
    api_error(client.updateUser, 431, id=user["id"], password="pw-two")
    client.updateUser(id=user["id"], password="pw-two", currentpassword="pw-one")
    assert api.lockUser(id=user["id"])["user"]["state"] == "locked"
    with pytest.raises(CloudStackApiException):
        client.listZones()
    assert api.enableUser(id=user["id"])["user"]["state"] == "enabled"
    assert client.listZones() is not None
    _answer, job = run_job(api, "disableUser", id=user["id"])
    assert job["jobstatus"] == 1 and job["jobresult"]["user"]["state"] == "disabled", job
    with pytest.raises(CloudStackApiException):
        client.listZones()
    assert api.deleteUser(id=user["id"])["success"] is True
    assert "user" not in api.listUsers(id=user["id"])
    # The last user of an account goes with the account.
    api_error(api.deleteUser, 431, id=account["user"][0]["id"])


def test_delete_account_revokes_keys_at_once_and_expunges_its_guests(api, engine, unique):
    world = World(api, unique)
    account, client = new_account(api, engine, unique)
    _answer, job = run_job(client, "deployVirtualMachine", serviceofferingid=world.offering["id"],
                           templateid=world.template["id"], zoneid=world.zone["id"], name="g-" + unique)
    assert job["jobstatus"] == 1, job
    vm = job["jobresult"]["virtualmachine"]
    assert vm["state"] == "Running"
    answer = api.deleteAccount(id=account["id"])
    # Refused from the very next request, whatever the job is doing.
    with pytest.raises(CloudStackApiException) as e:
        client.listVirtualMachines()
    assert e.value.response.status_code == 401
    job = job_of(api, answer["jobid"])
    assert job["jobstatus"] == 1 and job["jobresult"]["success"] is True, job
    assert vm_of(api, vm["id"]) is None
    assert "account" not in api.listAccounts(id=account["id"])
    # The name is free again.
    again, _client = new_account(api, engine, unique)
    assert again["id"] != account["id"]


# --- roles ------------------------------------------------------------------------------------


def test_default_roles(api):
    roles = {r["name"]: r for r in api.listRoles()["role"]}
    assert {"Root Admin", "Resource Admin", "Domain Admin", "User", READ_ONLY_ADMIN, READ_ONLY_USER, SUPPORT_ADMIN,
            SUPPORT_USER} <= set(roles)
    assert (roles[SUPPORT_ADMIN]["type"], roles[SUPPORT_USER]["type"]) == ("Admin", "User")
    support = [(r["rule"], r["permission"])
               for r in api.listRolePermissions(roleid=roles[SUPPORT_USER]["id"])["rolepermission"]]
    assert support[:4] == [("list*", "allow"), ("get*", "allow"), ("queryAsyncJobResult", "allow"),
                           ("startVirtualMachine", "allow")]
    assert ("attachVolume", "allow") in support and support[-1] == ("*", "deny")
    # Resource Admin's rules are explicit: CloudStack's list of what it may call, then nothing else.
    resource = [(r["rule"], r["permission"])
                for r in api.listRolePermissions(roleid=roles["Resource Admin"]["id"])["rolepermission"]]
    assert ("addHost", "allow") in resource and ("createVolume", "allow") in resource
    assert ("createDomain", "allow") not in resource and resource[-1] == ("*", "deny")
    assert roles["Root Admin"]["type"] == "Admin" and roles["User"]["type"] == "User"
    assert all(roles[name]["isdefault"] for name in ("Root Admin", "Domain Admin", "User", READ_ONLY_USER))
    rules = api.listRolePermissions(roleid=roles[READ_ONLY_USER]["id"])["rolepermission"]
    assert [(r["rule"], r["permission"]) for r in rules] == [
        ("list*", "allow"), ("get*", "allow"), ("queryAsyncJobResult", "allow"), ("*", "deny")]
    api_error(api.deleteRole, 531, "Default roles cannot be deleted", id=roles["User"]["id"])
    api_error(api.updateRole, 531, "Default roles cannot be updated", id=roles["User"]["id"], name="x")
    api_error(api.createRolePermission, 531, "Role permission cannot be added for Default roles",
              roleid=roles["User"]["id"], rule="listZones", permission="allow")
    assert api.listRoles(type="user")["count"] >= 2


def test_role_crud_rules_and_errors(api, engine, unique):
    role = api.createRole(name="r" + unique, type="User", description="custom")["role"]
    assert (role["type"], role["isdefault"], role["description"]) == ("User", False, "custom")
    api_error(api.createRole, 431, name="r" + unique, type="User")
    api_error(api.createRole, 431, name="bad" + unique)
    api_error(api.createRole, 431, name="bad" + unique, type="Superuser")
    first = api.createRolePermission(roleid=role["id"], rule="listZones", permission="allow")["rolepermission"]
    second = api.createRolePermission(roleid=role["id"], rule="list*", permission="deny",
                                      description="no lists")["rolepermission"]
    assert (second["rule"], second["permission"], second["rolename"]) == ("list*", "deny", "r" + unique)
    api_error(api.createRolePermission, 431, "Invalid rule provided: frobnicate is not an API command",
              roleid=role["id"], rule="frobnicate", permission="allow")
    api_error(api.createRolePermission, 431, "Invalid rule provided: the wildcard zz* matches no API command",
              roleid=role["id"], rule="zz*", permission="allow")
    api_error(api.createRolePermission, 431, "Only API names and wildcards are allowed, invalid rule provided: list-*",
              roleid=role["id"], rule="list-*", permission="allow")
    api_error(api.createRolePermission, 431, roleid=role["id"], rule="listHosts", permission="maybe")
    api_error(api.createRolePermission, 531, "Rule already exists for the role: r" + unique,
              roleid=role["id"], rule="listZones", permission="deny")
    # Reorder, change a permission, delete a rule.
    api.updateRolePermission(roleid=role["id"], ruleorder=",".join([second["id"], first["id"]]))
    rules = api.listRolePermissions(roleid=role["id"])["rolepermission"]
    assert [r["id"] for r in rules] == [second["id"], first["id"]]
    api_error(api.updateRolePermission, 431, roleid=role["id"], ruleorder=first["id"])
    api.updateRolePermission(roleid=role["id"], ruleid=first["id"], permission="deny")
    assert api.listRolePermissions(roleid=role["id"])["rolepermission"][1]["permission"] == "deny"
    api.deleteRolePermission(id=first["id"])
    assert [r["id"] for r in api.listRolePermissions(roleid=role["id"])["rolepermission"]] == [second["id"]]
    # Clone, update, in-use, delete.
    clone = api.createRole(name="clone" + unique, roleid=role["id"])["role"]
    assert clone["type"] == "User"
    assert [r["rule"] for r in api.listRolePermissions(roleid=clone["id"])["rolepermission"]] == ["list*"]
    updated = api.updateRole(id=clone["id"], name="clone2" + unique, description="d2")["role"]
    assert (updated["name"], updated["description"]) == ("clone2" + unique, "d2")
    account, _client = new_account(api, engine, unique, roleid=clone["id"])
    assert account["roleid"] == clone["id"] and account["accounttype"] == 0
    api_error(api.deleteRole, 531, "Found accounts that have role in use, won't allow to delete role", id=clone["id"])
    api_error(api.updateRole, 531, "Found accounts that have role in use, won't allow to change role type",
              id=clone["id"], type="DomainAdmin")
    assert api.deleteRole(id=role["id"])["success"] is True
    assert "role" not in api.listRoles(id=role["id"])


def test_a_role_change_holds_from_the_next_request(api, engine, unique):
    role = api.createRole(name="live" + unique, type="User")["role"]
    account, client = new_account(api, engine, unique, roleid=role["id"])
    assert client.listZones() is not None        # by the User type's commands
    rule = api.createRolePermission(roleid=role["id"], rule="listZones", permission="deny")["rolepermission"]
    refused(client.listZones, "listZones", account["name"])
    assert "listZones" not in {a["name"] for a in client.listApis()["api"]}
    api.updateRolePermission(roleid=role["id"], ruleid=rule["id"], permission="allow")
    assert client.listZones() is not None
    assert "listZones" in {a["name"] for a in client.listApis()["api"]}
    # A wildcard allow lets a user-type role call an admin command.
    api.createRolePermission(roleid=role["id"], rule="listHost*", permission="allow")
    assert "listHosts" in {a["name"] for a in client.listApis()["api"]}
    client.listHosts()
    # Moving the account to another role of its type.
    read_only = role_named(api, READ_ONLY_USER)
    api.updateAccount(id=account["id"], roleid=read_only["id"])
    refused(client.registerUserKeys, "registerUserKeys", account["name"], id=account["user"][0]["id"])
    api_error(api.updateAccount, 431, id=account["id"], roleid=role_named(api, "Domain Admin")["id"])


SAMPLE_COMMANDS = {
    # command: (a write?, parameters)
    "listZones": (False, {}),
    "listAccounts": (False, {}),
    "listApis": (False, {"name": "listZones"}),
    "listRoles": (False, {}),
    "listHosts": (False, {}),
    "createZone": (True, {"name": "m-zone", "dns1": "8.8.8.8", "networktype": "Basic"}),
    "createDomain": (True, {"name": "m-domain"}),
    "createRole": (True, {"name": "m-role", "type": "User"}),
    "updateUser": (True, {"firstname": "M"}),
    "registerUserKeys": (True, {}),
}
# Role -> the sample commands it may call.
EXPECTED = {
    "Root Admin": set(SAMPLE_COMMANDS),
    "Domain Admin": {"listZones", "listAccounts", "listApis", "listRoles", "createDomain", "registerUserKeys",
                     "updateUser"},
    "User": {"listZones", "listAccounts", "listApis", "registerUserKeys", "updateUser"},
    READ_ONLY_ADMIN: {"listZones", "listAccounts", "listApis", "listRoles", "listHosts"},
    READ_ONLY_USER: {"listZones", "listAccounts", "listApis", "listRoles", "listHosts"},
    "Resource Admin": {"listZones", "listAccounts", "listApis", "listRoles", "listHosts", "registerUserKeys",
                       "updateUser"},
    SUPPORT_ADMIN: {"listZones", "listAccounts", "listApis", "listRoles", "listHosts"},
    SUPPORT_USER: {"listZones", "listAccounts", "listApis", "listRoles", "listHosts"},
}
# What support staff may change besides reading: guests' power and volumes, not their removal.
SUPPORT_WRITES = {"startVirtualMachine", "stopVirtualMachine", "rebootVirtualMachine", "createVolume", "attachVolume",
                  "detachVolume"}


@pytest.mark.parametrize("role_name", sorted(EXPECTED))
def test_role_enforcement_matrix(api, engine, unique, role_name):
    role = role_named(api, role_name)
    account, client = new_account(api, engine, unique, prefix="m", roleid=role["id"])
    allowed = {a["name"] for a in client.listApis()["api"]}
    if role_name.startswith("Support"):
        assert SUPPORT_WRITES <= allowed and not {"deleteVolume", "resizeVolume", "destroyVirtualMachine"} & allowed
    for command, (write, params) in SAMPLE_COMMANDS.items():
        if write and role_name.startswith("Read-Only"):
            assert command not in allowed and command not in EXPECTED[role_name], command
        params = dict(params)
        if "name" in params and command != "listApis":
            params["name"] += unique
        if command in ("registerUserKeys", "updateUser"):
            params["id"] = account["user"][0]["id"]
        if command in EXPECTED[role_name]:
            assert command in allowed, (role_name, command)
            getattr(client, command)(**params)
            if command == "registerUserKeys":
                break       # the client's keys are replaced: the rest of the row is not run
        else:
            assert command not in allowed, (role_name, command)
            refused(getattr(client, command), command, account["name"], **params)
    if role_name.startswith("Read-Only"):
        assert not {name for name in allowed if not name.startswith(("list", "get", "query", "log"))}, allowed
