"""Live migration and maintenance that evacuates, over the CloudStack API against a live engine, on
Simulator hosts: the engine's simulated agents hand guests to each other in simulation under the
rules real hosts follow."""

from tests.e2e.test_vms import World, failed_job, host_of, vm_job, vm_of
from tests.support.hierarchy import api_error
from tests.support.jobs import run_job


def test_migrate_a_running_vm_and_back(api, unique):
    world = World(api, unique, hosts=3)
    vm = world.deploy()
    source = vm["hostid"]
    found = api.findHostsForMigration(virtualmachineid=vm["id"])
    assert found["count"] == 2 and {h["id"] for h in found["host"]} == world.host_ids() - {source}
    assert all(h["suitableformigration"] is True and h["requiresStorageMotion"] is False for h in found["host"])
    dest = found["host"][0]["id"]
    moved = vm_job(api, "migrateVirtualMachine", virtualmachineid=vm["id"], hostid=dest)
    assert (moved["state"], moved["hostid"]) == ("Running", dest)
    assert host_of(api, dest)["memoryallocated"] == 512 * 1024 * 1024
    assert host_of(api, source)["memoryallocated"] == 0
    back = vm_job(api, "migrateVirtualMachine", virtualmachineid=vm["id"], hostid=source)
    assert back["hostid"] == source
    chosen = vm_job(api, "migrateVirtualMachine", virtualmachineid=vm["id"])
    assert chosen["hostid"] != source and chosen["state"] == "Running"


def test_migration_guards(api, unique):
    world = World(api, unique, hosts=2)
    vm = world.deploy()
    source = vm["hostid"]
    other = (world.host_ids() - {source}).pop()
    text = failed_job(api, "migrateVirtualMachine", 431, virtualmachineid=vm["id"], hostid=source)
    assert text.endswith("the destination host %s is the host the VM runs on" % host_of(api, source)["name"])
    api.updateHost(id=other, allocationstate="Disable")
    text = failed_job(api, "migrateVirtualMachine", 431, virtualmachineid=vm["id"], hostid=other)
    assert "is Disabled; enable it with updateHost allocationstate=Enable" in text
    found = api.findHostsForMigration(virtualmachineid=vm["id"])["host"]
    assert [(h["id"], h["suitableformigration"]) for h in found] == [(other, False)]
    assert "Disabled" in found[0]["notsuitablereason"]
    text = failed_job(api, "migrateVirtualMachine", 533, virtualmachineid=vm["id"])
    assert text.startswith("Unable to find a host in cluster")
    api.updateHost(id=other, allocationstate="Enable")
    vm_job(api, "stopVirtualMachine", id=vm["id"])
    text = failed_job(api, "migrateVirtualMachine", 431, virtualmachineid=vm["id"], hostid=other)
    assert text.startswith("VM %s is not Running, unable to migrate the vm" % vm["instancename"])
    api_error(api.findHostsForMigration, 431, virtualmachineid=vm["id"])
    assert vm_of(api, vm["id"])["state"] == "Stopped"


def test_maintenance_moves_the_guests_and_cancel_brings_the_host_back(api, unique):
    world = World(api, unique, hosts=3)
    draining = world.hosts[0]["id"]
    vms = [world.deploy(hostid=draining) for _i in range(3)]
    _answer, job = run_job(api, "prepareHostForMaintenance", id=draining)
    assert job["jobstatus"] == 1, job
    assert job["jobresult"]["host"]["resourcestate"] == "Maintenance"
    for vm in vms:
        now = vm_of(api, vm["id"])
        assert now["state"] == "Running" and now["hostid"] in world.host_ids() - {draining}
    _answer, job = run_job(api, "cancelHostMaintenance", id=draining)
    assert job["jobresult"]["host"]["resourcestate"] == "Enabled"


def test_a_guest_that_fits_nowhere_leaves_the_host_in_error_in_prepare_for_maintenance(api, unique):
    world = World(api, unique, hosts=2)
    draining, other = world.hosts[0]["id"], world.hosts[1]["id"]
    big = api.createServiceOffering(name="big-" + unique, displaytext="big", cpunumber=1, cpuspeed=500,
                                    memory=1536)["serviceoffering"]
    world.deploy(hostid=other, serviceofferingid=big["id"])
    stuck = world.deploy(hostid=draining, serviceofferingid=big["id"])
    text = failed_job(api, "prepareHostForMaintenance", 530, id=draining)
    assert text.startswith("Failed to prepare host for maintenance: 1 VM(s) could not be migrated: %s: "
                           % stuck["instancename"]), text
    assert host_of(api, draining)["resourcestate"] == "ErrorInPrepareForMaintenance"
    assert vm_of(api, stuck["id"])["hostid"] == draining
    _answer, job = run_job(api, "cancelHostMaintenance", id=draining)
    assert job["jobresult"]["host"]["resourcestate"] == "Enabled"
