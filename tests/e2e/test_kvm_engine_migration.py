"""Live migration and maintenance through the engine's API, on two real KVM hosts.

Each host is a network namespace with its own libvirtd (its own host UUID, listening on TCP as
the `libvirt_tcp` role sets it up) and its own `stackwright-agent` running inside it; the two
namespaces are joined by a veth pair and migrate over it. Inside each namespace the engine's
agent port and nfs-ganesha's ports (portmapper, MOUNT, NFS) are relayed from the machine's
loopback, so both hosts use the same NFS export as primary storage (QEMU's own NFS client).

The tests share one engine, one cluster and both hosts, in file order: a guest migrates and
back (the same guest continues: the destination's libvirt holds it as an incoming migration,
never a boot); maintenance drains a host with running guests and cancel brings it back; a
guest that fits nowhere leaves its host in ErrorInPrepareForMaintenance; an engine killed
during a migration resolves it after its restart with exactly one running copy.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.kvm_cloud import KvmCloud
from tests.support.libvirtd import missing_prerequisites
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.slow, pytest.mark.timeout(240)]

MEMORY_MB = 128


@pytest.fixture(scope="module")
def site(tmp_path_factory, nfs_server):
    problems = missing_prerequisites()
    if problems:
        pytest.skip("no real libvirtd here: " + "; ".join(problems))
    cloud = KvmCloud(tmp_path_factory.mktemp("kvm-engine-migration"), nfs_server, memory_mb=MEMORY_MB).start()
    try:
        yield cloud
    finally:
        cloud.stop()


def incoming(host, name):
    """Whether `host`'s libvirt holds `name` as the result of an incoming migration (not a boot)."""
    info = host.virsh("domjobinfo", "--completed", name, check=False)
    return "Incoming migration" in info or "Operation:" not in info and "Completed" in info


def migrate(site, vm, dest):
    job = site.job("migrateVirtualMachine", virtualmachineid=vm["id"], hostid=dest.id)
    assert job["jobstatus"] == 1, "%s\n%s" % (job, site.diagnostics())
    return job["jobresult"]["virtualmachine"]


def test_a_running_guest_migrates_to_the_other_host_and_back(site):
    a, b = site.hosts
    vm = site.deploy(a)
    name = vm["instancename"]
    assert vm["state"] == "Running" and vm["hostid"] == a.id
    assert [h.address for h in site.copies(name)] == [a.address]
    found = site.api.findHostsForMigration(virtualmachineid=vm["id"])["host"]
    assert [(h["id"], h["suitableformigration"], h["requiresStorageMotion"]) for h in found] == [(b.id, True, False)]

    moved = migrate(site, vm, b)
    assert (moved["state"], moved["hostid"]) == ("Running", b.id)
    assert [h.address for h in site.copies(name)] == [b.address]
    assert b.virsh("domuuid", name) == vm["id"]
    assert incoming(b, name), b.virsh("domjobinfo", "--completed", name, check=False)
    assert name not in a.virsh("list", "--all", "--name").split()

    back = migrate(site, vm, a)
    assert (back["state"], back["hostid"]) == ("Running", a.id)
    assert [h.address for h in site.copies(name)] == [a.address]
    assert incoming(a, name)
    site.discard(vm)


def test_maintenance_drains_a_host_with_running_guests_and_cancel_brings_it_back(site):
    a, b = site.hosts
    vms = [site.deploy(a) for _i in range(3)]
    job = site.job("prepareHostForMaintenance", id=a.id)
    assert job["jobstatus"] == 1, "%s\n%s" % (job, site.diagnostics())
    assert job["jobresult"]["host"]["resourcestate"] == "Maintenance"
    for vm in vms:
        now = site.vm(vm["id"])
        assert (now["state"], now["hostid"]) == ("Running", b.id)
        assert [h.address for h in site.copies(vm["instancename"])] == [b.address]
        assert incoming(b, vm["instancename"])
    assert a.running() == set()
    job = site.job("cancelHostMaintenance", id=a.id)
    assert job["jobresult"]["host"]["resourcestate"] == "Enabled"
    site.discard(*vms)


def test_a_guest_that_fits_nowhere_leaves_its_host_in_error_in_prepare_for_maintenance(site):
    a, b = site.hosts
    tag = "only-" + uuid.uuid4().hex[:6]
    site.api.updateHost(id=a.id, hosttags=tag)
    offering = site.api.createServiceOffering(name=tag, displaytext=tag, cpunumber=1, cpuspeed=500,
                                              memory=MEMORY_MB, hosttags=tag)["serviceoffering"]
    movable = site.deploy(a)
    stuck = site.deploy(a, serviceofferingid=offering["id"])
    try:
        job = site.job("prepareHostForMaintenance", id=a.id)
        assert job["jobstatus"] == 2, job
        text = job["jobresult"]["errortext"]
        assert stuck["instancename"] in text and movable["instancename"] not in text, text
        assert site.host_now(a)["resourcestate"] == "ErrorInPrepareForMaintenance"
        assert (site.vm(stuck["id"])["state"], site.vm(stuck["id"])["hostid"]) == ("Running", a.id)
        assert [h.address for h in site.copies(stuck["instancename"])] == [a.address]
        # The guest that could move stays moved.
        assert site.vm(movable["id"])["hostid"] == b.id
        assert [h.address for h in site.copies(movable["instancename"])] == [b.address]
        job = site.job("cancelHostMaintenance", id=a.id)
        assert job["jobresult"]["host"]["resourcestate"] == "Enabled"
    finally:
        site.api.updateHost(id=a.id, hosttags="")
        site.discard(movable, stuck)


def test_an_engine_killed_during_a_migration_leaves_exactly_one_running_copy(site):
    a, b = site.hosts
    vm = site.deploy(a)
    name = vm["instancename"]
    # Slow the migration down so the engine dies while it is under way.
    a.virsh("migrate-setspeed", name, "1")
    answer = site.api.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=b.id)
    wait_for("VM Migrating", lambda: site.vm(vm["id"])["state"] == "Migrating", 30)
    time.sleep(0.5)
    site.engine.kill()
    site.engine.start()
    site.api = site.engine.client()
    try:
        wait_for("the migration resolved",
                 lambda: site.api.queryAsyncJobResult(jobid=answer["jobid"])["jobstatus"] != 0, 120)
        wait_for("the VM Running", lambda: site.vm(vm["id"])["state"] == "Running", 60)
    except AssertionError as exc:
        raise AssertionError("%s\n%s" % (exc, site.diagnostics())) from None
    now = site.vm(vm["id"])
    copies = site.copies(name)
    assert len(copies) == 1, [h.address for h in copies]
    assert copies[0].id == now["hostid"]
    for host in site.hosts:
        wait_for("host %s Up" % host.address, lambda h=host: site.host_now(h)["state"] == "Up", 60)
    site.discard(vm)
    assert site.copies(name) == []
