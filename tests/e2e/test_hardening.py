"""Sessions, lockout, secrets in errors, logs and at rest, exact answer caching, strict values,
early ownership checks and the admin/user field split, against a live engine on each database."""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import json
import os
import stat
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from cs import CloudStack, CloudStackApiException

from tests.e2e.test_api_core import raw_call
from tests.e2e.test_vms import World
from tests.support.engine import EngineProcess
from tests.support.hierarchy import api_error, new_zone, physical_network

BIN = Path(sys.executable).parent


def new_user(api, engine, unique, prefix="h", password=None, accounttype=0):
    password = password or "pw-" + unique
    account = api.createAccount(username=prefix + unique, password=password, email="h@example.org",
                                firstname="H", lastname="User", accounttype=accounttype)["account"]
    return account["user"][0], password


def login(engine, username, password, opener=None):
    """(status, body) of a session login; the opener's cookie jar keeps the session cookies."""
    form = urllib.parse.urlencode({"command": "login", "username": username, "password": password,
                                   "response": "json"}).encode()
    try:
        with (opener or urllib.request.build_opener()).open(
                urllib.request.Request(engine.endpoint, data=form), timeout=30) as r:
            return r.status, json.loads(r.read())["loginresponse"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["loginresponse"]


def session_call(engine, opener, params):
    url = engine.endpoint + "?" + urllib.parse.urlencode(dict(params, response="json"))
    try:
        with opener.open(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- sessions -----------------------------------------------------------------------------------


def test_a_session_request_needs_its_session_key(api, engine, unique):
    user, password = new_user(api, engine, unique, prefix="s")
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    status, answer = login(engine, "s" + unique, password, opener)
    assert status == 200
    key = answer["sessionkey"]
    # The browser sends every cookie with a cross-site request: the cookies alone (JSESSIONID and
    # sessionkey) must not be enough, not even for a request that only reads.
    for command in ("registerUserKeys", "listZones"):
        status, _body = session_call(engine, opener, {"command": command, "id": user["id"]})
        assert status == 401, command
    for cookie in [c for c in jar if c.name == "sessionkey"]:
        jar.clear(cookie.domain, cookie.path, cookie.name)
    assert session_call(engine, opener, {"command": "registerUserKeys", "id": user["id"]})[0] == 401
    assert session_call(engine, opener, {"command": "listZones", "sessionkey": "x" + key})[0] == 401
    assert session_call(engine, opener, {"command": "listZones", "sessionkey": key})[0] == 200
    assert session_call(engine, opener, {"command": "listZones", "SessionKey": key})[0] == 200
    # Only a digest of the session key is stored.
    db = sa.create_engine(engine.db_url)
    try:
        with db.connect() as conn:
            stored = conn.execute(sa.text("SELECT session_key FROM login_session")).scalars().all()
    finally:
        db.dispose()
    assert stored and key not in stored


# --- lockout and login timing -------------------------------------------------------------------


def test_wrong_passwords_lock_the_user_until_an_admin_enables_it(api, engine, unique):
    user, password = new_user(api, engine, unique, prefix="l")
    for _attempt in range(5):
        assert login(engine, "l" + unique, "wrong")[0] == 531
    status, body = login(engine, "l" + unique, password)
    assert status == 531 and password not in json.dumps(body)
    assert api.listUsers(id=user["id"])["user"][0]["state"] == "locked"
    for _attempt in range(3):
        assert login(engine, "l" + unique, password)[0] == 531
    enabled = api.enableUser(id=user["id"])["user"]
    assert enabled["state"] == "enabled"
    assert login(engine, "l" + unique, password)[0] == 200
    # A success clears the count: four more mistakes do not lock.
    for _attempt in range(4):
        assert login(engine, "l" + unique, "wrong")[0] == 531
    assert login(engine, "l" + unique, password)[0] == 200


def test_the_lockout_threshold_is_the_setting(api, engine, unique):
    user, password = new_user(api, engine, unique, prefix="t")
    api.updateConfiguration(name="incorrect.login.attempts.allowed", value="2")
    try:
        for _attempt in range(2):
            assert login(engine, "t" + unique, "wrong")[0] == 531
        assert login(engine, "t" + unique, password)[0] == 531
    finally:
        api.resetConfiguration(name="incorrect.login.attempts.allowed")
    assert api.listUsers(id=user["id"])["user"][0]["state"] == "locked"
    # A locked user's API keys stop working too.
    keys = api.registerUserKeys(id=user["id"])["userkeys"]
    client = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)
    time.sleep(5.5)     # the key cache's lifetime
    with pytest.raises(CloudStackApiException) as caught:
        client.listZones()
    assert caught.value.response.status_code == 401
    api.enableUser(id=user["id"])
    time.sleep(5.5)
    assert isinstance(client.listZones(), dict)


def test_login_time_does_not_tell_which_names_exist(api, engine, unique):
    new_user(api, engine, unique, prefix="k")

    def timed(username):
        started = time.perf_counter()
        assert login(engine, username, "wrong")[0] == 531
        return time.perf_counter() - started

    known = statistics.median(timed("k" + unique) for _attempt in range(3))
    unknown = statistics.median(timed("nobody-" + unique) for _attempt in range(3))
    # Both cost one password hash (tens of ms); an unknown name used to answer in about 1 ms.
    assert unknown > known * 0.4, (known, unknown)


# --- secrets in errors and logs -----------------------------------------------------------------


def test_a_refused_password_is_not_echoed_or_logged(api, engine, unique):
    secret = "Zz9-%s-\x01-secret" % unique
    error = api_error(api.createAccount, 431, username="e" + unique, password=secret, email="e@example.org",
                      firstname="E", lastname="User", accounttype=0)
    assert "illegal ASCII non-printable characters" in error["errortext"]
    assert unique not in error["errortext"]
    status, _body = login(engine, "e" + unique, secret)
    assert status in (431, 531)
    time.sleep(0.5)
    log_text = engine.log_file.read_text(errors="replace")
    assert "Zz9-%s" % unique not in log_text
    assert stat.S_IMODE(engine.log_file.stat().st_mode) == 0o640


# --- the answer cache ---------------------------------------------------------------------------


def test_an_unknown_parameter_never_answers_for_a_known_one(api, engine, unique):
    zone = new_zone(api, unique)
    new_zone(api, "other-" + unique)
    # listZones does not know `Name` (parameter names are exact): it lists every zone ...
    status, body, _headers = raw_call(engine, {"command": "listZones", "Name": zone["name"]})
    assert status == 200 and body["listzonesresponse"]["count"] >= 2
    # ... and a later `name` gets the one zone it names, not that stored answer.
    for _attempt in range(2):
        status, body, _headers = raw_call(engine, {"command": "listZones", "name": zone["name"]})
        assert status == 200 and [z["id"] for z in body["listzonesresponse"]["zone"]] == [zone["id"]]


# --- strict values ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["１_０", "1_000", "1_0", "١", "nan", "1e400"])
def test_settings_take_ascii_numbers_only(api, value):
    api_error(api.updateConfiguration, 431, name="mem.overprovisioning.factor", value=value)


def test_numbers_in_parameters_are_ascii_and_in_range(api, unique):
    for value in ("１0", "1_0", "٣"):
        api_error(api.listZones, 431, page="1", pagesize=value)
    world = World(api, unique, hosts=1)
    for size in ("9223372036854775807", str(1 << 40), "-1", "1_0"):
        error = api_error(api.deployVirtualMachine, 431, serviceofferingid=world.offering["id"],
                          templateid=world.template["id"], zoneid=world.zone["id"], rootdisksize=size)
        assert "rootdisksize" in error["errortext"]


def test_an_out_of_range_value_leaves_no_traceback(engine):
    before = engine.log_file.read_text(errors="replace").count("Traceback")
    status, _body, _headers = raw_call(engine, {"command": "deployVirtualMachine", "rootdisksize": "9" * 30,
                                                "serviceofferingid": "x", "templateid": "x", "zoneid": "x"})
    assert status == 431
    assert engine.log_file.read_text(errors="replace").count("Traceback") == before


# --- ownership and roles, before any job ----------------------------------------------------------


def test_another_accounts_vm_is_refused_at_request_time(api, engine, unique):
    world = World(api, unique, hosts=1)
    vm = world.deploy(name="own-" + unique)
    user, password = new_user(api, engine, unique, prefix="o")
    keys = api.registerUserKeys(id=user["id"])["userkeys"]
    client = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)
    jobs_before = len(api.listAsyncJobs(listall=True).get("asyncjobs", []))
    for command in ("stopVirtualMachine", "startVirtualMachine", "rebootVirtualMachine", "destroyVirtualMachine"):
        error = api_error(getattr(client, command), 531, cserrorcode=4365, id=vm["id"])
        assert "does not have permission" in error["errortext"]
    assert len(api.listAsyncJobs(listall=True).get("asyncjobs", [])) == jobs_before
    assert api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"] == "Running"


def test_create_account_needs_a_real_role(api, unique):
    error = api_error(api.createAccount, 431, username="r" + unique, password="pw", email="r@example.org",
                      firstname="R", lastname="User", roleid="garbage")
    assert "role" in error["errortext"]
    assert not api.listAccounts(name="r" + unique)
    made = api.createAccount(username="q" + unique, password="pw", email="q@example.org",
                             firstname="Q", lastname="User", roleid="user")["account"]
    assert made["accounttype"] == 0


# --- the admin/user field split -----------------------------------------------------------------


def test_users_do_not_see_a_zones_infrastructure_fields(api, engine, unique):
    zone = new_zone(api, unique, internaldns1="10.0.0.53")
    physical_network(api, zone, unique)
    api.updateZone(id=zone["id"], allocationstate="Enabled")
    user, _password = new_user(api, engine, unique, prefix="v")
    keys = api.registerUserKeys(id=user["id"])["userkeys"]
    client = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)
    admin_view = api.listZones(id=zone["id"])["zone"][0]
    assert admin_view["dns1"] and admin_view["internaldns1"] == "10.0.0.53"
    seen = client.listZones(id=zone["id"])["zone"][0]
    assert seen["name"] == zone["name"]
    assert not {"dns1", "dns2", "internaldns1", "internaldns2", "guestcidraddress"} & set(seen), seen


# --- secrets at rest ------------------------------------------------------------------------------


def stored_secret(db_url, api_key):
    db = sa.create_engine(db_url)
    try:
        with db.connect() as conn:
            user = sa.table("user", sa.column("api_key"), sa.column("secret_key"))
            return conn.execute(sa.select(user.c.secret_key).where(user.c.api_key == api_key)).scalar_one()
    finally:
        db.dispose()


def test_api_secrets_are_encrypted_at_rest(api, engine, unique):
    stored = stored_secret(engine.db_url, engine.api_key)
    assert stored.startswith("gAAAAA") and engine.api_secret not in stored
    user, _password = new_user(api, engine, unique, prefix="x")
    keys = api.registerUserKeys(id=user["id"])["userkeys"]
    assert stored_secret(engine.db_url, keys["apikey"]) != keys["secretkey"]
    assert api.getUserKeys(id=user["id"])["userkeys"]["secretkey"] == keys["secretkey"]
    assert stat.S_IMODE(os.stat(engine.key_file).st_mode) == 0o600
    assert engine.key_file.read_text().strip() not in engine.log_file.read_text(errors="replace")


@pytest.fixture(params=["sqlite", "mysql"])
def old_database(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "cloud.db")
    return request.getfixturevalue("mariadb_database").url


def stored_details(db_url, name):
    db = sa.create_engine(db_url)
    try:
        with db.connect() as conn:
            store = sa.table("image_store", sa.column("name"), sa.column("details"))
            return conn.execute(sa.select(store.c.details).where(store.c.name == name)).scalar_one()
    finally:
        db.dispose()


def test_a_database_with_clear_secrets_is_encrypted_in_place(old_database, tmp_path):
    """A database written before encryption at rest (revision 0004, secrets and an S3 store's
    keys in clear, no key file) is upgraded by stackwright-setup-databases, and the same keys
    still work after."""
    engine = EngineProcess(tmp_path / "engine", old_database)
    engine.workdir.mkdir(parents=True, exist_ok=True)
    engine.setup_database()
    key, secret = engine.api_key, engine.api_secret
    # Back to what an older release left: revision 0004, the secret in clear, no key file.
    # The migrations after 0006 have downgrades; the older steps are undone by hand below.
    from alembic import command
    from stackwright.management.persistence.db import Database

    schema = Database(old_database)
    try:
        command.downgrade(schema.alembic_config(), "0006")
    finally:
        schema.dispose()
    db = sa.create_engine(old_database)
    with db.begin() as conn:
        user = sa.table("user", sa.column("api_key"), sa.column("secret_key"))
        conn.execute(sa.update(user).where(user.c.api_key == key).values(secret_key=secret))
        conn.execute(sa.text("ALTER TABLE %s DROP COLUMN login_attempts" % db.dialect.identifier_preparer.quote("user")))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0004'"))
        store = sa.table("image_store", *(sa.column(c) for c in (
            "uuid", "created", "name", "url", "protocol", "provider", "scope", "readonly", "state", "details")))
        conn.execute(sa.insert(store).values(
            uuid="4f0e1c1a-0000-4000-8000-00000000000a", created=dt.datetime(2026, 1, 1), name="s3-old",
            url="https://s3.example.org", protocol="https", provider="S3", scope="REGION", readonly=False,
            state="Up", details='{"accesskey": "AKOLD", "secretkey": "s3cr3t-old"}'))
    db.dispose()
    engine.key_file.unlink()
    assert stored_secret(old_database, key) == secret
    out = engine.setup_database()
    assert "key file created" in out and "encrypted in place: 2" in out, out
    details = stored_details(old_database, "s3-old")
    assert details.startswith("gAAAAA") and "s3cr3t-old" not in details
    assert (engine.api_key, engine.api_secret) == (key, secret), "the keys are kept"
    stored = stored_secret(old_database, key)
    assert stored.startswith("gAAAAA") and secret not in stored
    again = engine.setup_database()
    assert "key file kept" in again and "encrypted in place" not in again
    engine.start()
    try:
        status, _body, _headers = raw_call(engine, {"command": "listUsers"})
        assert status == 200
        # --rotate-keys still issues working keys, stored encrypted.
        rotated = subprocess.run(
            [str(BIN / "stackwright-setup-databases"), "--db-url", old_database, "--credentials-file",
             str(engine.credentials_file), "--key-file", str(engine.key_file), "--rotate-keys"],
            capture_output=True, text=True, timeout=120, check=True)
        assert "credentials written" in rotated.stdout
        engine.api_key = None
        engine.setup_database()
        assert engine.api_key != key
        assert raw_call(engine, {"command": "listUsers"})[0] == 200
        assert stored_secret(old_database, engine.api_key).startswith("gAAAAA")
    finally:
        engine.stop()
