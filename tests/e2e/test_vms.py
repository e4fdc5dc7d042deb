"""Virtual machines over the CloudStack API against a live engine, on Simulator hosts.

The engine serves Simulator hosts through simulated agents over its agent channel, so a
deployment here takes the same path as on KVM: plan, CreateVolume on the pool, StartVm
on the host. Service offerings and templates, seeded and created, are covered too.
"""

import re
import time
import uuid

import pytest
from cs import CloudStackApiException
from sqlalchemy import select

from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import Event

from tests.support.hierarchy import (
    api_error,
    invalid_uuid_text,
    missing_text,
    new_cluster,
    new_pod,
    new_zone,
    physical_network,
)
from tests.support.jobs import run_job

GiB = 1024 ** 3
MiB = 1024 ** 2
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")
SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"
KVM_TEMPLATE = "Blank disk (no OS)"
SIM_HOST = "http://sim/vm/h%d?cpus=2&cpuspeed=1000&memory=" + str(2 * GiB)


# --- helpers ---------------------------------------------------------------------------------


def vm_job(api, command, **params):
    """Run an async VM command that must succeed; returns the VM of its job result."""
    _answer, job = run_job(api, command, **params)
    assert (job["jobstatus"], job["jobresultcode"]) == (1, 0), job.get("jobresult")
    return job["jobresult"]["virtualmachine"]


def failed_job(api, command, code, **params):
    _answer, job = run_job(api, command, **params)
    assert job["jobstatus"] == 2, job
    assert job["jobresultcode"] == code and job["jobresult"]["errorcode"] == code, job
    return job["jobresult"]["errortext"]


def offering(api, name="Small Instance"):
    return api.listServiceOfferings(name=name)["serviceoffering"][0]


def template(api, name=SIM_TEMPLATE, zone=None):
    params = {"zoneid": zone} if zone else {}
    return api.listTemplates(templatefilter="executable", name=name, **params)["template"][0]


def host_of(api, host_id):
    return api.listHosts(id=host_id)["host"][0]


def pool_of(api, pool_id):
    return api.listStoragePools(id=pool_id)["storagepool"][0]


def events_of(engine, resource_uuid):
    """Events recorded for a resource, read from the engine's database."""
    db = Database(engine.db_url)
    try:
        with db.transaction(readonly=True) as s:
            return s.execute(select(Event).where(Event.resource_uuid == resource_uuid).order_by(Event.id)).scalars().all()
    finally:
        db.dispose()


def vm_of(api, vm_id):
    answer = api.listVirtualMachines(id=vm_id)
    return answer["virtualmachine"][0] if answer else None


class World:
    """An Enabled zone with one Simulator cluster of `hosts` small hosts and one pool."""

    def __init__(self, api, unique, hosts=2, pool=True, guest_label=None):
        self.api = api
        self.zone = new_zone(api, unique)
        traffic = ("Management", "Guest") if guest_label else ("Management",)
        physical_network(api, self.zone, unique, traffic=traffic, label=guest_label or "cloudbr0")
        self.zone = api.updateZone(id=self.zone["id"], allocationstate="Enabled")["zone"]
        self.pod = new_pod(api, self.zone, unique)
        self.cluster = new_cluster(api, self.pod, unique)
        self.hosts = [api.addHost(zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"],
                                  hypervisor="Simulator", url=SIM_HOST % i)["host"][0] for i in range(hosts)]
        self.pool = None
        if pool:
            self.pool = api.createStoragePool(
                zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"], name="ps-" + unique,
                url="nfs://10.147.28.6/export/home/sandbox/primary-" + unique, capacitybytes=100 * GiB,
            )["storagepool"]
        self.offering = offering(api)
        self.template = template(api, zone=self.zone["id"])

    def deploy(self, **params):
        params.setdefault("serviceofferingid", self.offering["id"])
        params.setdefault("templateid", self.template["id"])
        params.setdefault("zoneid", self.zone["id"])
        return vm_job(self.api, "deployVirtualMachine", **params)

    def host_ids(self):
        return {h["id"] for h in self.hosts}


@pytest.fixture
def world(api, unique):
    return World(api, unique)


# --- offerings and templates ----------------------------------------------------------------


def test_seeded_offerings_and_templates(api):
    small, medium = offering(api, "Small Instance"), offering(api, "medium instance")
    assert (small["cpunumber"], small["cpuspeed"], small["memory"]) == (1, 500, 512)
    assert (medium["cpunumber"], medium["cpuspeed"], medium["memory"]) == (1, 1000, 1024)
    assert small["storagetype"] == "shared" and small["issystem"] is False and DATE.match(small["created"])
    blank = template(api, KVM_TEMPLATE)
    assert (blank["format"], blank["hypervisor"], blank["size"], blank["isready"]) == ("QCOW2", "KVM", GiB, True)
    assert blank["templatetype"] == "BUILTIN" and blank["ispublic"] and blank["isfeatured"]
    featured = api.listTemplates(templatefilter="featured")["template"]
    assert {KVM_TEMPLATE, SIM_TEMPLATE} <= {t["name"] for t in featured}
    assert api.listTemplates(templatefilter="self", name=KVM_TEMPLATE) == {}
    assert api.listServiceOfferings(issystem=True, name="Small Instance") == {}


def test_template_filter_is_required_and_checked(api):
    api_error(api.listTemplates, 431, missing_text("listTemplates", "templatefilter"), 9999)
    error = api_error(api.listTemplates, 431, cserrorcode=4350, templatefilter="everything")
    assert "featured, self, selfexecutable, sharedexecutable, executable, community, all" in error["errortext"]


def test_template_listed_with_the_zone_asked_for(api, unique):
    zone = new_zone(api, unique)
    listed = api.listTemplates(templatefilter="all", zoneid=zone["id"], name=SIM_TEMPLATE)["template"][0]
    assert (listed["zoneid"], listed["zonename"], listed["crossZones"]) == (zone["id"], zone["name"], True)
    assert "zoneid" not in template(api)


def test_service_offering_life_cycle(api, unique):
    name = "offering-" + unique
    created = api.createServiceOffering(name=name, displaytext="two by two", cpunumber=2, cpuspeed=2000,
                                        memory=2048, offerha="true", hosttags="perf,gpu")["serviceoffering"]
    assert (created["name"], created["displaytext"], created["cpunumber"], created["cpuspeed"],
            created["memory"], created["offerha"], created["hosttags"]) == (name, "two by two", 2, 2000, 2048,
                                                                            True, "perf,gpu")
    assert api.listServiceOfferings(name=name.upper())["serviceoffering"] == [created]
    renamed = api.updateServiceOffering(id=created["id"], name=name + "-b")["serviceoffering"]
    assert renamed["name"] == name + "-b" and renamed["memory"] == 2048
    assert api.deleteServiceOffering(id=created["id"]) == {"success": True}
    assert api.listServiceOfferings(id=created["id"]) == {}
    api_error(api.deleteServiceOffering, 431, "Unable to find service offering by id %s" % created["id"],
              4350, id=created["id"])


def test_customized_offering_needs_details_at_deploy(api, world, unique):
    custom = api.createServiceOffering(name="custom-" + unique)["serviceoffering"]
    assert custom["iscustomized"] is True and "cpunumber" not in custom
    error = api_error(api.deployVirtualMachine, 431, cserrorcode=4350, serviceofferingid=custom["id"],
                      templateid=world.template["id"], zoneid=world.zone["id"])
    assert error["errortext"].startswith("Need to specify custom parameter values cpu, cpu speed and memory")
    vm = world.deploy(serviceofferingid=custom["id"], details={"cpuNumber": "1", "cpuSpeed": "300", "memory": "256"})
    assert (vm["cpunumber"], vm["cpuspeed"], vm["memory"], vm["state"]) == (1, 300, 256, "Running")


@pytest.mark.parametrize("params, text", [
    ({"cpunumber": 1, "cpuspeed": 500}, "For creating a custom compute offering cpu, cpu speed and memory all "
                                        "should be null; otherwise pass all three of cpunumber, cpuspeed and memory"),
    ({"cpunumber": 0, "cpuspeed": 500, "memory": 512},
     "Failed to create service offering {name}: specify the cpu number value between 1 and 2147483647"),
    ({"cpunumber": 1, "cpuspeed": 0, "memory": 512},
     "Failed to create service offering {name}: specify the cpu speed value between 1 and 2147483647"),
    ({"cpunumber": 1, "cpuspeed": 500, "memory": 16},
     "Failed to create service offering {name}: specify the memory value between 32 and 2147483647 MB"),
    ({"storagetype": "nvme"}, "Invalid storage type nvme specified, valid types are: 'local' and 'shared'"),
    ({"storagetype": "local"}, "storagetype local is not supported: volumes live on shared primary storage (cluster- "
                               "or zone-wide pools); there is no host-local storage to place them on; use "
                               "storagetype=shared"),
])
def test_service_offering_errors(api, unique, params, text):
    name = "bad-" + unique
    api_error(api.createServiceOffering, 431, text.format(name=name), 4350, name=name, **params)
    assert api.listServiceOfferings(name=name) == {}


def test_service_offering_errors_of_the_envelope(api):
    api_error(api.createServiceOffering, 431, missing_text("createServiceOffering", "name"), 9999)
    api_error(api.createServiceOffering, 431, "Unable to execute API command createserviceoffering due to "
              "invalid value two for parameter cpunumber", 9999, name="x", cpunumber="two", cpuspeed=1, memory=64)


# --- deploy, list, job results ----------------------------------------------------------------


def test_deploy_runs_the_vm_and_reports_it_in_the_job(api, engine, world, unique):
    answer, job = run_job(api, "deployVirtualMachine", serviceofferingid=world.offering["id"],
                          templateid=world.template["id"], zoneid=world.zone["id"], name="web-" + unique,
                          displayname="Web " + unique)
    assert set(answer) == {"id", "jobid"}
    assert (job["jobstatus"], job["jobresultcode"], job["jobresulttype"]) == (1, 0, "object")
    assert (job["jobinstancetype"], job["jobinstanceid"]) == ("VirtualMachine", answer["id"])
    assert job["cmd"] == "org.apache.cloudstack.api.command.user.vm.DeployVMCmd"
    assert list(job["jobresult"]) == ["virtualmachine"]
    vm = job["jobresult"]["virtualmachine"]
    assert (vm["id"], vm["name"], vm["displayname"], vm["state"]) == (answer["id"], "web-" + unique,
                                                                      "Web " + unique, "Running")
    assert re.fullmatch(r"i-\d+-\d+-VM", vm["instancename"])
    assert vm["hostid"] in world.host_ids() and vm["hostname"]
    assert (vm["cpunumber"], vm["cpuspeed"], vm["memory"], vm["haenable"]) == (1, 500, 512, False)
    assert (vm["zoneid"], vm["zonename"], vm["templateid"], vm["serviceofferingid"], vm["hypervisor"]) == (
        world.zone["id"], world.zone["name"], world.template["id"], world.offering["id"], "Simulator")
    assert (vm["account"], vm["domain"]) == ("admin", "ROOT")
    [nic] = vm["nic"]
    assert re.fullmatch(r"02:00(:[0-9a-f]{2}){4}", nic["macaddress"]) and nic["isdefault"] is True
    assert DATE.match(vm["created"]) and vm["tags"] == []
    assert vm_of(api, vm["id"]) == vm
    assert {"VM.CREATE", "VM.START"} <= {e.type for e in events_of(engine, vm["id"])}


def test_deploy_without_a_name_names_the_vm_after_its_uuid(api, world):
    vm = world.deploy()
    assert vm["name"] == "VM-" + vm["id"] and vm["displayname"] == vm["name"]


def test_deploy_with_startvm_false_leaves_it_stopped(api, world):
    vm = world.deploy(startvm="false")
    assert vm["state"] == "Stopped" and "hostid" not in vm
    started = vm_job(api, "startVirtualMachine", id=vm["id"])
    assert started["state"] == "Running" and started["hostid"] in world.host_ids()


def test_stop_start_reboot_destroy_expunge(api, engine, world):
    vm = world.deploy()
    stopped = vm_job(api, "stopVirtualMachine", id=vm["id"])
    assert stopped["state"] == "Stopped" and "hostid" not in stopped and "hostname" not in stopped
    assert vm_job(api, "stopVirtualMachine", id=vm["id"])["state"] == "Stopped"     # idempotent
    text = failed_job(api, "rebootVirtualMachine", 530, id=vm["id"])
    assert text.startswith("Failed to reboot vm instance: VM %s is Stopped" % vm["instancename"])
    started = vm_job(api, "startVirtualMachine", id=vm["id"])
    assert started["state"] == "Running" and started["hostid"] == vm["hostid"]    # the last host first
    assert vm_job(api, "startVirtualMachine", id=vm["id"])["state"] == "Running"    # idempotent
    assert vm_job(api, "rebootVirtualMachine", id=vm["id"])["state"] == "Running"
    forced = vm_job(api, "stopVirtualMachine", id=vm["id"], forced="true")
    assert forced["state"] == "Stopped"
    vm_job(api, "startVirtualMachine", id=vm["id"])
    destroyed = vm_job(api, "destroyVirtualMachine", id=vm["id"])
    assert destroyed["state"] == "Destroyed" and "hostid" not in destroyed
    assert vm_of(api, vm["id"])["state"] == "Destroyed"
    text = failed_job(api, "startVirtualMachine", 530, id=vm["id"])
    assert text == "Unable to start VM %s: it is Destroyed; only a Stopped VM can be started" % vm["instancename"]
    expunged = vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge="true")
    assert expunged["state"] == "Expunging"
    assert vm_of(api, vm["id"]) is None
    types = {e.type for e in events_of(engine, vm["id"])}
    assert {"VM.STOP", "VM.REBOOT", "VM.DESTROY", "VM.EXPUNGE"} <= types
    text = failed_job(api, "stopVirtualMachine", 431, id=vm["id"])
    assert text == "Unable to find virtual machine by id %s; it was expunged" % vm["id"]


def test_job_instance_of_vm_commands(api, world):
    vm = world.deploy()
    for command in ("rebootVirtualMachine", "stopVirtualMachine", "startVirtualMachine"):
        answer, job = run_job(api, command, id=vm["id"])
        assert set(answer) == {"jobid"}
        assert (job["jobinstancetype"], job["jobinstanceid"]) == ("VirtualMachine", vm["id"])
        assert job["jobresult"].get("virtualmachine", {}).get("id") == vm["id"], job["jobresult"]


def test_list_virtual_machines_filters(api, world, unique):
    a = world.deploy(name="alpha-" + unique)
    b = world.deploy(name="beta-" + unique, startvm="false")
    mine = api.listVirtualMachines(zoneid=world.zone["id"])
    assert mine["count"] == 2 and [v["id"] for v in mine["virtualmachine"]] == [a["id"], b["id"]]
    assert [v["id"] for v in api.listVirtualMachines(name="ALPHA-" + unique)["virtualmachine"]] == [a["id"]]
    assert [v["id"] for v in api.listVirtualMachines(zoneid=world.zone["id"], state="stopped")["virtualmachine"]] \
        == [b["id"]]
    assert [v["id"] for v in api.listVirtualMachines(hostid=a["hostid"])["virtualmachine"]] == [a["id"]]
    assert [v["id"] for v in api.listVirtualMachines(clusterid=world.cluster["id"])["virtualmachine"]] == [a["id"]]
    assert [v["id"] for v in api.listVirtualMachines(podid=world.pod["id"])["virtualmachine"]] == [a["id"]]
    assert api.listVirtualMachines(keyword="beta-" + unique)["count"] == 1
    assert api.listVirtualMachines(ids="%s,%s" % (a["id"], b["id"]))["count"] == 2
    assert api.listVirtualMachines(zoneid=world.zone["id"], hypervisor="KVM") == {}
    assert api.listVirtualMachines(zoneid=world.zone["id"], templateid=world.template["id"])["count"] == 2
    assert api.listVirtualMachines(zoneid=world.zone["id"], serviceofferingid=world.offering["id"])["count"] == 2
    page = api.listVirtualMachines(zoneid=world.zone["id"], page=2, pagesize=1)
    assert page["count"] == 2 and [v["id"] for v in page["virtualmachine"]] == [b["id"]]
    assert api.listVirtualMachines(name="nothing-" + unique) == {}


# --- capacity ---------------------------------------------------------------------------------------


def test_running_vms_count_as_allocated_capacity(api, world):
    medium = offering(api, "Medium Instance")
    vm = world.deploy(serviceofferingid=medium["id"], hostid=world.hosts[0]["id"])
    host = host_of(api, vm["hostid"])
    assert host["id"] == world.hosts[0]["id"]
    assert host["cpuallocated"] == "50%"                      # 1000 of 2 x 1000 MHz
    assert host["memoryallocated"] == 1024 * MiB
    rows = {r["type"]: r for r in api.listCapacity(clusterid=world.cluster["id"])["capacity"]}
    assert (rows[1]["capacityused"], rows[1]["capacitytotal"]) == (1000, 4000)
    assert (rows[0]["capacityused"], rows[0]["capacitytotal"]) == (1024 * MiB, 4 * GiB)
    assert rows[3]["capacityused"] == 2 * GiB                  # the root volume
    assert pool_of(api, world.pool["id"])["disksizeallocated"] == 2 * GiB
    vm_job(api, "stopVirtualMachine", id=vm["id"])
    host = host_of(api, world.hosts[0]["id"])
    assert (host["cpuallocated"], host["memoryallocated"]) == ("0%", 0)
    assert pool_of(api, world.pool["id"])["disksizeallocated"] == 2 * GiB     # the volume stays
    vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge="true")
    assert pool_of(api, world.pool["id"])["disksizeallocated"] == 0


def test_pool_with_volumes_cannot_be_deleted(api, world):
    vm = world.deploy()
    api.enableStorageMaintenance(id=world.pool["id"], fetch_result=True)
    api_error(api.deleteStoragePool, 530, "Cannot delete pool %s as there are associated volumes for this pool"
              % world.pool["name"], id=world.pool["id"])
    api.cancelStorageMaintenance(id=world.pool["id"], fetch_result=True)
    vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge="true")


def test_planner_fills_hosts_then_fails_with_533(api, world, unique):
    big = api.createServiceOffering(name="big-" + unique, cpunumber=2, cpuspeed=1000, memory=1536)["serviceoffering"]
    placed = [world.deploy(serviceofferingid=big["id"])]
    # Half the cluster is taken; another such guest would pass the 0.85 disable threshold.
    text = failed_job(api, "deployVirtualMachine", 533, serviceofferingid=big["id"],
                      templateid=world.template["id"], zoneid=world.zone["id"])
    assert "cluster %s is above its allocated capacity disable threshold" % world.cluster["name"] in text
    for kind in ("cpu", "memory"):
        api.updateConfiguration(name="cluster.%s.allocated.capacity.disablethreshold" % kind, value="1",
                                clusterid=world.cluster["id"])
    placed.append(world.deploy(serviceofferingid=big["id"]))
    assert {vm["hostid"] for vm in placed} == world.host_ids()
    answer, job = run_job(api, "deployVirtualMachine", serviceofferingid=big["id"],
                          templateid=world.template["id"], zoneid=world.zone["id"])
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 533)
    text = job["jobresult"]["errortext"]
    vm = vm_of(api, answer["id"])
    assert text.startswith("Unable to create a deployment for VM[User|%s]: no host has 2 x 1000 MHz CPU and "
                           "1536 MiB of memory unallocated" % vm["instancename"])
    assert vm["state"] == "Error" and "hostid" not in vm
    # A failed VM is destroyed like any other.
    assert vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge="true")["state"] == "Expunging"
    # Freeing a host makes room again.
    vm_job(api, "stopVirtualMachine", id=placed[0]["id"])
    assert world.deploy(serviceofferingid=big["id"])["hostid"] == placed[0]["hostid"]


def test_planner_names_what_is_missing(api, unique):
    world = World(api, unique, hosts=1, pool=False)
    text = failed_job(api, "deployVirtualMachine", 533, serviceofferingid=world.offering["id"],
                      templateid=world.template["id"], zoneid=world.zone["id"])
    assert "no Up primary storage pool of cluster(s) %s (or zone-wide) has room for a 2 GiB root volume" % (
        world.cluster["name"]) in text
    kvm = template(api, KVM_TEMPLATE)
    text = failed_job(api, "deployVirtualMachine", 533, serviceofferingid=world.offering["id"],
                      templateid=kvm["id"], zoneid=world.zone["id"])
    assert text.endswith(": no KVM cluster in zone %s (the template is for KVM)" % world.zone["name"])
    api.updateHost(id=world.hosts[0]["id"], allocationstate="Disable")
    text = failed_job(api, "deployVirtualMachine", 533, serviceofferingid=world.offering["id"],
                      templateid=world.template["id"], zoneid=world.zone["id"])
    assert "no Up and Enabled Simulator host in zone %s" % world.zone["name"] in text
    api.updateCluster(id=world.cluster["id"], allocationstate="Disabled")
    text = failed_job(api, "deployVirtualMachine", 533, serviceofferingid=world.offering["id"],
                      templateid=world.template["id"], zoneid=world.zone["id"])
    assert "every Simulator cluster in zone %s is Disabled" % world.zone["name"] in text
    api.updateZone(id=world.zone["id"], allocationstate="Disabled")
    text = failed_job(api, "deployVirtualMachine", 533, serviceofferingid=world.offering["id"],
                      templateid=world.template["id"], zoneid=world.zone["id"])
    assert "zone %s is Disabled" % world.zone["name"] in text


def test_cpu_overcommit_lets_more_guests_in(api, world, unique):
    big = api.createServiceOffering(name="cpu-" + unique, cpunumber=2, cpuspeed=1000, memory=256)["serviceoffering"]
    host = world.hosts[0]["id"]
    first = world.deploy(serviceofferingid=big["id"], hostid=host)
    failed_job(api, "deployVirtualMachine", 533, serviceofferingid=big["id"], templateid=world.template["id"],
               zoneid=world.zone["id"], hostid=host)
    api.updateConfiguration(name="cpu.overprovisioning.factor", value="2.0", clusterid=world.cluster["id"])
    # The running guest keeps the ratio it started with (2000 MHz ÷ 1 × 2: all of the 4000
    # now offered) until a stop + start re-rates it to 2000 of them.
    failed_job(api, "deployVirtualMachine", 533, serviceofferingid=big["id"], templateid=world.template["id"],
               zoneid=world.zone["id"], hostid=host)
    vm_job(api, "stopVirtualMachine", id=first["id"])
    vm_job(api, "startVirtualMachine", id=first["id"])
    assert world.deploy(serviceofferingid=big["id"], hostid=host)["hostid"] == host


def test_hostid_places_the_vm(api, world):
    target = world.hosts[1]["id"]
    assert world.deploy(hostid=target)["hostid"] == target
    assert world.deploy(clusterid=world.cluster["id"], podid=world.pod["id"])["state"] == "Running"


# --- deploy validation (synchronous) -------------------------------------------------------------


def test_deploy_parameter_errors(api, world, unique):
    base = dict(serviceofferingid=world.offering["id"], templateid=world.template["id"], zoneid=world.zone["id"])
    for missing in ("serviceofferingid", "templateid", "zoneid"):
        params = {k: v for k, v in base.items() if k != missing}
        api_error(api.deployVirtualMachine, 431, missing_text("deployVirtualMachine", missing), 9999, **params)
    ghost = str(uuid.uuid4())
    api_error(api.deployVirtualMachine, 431, invalid_uuid_text("deployVirtualMachine", "templateid", ghost),
              4350, **dict(base, templateid=ghost))
    for bad in ("1web", "web_1", "-web", "x" * 64):
        api_error(api.deployVirtualMachine, 431, cserrorcode=4350, **dict(base, name=bad))
    error = api_error(api.deployVirtualMachine, 431, **dict(base, name="1web"))
    assert error["errortext"].startswith("Invalid name. Vm name can contain ASCII letters")
    error = api_error(api.deployVirtualMachine, 431, **dict(base, hypervisor="KVM"))
    assert error["errortext"].startswith("Hypervisor passed to the deployVm call, is different from the "
                                         "hypervisor type of the template")
    world.deploy(name="dup-" + unique)
    api_error(api.deployVirtualMachine, 431, "A virtual machine with name DUP-%s already exists in zone %s for "
              "account admin; choose another name" % (unique, world.zone["name"]), **dict(base, name="DUP-" + unique))
    other = new_zone(api, unique)
    other_pod = new_pod(api, other, unique)
    api_error(api.deployVirtualMachine, 431, "Pod %s is not in zone %s" % (other_pod["name"], world.zone["name"]),
              **dict(base, podid=other_pod["id"]))
    error = api_error(api.deployVirtualMachine, 431, **dict(base, rootdisksize=1))
    assert error["errortext"].startswith("Root disk size override (1 GB) is smaller than template size 2 GiB")
    assert api.listVirtualMachines(zoneid=world.zone["id"])["count"] == 1


def test_root_disk_size_override(api, world):
    vm = world.deploy(rootdisksize=5)
    assert pool_of(api, world.pool["id"])["disksizeallocated"] == 5 * GiB
    vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge="true")


def test_guest_bridge_missing_on_host_starts_without_nic_and_warns(api, engine, unique):
    world = World(api, unique, hosts=1, guest_label="cloudbr9")
    vm = world.deploy()
    assert vm["state"] == "Running"
    warnings = [e for e in events_of(engine, vm["id"]) if e.level == "WARN"]
    assert len(warnings) == 1 and "does not report bridge cloudbr9" in warnings[0].description
    assert warnings[0].type == "VM.START"
    # With the zone's label on the host's bridge, the same VM starts with its NIC and no warning.
    world_ok = World(api, unique, hosts=1, guest_label="cloudbr0")
    vm = world_ok.deploy()
    assert [e for e in events_of(engine, vm["id"]) if e.level == "WARN"] == []


# --- accounts ---------------------------------------------------------------------------------------------


@pytest.fixture
def user_api(api, engine, unique):
    """A `cs` client of a fresh non-admin account."""
    from cs import CloudStack

    account = api.createAccount(username="u-" + unique, password="secret-" + unique, email="u@example.org",
                                firstname="U", lastname="Ser", accounttype=0)["account"]
    keys = api.registerUserKeys(id=account["user"][0]["id"])["userkeys"]
    return CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)


def test_users_see_and_touch_only_their_own_vms(api, user_api, world, unique):
    admin_vm = world.deploy()
    answer, job = run_job(user_api, "deployVirtualMachine", serviceofferingid=world.offering["id"],
                          templateid=world.template["id"], zoneid=world.zone["id"], name="own-" + unique)
    assert job["jobstatus"] == 1, job
    mine = job["jobresult"]["virtualmachine"]
    assert mine["account"] == "u-" + unique and "hostid" not in mine and "instancename" not in mine
    assert [v["id"] for v in user_api.listVirtualMachines(listall=True)["virtualmachine"]] == [mine["id"]]
    assert api.listVirtualMachines(zoneid=world.zone["id"])["count"] == 1
    assert api.listVirtualMachines(zoneid=world.zone["id"], listall=True)["count"] == 2
    assert api.listVirtualMachines(account="u-" + unique)["virtualmachine"][0]["id"] == mine["id"]
    # Refused at request time, before any job exists (as CloudStack does).
    api_error(user_api.stopVirtualMachine, 531, "Account u-%s does not have permission to operate with resource %s"
              % (unique, admin_vm["id"]), 4365, id=admin_vm["id"])
    api_error(user_api.deployVirtualMachine, 531, "Parameter hostid can only be specified by a Root Admin, "
              "permission denied", 4365, serviceofferingid=world.offering["id"], templateid=world.template["id"],
              zoneid=world.zone["id"], hostid=world.hosts[0]["id"])
    text = failed_job(user_api, "destroyVirtualMachine", 531, id=mine["id"], expunge="true")
    assert text.startswith("Parameter expunge can be passed by Admin only.")
    assert vm_job(user_api, "stopVirtualMachine", id=mine["id"])["state"] == "Stopped"
    with pytest.raises(CloudStackApiException) as caught:
        user_api.createServiceOffering(name="x", cpunumber=1, cpuspeed=1, memory=64)
    assert caught.value.response.status_code == 432     # not among the User role's commands
    assert user_api.listServiceOfferings(name="Small Instance")["count"] == 1


def test_list_apis_declares_vm_commands_async(api):
    apis = {a["name"]: a for a in api.listApis()["api"]}
    for name in ("deployVirtualMachine", "startVirtualMachine", "stopVirtualMachine", "rebootVirtualMachine",
                 "destroyVirtualMachine"):
        assert apis[name]["isasync"] is True
    for name in ("listVirtualMachines", "listServiceOfferings", "createServiceOffering", "listTemplates"):
        assert apis[name]["isasync"] is False


# --- reconciliation with what hosts report -------------------------------------------------------------


def test_guest_lost_by_its_host_is_marked_stopped_not_restarted(fresh_engine, unique):
    api = fresh_engine.client()
    world = World(api, unique, hosts=1)
    vm = world.deploy()
    api.updateConfiguration(name="ping.interval", value="1")
    # A restarted engine restarts its simulated hosts empty: the guest is gone from the hypervisor.
    fresh_engine.restart()
    api = fresh_engine.client()
    deadline = time.monotonic() + 30
    while vm_of(api, vm["id"])["state"] != "Stopped" and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped = vm_of(api, vm["id"])
    assert stopped["state"] == "Stopped" and "hostid" not in stopped
    [warning] = [e for e in events_of(fresh_engine, vm["id"]) if e.level == "WARN"]
    assert warning.type == "VM.STOP" and "stopped outside the engine" in warning.description
    assert host_of(api, world.hosts[0]["id"])["memoryallocated"] == 0
    assert vm_job(api, "startVirtualMachine", id=vm["id"])["state"] == "Running"
