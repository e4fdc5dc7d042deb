"""listCapacity and showcapacities against a live engine: CPU and memory of Simulator hosts
with the clusters' over-commit ratios, scopes, type filter and what is left out."""

import pytest

from tests.support.hierarchy import api_error, new_cluster, new_pod, new_zone, physical_network
from tests.support.jobs import run_job

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


# --- the admin guide's over-provisioning example, end to end --------------------------------

SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"


class Guide:
    """One 2 GiB Simulator host (the simulated hypervisor has 2 GiB too) in a cluster with
    `mem.overprovisioning.factor` 2, a pool, and offerings of 1 GiB and 2 GiB."""

    def __init__(self, api, world, unique):
        self.api = api
        self.zone, self.pod, self.cluster = world
        api.updateConfiguration(name="mem.overprovisioning.factor", value="2", clusterid=self.cluster["id"])
        self.host = add_sim(api, self.cluster, cpus=2, speed=1000, memory=2 * GiB)
        api.createStoragePool(zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"],
                              name="ps-" + unique, capacitybytes=100 * GiB,
                              url="nfs://10.147.28.6/export/home/sandbox/primary-" + unique)
        self.small = api.createServiceOffering(name="1g-" + unique, cpunumber=1, cpuspeed=500,
                                               memory=1024)["serviceoffering"]
        self.big = api.createServiceOffering(name="2g-" + unique, cpunumber=1, cpuspeed=500,
                                             memory=2048)["serviceoffering"]
        self.template = api.listTemplates(templatefilter="executable", name=SIM_TEMPLATE,
                                          zoneid=self.zone["id"])["template"][0]

    def deploy(self, offering):
        return run_job(self.api, "deployVirtualMachine", serviceofferingid=offering["id"],
                       templateid=self.template["id"], zoneid=self.zone["id"])

    def running(self, offering):
        _answer, job = self.deploy(offering)
        assert (job["jobstatus"], job["jobresultcode"]) == (1, 0), job.get("jobresult")
        return job["jobresult"]["virtualmachine"]

    def memory(self):
        """(used, total) of the cluster's MEMORY row, and the host's memoryallocated."""
        row = one(self.api, MEMORY, clusterid=self.cluster["id"])
        host = self.api.listHosts(id=self.host["id"])["host"][0]
        return row["capacityused"], row["capacitytotal"], host["memoryallocated"]


@pytest.fixture
def guide(api, world, unique):
    return Guide(api, world, unique)


def vm_job(api, command, vm):
    _answer, job = run_job(api, command, id=vm["id"])
    assert (job["jobstatus"], job["jobresultcode"]) == (1, 0), job.get("jobresult")
    return job["jobresult"]["virtualmachine"]


def test_the_guides_example(api, guide):
    # 2 GB of host memory with a factor of 2 offers 4 GB.
    assert guide.memory() == (0, 4 * GiB, 0)
    host = api.listHosts(id=guide.host["id"])["host"][0]
    assert (host["memorytotal"], host["memorywithoverprovisioning"]) == (2 * GiB, str(4 * GiB))

    # Three VMs of 1 GB all run: used 3 GB, free 1 GB.
    vms = [guide.running(guide.small) for _unused in range(3)]
    assert [vm["state"] for vm in vms] == ["Running"] * 3
    assert {vm["hostid"] for vm in vms} == {guide.host["id"]}
    assert all((vm["details"]["memoryOvercommitRatio"], vm["details"]["cpuOvercommitRatio"]) == ("2.0", "1.0")
               for vm in vms)
    assert guide.memory() == (3 * GiB, 4 * GiB, 3 * GiB)
    row = one(api, MEMORY, clusterid=guide.cluster["id"])
    assert row["percentused"] == "75"
    host = api.listHosts(id=guide.host["id"])["host"][0]
    assert host["memoryallocatedpercentage"] == "150%"          # 3 of the 2 GB the host has

    # A fourth of 2 GB does not fit the 1 GB left: 533 naming the numbers, nothing half-made.
    answer, job = guide.deploy(guide.big)
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 533), job
    text = job["jobresult"]["errortext"]
    assert ("no host has 1 x 500 MHz CPU and 2 GiB of memory unallocated (%s has 500 MHz and 1 GiB free)"
            % guide.host["name"]) in text
    refused = api.listVirtualMachines(id=answer["id"])["virtualmachine"][0]
    assert refused["state"] == "Error" and "hostid" not in refused
    running = api.listVirtualMachines(zoneid=guide.zone["id"], state="Running")["virtualmachine"]
    assert sorted(vm["id"] for vm in running) == sorted(vm["id"] for vm in vms)
    assert guide.memory() == (3 * GiB, 4 * GiB, 3 * GiB)
    vm_job(api, "destroyVirtualMachine", refused)


def test_a_ratio_change_affects_only_vms_started_after_it(api, guide):
    first = [guide.running(guide.small) for _unused in range(2)]
    assert guide.memory() == (2 * GiB, 4 * GiB, 2 * GiB)
    # Factor 4: the running VMs keep their ratio 2, each 1 GB ÷ 2 × 4 = 2 GB of the 8 GB now offered.
    api.updateConfiguration(name="mem.overprovisioning.factor", value="4", clusterid=guide.cluster["id"])
    assert guide.memory() == (4 * GiB, 8 * GiB, 4 * GiB)
    later = guide.running(guide.small)
    assert later["details"]["memoryOvercommitRatio"] == "4.0"
    assert guide.memory() == (5 * GiB, 8 * GiB, 5 * GiB)
    # A stop + start re-rates a VM.
    vm_job(api, "stopVirtualMachine", first[0])
    assert guide.memory() == (3 * GiB, 8 * GiB, 3 * GiB)
    restarted = vm_job(api, "startVirtualMachine", first[0])
    assert restarted["details"]["memoryOvercommitRatio"] == "4.0"
    assert guide.memory() == (4 * GiB, 8 * GiB, 4 * GiB)


@pytest.mark.parametrize("value, accepted", [
    ("0.5", "greater than or equal to 1 and at most 8"), ("9", "greater than or equal to 1 and at most 8"),
    ("2e0", "plain decimal number"), ("two", "plain decimal"),
])
def test_bad_memory_factors(api, world, value, accepted):
    _zone, _pod, cluster = world
    text = api_error(api.updateConfiguration, 431, name="mem.overprovisioning.factor", value=value,
                     clusterid=cluster["id"])["errortext"]
    assert accepted in text and "mem.overprovisioning.factor" in text
    assert api.listClusters(id=cluster["id"])["cluster"][0]["memoryovercommitratio"] == "1.0"


def test_bad_cpu_factor(api):
    api_error(api.updateConfiguration, 431, "cpu.overprovisioning.factor should be greater than or equal to 1 and "
              "at most 16", name="cpu.overprovisioning.factor", value="17")
