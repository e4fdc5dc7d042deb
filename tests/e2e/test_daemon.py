"""The engine as an operator runs it: setup, credentials file, the cs CLI, signals, config file."""

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cs import CloudStackApiException

from tests.support.engine import EngineProcess, free_port
from tests.support.hierarchy import new_cluster, new_pod, new_zone
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent


def test_setup_databases_is_idempotent_and_private(tmp_path):
    db = tmp_path / "cloud.db"
    ini = tmp_path / "cloudstack.ini"
    args = [str(BIN / "stackwright-setup-databases"), "--db-url", "sqlite:///%s" % db,
            "--credentials-file", str(ini)]
    first = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "schema upgraded empty ->" in first.stdout
    content = ini.read_text()
    assert content.startswith("[cloudstack]")
    for key in ("endpoint", "key", "secret"):
        assert "\n%s = " % key in content
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.stat().st_mode) == 0o600, "the database holds API secrets"
    second = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "(unchanged)" in second.stdout and "credentials unchanged" in second.stdout
    assert ini.read_text() == content, "a second run keeps the same keys"
    rotated = subprocess.run(args + ["--rotate-keys"], capture_output=True, text=True, check=True)
    assert "credentials written" in rotated.stdout and ini.read_text() != content


def test_setup_databases_reports_bad_urls_clearly(tmp_path):
    out = subprocess.run(
        [str(BIN / "stackwright-setup-databases"), "--db-url", "mysql+pymysql://u:secretpw@127.0.0.1:1/x",
         "--credentials-file", str(tmp_path / "c.ini")], capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "cannot set up the database at mysql+pymysql://u:***@127.0.0.1:1/x" in out.stderr
    assert "secretpw" not in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "c.ini").exists(), "nothing is written when the database is unusable"


def test_cs_cli_works_with_the_written_credentials(engine, unique):
    env = dict(os.environ, CLOUDSTACK_CONFIG=str(engine.credentials_file))
    out = subprocess.run([str(BIN / "cs"), "createZone", "name=cli-" + unique, "dns1=8.8.8.8",
                          "networktype=Basic"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([str(BIN / "cs"), "listZones", "name=cli-" + unique],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert listed.returncode == 0 and '"name": "cli-%s"' % unique in listed.stdout


def test_sigterm_is_a_clean_shutdown(fresh_engine, unique):
    api = fresh_engine.client()
    pod = new_pod(api, new_zone(api, unique), unique)
    cluster = new_cluster(api, pod, unique)
    hosts = [api.addHost(zoneid=pod["zoneid"], podid=pod["id"], clusterid=cluster["id"], hypervisor="Simulator",
                         url="http://sim/%s/h%d" % (unique, i), username="root", password="password")["host"][0]
             for i in range(3)]
    assert {h["state"] for h in api.listHosts(clusterid=cluster["id"])["host"]} == {"Up"}
    assert fresh_engine.stop() == 0
    log = fresh_engine.log_file.read_text()
    assert "shutting down" in log and "stopped" in log
    assert "Traceback" not in log and "CancelledError" not in log
    assert "3 host(s) left Disconnected at shutdown" in log
    # The hosts whose agents the engine served are Disconnected, as CloudStack leaves them.
    db = sqlite3.connect(fresh_engine.db_url.split(":///", 1)[1])
    try:
        states = dict(db.execute("SELECT uuid, state FROM host WHERE cluster_id = "
                                 "(SELECT id FROM cluster WHERE uuid = ?)", (cluster["id"],)).fetchall())
    finally:
        db.close()
    assert states == {h["id"]: "Disconnected" for h in hosts}


def test_hosts_whose_agents_do_not_come_back_after_a_restart_go_down(tmp_path, unique):
    engine = EngineProcess(tmp_path / "engine", "sqlite:///%s" % (tmp_path / "engine" / "cloud.db"),
                           extra_args=["--agent-reconnect-grace", "3"])
    try:
        api = engine.start().client()
        api.updateConfiguration(name="ping.interval", value="1")
        api.updateConfiguration(name="ping.timeout", value="2")
        cluster = new_cluster(api, new_pod(api, new_zone(api, unique), unique), unique)
        # Two hosts with agents of their own that end, one whose agent the engine runs.
        gone = subprocess.Popen(
            [sys.executable, "-m", "stackwright.simulation.agent", "--host", "127.0.0.1", "--port",
             str(engine.agent_port), "--count", "2", "--ramp", "0.2", "--duration", "6", "--ca-dir",
             str(engine.workdir / "pki"), "--cluster", cluster["id"], "--guid-prefix", "gone-" + unique],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        staying = api.addHost(zoneid=cluster["zoneid"], podid=cluster["podid"], clusterid=cluster["id"],
                              hypervisor="Simulator", url="http://sim/%s/stays" % unique, username="root",
                              password="password")["host"][0]
        wait_for("three hosts Up", lambda: api.listHosts(clusterid=cluster["id"], state="Up").get("count") == 3,
                 timeout=30)
        engine.stop()
        gone.communicate(timeout=60)
        engine.start()
        api = engine.client()

        def states():
            return {h["name"]: h["state"] for h in api.listHosts(clusterid=cluster["id"])["host"]}

        # grace 3 s (more than interval x timeout): Down about 3 s after the start
        wait_for("the two hosts without an agent Down", lambda: sorted(states().values()) == ["Down", "Down", "Up"],
                 timeout=30)
        assert states()[staying["name"]] == "Up"
        log = engine.log_file.read_text()
        assert log.count("has not reconnected since the engine started") == 2
        assert "Traceback" not in log
    finally:
        engine.kill()


def test_config_file_and_overrides(tmp_path):
    port = free_port()
    conf = tmp_path / "server.properties"
    conf.write_text("# engine settings\ndb.url=sqlite:///%s\napi.listen=127.0.0.1:%d\nlog.level=DEBUG\n"
                    % (tmp_path / "c.db", port))
    proc = EngineProcess(tmp_path / "e", "sqlite:///%s" % (tmp_path / "c.db"), extra_args=["--config", str(conf)])
    proc.setup_database()
    # --listen on the command line wins over api.listen in the file
    proc.start()
    try:
        assert proc.client().listApis(name="listZones")["count"] == 1
        assert " DEBUG " in proc.log_file.read_text()
    finally:
        proc.stop()


def test_unusable_options_fail_fast(tmp_path):
    out = subprocess.run([str(BIN / "stackwright-management"), "--db-url", "sqlite:///%s" % (tmp_path / "none.db"),
                          "--listen", "127.0.0.1:%d" % free_port(), "--log-file", "-"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "run stackwright-setup-databases first" in out.stderr
    out = subprocess.run([str(BIN / "stackwright-management"), "--listen", "127.0.0.1:http"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0 and "expected HOST:PORT" in out.stderr


def test_throttling_limits_users_not_root_admins(fresh_engine, unique):
    admin = fresh_engine.client()
    admin.updateConfiguration(name="api.throttling.enabled", value="true")
    admin.updateConfiguration(name="api.throttling.max", value="25")
    admin.updateConfiguration(name="api.throttling.interval", value="5")
    fresh_engine.restart()          # throttling settings are read at start, as in CloudStack
    account = admin.createAccount(username="t" + unique, password="pw", email="t@example.org",
                                  firstname="T", lastname="U", accounttype=0)["account"]
    keys = admin.registerUserKeys(id=account["user"][0]["id"])["userkeys"]
    from cs import CloudStack

    user = CloudStack(endpoint=fresh_engine.endpoint, key=keys["apikey"], secret=keys["secretkey"])
    for _request in range(25):
        user.listZones()
    with pytest.raises(CloudStackApiException) as e:
        user.listZones()
    assert e.value.response.status_code == 429
    assert e.value.error["cserrorcode"] == 9999
    assert e.value.error["errortext"].startswith("The given user has reached his/her account api limit, please retry after [")
    for _request in range(40):
        admin.listZones()           # root admins are never throttled
    limit = admin.getApiLimit()["apilimit"]
    assert limit["account"] == "admin"
    admin.resetApiLimit(account=account["id"])
    user.listZones()
