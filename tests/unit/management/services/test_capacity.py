"""CapacityService on a real SQLite database: over-commit arithmetic, scopes and exclusions.

`ctx` (conftest.py) is a context on a migrated SQLite database, rolled back after each test.
"""

import pytest

from stackwright.management.persistence.models import (
    Cluster,
    ClusterDetail,
    Host,
    ImageStore,
    Pod,
    StoragePool,
    Zone,
)
from stackwright.management.services.capacity import CapacityService, decimal, percent

GiB = 1024 ** 3
MEMORY, CPU, STORAGE, STORAGE_ALLOCATED, PRIVATE_IP, SECONDARY = 0, 1, 2, 3, 5, 6


class World:
    """Builds rows the way the hierarchy and host services leave them."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.session = ctx.session
        self.serial = 0

    def _name(self, prefix):
        self.serial += 1
        return "%s-%d" % (prefix, self.serial)

    def zone(self, state="Enabled"):
        zone = Zone(name=self._name("zone"), network_type="Basic", allocation_state=state, details={})
        self.session.add(zone)
        self.session.flush()
        return zone

    def pod(self, zone, state="Enabled", start="10.0.0.10", end="10.0.0.19"):
        pod = Pod(name=self._name("pod"), zone_id=zone.id, gateway="10.0.0.1", netmask="255.255.255.0",
                  start_ip=start, end_ip=end, allocation_state=state)
        self.session.add(pod)
        self.session.flush()
        return pod

    def cluster(self, pod, cpu_ratio="1.0", memory_ratio="1.0", state="Enabled"):
        cluster = Cluster(name=self._name("cluster"), pod_id=pod.id, zone_id=pod.zone_id, hypervisor="Simulator",
                          allocation_state=state)
        cluster.details = [ClusterDetail(name="cpuOvercommitRatio", value=cpu_ratio),
                           ClusterDetail(name="memoryOvercommitRatio", value=memory_ratio)]
        self.session.add(cluster)
        self.session.flush()
        return cluster

    def host(self, cluster, cpus=2, speed=1000, memory=GiB, state="Up", resource_state="Enabled"):
        host = Host(name=self._name("host"), zone_id=cluster.zone_id, pod_id=cluster.pod_id, cluster_id=cluster.id,
                    hypervisor="Simulator", url="http://sim/x", state=state, resource_state=resource_state,
                    cpus=cpus, cpu_speed=speed, memory_bytes=memory, details={})
        self.session.add(host)
        self.session.flush()
        return host

    def pool(self, zone, cluster=None, size=100 * GiB, used=10 * GiB, state="Up"):
        pool = StoragePool(name=self._name("pool"), zone_id=zone.id, pod_id=cluster.pod_id if cluster else None,
                           cluster_id=cluster.id if cluster else None, scope="CLUSTER" if cluster else "ZONE",
                           pool_type="NetworkFilesystem", host_address="nfs", path="/p", url="nfs://nfs/p",
                           state=state, capacity_bytes=size, used_bytes=used)
        self.session.add(pool)
        self.session.flush()
        return pool

    def image_store(self, zone, total, used):
        store = ImageStore(name=self._name("store"), zone_id=zone.id, url="nfs://nfs/s", protocol="nfs",
                           total_bytes=total, used_bytes=used, details={})
        self.session.add(store)
        self.session.flush()
        return store


@pytest.fixture
def world(ctx):
    return World(ctx)


def totals(ctx, **scope):
    return {row["type"]: row["capacitytotal"] for row in CapacityService(ctx).rows(**scope)}


@pytest.mark.parametrize("value, text", [
    (0, "0"), (12.5, "12.5"), (12.345, "12.35"), (50, "50"), (33.3333, "33.33"), (0.001, "0"),
])
def test_decimal_prints_like_cloudstack(value, text):
    assert decimal(value) == text


def test_percent_of_nothing_is_zero():
    assert percent(0, 0) == "0"
    assert percent(5, 0) == "0"
    assert percent(1, 3) == "33.33"


def test_memory_factor_two_doubles_two_gigabytes(ctx, world):
    pod = world.pod(world.zone())
    cluster = world.cluster(pod, memory_ratio="2")
    world.host(cluster, memory=GiB)
    world.host(cluster, memory=GiB)
    [row] = CapacityService(ctx).rows(cluster=cluster, type=MEMORY)
    assert (row["capacitytotal"], row["capacityused"], row["percentused"]) == (4 * GiB, 0, "0")
    assert (row["clusterid"], row["podid"], row["name"]) == (cluster.uuid, pod.uuid, "MEMORY")


def test_cluster_scoped_cpu_factor_doubles_cpu_total(ctx, world):
    cluster = world.cluster(world.pod(world.zone()))
    world.host(cluster, cpus=4, speed=2000)
    assert totals(ctx, cluster=cluster, type=CPU) == {CPU: 8000}
    ctx.settings.set_scoped("cpu.overprovisioning.factor", "2.0", "cluster", cluster)
    assert totals(ctx, cluster=cluster, type=CPU) == {CPU: 16000}


def test_live_global_factor_does_not_change_an_existing_cluster(ctx, world):
    cluster = world.cluster(world.pod(world.zone()), cpu_ratio="1.5")
    world.host(cluster, cpus=2, speed=1000)
    ctx.settings.set_global("cpu.overprovisioning.factor", "4")
    assert totals(ctx, cluster=cluster, type=CPU) == {CPU: 3000}


def test_ratios_apply_per_cluster_before_summing(ctx, world):
    zone = world.zone()
    pod = world.pod(zone)
    world.host(world.cluster(pod, cpu_ratio="2"), cpus=1, speed=1000)
    world.host(world.cluster(pod, cpu_ratio="3"), cpus=1, speed=1000)
    assert totals(ctx, pod=pod, type=CPU) == {CPU: 5000}
    assert totals(ctx, zone=zone, type=CPU) == {CPU: 5000}


def test_only_up_and_enabled_hosts_count(ctx, world):
    cluster = world.cluster(world.pod(world.zone()))
    world.host(cluster, cpus=1)
    world.host(cluster, cpus=2, resource_state="Disabled")
    world.host(cluster, cpus=4, resource_state="Maintenance")
    world.host(cluster, cpus=8, state="Connecting")
    world.host(cluster, cpus=16, state="Alert")
    removed = world.host(cluster, cpus=32)
    from stackwright.management.persistence.models import utcnow

    removed.removed = utcnow()
    assert totals(ctx, cluster=cluster, type=CPU) == {CPU: 1000}


def test_disabled_zone_pod_and_cluster_are_left_out(ctx, world):
    zone = world.zone()
    pod = world.pod(zone)
    enabled = world.cluster(pod)
    disabled = world.cluster(pod, state="Disabled")
    world.host(enabled, cpus=1)
    world.host(disabled, cpus=2)
    assert totals(ctx, zone=zone, type=CPU) == {CPU: 1000}
    assert CapacityService(ctx).rows(cluster=disabled) == []
    pod.allocation_state = "Disabled"
    assert CapacityService(ctx).rows(pod=pod) == []
    assert totals(ctx, zone=zone, type=CPU) == {CPU: 0}
    off = world.zone(state="Disabled")
    world.host(world.cluster(world.pod(off)), cpus=4)
    assert CapacityService(ctx).rows(zone=off) == []


def test_primary_storage_used_and_allocated_with_factors(ctx, world):
    zone = world.zone()
    cluster = world.cluster(world.pod(zone))
    default_pool = world.pool(zone, cluster, size=100 * GiB, used=25 * GiB)
    tuned = world.pool(zone, cluster, size=10 * GiB, used=0)
    world.pool(zone, cluster, size=1000 * GiB, state="Disabled")
    ctx.settings.set_scoped("storage.overprovisioning.factor", "1.5", "storagepool", tuned)
    service = CapacityService(ctx)
    [used] = service.rows(cluster=cluster, type=STORAGE)
    assert (used["capacitytotal"], used["capacityused"], used["percentused"]) == (110 * GiB, 25 * GiB, "22.73")
    [allocated] = service.rows(cluster=cluster, type=STORAGE_ALLOCATED)
    assert allocated["capacitytotal"] == 2 * 100 * GiB + 15 * GiB
    assert service.storage_factors([default_pool.id, tuned.id]) == {default_pool.id: 2.0, tuned.id: 1.5}


def test_zone_wide_pools_count_for_the_zone_only(ctx, world):
    zone = world.zone()
    cluster = world.cluster(world.pod(zone))
    world.pool(zone, None, size=50 * GiB, used=5 * GiB)
    assert totals(ctx, zone=zone, type=STORAGE) == {STORAGE: 50 * GiB}
    assert totals(ctx, cluster=cluster, type=STORAGE) == {STORAGE: 0}


def test_secondary_storage_and_pod_addresses(ctx, world):
    zone = world.zone()
    pod = world.pod(zone, start="10.0.0.10", end="10.0.0.19")
    world.image_store(zone, total=200 * GiB, used=50 * GiB)
    world.image_store(zone, total=100 * GiB, used=25 * GiB)
    rows = {row["type"]: row for row in CapacityService(ctx).rows(zone=zone)}
    assert set(rows) == {MEMORY, CPU, STORAGE, STORAGE_ALLOCATED, PRIVATE_IP, SECONDARY}
    assert (rows[SECONDARY]["capacitytotal"], rows[SECONDARY]["capacityused"]) == (300 * GiB, 75 * GiB)
    assert rows[SECONDARY]["percentused"] == "25"
    assert rows[PRIVATE_IP]["capacitytotal"] == 10
    assert "podid" not in rows[CPU]
    pod_rows = {row["type"]: row for row in CapacityService(ctx).rows(pod=pod)}
    assert SECONDARY not in pod_rows and pod_rows[PRIVATE_IP]["podid"] == pod.uuid


def test_rows_per_cluster_and_sorting_by_usage(ctx, world):
    zone = world.zone()
    cluster = world.cluster(world.pod(zone))
    world.host(cluster)
    world.pool(zone, cluster, size=10 * GiB, used=9 * GiB)
    rows = CapacityService(ctx).rows(cluster=cluster)
    assert [r["type"] for r in rows] == [MEMORY, CPU, STORAGE, STORAGE_ALLOCATED]
    by_usage = CapacityService(ctx).rows(cluster=cluster, sortby="usage")
    assert by_usage[0]["type"] == STORAGE and by_usage[0]["percentused"] == "90"
