"""Two management servers on one MariaDB database.

A host whose agent is connected to engine A is driven through engine B (the call is
forwarded to A); B's start and stop never touch A's hosts; `listManagementServers` and
`managementserverid` say who serves what; after a SIGKILL of A, B finds A Down, ends the
jobs A had accepted, runs A's Simulator hosts and takes A's simulated agents, which return
to A (their preferred engine) once it is back.
"""

import itertools
import json
import subprocess
import sys
import time

from cs import CloudStackApiException
from tests.e2e.test_vms import World
from tests.support.engine import engine_pair, start_pair
from tests.support.jobs import job_of
from tests.support.servers import server_of
from tests.support.waiting import wait_for

HEARTBEAT_MS, THRESHOLD_MS = 500, 4000
LOADED = 4


def server_id(engine):
    """The listManagementServers id of `engine`."""
    return server_of(engine)


def servers_by_id(api):
    return {s["id"]: s for s in api.listManagementServers()["managementserver"]}


def hosts_by_name(api, cluster_id):
    return {h["name"]: h for h in api.listHosts(clusterid=cluster_id).get("host", [])}


def all_up_on(api, cluster_id, names, msid):
    hosts = hosts_by_name(api, cluster_id)
    seen = {n: (hosts[n]["state"], hosts[n].get("managementserverid")) for n in names if n in hosts}
    return seen if len(seen) == len(names) and set(seen.values()) == {("Up", msid)} else None


def load_generator(a, b, cluster_id, prefix):
    """Simulated agents that know both engines (A first, every second back to A when away) and
    stay connected for two minutes."""
    return subprocess.Popen(
        [sys.executable, "-m", "stackwright.simulation.agent",
         "--host", "127.0.0.1:%d,127.0.0.1:%d" % (a.agent_port, b.agent_port),
         "--lb-check-interval", "1",
         "--count", str(LOADED), "--ramp", "0.2", "--duration", "120", "--ca-dir", str(a.workdir / "pki"),
         "--cluster", cluster_id, "--guid-prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_engines_share_hosts_forward_calls_and_take_over_after_a_kill(mariadb_server, tmp_path, unique):
    database = mariadb_server.create_database(prefix="mgmt")
    a, b = engine_pair(tmp_path, database.url)
    loader = None
    try:
        api_a = start_pair(a, b, HEARTBEAT_MS, THRESHOLD_MS)
        api_b = b.client()
        id_a, id_b = server_id(a), server_id(b)
        servers = servers_by_id(api_b)
        assert set(servers) == {id_a, id_b}
        assert {s["state"] for s in servers.values()} == {"Up"}
        assert all(s["version"] and s["serviceip"] == "127.0.0.1" and s["lastserverstart"] for s in servers.values())

        # Simulator hosts added through A run on A.
        world = World(api_a, unique, hosts=2)
        sim_names = [h["name"] for h in world.hosts]
        wait_for("A's Simulator hosts Up on A", lambda: all_up_on(api_b, world.cluster["id"], sim_names, id_a), 30)

        # Driven through B: the job runs on B, its agent calls are forwarded to A.
        world.api = api_b
        vm = world.deploy(name="fwd-" + unique)
        assert vm["state"] == "Running" and vm["hostname"] in sim_names
        stopped = job_of(api_b, api_b.stopVirtualMachine(id=vm["id"])["jobid"])
        assert stopped["jobstatus"] == 1, stopped
        assert "forwarded StartVm for host" in a.log_file.read_text()
        assert "forwarded StopVm for host" in a.log_file.read_text()

        # Simulated agents that know both engines connect to the first, A.
        loader = load_generator(a, b, world.cluster["id"], "ld-" + unique)
        loaded = ["ld-%s-%05d" % (unique, i) for i in range(LOADED)]
        wait_for("loaded agents Up on A", lambda: all_up_on(api_b, world.cluster["id"], loaded, id_a), 30)

        # B stops and starts again: A's hosts are never Disconnected or Down by it.
        b.stop()
        assert all_up_on(api_a, world.cluster["id"], sim_names + loaded, id_a)
        b.start()
        time.sleep(3 * HEARTBEAT_MS / 1000)
        assert all_up_on(api_b, world.cluster["id"], sim_names + loaded, id_a)
        assert "has not reconnected" not in b.log_file.read_text()

        # Jobs accepted by A, then A is killed: B ends every one of them.
        world.api = api_a
        accepted = [api_a.deployVirtualMachine(serviceofferingid=world.offering["id"],
                                               templateid=world.template["id"], zoneid=world.zone["id"],
                                               name="k%d-%s" % (i, unique))["jobid"] for i in range(4)]
        a.kill()
        jobs = [job_of(api_b, job_id, timeout=120) for job_id in accepted]
        for job in jobs:
            assert job["jobstatus"] in (1, 2), job
            if job["jobstatus"] == 2:
                assert job["jobresult"]["errortext"], job
        assert [j["jobstatus"] for j in jobs].count(1) >= 1, jobs
        servers = servers_by_id(api_b)
        assert (servers[id_a]["state"], servers[id_b]["state"]) == ("Down", "Up")

        # A's Simulator hosts run on B now, and A's simulated agents reconnected to B.
        wait_for("A's hosts Up on B", lambda: all_up_on(api_b, world.cluster["id"], sim_names + loaded, id_b), 60)
        running = [v for v in api_b.listVirtualMachines(zoneid=world.zone["id"]).get("virtualmachine", [])
                   if v["name"].startswith("k")]
        assert len(running) == 4 and all(v["state"] in ("Running", "Stopped", "Error") for v in running), running
        assert servers_by_id(api_b)[id_b]["agentscount"] == len(sim_names + loaded)
        log_b = b.log_file.read_text()
        assert "Traceback" not in log_b
        assert "took over" in log_b

        # A comes back: the simulated agents return to it, their preferred engine; the Simulator
        # hosts B took over stay with B.
        a.start()
        wait_for("loaded agents back on A", lambda: all_up_on(api_b, world.cluster["id"], loaded, id_a), 30)
        assert all_up_on(api_b, world.cluster["id"], sim_names, id_b)
        assert servers_by_id(api_a)[id_a]["state"] == "Up"
        assert "Traceback" not in a.log_file.read_text()
    finally:
        if loader is not None:
            loader.terminate()
            out, _err = loader.communicate(timeout=60)
            if out.strip():
                assert json.loads(out.strip().splitlines()[-1])["count"] == LOADED
        a.kill()
        b.stop()
        mariadb_server.drop_database(database)


# Page sizes asked by page_size_limit_seen: one never asked before at each call, so no stored
# answer is served; all below the default limit of 500.
PAGE_SIZES = itertools.count(10)


def page_size_limit_seen(api):
    """The page size limit `api`'s engine applies now; None when it is above any size asked."""
    size = next(PAGE_SIZES)
    try:
        api.listZones(page=1, pagesize=size)
    except CloudStackApiException as refused:
        text = refused.error["errortext"]
        return int(text.rsplit(":", 1)[1])
    return None


def test_a_global_setting_changed_through_one_engine_takes_effect_on_the_other(mariadb_server, tmp_path):
    database = mariadb_server.create_database(prefix="mgmt")
    a, b = engine_pair(tmp_path, database.url)
    try:
        a.start()
        b.api_key, b.api_secret = a.api_key, a.api_secret
        b.start()
        api_a, api_b = a.client(), b.client()
        assert page_size_limit_seen(api_b) is None          # the default, 500: any page size here passes
        interval = api_b.listConfigurations(name="cluster.heartbeat.interval")["configuration"][0]["value"]
        api_a.updateConfiguration(name="default.page.size", value="7")
        changed = time.monotonic()
        assert page_size_limit_seen(api_a) == 7
        wait_for("B applies the page size set through A", lambda: page_size_limit_seen(api_b) == 7, 10)
        # Within one heartbeat interval (plus the time of a call).
        assert time.monotonic() - changed < int(interval) / 1000 + 1.0
        assert "global settings changed on another management server, now in effect here: default.page.size" \
            in b.log_file.read_text()
        # A reset through B reaches A the same way.
        api_b.resetConfiguration(name="default.page.size")
        wait_for("A applies the reset made through B", lambda: page_size_limit_seen(api_a) is None, 10)
    finally:
        a.kill()
        b.kill()
