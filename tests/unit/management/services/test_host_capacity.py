"""One host-capacity computation (services/capacity.py) behind its three consumers: the
planner, listCapacity's rows and the listHosts view. A host with over-provisioning ratios and
guests holding part of it must show the same numbers in all three.

`ctx` (conftest.py) is a context on a migrated SQLite database, rolled back after each test.
"""

import pytest

from stackwright.management.commands.hosts import render_hosts
from stackwright.management.errors import InsufficientCapacity
from stackwright.management.persistence.models import (
    Account,
    Cluster,
    ClusterDetail,
    Domain,
    Host,
    Pod,
    ServiceOffering,
    StoragePool,
    Template,
    VmInstance,
    Zone,
)
from stackwright.management.services.capacity import CPU, MEMORY, Capacity, host_capacity
from stackwright.management.services.placement import Demand, Planner

GiB, MiB = 1024 ** 3, 1024 ** 2


@pytest.fixture
def host(ctx):
    """3 x 1100 MHz and 4 GiB in a cluster with ratios 1.5 (CPU) and 1.25 (memory), guests
    holding 1950 MHz and 1.5 GiB of it."""
    s = ctx.session

    def add(row):
        s.add(row)
        s.flush()
        return row

    zone = add(Zone(name="cz", network_type="Advanced", allocation_state="Enabled", details={}))
    pod = add(Pod(name="cp", zone_id=zone.id, gateway="10.0.0.1", netmask="255.255.255.0",
                  start_ip="10.0.0.10", end_ip="10.0.0.20"))
    cluster = Cluster(name="cc", pod_id=pod.id, zone_id=zone.id, hypervisor="Simulator", allocation_state="Enabled")
    cluster.details = [ClusterDetail(name="cpuOvercommitRatio", value="1.5"),
                       ClusterDetail(name="memoryOvercommitRatio", value="1.25")]
    add(cluster)
    host = add(Host(name="ch", guid="cg", zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id,
                    hypervisor="Simulator", url="http://sim/x", state="Up", resource_state="Enabled",
                    cpus=3, cpu_speed=1100, memory_bytes=4 * GiB, details={}))
    add(StoragePool(name="cpool", zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id, scope="CLUSTER",
                    hypervisor="Simulator", pool_type="NetworkFilesystem", host_address="nfs", path="/p",
                    url="nfs://nfs/p", state="Up", capacity_bytes=100 * GiB, used_bytes=0))
    domain = add(Domain(name="cd", path="ROOT/cd"))
    account = add(Account(name="ca", domain_id=domain.id))
    offering = add(ServiceOffering(name="co", cpu_number=1, cpu_speed=500, memory_mb=512))
    template = add(Template(name="ct", format="QCOW2", hypervisor="Simulator", is_ready=True, size_bytes=GiB))
    for n, (speed, memory, state) in enumerate(((950, 1024, "Running"), (1000, 512, "Starting"),
                                                (800, 4096, "Stopped"))):
        add(VmInstance(name="cv%d" % n, instance_name="i-%d" % n, state=state, zone_id=zone.id,
                       host_id=host.id, account_id=account.id, domain_id=domain.id, service_offering_id=offering.id,
                       template_id=template.id, hypervisor="Simulator", cpu_number=1, cpu_speed=speed,
                       memory_mb=memory, mac_address="02:00:00:00:01:%02x" % n, details={}))
    return host


def test_capacity_arithmetic():
    c = host_capacity(3, 1100, 4 * GiB, (1.5, 1.25), None)
    assert (c.cpu_mhz, c.cpu_total, c.cpu_capacity, c.cpu_free) == (3300, 4950.0, 4950, 4950)
    assert (c.memory_total, c.memory_free) == (5 * GiB, 5 * GiB)
    assert host_capacity(None, None, None, (2.0, 2.0)).cpu_total == 0
    assert Capacity(1000, GiB, 1.0, 1.0, c.used).beyond(901, 0, 0.9, 0.9)
    assert not Capacity(1000, GiB, 1.0, 1.0, c.used).beyond(900, 0, 0.9, 0.9)
    assert not Capacity(0, 0, 1.0, 1.0, c.used).beyond(10 ** 6, 10 ** 9, 0.5, 0.5)


def test_planner_list_capacity_and_host_view_show_the_same_numbers(ctx, host):
    clusters = {host.cluster_id: ctx.session.get(Cluster, host.cluster_id)}
    capacity = ctx.capacity.host_capacities([host], clusters)[host.id]
    assert (capacity.cpu_capacity, capacity.used.cpu_mhz, capacity.cpu_free) == (4950, 1950, 3000)
    assert (capacity.memory_capacity, capacity.used.memory_bytes, capacity.memory_free) == (
        5 * GiB, 1536 * MiB, 3584 * MiB)

    # The planner: exactly the free CPU and memory fit; one MHz or one MiB more does not.
    zone = ctx.session.get(Zone, host.zone_id)
    cluster = clusters[host.cluster_id]
    for name in ("cluster.cpu.allocated.capacity.disablethreshold", "cluster.memory.allocated.capacity.disablethreshold"):
        ctx.settings.set_scoped(name, "1", "cluster", cluster)
    plan = Planner(ctx).plan("VM[x]", zone, Demand(3, 1000, 3584, "Simulator"))
    assert plan.host.id == host.id
    for demand in (Demand(3, 1001, 3584, "Simulator"), Demand(3, 1000, 3585, "Simulator")):
        with pytest.raises(InsufficientCapacity, match="ch has 3000 MHz and 3584 MiB free"):
            Planner(ctx).plan("VM[x]", zone, demand)

    # ... and the cluster's disable threshold counts against the same totals: 90 % of 4950 MHz
    # is 4455, so 2505 MHz more reach it and 2508 pass it.
    ctx.settings.set_scoped("cluster.cpu.allocated.capacity.disablethreshold", "0.9", "cluster", cluster)
    assert Planner(ctx).plan("VM[x]", zone, Demand(3, 835, 512, "Simulator")).host.id == host.id
    with pytest.raises(InsufficientCapacity, match="cluster cc is above its allocated capacity disable threshold"):
        Planner(ctx).plan("VM[x]", zone, Demand(3, 836, 512, "Simulator"))

    # listCapacity: the cluster's rows.
    rows = {r["type"]: r for r in ctx.capacity.rows(cluster=cluster)}
    assert (rows[CPU]["capacitytotal"], rows[CPU]["capacityused"]) == (capacity.cpu_capacity, capacity.used.cpu_mhz)
    assert (rows[MEMORY]["capacitytotal"], rows[MEMORY]["capacityused"]) == (
        capacity.memory_capacity, capacity.used.memory_bytes)

    # The host view of listHosts.
    [view] = render_hosts(ctx, ctx.hosts.view_rows([host.id]))
    assert view["cpuallocatedvalue"] == capacity.used.cpu_mhz == 1950
    assert view["cpuallocated"] == view["cpuallocatedpercentage"] == "59.09%"           # 1950 of 3300
    assert view["cpuallocatedwithoverprovisioning"] == "39.39%"                         # 1950 of 4950
    assert view["cpuwithoverprovisioning"] == "4950.0"
    assert view["memoryallocated"] == view["memoryallocatedbytes"] == capacity.used.memory_bytes
    assert view["memorywithoverprovisioning"] == str(capacity.memory_capacity)
    assert view["memoryallocatedpercentage"] == "37.5%"                                  # 1.5 of 4 GiB
