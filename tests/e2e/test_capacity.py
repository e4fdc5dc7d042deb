"""listCapacity and showcapacities against a live engine: CPU and memory of Simulator hosts
with the clusters' over-commit ratios, scopes, type filter and what is left out."""

import pytest

from tests.support.hierarchy import api_error, new_cluster, new_pod, new_zone, physical_network

GiB = 1024 ** 3
MEMORY, CPU = 0, 1


@pytest.fixture
def world(api, unique):
    """An Enabled zone with one pod and one Simulator cluster (capacity ignores Disabled zones)."""
    zone = new_zone(api, unique)
    physical_network(api, zone, unique)
    zone = api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]
    pod = new_pod(api, zone, unique)
    cluster = new_cluster(api, pod, unique)
    return zone, pod, cluster


def add_sim(api, cluster, cpus=2, speed=1000, memory=GiB):
    return api.addHost(zoneid=cluster["zoneid"], podid=cluster["podid"], clusterid=cluster["id"],
                       hypervisor="Simulator",
                       url="http://sim/c/h?cpus=%d&cpuspeed=%d&memory=%d" % (cpus, speed, memory))["host"][0]


def capacity(api, **params):
    return api.listCapacity(**params).get("capacity", [])


def one(api, type, **params):
    [row] = capacity(api, type=type, **params)
    return row


def test_memory_factor_of_the_cluster_multiplies_capacity(api, world):
    # CloudStack's documented arithmetic: 2 GB of host memory with a factor of 2 offers 4 GB.
    zone, pod, cluster = world
    add_sim(api, cluster, memory=GiB)
    add_sim(api, cluster, memory=GiB)
    row = one(api, MEMORY, clusterid=cluster["id"])
    assert (row["capacitytotal"], row["capacityused"], row["percentused"]) == (2 * GiB, 0, "0")
    answer = api.updateConfiguration(name="mem.overprovisioning.factor", value="2", clusterid=cluster["id"])
    assert answer["configuration"]["scope"] == "cluster"
    row = one(api, MEMORY, clusterid=cluster["id"])
    assert row == {"type": 0, "name": "MEMORY", "zoneid": zone["id"], "zonename": zone["name"],
                   "podid": pod["id"], "podname": pod["name"], "clusterid": cluster["id"],
                   "clustername": cluster["name"], "capacitytotal": 4 * GiB, "capacityused": 0,
                   "capacityallocated": 0, "percentused": "0"}
    assert float(api.listClusters(id=cluster["id"])["cluster"][0]["memoryovercommitratio"]) == 2


def test_cpu_factor_fidelity(api, world):
    # Fidelity check 13.
    zone, pod, cluster = world
    add_sim(api, cluster, cpus=4, speed=2000)
    add_sim(api, cluster, cpus=2, speed=1500)
    raw = 4 * 2000 + 2 * 1500
    assert one(api, CPU, clusterid=cluster["id"])["capacitytotal"] == raw
    answer = api.updateConfiguration(name="cpu.overprovisioning.factor", value="2.0", clusterid=cluster["id"])
    config = answer["configuration"]
    assert (config["name"], config["value"], config["scope"]) == ("cpu.overprovisioning.factor", "2.0", "cluster")
    assert api.listClusters(id=cluster["id"])["cluster"][0]["cpuovercommitratio"] == "2.0"
    row = one(api, CPU, clusterid=cluster["id"])
    assert row["capacitytotal"] == 2 * raw
    assert isinstance(row["percentused"], str)
    host = api.listHosts(clusterid=cluster["id"])["host"][0]
    assert host["cpuwithoverprovisioning"] == "16000.0"


def test_capacity_follows_the_cluster_detail_not_the_live_global(api, world, unique):
    zone, pod, cluster = world
    add_sim(api, cluster, cpus=2, speed=1000)
    try:
        api.updateConfiguration(name="cpu.overprovisioning.factor", value="3")
        assert one(api, CPU, clusterid=cluster["id"])["capacitytotal"] == 2000
        newer = new_cluster(api, pod, unique)
        add_sim(api, newer, cpus=2, speed=1000)
        assert one(api, CPU, clusterid=newer["id"])["capacitytotal"] == 6000
    finally:
        api.resetConfiguration(name="cpu.overprovisioning.factor")
    assert one(api, CPU, podid=pod["id"])["capacitytotal"] == 8000


def test_scopes_and_type_filter(api, world, unique):
    zone, pod, cluster = world
    add_sim(api, cluster, cpus=1, speed=1000, memory=GiB)
    second = new_cluster(api, pod, unique)
    add_sim(api, second, cpus=3, speed=1000, memory=2 * GiB)

    zone_rows = capacity(api, zoneid=zone["id"])
    assert {r["type"] for r in zone_rows} == {0, 1, 2, 3, 5, 6}
    assert all("podid" not in r and "clusterid" not in r for r in zone_rows)
    by_type = {r["type"]: r for r in zone_rows}
    assert by_type[CPU]["capacitytotal"] == 4000 and by_type[MEMORY]["capacitytotal"] == 3 * GiB
    assert by_type[5]["name"] == "PRIVATE_IP" and by_type[5]["capacitytotal"] == 154   # .101 - .254
    assert by_type[6]["name"] == "SECONDARY_STORAGE"

    pod_rows = capacity(api, podid=pod["id"])
    assert {r["type"] for r in pod_rows} == {0, 1, 2, 3, 5}
    assert all(r["podid"] == pod["id"] and "clusterid" not in r for r in pod_rows)

    cluster_rows = capacity(api, clusterid=second["id"])
    assert {r["type"] for r in cluster_rows} == {0, 1, 2, 3}
    assert {r["type"]: r["capacitytotal"] for r in cluster_rows}[CPU] == 3000
    assert [r["type"] for r in capacity(api, zoneid=zone["id"], type=CPU)] == [CPU]
    assert capacity(api, zoneid=zone["id"], type=7) == []

    shown = api.listZones(id=zone["id"], showcapacities="true")["zone"][0]["capacity"]
    assert {r["type"]: r["capacitytotal"] for r in shown}[CPU] == 4000
    everything = capacity(api)
    assert [r for r in everything if r.get("zoneid") == zone["id"]] == zone_rows
    page = api.listCapacity(zoneid=zone["id"], page=2, pagesize=2)
    assert page["count"] == len(zone_rows) and page["capacity"] == zone_rows[2:4]


def test_left_out_of_capacity(api, world, unique):
    zone, pod, cluster = world
    kept = add_sim(api, cluster, cpus=1, speed=1000)
    disabled = add_sim(api, cluster, cpus=2, speed=1000)
    in_maintenance = add_sim(api, cluster, cpus=4, speed=1000)
    assert one(api, CPU, clusterid=cluster["id"])["capacitytotal"] == 7000
    api.updateHost(id=disabled["id"], allocationstate="Disable")
    api.prepareHostForMaintenance(id=in_maintenance["id"], fetch_result=True)
    assert one(api, CPU, clusterid=cluster["id"])["capacitytotal"] == 1000
    api.updateHost(id=disabled["id"], allocationstate="Enable")
    api.cancelHostMaintenance(id=in_maintenance["id"], fetch_result=True)
    assert one(api, CPU, clusterid=cluster["id"])["capacitytotal"] == 7000
    assert kept["state"] == "Up"

    # A KVM host still waiting for its agent offers nothing.
    kvm = new_cluster(api, pod, unique, hypervisor="KVM")
    api.addHost(zoneid=zone["id"], podid=pod["id"], clusterid=kvm["id"], hypervisor="KVM", url="http://192.0.2.77")
    assert one(api, CPU, clusterid=kvm["id"])["capacitytotal"] == 0

    api.updateCluster(id=cluster["id"], allocationstate="Disabled")
    assert capacity(api, clusterid=cluster["id"]) == []
    assert one(api, CPU, podid=pod["id"])["capacitytotal"] == 0
    api.updateCluster(id=cluster["id"], allocationstate="Enabled")
    api.updatePod(id=pod["id"], allocationstate="Disabled")
    assert capacity(api, podid=pod["id"]) == []
    assert one(api, CPU, zoneid=zone["id"])["capacitytotal"] == 0
    api.updatePod(id=pod["id"], allocationstate="Enabled")
    assert one(api, CPU, zoneid=zone["id"])["capacitytotal"] == 7000
    api.updateZone(id=zone["id"], allocationstate="Disabled")
    assert api.listCapacity(zoneid=zone["id"]) == {}


def test_percentused_of_a_zone_without_hosts(api, world):
    zone, _pod, _cluster = world
    row = one(api, CPU, zoneid=zone["id"])
    assert (row["capacitytotal"], row["capacityused"], row["percentused"]) == (0, 0, "0")


def test_bad_sortby(api, world):
    zone, _pod, _cluster = world
    api_error(api.listCapacity, 431, "Invalid sortby value size; the only supported value is Usage",
              zoneid=zone["id"], sortby="size")
    assert capacity(api, zoneid=zone["id"], sortby="usage")
