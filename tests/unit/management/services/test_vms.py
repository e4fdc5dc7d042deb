"""The VM planner, capacity accounting of guests and reconciliation of host reports,
on a real (SQLite) database. `ctx` (conftest.py) is rolled back after each test."""

import datetime as dt

import pytest

from stackwright.management.errors import CloudRuntimeError, InsufficientCapacity
from stackwright.management.persistence.models import (
    Account,
    Cluster,
    ClusterDetail,
    Domain,
    Event,
    Host,
    Pod,
    ServiceOffering,
    StoragePool,
    Template,
    VmInstance,
    Volume,
    Zone,
    utcnow,
)
from stackwright.management.services.capacity import CPU, MEMORY, STORAGE_ALLOCATED, CapacityService
from stackwright.management.services.placement import Demand, Planner
from stackwright.management.services.vms import VmService

GiB = 1024 ** 3
MiB = 1024 ** 2
LONG_AGO = dt.datetime(2020, 1, 1)


class World:
    """Rows shaped the way the services leave them: an Enabled zone, pod and cluster."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.s = ctx.session
        self.serial = 0
        self.zone = self.add(Zone(name=self.name("zone"), network_type="Advanced", allocation_state="Enabled",
                                  details={}))
        self.pod = self.add(Pod(name=self.name("pod"), zone_id=self.zone.id, gateway="10.0.0.1",
                                netmask="255.255.255.0", start_ip="10.0.0.10", end_ip="10.0.0.20"))
        self.cluster = self.new_cluster()
        domain = self.add(Domain(name=self.name("domain"), path="ROOT/x"))
        self.account = self.add(Account(name=self.name("account"), domain_id=domain.id))
        self.offering = self.add(ServiceOffering(name="small", cpu_number=1, cpu_speed=500, memory_mb=512))
        self.template = self.add(Template(name="t", format="QCOW2", hypervisor="Simulator", is_ready=True,
                                          size_bytes=GiB))

    def name(self, prefix):
        self.serial += 1
        return "%s-%d" % (prefix, self.serial)

    def add(self, row):
        self.s.add(row)
        self.s.flush()
        return row

    def new_cluster(self, hypervisor="Simulator", cpu_ratio="1.0", memory_ratio="1.0", state="Enabled"):
        cluster = Cluster(name=self.name("cluster"), pod_id=self.pod.id, zone_id=self.zone.id,
                          hypervisor=hypervisor, allocation_state=state)
        cluster.details = [ClusterDetail(name="cpuOvercommitRatio", value=cpu_ratio),
                           ClusterDetail(name="memoryOvercommitRatio", value=memory_ratio)]
        return self.add(cluster)

    def host(self, cluster=None, cpus=2, speed=1000, memory=2 * GiB, state="Up", resource_state="Enabled",
             tags=None):
        cluster = cluster or self.cluster
        return self.add(Host(name=self.name("host"), guid=self.name("guid"), zone_id=self.zone.id,
                             pod_id=self.pod.id, cluster_id=cluster.id, hypervisor=cluster.hypervisor,
                             url="http://sim/x", state=state, resource_state=resource_state, cpus=cpus,
                             cpu_speed=speed, memory_bytes=memory, host_tags=tags, details={}))

    def pool(self, cluster=None, size=10 * GiB, state="Up", zone_wide=False):
        cluster = cluster or self.cluster
        return self.add(StoragePool(
            name=self.name("pool"), zone_id=self.zone.id, pod_id=None if zone_wide else self.pod.id,
            cluster_id=None if zone_wide else cluster.id, scope="ZONE" if zone_wide else "CLUSTER",
            hypervisor=cluster.hypervisor, pool_type="NetworkFilesystem", host_address="nfs", path="/p",
            url="nfs://nfs/p", state=state, capacity_bytes=size, used_bytes=0))

    def vm(self, host=None, state="Running", cpus=1, speed=500, memory=512, changed=LONG_AGO, name=None):
        vm = self.add(VmInstance(
            name=name or self.name("vm"), instance_name="pending", state=state, zone_id=self.zone.id,
            host_id=host.id if host else None, account_id=self.account.id, domain_id=self.account.domain_id,
            service_offering_id=self.offering.id, template_id=self.template.id, hypervisor="Simulator",
            cpu_number=cpus, cpu_speed=speed, memory_mb=memory, mac_address="02:00:00:00:00:%02x" % self.serial,
            state_changed=changed, details={}))
        vm.instance_name = "i-%d-%d-VM" % (self.account.id, vm.id)
        self.s.flush()
        return vm

    def volume(self, pool, size=GiB, vm=None):
        return self.add(Volume(name=self.name("ROOT"), zone_id=self.zone.id, pool_id=pool.id,
                               account_id=self.account.id, size_bytes=size, state="Ready",
                               vm_id=vm.id if vm else None))


@pytest.fixture
def world(ctx):
    return World(ctx)


def demand(cpus=1, speed=500, memory=512, hypervisor="Simulator", tags=(), volume=GiB, pool=None):
    return Demand(cpus, speed, memory, hypervisor, list(tags), volume_bytes=volume, pool=pool)


def plan(ctx, world, want=None, **kw):
    return Planner(ctx).plan("VM[User|i-1-1-VM]", world.zone, want or demand(), **kw)


def refused(ctx, world, want=None, **kw):
    with pytest.raises(InsufficientCapacity) as caught:
        plan(ctx, world, want, **kw)
    error = caught.value
    assert error.errorcode == 533
    assert error.text.startswith("Unable to create a deployment for VM[User|i-1-1-VM]: ")
    return error


# --- planner ---------------------------------------------------------------------------------


def test_first_host_with_capacity_and_a_pool_is_chosen(ctx, world):
    first, second = world.host(), world.host()
    pool = world.pool()
    chosen = plan(ctx, world)
    assert (chosen.host.id, chosen.pool.id) == (first.id, pool.id)
    world.vm(first, cpus=2, speed=1000)          # first host's CPU is all taken
    assert plan(ctx, world).host.id == second.id


def test_cpu_and_memory_shortage_is_named(ctx, world):
    host = world.host(cpus=1, speed=1000, memory=GiB)
    world.pool()
    world.vm(host, cpus=1, speed=800, memory=256)
    error = refused(ctx, world, demand(speed=500, memory=512))
    assert error.cserrorcode == 4335
    assert error.text.endswith("no host has 1 x 500 MHz CPU and 512 MiB of memory unallocated (%s has 200 MHz "
                               "and 768 MiB free)" % host.name)


def test_over_commit_ratios_stretch_a_host(ctx, world):
    cluster = world.new_cluster(cpu_ratio="2.0", memory_ratio="2.0")
    host = world.host(cluster, cpus=1, speed=1000, memory=GiB)
    world.pool(cluster)
    world.vm(host, cpus=1, speed=1000, memory=1024)
    # 1600 of 2000 MHz and 1536 of 2048 MiB: within the 0.85 disable thresholds too.
    assert plan(ctx, world, demand(speed=600, memory=512), cluster=cluster).host.id == host.id
    # The same host and guest without over-commit: no room.
    plain = world.host(world.cluster, cpus=1, speed=1000, memory=GiB)
    world.pool(world.cluster)
    world.vm(plain, cpus=1, speed=1000, memory=1024)
    error = refused(ctx, world, demand(speed=600, memory=512), cluster=world.cluster)
    assert "%s has 0 MHz and 0 MiB free" % plain.name in error.text


def test_stopped_and_destroyed_guests_hold_nothing(ctx, world):
    host = world.host(cpus=1, speed=1000, memory=GiB)
    world.pool()
    world.vm(None, state="Stopped", speed=1000, memory=1024)
    world.vm(host, state="Destroyed", speed=1000, memory=1024)
    assert plan(ctx, world, demand(speed=800, memory=768)).host.id == host.id


def test_cores_slower_than_the_offering_do_not_fit(ctx, world):
    host = world.host(cpus=8, speed=400)
    world.pool()
    error = refused(ctx, world, demand(speed=500))
    assert "%s has 8 CPUs of 400 MHz" % host.name in error.text


def test_host_tags_of_the_offering_are_required(ctx, world):
    world.host(tags="ssd")
    tagged = world.host(tags="ssd,gpu")
    world.pool()
    assert plan(ctx, world, demand(tags=["gpu"])).host.id == tagged.id
    error = refused(ctx, world, demand(tags=["fpga"]))
    assert "carries the host tags fpga of the service offering" in error.text


def test_only_up_and_enabled_hosts(ctx, world):
    world.host(state="Alert")
    world.host(resource_state="Maintenance")
    world.pool()
    error = refused(ctx, world)
    assert "no Up and Enabled Simulator host in zone %s" % world.zone.name in error.text
    enabled = world.host()
    assert plan(ctx, world).host.id == enabled.id


def test_avoided_hosts_and_earlier_failures_are_reported(ctx, world):
    host = world.host()
    world.pool()
    error = refused(ctx, world, avoid_hosts={host.id}, failures=["%s: starting the guest failed: boom" % host.name])
    assert error.text.endswith(": %s: starting the guest failed: boom; and no other host or pool can take it: no "
                               "other Up and Enabled host left in zone %s" % (host.name, world.zone.name))


def test_last_host_is_preferred(ctx, world):
    world.host()
    last = world.host()
    world.pool()
    assert plan(ctx, world, last_host_id=last.id).host.id == last.id


def test_pool_space_follows_the_overprovisioning_factor(ctx, world):
    world.host()
    pool = world.pool(size=10 * GiB)           # x 2 (global factor) = 20 GiB, threshold 0.85 = 17 GiB
    world.volume(pool, size=16 * GiB)
    assert plan(ctx, world, demand(volume=GiB)).pool.id == pool.id
    error = refused(ctx, world, demand(volume=2 * GiB))
    assert error.cserrorcode == 4340
    assert ("no Up primary storage pool of cluster(s) %s (or zone-wide) has room for a 2 GiB root volume"
            % world.cluster.name) in error.text
    ctx.settings.set_scoped("storage.overprovisioning.factor", "4", "storagepool", pool)
    assert plan(ctx, world, demand(volume=2 * GiB)).pool.id == pool.id


def test_zone_wide_pool_serves_the_cluster_and_pools_not_up_do_not(ctx, world):
    world.host()
    world.pool(state="Maintenance")
    zone_wide = world.pool(zone_wide=True)
    assert plan(ctx, world).pool.id == zone_wide.id


def test_volume_already_on_a_pool_needs_a_host_that_reaches_it(ctx, world):
    other = world.new_cluster()
    world.host()
    reaching = world.host(other)
    world.pool()
    placed = world.pool(other)
    chosen = plan(ctx, world, demand(pool=placed))
    assert (chosen.host.id, chosen.pool.id) == (reaching.id, placed.id)


def test_cluster_disable_threshold(ctx, world):
    host = world.host(cpus=1, speed=1000, memory=4 * GiB)
    world.pool()
    world.vm(host, speed=500, memory=256)
    error = refused(ctx, world, demand(speed=400, memory=256))      # 900 / 1000 > 0.85
    assert "cluster %s is above its allocated capacity disable threshold" % world.cluster.name in error.text
    ctx.settings.set_scoped("cluster.cpu.allocated.capacity.disablethreshold", "0.95", "cluster", world.cluster)
    assert plan(ctx, world, demand(speed=400, memory=256)).host.id == host.id


def test_disabled_zone_cluster_and_hypervisor_mismatch(ctx, world):
    world.host()
    world.pool()
    error = refused(ctx, world, demand(hypervisor="KVM"))
    assert error.text.endswith("no KVM cluster in zone %s (the template is for KVM)" % world.zone.name)
    world.cluster.allocation_state = "Disabled"
    error = refused(ctx, world)
    assert "every Simulator cluster in zone %s is Disabled" % world.zone.name in error.text
    world.zone.allocation_state = "Disabled"
    error = refused(ctx, world)
    assert "zone %s is Disabled; enable it with updateZone allocationstate=Enabled" % world.zone.name in error.text


# --- capacity of guests -------------------------------------------------------------------------


def test_guests_count_in_host_and_cluster_capacity(ctx, world):
    host = world.host(cpus=2, speed=1000, memory=2 * GiB)
    pool = world.pool()
    world.vm(host, state="Running", speed=500, memory=512)
    world.vm(host, state="Starting", speed=300, memory=256)
    world.vm(None, state="Stopped", speed=1000, memory=1024)
    world.volume(pool, size=3 * GiB)
    capacity = CapacityService(ctx)
    used = capacity.host_allocations([host.id])[host.id]
    assert (used.cpu_mhz, used.memory_bytes) == (800, 768 * MiB)
    rows = {r["type"]: r for r in capacity.rows(cluster=world.cluster)}
    assert (rows[CPU]["capacityused"], rows[CPU]["percentused"]) == (800, "40")
    assert rows[MEMORY]["capacityused"] == 768 * MiB
    assert (rows[STORAGE_ALLOCATED]["capacityused"], rows[STORAGE_ALLOCATED]["capacitytotal"]) == (3 * GiB, 20 * GiB)
    assert ctx.storage.allocated_bytes(pool) == 3 * GiB


# --- reconciliation -----------------------------------------------------------------------------------


def reconcile(ctx, host, reported, **kw):
    return VmService(ctx).reconcile(host, reported, **kw)


def events(ctx, vm):
    return [(e.type, e.level, e.description) for e in ctx.session.query(Event).filter_by(resource_uuid=vm.uuid)]


def test_running_vm_the_hypervisor_lacks_is_stopped(ctx, world):
    host = world.host()
    gone = world.vm(host)
    also_gone = world.vm(host)
    kept = world.vm(host)
    assert reconcile(ctx, host, {kept.instance_name: "Running", also_gone.instance_name: "Stopped"}) is True
    for vm in (gone, also_gone):
        assert (vm.state, vm.host_id, vm.last_host_id) == ("Stopped", None, host.id)
        [(kind, level, text)] = events(ctx, vm)
        assert (kind, level) == ("VM.STOP", "WARN") and "stopped outside the engine" in text
    assert (kept.state, kept.host_id) == ("Running", host.id)
    assert events(ctx, kept) == []


def test_stopped_vm_the_hypervisor_runs_is_running(ctx, world):
    host = world.host()
    vm = world.vm(None, state="Stopped")
    assert reconcile(ctx, host, {vm.instance_name: "Running"}) is True
    assert (vm.state, vm.host_id, vm.last_host_id) == ("Running", host.id, host.id)
    assert [e[0] for e in events(ctx, vm)] == ["VM.START"]


def test_vms_a_job_is_moving_are_left_alone(ctx, world):
    host = world.host()
    starting = world.vm(host, state="Starting")
    stopping = world.vm(host, state="Stopping")
    assert reconcile(ctx, host, {stopping.instance_name: "Running"}) is False
    assert (starting.state, stopping.state) == ("Starting", "Stopping")


def test_changes_newer_than_the_report_win(ctx, world):
    host = world.host()
    received = utcnow()
    just_started = world.vm(host, changed=received - dt.timedelta(seconds=1))
    just_stopped = world.vm(None, state="Stopped", changed=received + dt.timedelta(seconds=1))
    assert reconcile(ctx, host, {just_stopped.instance_name: "Running"}, reported_at=received) is False
    assert (just_started.state, just_stopped.state) == ("Running", "Stopped")
    # A later report, well after the changes, applies.
    assert reconcile(ctx, host, {just_stopped.instance_name: "Running"},
                     reported_at=received + dt.timedelta(minutes=1)) is True
    assert (just_started.state, just_stopped.state) == ("Stopped", "Running")


def test_reports_never_touch_other_hosts_or_dead_vms(ctx, world):
    host, other = world.host(), world.host()
    elsewhere = world.vm(other)
    destroyed = world.vm(None, state="Destroyed")
    unsure = world.vm(host)
    reported = {elsewhere.instance_name: "Running", destroyed.instance_name: "Running",
                unsure.instance_name: "Unknown", "i-99-99-VM": "Running"}
    assert reconcile(ctx, host, reported) is True
    assert (elsewhere.state, elsewhere.host_id) == ("Running", other.id)
    assert destroyed.state == "Destroyed"
    assert (unsure.state, unsure.host_id) == ("Running", host.id)


def test_zone_with_guests_or_volumes_cannot_be_deleted(ctx, world):
    world.zone = world.add(Zone(name=world.name("empty"), network_type="Basic", details={}))
    vm = world.vm(None, state="Destroyed")
    with pytest.raises(CloudRuntimeError) as caught:
        ctx.hierarchy.delete_zone(world.zone)
    assert caught.value.text == "The zone cannot be deleted because there are virtual machines in this zone."
    vm.removed = utcnow()
    world.add(Volume(name="DATA", zone_id=world.zone.id, account_id=world.account.id, size_bytes=GiB))
    with pytest.raises(CloudRuntimeError) as caught:
        ctx.hierarchy.delete_zone(world.zone)
    assert caught.value.text == "The zone cannot be deleted because there are storage volumes in this zone."
