"""StorageService on a real SQLite database: URL parsing, pool states and the agent-side hooks."""

import pytest

from stackwright.management.errors import InvalidParameterValue
from sqlalchemy import select, text

from stackwright.management.persistence.models import AsyncJob, Cluster, Host, Pod, Zone
from stackwright.management.services.storage import PoolLocation, StorageUrlError, parse_pool_url

GiB = 1024 ** 3


@pytest.fixture
def site(ctx, zone_pod):
    s = ctx.session
    zone, pod = zone_pod
    sim = Cluster(name="sim", pod_id=pod.id, zone_id=zone.id, hypervisor="Simulator")
    kvm = Cluster(name="kvm", pod_id=pod.id, zone_id=zone.id, hypervisor="KVM")
    s.add_all([sim, kvm])
    s.flush()
    return zone, pod, sim, kvm


@pytest.mark.parametrize("url, location", [
    ("nfs://10.0.0.5/export/primary", PoolLocation("NetworkFilesystem", "10.0.0.5", None, "/export/primary")),
    ("NFS://server:2049/x/", PoolLocation("NetworkFilesystem", "server", 2049, "/x/")),
    ("rbd://admin:AQB/x+y==@mon.example:6789/rbdpool",
     PoolLocation("RBD", "mon.example", 6789, "rbdpool", "admin:AQB/x+y==")),
    ("rbd://mon/pool", PoolLocation("RBD", "mon", None, "pool")),
    ("SharedMountPoint:///mnt/gfs", PoolLocation("SharedMountPoint", "localhost", None, "/mnt/gfs")),
    ("file:///var/lib/pool", PoolLocation("Filesystem", "localhost", None, "/var/lib/pool")),
])
def test_parse_pool_url(url, location):
    assert parse_pool_url(url) == location


@pytest.mark.parametrize("url", ["10.0.0.5:/x", "nfs://host", "nfs:///x", "rbd://user@mon/", "nfs://h:port/x"])
def test_parse_pool_url_rejects(url):
    with pytest.raises(InvalidParameterValue):
        parse_pool_url(url)


def test_unsupported_scheme():
    with pytest.raises(StorageUrlError, match="scheme iscsi is not supported"):
        parse_pool_url("iscsi://target/iqn")


def test_kvm_pool_joins_allocation_once_attached(ctx, site, submitted):
    zone, pod, sim, kvm = site
    pool = ctx.storage.create_pool(zone=zone, pod=pod, cluster=kvm, name="p1", url="nfs://10.0.0.5/p1")
    assert pool.state == "Initialized"
    # The hosts attach it in a job of the engine's own, handed to the workers once committed.
    job = ctx.session.execute(select(AsyncJob).where(AsyncJob.instance_uuid == pool.uuid)).scalar_one()
    assert (job.command, job.params, job.status) == ("attachStoragePool", {"pool": pool.uuid}, 0)
    assert submitted == []
    ctx.run_after_commit()
    assert submitted == [job.uuid]
    assert pool.status_message == "waiting for a host of cluster kvm to attach the pool"
    assert ctx.storage.allocatable_pools(kvm) == []

    ctx.storage.pool_attached(pool, 100 * GiB, 10 * GiB)
    assert (pool.state, pool.capacity_bytes, pool.used_bytes, pool.status_message) == ("Up", 100 * GiB, 10 * GiB, None)
    assert ctx.storage.allocatable_pools(kvm) == [pool]

    ctx.storage.pool_unreachable(pool, "mount of 10.0.0.5:/p1 failed: timed out")
    assert pool.state == "Initialized" and "timed out" in pool.status_message
    assert ctx.storage.allocatable_pools(kvm) == []


def test_unreachable_pool_stays_out_after_maintenance(ctx, site):
    zone, pod, sim, kvm = site
    pool = ctx.storage.create_pool(zone=zone, pod=pod, cluster=kvm, name="p2", url="nfs://10.0.0.5/p2")
    ctx.storage.enable_maintenance(pool)
    assert pool.state == "Maintenance"
    assert ctx.storage.cancel_maintenance(pool).state == "Initialized"
    ctx.storage.pool_attached(pool, GiB, 0)
    ctx.storage.enable_maintenance(pool)
    assert ctx.storage.cancel_maintenance(pool).state == "Up"


def test_attach_report_does_not_lift_disabled_or_maintenance(ctx, site):
    zone, pod, sim, kvm = site
    pool = ctx.storage.create_pool(zone=zone, pod=pod, cluster=sim, name="p3", url="nfs://10.0.0.5/p3")
    ctx.storage.update_pool(pool, enabled=False)
    ctx.storage.pool_attached(pool, 5 * GiB, GiB)
    assert pool.state == "Disabled" and pool.capacity_bytes == 5 * GiB


def test_simulated_pool_size_comes_from_setting(ctx, site):
    zone, pod, sim, kvm = site
    pool = ctx.storage.create_pool(zone=zone, pod=pod, cluster=sim, name="p4", url="nfs://10.0.0.5/p4")
    assert pool.state == "Up" and pool.capacity_bytes == int(ctx.settings.get("simulator.pool.capacity"))
    sized = ctx.storage.create_pool(zone=zone, pod=pod, cluster=sim, name="p5", url="nfs://10.0.0.5/p5",
                                    capacity_bytes=3 * GiB)
    assert sized.capacity_bytes == 3 * GiB


def test_pools_for_host_and_tags(ctx, site):
    zone, pod, sim, kvm = site
    own = ctx.storage.create_pool(zone=zone, pod=pod, cluster=sim, name="own", url="nfs://h/own", tags=["ssd"])
    wide = ctx.storage.create_pool(zone=zone, scope="zone", hypervisor="Simulator", name="wide", url="nfs://h/wide")
    ctx.storage.create_pool(zone=zone, pod=pod, cluster=kvm, name="other", url="nfs://h/other")
    ctx.storage.create_pool(zone=zone, scope="zone", hypervisor="KVM", name="kvm-wide", url="nfs://h/kw")
    host = Host(name="h", zone_id=zone.id, pod_id=pod.id, cluster_id=sim.id, hypervisor="Simulator", url="http://sim/h")
    ctx.session.add(host)
    ctx.session.flush()
    assert ctx.storage.pools_for_host(host) == [own, wide]
    assert ctx.storage.allocatable_pools(sim, tags=["ssd"]) == [own]
    ctx.storage.enable_maintenance(wide)
    assert ctx.storage.pools_for_host(host) == [own]


def test_image_store_hooks(ctx, site):
    zone = site[0]
    store = ctx.storage.add_image_store(provider="NFS", name="sec", url="nfs://10.0.0.5/sec", zone=zone)
    region = ctx.storage.add_image_store(provider="NFS", url="nfs://10.0.0.5/region")
    assert ctx.storage.writable_image_stores(zone) == [store, region]
    ctx.storage.image_store_unreachable(store, "nfs://10.0.0.5/sec: permission denied")
    assert ctx.storage.writable_image_stores(zone) == [region]
    ctx.storage.image_store_checked(store, 50 * GiB, 5 * GiB)
    assert (store.total_bytes, store.used_bytes, store.status_message) == (50 * GiB, 5 * GiB, None)
    ctx.storage.update_image_store(region, readonly=True)
    assert ctx.storage.writable_image_stores(zone) == [store]


def test_pool_placement_must_match_hierarchy(ctx, site):
    zone, pod, sim, kvm = site
    other_zone = Zone(name="z2", network_type="Advanced", details={})
    ctx.session.add(other_zone)
    ctx.session.flush()
    other_pod = Pod(name="p2", zone_id=other_zone.id, gateway="10.1.0.1", netmask="255.255.255.0",
                    start_ip="10.1.0.10", end_ip="10.1.0.20")
    ctx.session.add(other_pod)
    ctx.session.flush()
    with pytest.raises(InvalidParameterValue, match="Cluster sim does not belong to pod p2"):
        ctx.storage.create_pool(zone=other_zone, pod=other_pod, cluster=sim, name="x", url="nfs://h/x")
    with pytest.raises(InvalidParameterValue, match="Pod p does not belong to zone z2"):
        ctx.storage.create_pool(zone=other_zone, cluster=sim, name="x", url="nfs://h/x")
    # Without a pod, the cluster's own pod is used.
    pool = ctx.storage.create_pool(zone=zone, cluster=sim, name="x", url="nfs://h/x")
    assert (pool.pod_id, pool.cluster_id) == (pod.id, sim.id)


def test_an_s3_store_keeps_its_keys_encrypted_at_rest(ctx):
    store = ctx.storage.add_image_store(provider="S3", name="s3", details={
        "endpoint": "https://s3.example.org", "accesskey": "AKIDEXAMPLE", "secretkey": "wJalrXUtnFEMI"})
    ctx.session.flush()
    raw = ctx.session.execute(text("SELECT details FROM image_store WHERE id = :id"), {"id": store.id}).scalar_one()
    assert raw.startswith("gAAAAA") and "wJalrXUtnFEMI" not in raw and "AKIDEXAMPLE" not in raw
    ctx.session.expire(store)
    assert store.details["secretkey"] == "wJalrXUtnFEMI"
