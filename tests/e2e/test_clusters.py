"""Clusters over the CloudStack API: addCluster, updateCluster, deleteCluster, listClusters."""

import uuid

import pytest

from tests.support.hierarchy import (
    api_error,
    invalid_uuid_text,
    missing_text,
    new_cluster,
    new_pod,
    new_zone,
    physical_network,
)


@pytest.fixture
def pod(api, unique):
    return new_pod(api, new_zone(api, unique), unique)


def test_add_cluster_fidelity(api, pod, unique):
    # Fidelity check 8: addCluster answers a list; `name` lookups ignore case.
    answer = api.addCluster(zoneid=pod["zoneid"], podid=pod["id"], clustername="c1-" + unique,
                            hypervisor="Simulator", clustertype="CloudManaged")
    assert answer["count"] == 1 and len(answer["cluster"]) == 1
    cluster = answer["cluster"][0]
    assert cluster["name"] == "c1-" + unique
    assert cluster["allocationstate"] == "Enabled"
    assert cluster["managedstate"] == "Managed"
    assert cluster["hypervisortype"] == "Simulator"
    assert cluster["clustertype"] == "CloudManaged"
    assert cluster["cpuovercommitratio"] == "1.0"
    assert cluster["memoryovercommitratio"] == "1.0"
    assert cluster["resourcedetails"] == {"cpuOvercommitRatio": "1.0", "memoryOvercommitRatio": "1.0"}
    assert (cluster["podid"], cluster["podname"]) == (pod["id"], pod["name"])
    assert (cluster["zoneid"], cluster["zonename"]) == (pod["zoneid"], pod["zonename"])
    assert cluster["arch"] == "x86_64"
    listed = api.listClusters(name="C1-" + unique.upper())
    assert listed == {"count": 1, "cluster": [cluster]}


@pytest.mark.parametrize("given, rendered", [
    ("KVM", "KVM"), ("kvm", "KVM"), ("Simulator", "Simulator"), ("SIMULATOR", "Simulator"),
])
def test_hypervisor_names_any_case(api, pod, unique, given, rendered):
    cluster = new_cluster(api, pod, unique, hypervisor=given)
    assert cluster["hypervisortype"] == rendered
    assert api.listClusters(podid=pod["id"], hypervisor=rendered.lower())["cluster"] == [cluster]


def test_cluster_types_and_initial_state(api, pod, unique):
    external = new_cluster(api, pod, unique, clustertype="externalmanaged", allocationstate="DISABLED",
                           arch="AARCH64")
    assert external["clustertype"] == "ExternalManaged"
    assert external["allocationstate"] == "Disabled"
    assert external["arch"] == "aarch64"


@pytest.mark.parametrize("params, text", [
    ({"hypervisor": "XenServer"}, "Unable to resolve hypervisor type 'XenServer'; supported hypervisors are KVM, Simulator"),
    ({"clustertype": "Managed"},
     "Unable to resolve Managed to a supported cluster type; use CloudManaged or ExternalManaged"),
    ({"allocationstate": "Enable"}, "Unable to resolve Allocation State 'Enable' to a supported state"),
    ({"arch": "ppc64"}, "Unable to resolve arch ppc64 to a supported CPU architecture; use x86_64 or aarch64"),
    ({"clustername": ""}, "Please specify cluster name"),
])
def test_invalid_cluster_parameters_leave_no_cluster(api, pod, unique, params, text):
    params.setdefault("clustername", "bad-" + unique)
    api_error(lambda **kw: new_cluster(api, pod, unique, **kw), 431, text, 4350, **params)
    assert api.listClusters(podid=pod["id"]) == {}


@pytest.mark.parametrize("missing", ["clustername", "zoneid", "podid", "hypervisor", "clustertype"])
def test_missing_parameters(api, pod, unique, missing):
    params = {"clustername": "m-" + unique, "zoneid": pod["zoneid"], "podid": pod["id"],
              "hypervisor": "KVM", "clustertype": "CloudManaged"}
    del params[missing]
    api_error(api.addCluster, 431, missing_text("addCluster", missing), 9999, **params)


def test_pod_of_another_zone_is_refused(api, pod, unique):
    other_zone = new_zone(api, unique)
    error = api_error(api.addCluster, 431,
                      "Pod with specified id doesn't belong to the zone %s" % other_zone["id"], 4350,
                      zoneid=other_zone["id"], podid=pod["id"], clustername="x-" + unique,
                      hypervisor="KVM", clustertype="CloudManaged")
    assert error["uuidList"] == [{"uuid": pod["id"], "description": "podId"},
                                 {"uuid": other_zone["id"], "description": "dcId"}]
    assert api.listClusters(name="x-" + unique) == {}


def test_duplicate_name_in_pod(api, pod, unique):
    cluster = new_cluster(api, pod, unique, clustername="dup-" + unique)
    error = api_error(lambda **kw: new_cluster(api, pod, unique, **kw), 530,
                      "Unable to create cluster DUP-%s in pod and data center with specified ids" % unique,
                      4250, clustername="DUP-" + unique)
    assert {"uuid": pod["id"], "description": "podId"} in error["uuidList"]
    assert api.listClusters(podid=pod["id"])["cluster"] == [cluster]
    # Another pod of the same zone may reuse the name.
    zone = api.listZones(id=pod["zoneid"])["zone"][0]
    sibling = new_pod(api, zone, unique, subnet="10.100.99")
    assert new_cluster(api, sibling, unique, clustername=cluster["name"])["name"] == cluster["name"]


def test_ratios_are_a_snapshot_of_the_global_factors(api, pod, unique):
    before = new_cluster(api, pod, unique)
    api.updateConfiguration(name="cpu.overprovisioning.factor", value="3")
    try:
        api.updateConfiguration(name="mem.overprovisioning.factor", value="1.5")
        after = new_cluster(api, pod, unique)
    finally:
        api.updateConfiguration(name="cpu.overprovisioning.factor", value="1.0")
        api.updateConfiguration(name="mem.overprovisioning.factor", value="1.0")
    assert (after["cpuovercommitratio"], after["memoryovercommitratio"]) == ("3.0", "1.5")
    assert after["resourcedetails"] == {"cpuOvercommitRatio": "3.0", "memoryOvercommitRatio": "1.5"}
    # Clusters made before the change keep their ratios, and so does the new one after it.
    listed = {c["id"]: c for c in api.listClusters(podid=pod["id"])["cluster"]}
    assert listed[before["id"]]["cpuovercommitratio"] == "1.0"
    assert listed[after["id"]]["cpuovercommitratio"] == "3.0"


def test_update_cluster(api, pod, unique):
    cluster = new_cluster(api, pod, unique, hypervisor="KVM")
    updated = api.updateCluster(id=cluster["id"], clustername="renamed-" + unique, clustertype="ExternalManaged",
                                hypervisor="simulator", arch="aarch64")["cluster"]
    assert updated["name"] == "renamed-" + unique
    assert updated["clustertype"] == "ExternalManaged"
    assert updated["hypervisortype"] == "Simulator"
    assert updated["arch"] == "aarch64"
    assert api.listClusters(id=cluster["id"])["cluster"] == [updated]
    # Unknown parameters (ngine_io sends a few) are ignored; omitted fields stay.
    same = api.updateCluster(id=cluster["id"], podid=pod["id"], nosuchparameter="1")["cluster"]
    assert same == updated


def test_cluster_allocation_and_managed_state(api, pod, unique):
    cluster = new_cluster(api, pod, unique)
    assert api.updateCluster(id=cluster["id"], allocationstate="disabled")["cluster"]["allocationstate"] == "Disabled"
    assert api.listClusters(podid=pod["id"], allocationstate="Disabled")["cluster"][0]["id"] == cluster["id"]
    assert api.updateCluster(id=cluster["id"], allocationstate="Enabled")["cluster"]["allocationstate"] == "Enabled"
    assert api.updateCluster(id=cluster["id"], managedstate="unmanaged")["cluster"]["managedstate"] == "Unmanaged"
    assert api.listClusters(podid=pod["id"], managedstate="Unmanaged")["cluster"][0]["id"] == cluster["id"]
    assert api.listClusters(podid=pod["id"], managedstate="Managed") == {}
    assert api.updateCluster(id=cluster["id"], managedstate="Managed")["cluster"]["managedstate"] == "Managed"


@pytest.mark.parametrize("params, text", [
    ({"allocationstate": "Maintenance"}, "Unable to resolve Allocation State 'Maintenance' to a supported state"),
    ({"managedstate": "PrepareUnmanaged"},
     "Unable to resolve Managed State 'PrepareUnmanaged' to a supported state; use Managed or Unmanaged"),
    ({"hypervisor": "VMware"}, "Unable to resolve hypervisor type 'VMware'; supported hypervisors are KVM, Simulator"),
    ({"clustertype": "Other"}, "Unable to resolve Other to a supported cluster type; use CloudManaged or ExternalManaged"),
])
def test_update_cluster_refusals_change_nothing(api, pod, unique, params, text):
    cluster = new_cluster(api, pod, unique)
    api_error(api.updateCluster, 431, text, 4350, id=cluster["id"], clustername="changed-" + unique, **params)
    assert api.listClusters(id=cluster["id"])["cluster"] == [cluster]


def test_rename_onto_a_sibling_is_refused(api, pod, unique):
    first = new_cluster(api, pod, unique)
    second = new_cluster(api, pod, unique)
    api_error(api.updateCluster, 431,
              "A cluster with name %s already exists in pod %s; choose another name" % (first["name"].upper(), pod["name"]),
              id=second["id"], clustername=first["name"].upper())
    # A change of case of its own name is allowed.
    assert api.updateCluster(id=first["id"], clustername=first["name"].upper())["cluster"]["name"] == first["name"].upper()


def test_delete_cluster_refused_while_hosts_exist(api, pod, unique):
    cluster = new_cluster(api, pod, unique)
    host = api.addHost(zoneid=pod["zoneid"], podid=pod["id"], clusterid=cluster["id"], hypervisor="Simulator",
                       url="http://sim/c0/h-" + unique, username="root", password="password")["host"][0]
    api_error(api.deleteCluster, 530, "Cluster: %s cannot be removed. Cluster still has hosts" % cluster["id"],
              4250, id=cluster["id"])
    api_error(api.updateCluster, 431,
              "Cannot change the hypervisor of cluster %s from Simulator to KVM while it has hosts; remove its "
              "hosts first" % cluster["name"], id=cluster["id"], hypervisor="KVM")
    assert api.listClusters(id=cluster["id"])["count"] == 1
    api.deleteHost(id=host["id"], forced=True)
    assert api.deleteCluster(id=cluster["id"]) == {"success": True}
    assert api.listClusters(id=cluster["id"]) == {}


def test_delete_cluster_refused_while_storage_pools_exist(api, pod, unique):
    cluster = new_cluster(api, pod, unique)
    pool = api.createStoragePool(zoneid=pod["zoneid"], podid=pod["id"], clusterid=cluster["id"],
                                 name="ps-" + unique, url="nfs://127.0.0.1/export/" + unique,
                                 scope="cluster", hypervisor="Simulator")["storagepool"]
    api_error(api.deleteCluster, 530,
              "Cluster: %s cannot be removed. Cluster still has storage pools" % cluster["id"], 4250, id=cluster["id"])
    api.enableStorageMaintenance(id=pool["id"], fetch_result=True)
    api.deleteStoragePool(id=pool["id"])
    assert api.deleteCluster(id=cluster["id"]) == {"success": True}


def test_deleted_cluster(api, pod, unique):
    cluster = new_cluster(api, pod, unique)
    assert api.deleteCluster(id=cluster["id"]) == {"success": True}
    api_error(api.deleteCluster, 431, "Unable to find cluster by id %s" % cluster["id"], id=cluster["id"])
    api_error(api.updateCluster, 431, "Unable to find cluster by id %s" % cluster["id"],
              id=cluster["id"], allocationstate="Disabled")
    # The name is free again.
    assert new_cluster(api, pod, unique, clustername=cluster["name"])["id"] != cluster["id"]


def test_unknown_and_malformed_ids(api, pod, unique):
    cluster = new_cluster(api, pod, unique)
    unknown = str(uuid.uuid4())
    api_error(api.deleteCluster, 431, invalid_uuid_text("deleteCluster", "id", unknown), 4350, id=unknown)
    api_error(api.updateCluster, 431, invalid_uuid_text("updateCluster", "id", "c-1"), id="c-1")
    api_error(api.addCluster, 431, invalid_uuid_text("addCluster", "podid", unknown), podid=unknown,
              zoneid=pod["zoneid"], clustername="u-" + unique, hypervisor="KVM", clustertype="CloudManaged")
    # A pod UUID is not a zone UUID.
    api_error(api.addCluster, 431, invalid_uuid_text("addCluster", "zoneid", pod["id"]), podid=pod["id"],
              zoneid=pod["id"], clustername="u-" + unique, hypervisor="KVM", clustertype="CloudManaged")
    for junk in ("junk", cluster["id"].upper()):
        assert api.listClusters(podid=pod["id"], id=junk)["cluster"] == [cluster]
    api_error(api.listClusters, 431, invalid_uuid_text("listClusters", "podid", unknown), podid=unknown)


def test_list_clusters_filters(api, unique):
    zone = new_zone(api, unique)
    pod_a = new_pod(api, zone, unique, subnet="10.100.70")
    pod_b = new_pod(api, zone, unique, subnet="10.100.71")
    kvm = new_cluster(api, pod_a, unique, hypervisor="KVM", clustername="Kvm-" + unique)
    sim = new_cluster(api, pod_b, unique, clustertype="ExternalManaged", clustername="sim-" + unique)
    off = new_cluster(api, pod_b, unique, allocationstate="Disabled", clustername="off-" + unique)

    assert api.listClusters(zoneid=zone["id"]) == {"count": 3, "cluster": [kvm, sim, off]}
    assert api.listClusters(id=sim["id"]) == {"count": 1, "cluster": [sim]}
    assert api.listClusters(podid=pod_b["id"])["cluster"] == [sim, off]
    assert api.listClusters(zoneid=zone["id"], name="KVM-" + unique)["cluster"] == [kvm]
    assert api.listClusters(zoneid=zone["id"], name="Kvm") == {}
    assert api.listClusters(zoneid=zone["id"], hypervisor="kvm")["cluster"] == [kvm]
    assert api.listClusters(zoneid=zone["id"], hypervisor="Simulator")["cluster"] == [sim, off]
    assert api.listClusters(zoneid=zone["id"], clustertype="externalmanaged")["cluster"] == [sim]
    assert api.listClusters(zoneid=zone["id"], allocationstate="Disabled")["cluster"] == [off]
    assert api.listClusters(zoneid=zone["id"], allocationstate="Enabled")["count"] == 2
    assert api.listClusters(keyword="IM-" + unique)["cluster"] == [sim]
    assert api.listClusters(zoneid=zone["id"], keyword="nothing") == {}
    assert api.listClusters(podid=pod_a["id"], hypervisor="Simulator") == {}


def test_list_clusters_paging(api, pod, unique):
    clusters = [new_cluster(api, pod, unique) for _index in range(3)]
    assert api.listClusters(podid=pod["id"], page=1, pagesize=2) == {"count": 3, "cluster": clusters[:2]}
    assert api.listClusters(podid=pod["id"], page=2, pagesize=2) == {"count": 3, "cluster": clusters[2:]}
    assert api.listClusters(podid=pod["id"], page=9, pagesize=2) == {"count": 3}
    assert api.listClusters(podid=pod["id"], fetch_list=True) == clusters
    api_error(api.listClusters, 431, '"page" parameter is required when "pagesize" is specified', 9999,
              podid=pod["id"], pagesize=2)
    api_error(api.listClusters, 431, "Page size can't exceed max allowed page size value: 500", 9999,
              podid=pod["id"], page=1, pagesize=1000)


def test_zone_and_pod_deletion_follow_the_hierarchy(api, unique):
    zone = new_zone(api, unique)
    pod = new_pod(api, zone, unique)
    cluster = new_cluster(api, pod, unique)
    api_error(api.deleteZone, 530, "The zone cannot be deleted because there are pods in this zone.", 4250,
              id=zone["id"])
    api_error(api.deletePod, 530, "The pod cannot be deleted because there are clusters in this pod.", 4250,
              id=pod["id"])
    assert api.deleteCluster(id=cluster["id"]) == {"success": True}
    assert api.deletePod(id=pod["id"]) == {"success": True}
    assert api.deleteZone(id=zone["id"]) == {"success": True}
    assert api.listZones(id=zone["id"]) == {}


def test_show_capacities_of_pods_and_clusters(api, pod, unique):
    # Capacity leaves out disabled zones, and enabling one takes Management traffic.
    zone = api.listZones(id=pod["zoneid"])["zone"][0]
    physical_network(api, zone, unique)
    api.updateZone(id=zone["id"], allocationstate="Enabled")
    cluster = new_cluster(api, pod, unique)
    api.addHost(zoneid=pod["zoneid"], podid=pod["id"], clusterid=cluster["id"], hypervisor="Simulator",
                url="http://sim/c0/cap-" + unique, username="root", password="password")
    assert "capacity" not in api.listClusters(id=cluster["id"])["cluster"][0]
    for listed in (api.listClusters(id=cluster["id"], showcapacities=True)["cluster"][0],
                   api.listPods(id=pod["id"], showcapacities=True)["pod"][0]):
        rows = {row["type"]: row for row in listed["capacity"]}
        assert {0, 1} <= set(rows)
        assert rows[1]["capacitytotal"] > 0 and rows[0]["capacitytotal"] > 0
        assert all(row["podid"] == pod["id"] for row in rows.values() if "podid" in row)


def test_add_cluster_declares_no_paging_parameters(api):
    # It answers a list, but it is not a list command.
    [declared] = api.listApis(name="addCluster")["api"]
    names = {p["name"] for p in declared["params"]}
    assert {"clustername", "zoneid", "podid", "hypervisor", "clustertype"} <= names
    assert not names & {"page", "pagesize", "keyword"}
