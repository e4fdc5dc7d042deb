"""Hosts over the CloudStack API against a live engine: Simulator and KVM registration,
updateHost, deleteHost, listHosts, reconnectHost and the maintenance jobs."""

import re
import time

import pytest
from cs import CloudStackApiException

from tests.support.hierarchy import (
    api_error,
    call_exactly,
    invalid_uuid_text,
    missing_text,
    new_cluster,
    new_pod,
    new_zone,
)

DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")
GiB = 1024 ** 3


@pytest.fixture
def cluster(api, unique):
    zone = new_zone(api, unique)
    pod = new_pod(api, zone, unique)
    return new_cluster(api, pod, unique)


def add_sim(api, cluster, url="http://sim/c0/h0", **params):
    answer = api.addHost(zoneid=cluster["zoneid"], podid=cluster["podid"], clusterid=cluster["id"],
                         hypervisor="Simulator", url=url, **params)
    assert answer["count"] == 1 and len(answer["host"]) == 1
    return answer["host"][0]


def job_of(api, jobid):
    """Poll queryAsyncJobResult until the job is final (bounded)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = api.queryAsyncJobResult(jobid=jobid)
        if job["jobstatus"] != 0:
            return job
        time.sleep(0.1)
    raise AssertionError("job %s still pending after 60 s" % jobid)


def run_job(api, command, **params):
    jobid = getattr(api, command)(**params)["jobid"]
    return job_of(api, jobid)


def host_by_id(api, host_id):
    return api.listHosts(id=host_id)["host"][0]


# --- addHost --------------------------------------------------------------------------


def test_add_simulator_host(api, cluster):
    host = add_sim(api, cluster, url="http://sim/c0/h0?cpus=4&cpuspeed=2400&memory=4294967296",
                   hosttags="perf,gpu", username="root", password="password", clustertype="CloudManaged")
    assert (host["state"], host["resourcestate"], host["type"]) == ("Up", "Enabled", "Routing")
    assert host["hypervisor"] == "Simulator"
    assert host["hosttags"] == "perf,gpu"
    assert host["name"] and host["name"] != "http://sim/c0/h0"
    assert re.match(r"^172\.(1[6-9]|2\d|3[01])\.\d+\.\d+$", host["ipaddress"])
    assert (host["clusterid"], host["clustername"], host["clustertype"]) == (
        cluster["id"], cluster["name"], "CloudManaged")
    assert (host["podid"], host["podname"]) == (cluster["podid"], cluster["podname"])
    assert (host["zoneid"], host["zonename"]) == (cluster["zoneid"], cluster["zonename"])
    assert (host["cpunumber"], host["cpuspeed"], host["memorytotal"]) == (4, 2400, 4 * GiB)
    assert host["cpuwithoverprovisioning"] == "9600.0"
    assert host["memorywithoverprovisioning"] == str(4 * GiB)
    assert host["cpuallocated"] == "0%"
    assert host["memoryallocated"] == 0
    assert host["version"] and host["hypervisorversion"]
    assert DATE.match(host["created"]) and DATE.match(host["lastpinged"])
    assert "password" not in str(host)
    # The listing shows the same host (lastpinged moves with the heartbeats).
    listed = host_by_id(api, host["id"])
    assert {k: v for k, v in listed.items() if k != "lastpinged"} == {
        k: v for k, v in host.items() if k != "lastpinged"}


def test_simulator_hosts_get_distinct_names_and_addresses(api, cluster):
    hosts = [add_sim(api, cluster, url="http://sim/c0/h%d" % i) for i in range(3)]
    assert len({h["name"] for h in hosts}) == 3
    assert len({h["ipaddress"] for h in hosts}) == 3


def test_simulator_size_defaults_come_from_global_settings(api, cluster):
    keys = {"simulator.host.cpus": "2", "simulator.host.cpuspeed": "1500", "simulator.host.memory": str(GiB)}
    try:
        for name, value in keys.items():
            api.updateConfiguration(name=name, value=value)
        host = add_sim(api, cluster)
    finally:
        for name in keys:
            api.resetConfiguration(name=name)
    assert (host["cpunumber"], host["cpuspeed"], host["memorytotal"]) == (2, 1500, GiB)
    assert host["cpuwithoverprovisioning"] == "3000.0"
    # URL parameters win over the global values.
    assert add_sim(api, cluster, url="http://sim/c0/h1?cpus=16")["cpunumber"] == 16


@pytest.mark.parametrize("url, fragment", [
    ("http://sim/c0/h0?cpus=zero", "invalid cpus=zero in Simulator host URL"),
    ("http://sim/c0/h0?memory=0", "invalid memory=0 in Simulator host URL"),
    ("http://sim/c0/h0?disks=2", "unknown parameter(s) disks in Simulator host URL"),
    ("sim/c0/h0", "is not a valid Simulator host URL"),
])
def test_bad_simulator_url_is_refused(api, cluster, url, fragment):
    error = api_error(api.addHost, 431, cserrorcode=4350, zoneid=cluster["zoneid"], podid=cluster["podid"],
                      clusterid=cluster["id"], hypervisor="Simulator", url=url)
    assert fragment in error["errortext"]
    assert api.listHosts(clusterid=cluster["id"]) == {}


def test_add_host_in_disabled_state(api, cluster):
    host = add_sim(api, cluster, allocationstate="Disabled")
    assert (host["state"], host["resourcestate"]) == ("Up", "Disabled")


def test_add_host_by_cluster_name_creates_the_cluster(api, unique):
    zone = new_zone(api, unique)
    pod = new_pod(api, zone, unique)
    name = "bynames-" + unique
    host = api.addHost(zoneid=zone["id"], podid=pod["id"], clustername=name, hypervisor="Simulator",
                       url="http://sim/c9/h0")["host"][0]
    assert host["clustername"] == name
    clusters = api.listClusters(podid=pod["id"], name=name)
    assert clusters["count"] == 1 and clusters["cluster"][0]["id"] == host["clusterid"]
    again = api.addHost(zoneid=zone["id"], podid=pod["id"], clustername=name.upper(), hypervisor="Simulator",
                        url="http://sim/c9/h1")["host"][0]
    assert again["clusterid"] == host["clusterid"]


def test_add_host_errors(api, cluster, unique):
    base = dict(zoneid=cluster["zoneid"], podid=cluster["podid"], clusterid=cluster["id"],
                hypervisor="Simulator", url="http://sim/c0/h0")
    for missing in ("zoneid", "podid", "url", "hypervisor"):
        params = {k: v for k, v in base.items() if k != missing}
        api_error(api.addHost, 431, missing_text("addHost", missing), 9999, **params)
    api_error(api.addHost, 431, "Can't add host whose hypervisor type is: KVM into cluster: %s whose "
              "hypervisor type is: Simulator" % cluster["name"], **dict(base, hypervisor="KVM", url="http://10.0.0.9"))
    error = api_error(api.addHost, 431, **dict(base, hypervisor="Hyper-X"))
    assert "Hyper-X" in error["errortext"] and "Simulator" in error["errortext"]
    other_zone = new_zone(api, unique)
    error = api_error(api.addHost, 431, **dict(base, zoneid=other_zone["id"]))
    assert error["errortext"].startswith("Pod with specified id %s doesn't belong to the zone" % cluster["podid"])
    other_pod = new_pod(api, other_zone, unique)
    error = api_error(api.addHost, 431, **dict(base, zoneid=other_zone["id"], podid=other_pod["id"]))
    assert error["errortext"].startswith("Cluster with specified id %s doesn't belong to the pod" % cluster["id"])
    api_error(api.addHost, 431, "Unable to resolve Allocation State 'Sleeping' to a supported state",
              **dict(base, allocationstate="Sleeping"))
    unknown = "0b5a3fb4-9c38-4c3f-9e86-2a5c2c4b7e01"
    api_error(api.addHost, 431, invalid_uuid_text("addHost", "clusterid", unknown), **dict(base, clusterid=unknown))
    api_error(api.addHost, 431, **{k: v for k, v in base.items() if k != "clusterid"})
    assert api.listHosts(clusterid=cluster["id"]) == {}


def test_add_kvm_host_waits_for_its_agent(api, engine, unique):
    zone = new_zone(api, unique)
    pod = new_pod(api, zone, unique)
    kvm = new_cluster(api, pod, unique, hypervisor="KVM")
    params = dict(zoneid=zone["id"], podid=pod["id"], clusterid=kvm["id"], hypervisor="KVM",
                  url="http://192.0.2.10", username="root", password="secret")
    host = api.addHost(**params)["host"][0]
    assert (host["state"], host["resourcestate"], host["hypervisor"]) == ("Connecting", "Enabled", "KVM")
    assert host["ipaddress"] == "192.0.2.10"
    assert host["statusmessage"] == (
        "waiting for the agent on 192.0.2.10 to connect to the management server on port %d; check that "
        "stackwright-agent runs there and that agent.properties names this zone/pod/cluster" % engine.agent_port)
    assert "cpunumber" not in host and "secret" not in str(host)
    error = api_error(api.addHost, 431, cserrorcode=4350, **dict(params, url="http://192.0.2.10/"))
    assert error["errortext"].startswith("A host with address 192.0.2.10 already exists in zone %s" % zone["name"])
    assert host["id"] in error["errortext"]
    api_error(api.addHost, 431, "sim/x is not a valid KVM host URL; use http://<address of the host>",
              **dict(params, url="sim/x"))
    assert api.listHosts(clusterid=kvm["id"])["count"] == 1


# --- updateHost -----------------------------------------------------------------------


def test_update_host_tags_replace_in_order(api, cluster):
    host = add_sim(api, cluster, hosttags="perf,gpu")
    updated = api.updateHost(id=host["id"], hosttags="perf,gpu,x2")["host"]
    assert updated["hosttags"] == "perf,gpu,x2"
    assert api.updateHost(id=host["id"], hosttags="x2,perf")["host"]["hosttags"] == "x2,perf"
    assert host_by_id(api, host["id"])["hosttags"] == "x2,perf"
    cleared = api.updateHost(id=host["id"], hosttags="")["host"]
    assert "hosttags" not in cleared


def test_update_host_allocation_state_fidelity(api, cluster):
    # Fidelity check 11.
    host = add_sim(api, cluster)
    error = api_error(api.updateHost, 530, cserrorcode=4250, id=host["id"], allocationstate="Disabled")
    assert error["errortext"] == ("Failed to update host: %s with id %s, Invalid allocation state: Disabled, "
                                  "only Enable/Disable are allowed" % (host["name"], host["id"]))
    assert error["errortext"].endswith("Invalid allocation state: Disabled, only Enable/Disable are allowed")
    disabled = api.updateHost(id=host["id"], allocationstate="Disable")["host"]
    assert (disabled["resourcestate"], disabled["state"]) == ("Disabled", "Up")
    assert api.updateHost(id=host["id"], allocationstate="Disable")["host"]["resourcestate"] == "Disabled"
    assert api.updateHost(id=host["id"], allocationstate="Enable")["host"]["resourcestate"] == "Enabled"


def test_update_host_name_and_errors_in_maintenance(api, cluster):
    host = add_sim(api, cluster)
    renamed = api.updateHost(id=host["id"], name="renamed-host", annotation="rack 4")["host"]
    assert (renamed["name"], renamed["annotation"]) == ("renamed-host", "rack 4")
    assert run_job(api, "prepareHostForMaintenance", id=host["id"])["jobstatus"] == 1
    error = api_error(api.updateHost, 530, id=host["id"], allocationstate="Enable")
    assert error["errortext"].startswith("Failed to update host: renamed-host with id %s, " % host["id"])
    assert "Maintenance" in error["errortext"] and "cancelHostMaintenance" in error["errortext"]
    # Tags may still change in maintenance.
    assert api.updateHost(id=host["id"], hosttags="a,b")["host"]["hosttags"] == "a,b"


# --- maintenance ----------------------------------------------------------------------


def test_maintenance_fidelity(api, cluster):
    # Fidelity checks 9 and 10.
    host = add_sim(api, cluster)
    answer = api.prepareHostForMaintenance(id=host["id"])
    assert set(answer) == {"jobid"}
    job = job_of(api, answer["jobid"])
    assert (job["jobid"], job["jobstatus"], job["jobresultcode"], job["jobresulttype"]) == (
        answer["jobid"], 1, 0, "object")
    assert (job["jobinstancetype"], job["jobinstanceid"]) == ("Host", host["id"])
    assert list(job["jobresult"]) == ["host"]
    assert (job["jobresult"]["host"]["id"], job["jobresult"]["host"]["state"]) == (host["id"], "Up")
    assert job["cmd"].endswith("PrepareHostForMaintenanceCmd")
    assert DATE.match(job["completed"])
    listed = host_by_id(api, host["id"])
    assert (listed["resourcestate"], listed["state"]) == ("Maintenance", "Up")
    assert api.listHosts(clusterid=cluster["id"], resourcestate="maintenance")["count"] == 1

    again = run_job(api, "prepareHostForMaintenance", id=host["id"])
    assert (again["jobstatus"], again["jobresultcode"]) == (2, 530)
    assert again["jobresult"] == {
        "errorcode": 530,
        "errortext": "Failed to prepare host for maintenance due to: Host is already in state Maintenance. "
                     "Cannot recall for maintenance until resolved.",
    }
    with pytest.raises(CloudStackApiException) as caught:
        api.prepareHostForMaintenance(id=host["id"], fetch_result=True)
    assert caught.value.error["errortext"].startswith("Failed to prepare host for maintenance due to: ")

    cancelled = run_job(api, "cancelHostMaintenance", id=host["id"])
    assert (cancelled["jobstatus"], cancelled["jobinstancetype"], cancelled["jobinstanceid"]) == (1, "Host", host["id"])
    assert list(cancelled["jobresult"]) == ["host"]
    assert (cancelled["jobresult"]["host"]["resourcestate"], cancelled["jobresult"]["host"]["state"]) == (
        "Enabled", "Up")
    assert host_by_id(api, host["id"])["resourcestate"] == "Enabled"


def test_maintenance_refusals(api, cluster):
    host = add_sim(api, cluster)
    api.updateHost(id=host["id"], allocationstate="Disable")
    job = run_job(api, "prepareHostForMaintenance", id=host["id"])
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 530)
    assert job["jobresult"]["errortext"].startswith(
        "Failed to prepare host for maintenance due to: No next resource state found for current state = "
        "Disabled event = AdminAskMaintenance")
    assert host_by_id(api, host["id"])["resourcestate"] == "Disabled"
    job = run_job(api, "cancelHostMaintenance", id=host["id"])
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 530)
    assert job["jobresult"]["errortext"] == (
        "Failed to cancel maintenance for host %s: its resource state is Disabled, which is not a "
        "maintenance state" % host["name"])


def test_removal_is_maintenance_then_delete(api, cluster):
    host = add_sim(api, cluster)
    api_error(api.deleteHost, 530, "Host %s cannot be deleted as it is not in maintenance mode. Either put the "
              "host into maintenance or perform a forced deletion." % host["id"], 4250, id=host["id"])
    api.prepareHostForMaintenance(id=host["id"], fetch_result=True)
    assert api.deleteHost(id=host["id"]) == {"success": True}
    assert api.listHosts(id=host["id"]) == {}
    assert api.listHosts(clusterid=cluster["id"]) == {}
    # The id of a removed host is still recognised, so the error names the host.
    error = api_error(api.updateHost, 530, id=host["id"], hosttags="x")
    assert "removed" in error["errortext"]
    forced = add_sim(api, cluster)
    assert api.deleteHost(id=forced["id"], forced="true") == {"success": True}
    assert api.listHosts(clusterid=cluster["id"]) == {}


def test_reconnect_host(api, cluster):
    host = add_sim(api, cluster, url="http://sim/c0/h0?cpus=3")
    job = run_job(api, "reconnectHost", id=host["id"])
    assert (job["jobstatus"], job["jobinstancetype"], job["jobinstanceid"]) == (1, "Host", host["id"])
    again = job["jobresult"]["host"]
    assert (again["state"], again["name"], again["ipaddress"], again["cpunumber"]) == (
        "Up", host["name"], host["ipaddress"], 3)
    api.prepareHostForMaintenance(id=host["id"], fetch_result=True)
    job = run_job(api, "reconnectHost", id=host["id"])
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 530)
    assert "cancel the maintenance first" in job["jobresult"]["errortext"]


# --- listHosts -------------------------------------------------------------------------


def test_list_hosts_filters(api, cluster, unique):
    hosts = [add_sim(api, cluster, url="http://sim/c0/h%d" % i) for i in range(3)]
    api.updateHost(id=hosts[1]["id"], allocationstate="Disable", name="Filter-Me-" + unique)
    ids = [h["id"] for h in hosts]

    def listed(**params):
        answer = api.listHosts(**params)
        return [h["id"] for h in answer.get("host", [])]

    assert listed(clusterid=cluster["id"]) == ids
    assert listed(podid=cluster["podid"]) == ids
    assert listed(zoneid=cluster["zoneid"]) == ids
    assert listed(zoneid=cluster["zoneid"], type="routing") == ids
    assert listed(zoneid=cluster["zoneid"], type="SecondaryStorage") == []
    assert listed(zoneid=cluster["zoneid"], hypervisor="simulator") == ids
    assert listed(zoneid=cluster["zoneid"], hypervisor="KVM") == []
    assert listed(zoneid=cluster["zoneid"], state="Up") == ids
    assert listed(zoneid=cluster["zoneid"], state="Down") == []
    assert listed(zoneid=cluster["zoneid"], resourcestate="Disabled") == [ids[1]]
    assert listed(name="filter-me-" + unique.upper()) == [ids[1]]
    assert listed(zoneid=cluster["zoneid"], keyword="FILTER-me") == [ids[1]]
    assert listed(zoneid=cluster["zoneid"], keyword=hosts[2]["ipaddress"]) == [ids[2]]
    assert listed(id=ids[0]) == [ids[0]]
    assert listed(id=ids[0], zoneid=cluster["zoneid"], resourcestate="Disabled") == []
    assert listed(zoneid=cluster["zoneid"], hahost="true") == []
    page = api.listHosts(zoneid=cluster["zoneid"], page=2, pagesize=1)
    assert (page["count"], [h["id"] for h in page["host"]]) == (3, [ids[1]])


def test_list_hosts_paging_fidelity(api, cluster):
    # Fidelity check 15.
    for i in range(3):
        add_sim(api, cluster, url="http://sim/c0/h%d" % i)
    status, body = call_exactly(api, "listHosts", clusterid=cluster["id"], pagesize="10")
    assert (status, body) == (431, {"uuidList": [], "errorcode": 431, "cserrorcode": 9999,
                                    "errortext": '"page" parameter is required when "pagesize" is specified'})
    status, body = call_exactly(api, "listHosts", clusterid=cluster["id"], page="2")
    assert (status, body["errortext"]) == (431, '"pagesize" parameter is required when "page" is specified')
    status, body = call_exactly(api, "listHosts", clusterid=cluster["id"], page="99", pagesize="10")
    assert (status, body) == (200, {"count": 3})
    status, body = call_exactly(api, "listHosts", clusterid=cluster["id"], page="1", pagesize="501")
    assert (status, body["errortext"]) == (431, "Page size can't exceed max allowed page size value: 500")
    listed = api.listHosts(clusterid=cluster["id"], fetch_list=True)
    assert len(listed) == 3


def test_list_hosts_of_unknown_zone(api):
    unknown = "6f9c1e0e-1d7b-4a8e-9f3a-0c1d2e3f4a5b"
    api_error(api.listHosts, 431, invalid_uuid_text("listHosts", "zoneid", unknown), zoneid=unknown)
