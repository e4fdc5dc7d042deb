"""Primary storage against a live engine, through the `cs` client (contract §5.5, §8, §9 #12)."""

import json
import uuid
from types import SimpleNamespace

import pytest
from cs import CloudStackApiException

RBD_SECRET = "AQBfQ1ZdAAAAABAAm3/x0sB+Z9g1nM2qq1cLmQ=="
TIB = 1024 ** 4


def raw_call(api, command, **params):
    """(HTTP status, decoded body) of one signed request, top-level key included."""
    kind, prepared = api._prepare_request(command, **params)
    response = api._send(kind, prepared, api.headers, api.timeout)
    return response.status_code, response.json()


def api_error(call, **params):
    with pytest.raises(CloudStackApiException) as info:
        call(**params)
    return info.value.response.status_code, info.value.error


def build_site(api, unique):
    """A zone with one pod, a Simulator cluster and a KVM cluster, all named after `unique`."""
    zone = api.createZone(name="sp-zone-%s" % unique, dns1="8.8.8.8", networktype="Advanced")["zone"]
    pod = api.createPod(zoneid=zone["id"], name="sp-pod-%s" % unique, startip="10.100.10.101",
                        gateway="10.100.10.1", netmask="255.255.255.0")["pod"]
    sim = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername="sp-sim-%s" % unique,
                         hypervisor="Simulator", clustertype="CloudManaged")["cluster"][0]
    kvm = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername="sp-kvm-%s" % unique,
                         hypervisor="KVM", clustertype="CloudManaged")["cluster"][0]
    return SimpleNamespace(zone=zone, pod=pod, sim=sim, kvm=kvm, unique=unique)


@pytest.fixture
def api(engine):
    """The `cs` client, polling async jobs briskly."""
    return engine.client(poll_interval=0.1, job_timeout=60)


@pytest.fixture(scope="module")
def site(engine):
    return build_site(engine.client(), uuid.uuid4().hex[:8])


def nfs_pool(api, site, name, cluster=None, **extra):
    cluster = cluster or site.sim
    return api.createStoragePool(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=cluster["id"],
                                 name=name, url="nfs://10.0.0.5/export/%s" % name, **extra)["storagepool"]


def maintain(api, pool_id, command="enableStorageMaintenance"):
    return getattr(api, command)(id=pool_id, fetch_result=True)["storagepool"]


def test_storage_providers(api):
    primary = api.listStorageProviders(type="primary")
    assert {"name": "DefaultPrimary", "type": "primary"} in primary["dataStoreProvider"]
    image = {p["name"] for p in api.listStorageProviders(type="image")["dataStoreProvider"]}
    assert {"NFS", "S3", "Swift", "SMB"} <= image
    status, error = api_error(api.listStorageProviders, type="tape")
    assert status == 431 and "tape" in error["errortext"]


def test_create_nfs_pool_on_simulator_cluster(api, site):
    name = "ps-nfs-%s" % site.unique
    pool = api.createStoragePool(
        zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"], name=name,
        url="nfs://nfs.example.org:2049/export/primary", tags="ssd,eco,ssd", capacityiops=5000,
    )["storagepool"]
    assert pool["type"] == "NetworkFilesystem"
    assert pool["ipaddress"] == "nfs.example.org"
    assert pool["path"] == "/export/primary"
    assert pool["state"] == "Up"
    assert pool["scope"] == "CLUSTER"
    assert pool["provider"] == "DefaultPrimary"
    assert pool["hypervisor"] == "Simulator"
    assert pool["tags"] == "ssd,eco"
    assert (pool["zonename"], pool["podname"], pool["clustername"]) == (
        site.zone["name"], site.pod["name"], site.sim["name"])
    assert (pool["clusterid"], pool["podid"], pool["zoneid"]) == (site.sim["id"], site.pod["id"], site.zone["id"])
    assert pool["disksizetotal"] == TIB   # simulator.pool.capacity default
    assert pool["disksizeused"] == 0 and pool["disksizeallocated"] == 0
    assert pool["capacityiops"] == 5000
    assert pool["overprovisionfactor"] == "2.0"
    assert pool["created"].endswith("+0000")


def test_create_rbd_pool_hides_credentials(api, site):
    """ngine_io's storage_pool target: rbd on a cluster, unknown provider falls back to DefaultPrimary."""
    name = "ps-rbd-%s" % site.unique
    status, body = raw_call(
        api, "createStoragePool", zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"],
        name=name, url="rbd://admin:%s@ceph-mons.domain/poolname" % RBD_SECRET, provider="NoSuchProvider",
        capacitybytes=5 * TIB,
    )
    assert status == 200 and list(body) == ["createstoragepoolresponse"]
    pool = body["createstoragepoolresponse"]["storagepool"]
    assert pool["type"] == "RBD"
    assert pool["ipaddress"] == "ceph-mons.domain"
    assert pool["path"] == "poolname"
    assert pool["provider"] == "DefaultPrimary"
    assert pool["state"] == "Up" and pool["scope"] == "CLUSTER"
    assert pool["clustername"] == site.sim["name"] and pool["podname"] == site.pod["name"]
    assert pool["disksizetotal"] == 5 * TIB
    listed = api.listStoragePools(id=pool["id"])
    for shown in (json.dumps(body), json.dumps(listed)):
        assert RBD_SECRET not in shown and "admin:" not in shown


def test_kvm_pool_waits_for_a_host(api, site):
    pool = nfs_pool(api, site, "ps-kvm-%s" % site.unique, cluster=site.kvm, capacitybytes=TIB)
    assert pool["state"] == "Initialized"
    assert pool["hypervisor"] == "KVM"
    status, error = api_error(api.updateStoragePool, id=pool["id"], enabled=False)
    assert status == 431
    assert error["errortext"] == (
        "Primary storage with id %s cannot be disabled. Storage pool state : Initialized" % pool["id"])
    # A pool no host attached can still be put away and deleted.
    assert maintain(api, pool["id"])["state"] == "Maintenance"
    assert api.deleteStoragePool(id=pool["id"]) == {"success": True}


def test_zone_wide_pools(api, site):
    sim = api.createStoragePool(zoneid=site.zone["id"], scope="zone", hypervisor="simulator",
                                podid=site.pod["id"], clusterid=site.sim["id"],
                                name="ps-zone-%s" % site.unique, url="nfs://10.0.0.9/zonewide")["storagepool"]
    assert sim["scope"] == "ZONE" and sim["state"] == "Up" and sim["hypervisor"] == "Simulator"
    assert "clusterid" not in sim and "podid" not in sim
    kvm = api.createStoragePool(zoneid=site.zone["id"], scope="ZONE", hypervisor="KVM",
                                name="ps-zone-kvm-%s" % site.unique, url="nfs://10.0.0.9/kvm")["storagepool"]
    assert kvm["scope"] == "ZONE" and kvm["state"] == "Initialized"
    listed = api.listStoragePools(zoneid=site.zone["id"], scope="zone")["storagepool"]
    assert {p["id"] for p in listed} == {sim["id"], kvm["id"]}


@pytest.mark.parametrize("params, status, text", [
    ({"url": "nfs://10.0.0.5/x"}, 431, "cluster id can't be null, if scope is cluster"),
    ({"url": "nfs://10.0.0.5/x", "scope": "zone"}, 431,
     "Missing parameter hypervisor. Hypervisor type is required to create zone wide primary storage."),
    ({"url": "nfs://10.0.0.5/x", "scope": "host"}, 431, "invalid scope for pool host"),
    ({"url": "nfs://10.0.0.5/x", "scope": "galaxy"}, 431, "invalid scope for pool galaxy"),
    ({"url": "nfs://10.0.0.5/x", "scope": "zone", "hypervisor": "Hyperv"}, 431,
     "zone wide storage pool is not supported for hypervisor type Hyperv; use KVM or Simulator"),
    ({"url": "10.0.0.5:/export", "cluster": True}, 431,
     "scheme is null 10.0.0.5:/export, add nfs:// (or cifs://) as a prefix"),
    ({"url": "nfs://10.0.0.5", "cluster": True}, 431, "host or path is null, should be nfs://hostname/path"),
    ({"url": "iscsi://10.0.0.5/iqn", "cluster": True}, 530,
     "Failed to add data store: scheme iscsi is not supported; use nfs://, rbd://, SharedMountPoint:// or file://"),
])
def test_create_pool_errors(api, site, params, status, text):
    params = dict(params)
    if params.pop("cluster", False):
        params.update(podid=site.pod["id"], clusterid=site.sim["id"])
    got_status, error = api_error(api.createStoragePool, zoneid=site.zone["id"], name="bad-%s" % site.unique,
                                  **params)
    assert (got_status, error["errortext"]) == (status, text)
    assert not api.listStoragePools(name="bad-%s" % site.unique)


def test_create_pool_missing_parameter(api, site):
    status, error = api_error(api.createStoragePool, zoneid=site.zone["id"], name="x")
    assert status == 431 and error["cserrorcode"] == 9999
    assert error["errortext"] == "Unable to execute API command createstoragepool due to missing parameter url"


def test_other_url_schemes(api, site):
    shared = api.createStoragePool(
        zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"],
        name="ps-smp-%s" % site.unique, url="SharedMountPoint:///mnt/gfs")["storagepool"]
    assert (shared["type"], shared["path"], shared["ipaddress"]) == ("SharedMountPoint", "/mnt/gfs", "localhost")
    local = api.createStoragePool(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"],
                                  name="ps-fs-%s" % site.unique, url="file:///var/lib/pool")["storagepool"]
    assert (local["type"], local["path"]) == ("Filesystem", "/var/lib/pool")


def test_names_are_not_unique(api, site):
    name = "ps-twin-%s" % site.unique
    first, second = nfs_pool(api, site, name), nfs_pool(api, site, name)
    assert first["id"] != second["id"]
    assert api.listStoragePools(name=name)["count"] == 2


def test_enable_disable_and_tags(api, site):
    """ngine_io: enabled=false/true <-> Disabled/Up; tags replaced while Disabled."""
    pool = nfs_pool(api, site, "ps-state-%s" % site.unique, tags="gold")
    disabled = api.updateStoragePool(id=pool["id"], enabled=False)["storagepool"]
    assert disabled["state"] == "Disabled"
    status, error = api_error(api.updateStoragePool, id=pool["id"], enabled=False)
    assert (status, error["errortext"]) == (
        431, "Primary storage with id %s cannot be disabled. Storage pool state : Disabled" % pool["id"])
    tagged = api.updateStoragePool(id=pool["id"], tags="eco,ssd")["storagepool"]
    assert tagged["tags"] == "eco,ssd" and tagged["state"] == "Disabled"
    enabled = api.updateStoragePool(id=pool["id"], enabled=True, capacitybytes=3 * TIB)["storagepool"]
    assert enabled["state"] == "Up" and enabled["disksizetotal"] == 3 * TIB
    status, error = api_error(api.updateStoragePool, id=pool["id"], enabled=True)
    assert (status, error["errortext"]) == (
        431, "Primary storage with id %s cannot be enabled. Storage pool state : Up" % pool["id"])
    renamed = api.updateStoragePool(id=pool["id"], name="ps-renamed-%s" % site.unique)["storagepool"]
    assert renamed["name"] == "ps-renamed-%s" % site.unique and renamed["tags"] == "eco,ssd"


def test_maintenance_and_delete(api, site):
    """Fidelity check 12 and ngine_io's removal: maintenance, tags in maintenance, cancel, delete, re-use."""
    name = "ps-maint-%s" % site.unique
    pool = nfs_pool(api, site, name)
    status, error = api_error(api.deleteStoragePool, id=pool["id"])
    assert status == 431 and error["cserrorcode"] == 4350
    assert error["errortext"] == "Unable to delete storage due to it is not in Maintenance state, id: %s" % pool["id"]

    status, body = raw_call(api, "enableStorageMaintenance", id=pool["id"])
    assert status == 200 and list(body) == ["prepareprimarystorageformaintenanceresponse"]
    jobid = body["prepareprimarystorageformaintenanceresponse"]["jobid"]
    api._jobresult(jobid)
    job = api.queryAsyncJobResult(jobid=jobid)
    assert job["jobstatus"] == 1 and job["jobresultcode"] == 0
    assert job["jobinstancetype"] == "StoragePool" and job["jobinstanceid"] == pool["id"]
    assert list(job["jobresult"]) == ["storagepool"]
    assert job["jobresult"]["storagepool"]["state"] == "Maintenance"
    assert api.listStoragePools(id=pool["id"])["storagepool"][0]["state"] == "Maintenance"

    tagged = api.updateStoragePool(id=pool["id"], tags="archive")["storagepool"]
    assert tagged["tags"] == "archive" and tagged["state"] == "Maintenance"

    status, body = raw_call(api, "cancelStorageMaintenance", id=pool["id"])
    assert list(body) == ["cancelprimarystoragemaintenanceresponse"]
    assert api._jobresult(body["cancelprimarystoragemaintenanceresponse"]["jobid"])["storagepool"]["state"] == "Up"

    # Cancelling again fails inside the job.
    with pytest.raises(CloudStackApiException) as info:
        maintain(api, pool["id"], "cancelStorageMaintenance")
    assert "is not ready to complete migration, as the status is:Up" in info.value.error["errortext"]

    assert maintain(api, pool["id"])["state"] == "Maintenance"
    status, body = raw_call(api, "deleteStoragePool", id=pool["id"])
    assert (status, body) == (200, {"deletestoragepoolresponse": {"success": True}})
    assert api.listStoragePools(id=pool["id"]) == {}
    status, error = api_error(api.updateStoragePool, id=pool["id"], tags="x")
    assert status == 431 and pool["id"] in error["errortext"]

    again = nfs_pool(api, site, name)
    assert again["name"] == name and again["id"] != pool["id"]


def test_list_filters_and_paging(api, site):
    unique = site.unique
    a = api.createStoragePool(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"],
                              name="ps-list-a-%s" % unique, url="nfs://10.1.1.1/list/a")["storagepool"]
    b = api.createStoragePool(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.kvm["id"],
                              name="ps-list-b-%s" % unique, url="nfs://10.1.1.2/list/b")["storagepool"]

    def ids(res):
        return [p["id"] for p in res.get("storagepool", [])]

    assert ids(api.listStoragePools(name="PS-LIST-A-%s" % unique.upper())) == [a["id"]]
    assert ids(api.listStoragePools(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"],
                                    name="ps-list-a-%s" % unique)) == [a["id"]]
    assert ids(api.listStoragePools(clusterid=site.kvm["id"], keyword="list-b-%s" % unique)) == [b["id"]]
    assert ids(api.listStoragePools(ipaddress="10.1.1.2")) == [b["id"]]
    assert ids(api.listStoragePools(path="/list/a")) == [a["id"]]
    assert ids(api.listStoragePools(keyword="ps-list-", status="initialized", zoneid=site.zone["id"])) == [b["id"]]
    assert ids(api.listStoragePools(keyword="ps-list-", scope="cluster", zoneid=site.zone["id"])) == [a["id"], b["id"]]

    page1 = api.listStoragePools(keyword="ps-list-", zoneid=site.zone["id"], page=1, pagesize=1)
    page2 = api.listStoragePools(keyword="ps-list-", zoneid=site.zone["id"], page=2, pagesize=1)
    assert page1["count"] == page2["count"] == 2
    assert ids(page1) + ids(page2) == [a["id"], b["id"]]
    status, body = raw_call(api, "listStoragePools", keyword="ps-list-", zoneid=site.zone["id"], page=9, pagesize=1)
    assert body == {"liststoragepoolsresponse": {"count": 2}}
    status, body = raw_call(api, "listStoragePools", name="no-such-pool-%s" % unique)
    assert (status, body) == (200, {"liststoragepoolsresponse": {}})


def test_list_by_host(api, site):
    host = api.addHost(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"],
                       hypervisor="Simulator", url="http://sim/%s/h1" % site.sim["name"],
                       username="root", password="password")["host"][0]
    own = nfs_pool(api, site, "ps-host-%s" % site.unique)
    other = nfs_pool(api, site, "ps-other-%s" % site.unique, cluster=site.kvm)
    seen = {p["id"] for p in api.listStoragePools(hostid=host["id"])["storagepool"]}
    assert own["id"] in seen and other["id"] not in seen
    # Zone-wide pools of the host's hypervisor are reachable from it too.
    zone_wide = [p for p in api.listStoragePools(zoneid=site.zone["id"], scope="ZONE").get("storagepool", [])
                 if p["hypervisor"] == "Simulator"]
    assert {p["id"] for p in zone_wide} <= seen
