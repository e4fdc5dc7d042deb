"""Live migration and maintenance through the engine's API, on two real KVM hosts.

Each host is a network namespace with its own libvirtd (its own host UUID, listening on TCP as
the `libvirt_tcp` role sets it up) and its own `stackwright-agent` running inside it; the two
namespaces are joined by a veth pair and migrate over it. Inside each namespace the engine's
agent port and nfs-ganesha's ports (portmapper, MOUNT, NFS) are relayed from the machine's
loopback, so both hosts use the same NFS export as primary storage (QEMU's own NFS client).

The tests share one engine, one cluster and both hosts, in file order: a guest migrates and
back (the same guest continues: libvirt says it runs because it migrated, never a second
boot); a migration whose destination libvirtd stops mid-way fails and leaves the guest running
on its source, with no definition left on the destination; maintenance drains a host with three
running guests and cancel brings it back; a guest that fits nowhere leaves its host in
ErrorInPrepareForMaintenance; an engine killed during a migration resolves it after its
restart with exactly one running copy; an NFS server that stops answering under a running
guest is an outage of the pool, ridden out by the same QEMU process. A migration is held "under way" by dropping, on the
destination's veth, every connection but libvirtd's, so the migration data cannot flow.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.jobs import job_of
from tests.support.kvm_cloud import KvmCloud
from tests.support.libvirtd import missing_prerequisites, stop_pid

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.slow, pytest.mark.timeout(240)]

MEMORY_MB = 128
LIBVIRTD_TCP_PORT = 16509


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


def arrived(host, name):
    """Whether `name` runs on `host` as the guest that migrated there, not a new boot: libvirt
    records why a domain runs ("migrated", not "booted") and the migration it completed."""
    reason = host.virsh("domstate", "--reason", name)
    info = host.virsh("domjobinfo", "--completed", name, check=False)
    return reason == "running (migrated)" and ("Incoming migration" in info or "Operation:" not in info)


@contextlib.contextmanager
def migration_data_held(host):
    """`host` takes no connection on its veth but libvirtd's: a migration to it starts (its
    libvirtd prepares the incoming guest) and stays under way until this ends."""
    rule = ["INPUT", "-i", host.device, "-p", "tcp", "!", "--dport", str(LIBVIRTD_TCP_PORT), "-j", "DROP"]
    host.namespace.run(["iptables", "-I", *rule])
    try:
        yield
    finally:
        host.namespace.run(["iptables", "-D", *rule], check=False)


def migration_under_way(site, vm, dest):
    """Start migrating `vm` to `dest`; once the destination prepared its incoming copy, the job id."""
    answer = site.api.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=dest.id)
    site.wait("the incoming copy on %s" % dest.address, lambda: vm["instancename"] in dest.defined(), 30)
    assert site.vm(vm["id"])["state"] == "Migrating"
    return answer["jobid"]


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
    assert arrived(b, name), b.virsh("domstate", "--reason", name)
    assert name not in a.virsh("list", "--all", "--name").split()

    back = migrate(site, vm, a)
    assert (back["state"], back["hostid"]) == ("Running", a.id)
    assert [h.address for h in site.copies(name)] == [a.address]
    assert arrived(a, name)
    site.discard(vm)


def test_a_migration_whose_destination_libvirtd_stops_midway_leaves_the_guest_running_on_its_source(site):
    a, b = site.hosts
    vm = site.deploy(a)
    name = vm["instancename"]
    try:
        with migration_data_held(b):
            jobid = migration_under_way(site, vm, b)
            stop_pid(b.libvirtd.daemon_pid(), "libvirtd")
            # The source's libvirt notices the lost destination through its keepalive and the
            # migration's own timeouts: usually well within two minutes, on a loaded machine more.
            job = job_of(site.api, jobid, 240)
    finally:
        if b.libvirtd.daemon_pid() is None:
            b.libvirtd.start_libvirtd()
    assert job["jobstatus"] == 2, job
    text = job["jobresult"]["errortext"]
    assert "Failed to migrate VM %s" % name in text and "migrate %s to %s" % (name, b.address) in text, text
    now = site.vm(vm["id"])
    assert (now["state"], now["hostid"]) == ("Running", a.id)
    site.wait("host %s Up" % b.address, lambda: site.host_now(b)["state"] == "Up", 60)
    # The destination's restarted libvirtd holds no definition of the guest that did not arrive.
    assert name not in b.defined()
    assert [h.address for h in site.copies(name)] == [a.address]
    # The guest that stayed is the one that booted there.
    assert a.virsh("domstate", "--reason", name) in ("running (booted)", "running (migration canceled)")
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
        assert arrived(b, vm["instancename"])
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
    with migration_data_held(b):
        jobid = migration_under_way(site, vm, b)
        site.engine.kill()
    # The migration goes on without the engine: it comes back to a guest that moved meanwhile.
    site.engine.start()
    site.api = site.engine.client()
    job = job_of(site.api, jobid, 120)
    site.wait("the VM Running", lambda: site.vm(vm["id"])["state"] == "Running", 60)
    now = site.vm(vm["id"])
    copies = site.copies(name)
    assert len(copies) == 1, [h.address for h in copies]
    assert copies[0].id == now["hostid"]
    # The job's outcome is where the guest runs.
    assert (job["jobstatus"] == 1) == (now["hostid"] == b.id), (job, now["hostid"])
    for host in site.hosts:
        site.wait("host %s Up" % host.address, lambda h=host: site.host_now(h)["state"] == "Up", 60)
    site.discard(vm)
    assert site.copies(name) == []


def qemu_pid(name):
    """The pid of the QEMU process running guest `name` (its command line names the guest)."""
    marker = ("guest=%s," % name).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    return None


def test_a_primary_storage_outage_holds_guests_and_they_run_on_after_it(site, nfs_server):
    """nfs-ganesha stops answering (frozen) under a running guest: the engine marks the pool
    unreachable with an alert; the guest's disk I/O waits (QEMU's NFS client holds it; a kernel
    mount's errors would pause the guest instead) and its OS never sees an error; once ganesha
    answers again the pool is Up, the I/O completes and the same QEMU process runs the guest on."""
    if not nfs_server.started_here:
        pytest.skip("nfs-ganesha was started by another run: not ours to stop")
    api, host = site.api, site.hosts[0]
    pool = api.listStoragePools(clusterid=site.cluster["id"])["storagepool"][0]
    api.updateConfiguration(name="storage.stats.interval", value="2000")
    vm = site.deploy(host)
    name = vm["instancename"]
    pid = qemu_pid(name)
    assert pid is not None

    def pool_state():
        return api.listStoragePools(id=pool["id"])["storagepool"][0]["state"]

    def alerted(type_code, text):
        return any(text in a["description"] for a in api.listAlerts(type=type_code).get("alert", []))

    reset = None
    try:
        with nfs_server.outage():
            site.wait("the pool unreachable", lambda: pool_state() != "Up", 60)
            assert alerted(12, pool["id"])
            # The guest's firmware reads its disk again (it has no OS doing I/O of its own); the
            # reset waits for that I/O, which waits for the server.
            reset = subprocess.Popen(host.libvirtd.exec_argv(["virsh", "-c", "qemu:///system", "reset", name]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            held_since = time.monotonic()
            while time.monotonic() - held_since < 8:
                assert host.virsh("domstate", "--reason", name) in ("running (booted)", "paused (I/O error)")
                time.sleep(1)
            assert site.vm(vm["id"])["state"] == "Running"
        site.wait("the pool Up again", lambda: pool_state() == "Up", 90)
        assert reset.wait(60) == 0, reset.stderr.read()
        site.wait("the guest running again", lambda: host.virsh("domstate", name) == "running", 60)
        assert qemu_pid(name) == pid                        # the same QEMU process: never restarted
        assert site.vm(vm["id"])["state"] == "Running" and site.copies(name) == [host]
    finally:
        if reset is not None and reset.poll() is None:
            reset.kill()
            reset.wait(10)
        api.resetConfiguration(name="storage.stats.interval")
        site.discard(vm)
