"""Events, alerts, hosts dedicated to HA and HA restarts over the CloudStack API against a live
engine, with the `cs` client. A host dies when the process of its simulated agent is killed."""

import signal
import subprocess
import sys
import time

from tests.e2e.test_vms import World, vm_job, vm_of
from tests.support.hierarchy import api_error
from tests.support.waiting import wait_for


def test_events_are_listed_archived_and_deleted(api, unique):
    world = World(api, unique, hosts=1)
    vm = world.deploy(name="ev-" + unique)
    events = api.listEvents(resourceid=vm["id"], listall=True)["event"]
    types = [e["type"] for e in events]
    assert types[0] == "VM.START" and "VM.CREATE" in types             # newest first
    start = events[0]
    assert {"id", "username", "type", "level", "description", "account", "domainid", "domain", "created",
            "state"} <= set(start)
    assert (start["level"], start["state"], start["resourcetype"]) == ("INFO", "Completed", "VirtualMachine")
    assert api.listEvents(type="ZONE.CREATE", keyword=world.zone["name"], listall=True)["count"] == 1
    day = start["created"][:10]
    assert api.listEvents(resourceid=vm["id"], startdate=day, enddate=day, listall=True)["count"] == len(events)
    api_error(api.listEvents, 431, "Level LOUD is invalid; use one of INFO, WARN, ERROR", level="LOUD")
    api_error(api.archiveEvents, 431, "either ids, type or enddate must be specified")
    api_error(api.listEvents, 431, startdate="yesterday")
    assert api.archiveEvents(ids=start["id"])["success"] is True
    assert [e["id"] for e in api.listEvents(resourceid=vm["id"], listall=True)["event"]] == \
        [e["id"] for e in events[1:]]
    assert api.deleteEvents(ids=",".join(e["id"] for e in events[1:]))["success"] is True
    assert api.listEvents(resourceid=vm["id"], listall=True) in ({}, {"count": 0})


def test_alerts_are_listed_archived_and_deleted(fresh_engine, unique):
    api = fresh_engine.client()
    world = World(api, unique, hosts=1, pool=False)
    pool = api.createStoragePool(zoneid=world.zone["id"], podid=world.pod["id"], clusterid=world.cluster["id"],
                                 name="small-" + unique, url="nfs://10.147.28.6/export/small-" + unique,
                                 capacitybytes=50 * 1024 ** 3)["storagepool"]
    assert pool["state"] == "Up"
    # The host has 2 x 1000 MHz and 2 GiB: 1200 MiB and 512 MiB (84 %) pass the 75 % notification threshold
    # and stay under the 85 % disable threshold.
    big = api.createServiceOffering(name="big-" + unique, displaytext="big", cpunumber=1, cpuspeed=500,
                                    memory=1200)["serviceoffering"]
    world.deploy(serviceofferingid=big["id"])
    assert api.listAlerts(type=0) in ({}, {"count": 0})
    world.deploy()
    # The capacity checker looks at a cluster within a second or so of a guest's start there.
    alert, = wait_for("the memory alert", lambda: api.listAlerts(type=0).get("alert"), 30)
    assert (alert["type"], alert["name"]) == (0, "ALERT.MEMORY")
    assert "Low Available memory in cluster %s" % world.cluster["name"] in alert["description"]
    assert set(alert) == {"id", "type", "name", "description", "sent"}
    assert api.listAlerts(name="ALERT.MEMORY", keyword=world.cluster["name"])["count"] == 1
    api_error(api.deleteAlerts, 431, "either ids, type or enddate must be specified")
    assert api.archiveAlerts(ids=alert["id"])["success"] is True
    assert api.listAlerts(type=0) in ({}, {"count": 0})
    assert api.deleteAlerts(type=0)["success"] is True


def test_ha_tag_hosts_take_only_placed_guests(api, unique):
    world = World(api, unique, hosts=2)
    reserved, plain = world.hosts
    api.updateHost(id=reserved["id"], hosttags="ha-" + unique)
    # The tag is this test's own: no host of another test carries it.
    api.updateConfiguration(name="ha.tag", value="ha-" + unique)
    try:
        listed = api.listHosts(clusterid=world.cluster["id"], hahost=True)["host"]
        assert [(h["id"], h["hahost"]) for h in listed] == [(reserved["id"], True)]
        others = api.listHosts(clusterid=world.cluster["id"], hahost=False)["host"]
        assert [(h["id"], h["hahost"]) for h in others] == [(plain["id"], False)]
        for _n in range(3):
            assert world.deploy()["hostid"] == plain["id"]
        assert world.deploy(hostid=reserved["id"])["hostid"] == reserved["id"]
    finally:
        api.resetConfiguration(name="ha.tag")


def simulated_host_process(engine, cluster_id, prefix):
    return subprocess.Popen(
        [sys.executable, "-m", "stackwright.simulation.agent", "--host", "127.0.0.1", "--port",
         str(engine.agent_port), "--count", "1", "--ramp", "0.1", "--duration", "300", "--ca-dir",
         str(engine.workdir / "pki"), "--cluster", cluster_id, "--guid-prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_dead_host_s_ha_guest_is_restarted_and_the_other_stopped(fresh_engine, unique):
    api = fresh_engine.client()
    api.updateConfiguration(name="ping.interval", value="1")
    api.updateConfiguration(name="ping.timeout", value="2")
    fresh_engine.restart()
    api = fresh_engine.client()
    world = World(api, unique, hosts=1)
    survivor, = world.hosts
    dying = simulated_host_process(fresh_engine, world.cluster["id"], "dies-" + unique)
    try:
        host = wait_for("the simulated host Up", lambda: [
            h for h in api.listHosts(clusterid=world.cluster["id"], state="Up").get("host", [])
            if h["id"] != survivor["id"]], timeout=30)[0]
        ha_offering = api.createServiceOffering(name="ha-" + unique, displaytext="ha", cpunumber=1, cpuspeed=500,
                                                memory=256, offerha=True)["serviceoffering"]
        protected = world.deploy(serviceofferingid=ha_offering["id"], hostid=host["id"])
        plain = world.deploy(hostid=host["id"])
        assert protected["haenable"] is True and plain["haenable"] is False
        dying.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        dying.wait(10)

        def moved():
            v = vm_of(api, protected["id"])
            return v if v["state"] == "Running" and v.get("hostid") == survivor["id"] else None

        restarted = wait_for("the HA guest Running on the survivor", moved, timeout=60, interval=0.1)
        elapsed = time.monotonic() - killed
        # Down after ping.interval x ping.timeout without a connection (2 s), then the restart.
        assert elapsed < 30, elapsed
        assert restarted["hostid"] == survivor["id"]
        stopped = vm_of(api, plain["id"])
        assert stopped["state"] == "Stopped" and "hostid" not in stopped
        down = api.listHosts(id=host["id"])["host"][0]
        assert down["state"] == "Down" and down["memoryallocated"] == 0
        alerts = api.listAlerts()["alert"]
        assert any(a["type"] == 7 and host["name"] in a["description"] for a in alerts)
        assert any(a["type"] == 8 and "HA restarted VM" in a["description"] for a in alerts)
        starts = api.listEvents(resourceid=protected["id"], type="VM.START", listall=True)["event"]
        assert starts[0]["description"].startswith("HA restarted VM")
        jobs = [j for j in api.listAsyncJobs(listall=True)["asyncjobs"] if j.get("jobinstanceid") == protected["id"]
                and j["cmd"].startswith("com.cloud.ha.")]
        assert [j["jobstatus"] for j in jobs] == [1]
        # The plain guest starts again by hand, anywhere with room.
        assert vm_job(api, "startVirtualMachine", id=plain["id"])["hostid"] == survivor["id"]
        log = fresh_engine.log_file.read_text()
        assert "declared Dead" in log and "Traceback" not in log
    finally:
        if dying.poll() is None:
            dying.kill()
        dying.communicate(timeout=30)
