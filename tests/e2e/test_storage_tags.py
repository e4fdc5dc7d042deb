"""Storage tags and disk offerings against a live engine: root and data volumes go to pools
whose tags contain all of their offering's, listVolumes shows where each lives, and bad input
is refused before anything is created."""

import pytest

from tests.support.hierarchy import api_error, new_cluster, new_pod, new_zone, physical_network
from tests.support.jobs import run_job

GiB = 1024 ** 3
SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"


class Tagged:
    """An Enabled zone with one Simulator host and three pools: `ssd` (tags ssd,fast), `bulk`
    (tags hdd,bulk) and `plain` (no tags)."""

    def __init__(self, api, unique):
        self.api, self.unique = api, unique
        zone = new_zone(api, unique)
        physical_network(api, zone, unique)
        self.zone = api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]
        self.pod = new_pod(api, self.zone, unique)
        self.cluster = new_cluster(api, self.pod, unique)
        api.addHost(zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"],
                    hypervisor="Simulator", url="http://sim/c/h?cpus=8&cpuspeed=2000&memory=%d" % (16 * GiB))
        self.pools = {name: api.createStoragePool(
            zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"], name="%s-%s" % (name, unique),
            capacitybytes=100 * GiB, url="nfs://10.147.28.6/export/%s-%s" % (name, unique),
            **({"tags": tags} if tags else {}))["storagepool"]
            for name, tags in (("plain", None), ("ssd", "ssd,fast"), ("bulk", "hdd,bulk"))}
        self.template = api.listTemplates(templatefilter="executable", name=SIM_TEMPLATE,
                                          zoneid=self.zone["id"])["template"][0]

    def offering(self, **params):
        return self.api.createServiceOffering(name="so-%s-%s" % (self.unique, len(params)), cpunumber=1,
                                              cpuspeed=500, memory=512, **params)["serviceoffering"]

    def disk_offering(self, name, **params):
        return self.api.createDiskOffering(name="%s-%s" % (name, self.unique), **params)["diskoffering"]

    def deploy(self, offering, **params):
        return run_job(self.api, "deployVirtualMachine", serviceofferingid=offering["id"],
                       templateid=self.template["id"], zoneid=self.zone["id"], **params)

    def running(self, offering, **params):
        _answer, job = self.deploy(offering, **params)
        assert (job["jobstatus"], job["jobresultcode"]) == (1, 0), job.get("jobresult")
        return job["jobresult"]["virtualmachine"]

    def volumes(self, vm):
        return {v["type"]: v for v in self.api.listVolumes(virtualmachineid=vm["id"])["volume"]}

    def vm_count(self):
        return self.api.listVirtualMachines(zoneid=self.zone["id"], listall="true").get("count", 0)


@pytest.fixture
def tagged(api, unique):
    return Tagged(api, unique)


def destroy(api, vm):
    _answer, job = run_job(api, "destroyVirtualMachine", id=vm["id"], expunge="true")
    assert job["jobstatus"] == 1, job.get("jobresult")


def test_disk_offering_life_cycle(api, unique):
    fixed = api.createDiskOffering(name="fixed-" + unique, displaytext="Five GB on SSD", disksize=5,
                                   tags="ssd,fast", miniops=100, maxiops=500)["diskoffering"]
    assert (fixed["disksize"], fixed["iscustomized"], fixed["tags"], fixed["storagetype"]) == (5, False, "ssd,fast", "shared")
    assert (fixed["miniops"], fixed["maxiops"], fixed["displaytext"], fixed["provisioningtype"]) == (
        100, 500, "Five GB on SSD", "thin")
    custom = api.createDiskOffering(name="custom-" + unique, customized="true")["diskoffering"]
    assert (custom["disksize"], custom["iscustomized"], custom["displaytext"]) == (0, True, "custom-" + unique)
    assert "tags" not in custom

    listed = api.listDiskOfferings(keyword=unique)
    assert listed["count"] == 2 and {o["id"] for o in listed["diskoffering"]} == {fixed["id"], custom["id"]}
    assert api.listDiskOfferings(id=fixed["id"])["diskoffering"] == [fixed]

    updated = api.updateDiskOffering(id=fixed["id"], name="renamed-" + unique, tags="nvme")["diskoffering"]
    assert (updated["name"], updated["tags"], updated["disksize"]) == ("renamed-" + unique, "nvme", 5)

    assert api.deleteDiskOffering(id=fixed["id"])["success"] is True
    assert api.listDiskOfferings(id=fixed["id"]).get("diskoffering", []) == []
    api_error(api.deleteDiskOffering, 431, "Unable to find disk offering by id %s" % fixed["id"], id=fixed["id"])
    api.deleteDiskOffering(id=custom["id"])


@pytest.mark.parametrize("params, text", [
    ({"disksize": "2000"}, "Volume size: 2000GB is out of allowed range. Max: 1024 Min:1"),
    ({"disksize": "0"}, "Volume size: 0GB is out of allowed range. Max: 1024 Min:1"),
    ({}, "Disksize is required for a non-customized disk offering"),
    ({"customized": "true", "disksize": "5"}, "Disksize can't be specified for a customized disk offering"),
    ({"disksize": "5", "tags": "ssd,,fast"}, "none of them may be empty"),
    ({"disksize": "5", "tags": "ssd,"}, "none of them may be empty"),
    ({"disksize": "5", "miniops": "500", "maxiops": "100"}, "The min IOPS must be less than or equal to the max IOPS"),
])
def test_bad_disk_offerings_are_refused_and_nothing_is_created(api, unique, params, text):
    error = api_error(api.createDiskOffering, 431, name="bad-" + unique, **params)
    assert text in error["errortext"]
    assert api.listDiskOfferings(name="bad-" + unique).get("count", 0) == 0


def test_service_offering_tags_and_empty_tag_items(api, unique):
    offering = api.createServiceOffering(name="tagged-" + unique, cpunumber=1, cpuspeed=500, memory=512,
                                         tags="ssd,fast")["serviceoffering"]
    assert offering["storagetags"] == "ssd,fast"
    assert api.listServiceOfferings(id=offering["id"])["serviceoffering"][0]["storagetags"] == "ssd,fast"
    error = api_error(api.createServiceOffering, 431, name="bad-" + unique, cpunumber=1, cpuspeed=500, memory=512,
                      tags=",ssd")
    assert "tags are comma-separated names and none of them may be empty" in error["errortext"]
    assert api.listServiceOfferings(name="bad-" + unique).get("count", 0) == 0


def test_root_and_data_volumes_follow_their_tags(api, tagged):
    offering = tagged.offering(tags="ssd")
    disk = tagged.disk_offering("bulk", disksize=5, tags="bulk")
    vm = tagged.running(offering, diskofferingid=disk["id"])
    volumes = tagged.volumes(vm)
    root, data = volumes["ROOT"], volumes["DATADISK"]
    assert (root["storageid"], root["storage"]) == (tagged.pools["ssd"]["id"], tagged.pools["ssd"]["name"])
    assert (data["storageid"], data["storage"]) == (tagged.pools["bulk"]["id"], tagged.pools["bulk"]["name"])
    assert (root["state"], data["state"]) == ("Ready", "Ready")
    assert (root["deviceid"], data["deviceid"]) == (0, 1)
    assert (data["size"], data["diskofferingid"], data["diskofferingname"]) == (5 * GiB, disk["id"], disk["name"])
    assert (root["serviceofferingid"], root["virtualmachineid"], root["vmname"]) == (offering["id"], vm["id"], vm["name"])
    assert all(v["zoneid"] == tagged.zone["id"] and v["created"] for v in volumes.values())
    assert "diskofferingid" not in root
    # Filters: by pool, by type.
    on_bulk = api.listVolumes(storageid=tagged.pools["bulk"]["id"], listall="true")["volume"]
    assert [v["id"] for v in on_bulk] == [data["id"]]
    assert [v["id"] for v in api.listVolumes(virtualmachineid=vm["id"], type="DATADISK")["volume"]] == [data["id"]]
    # A pool's allocated bytes count the data volume.
    pool = api.listStoragePools(id=tagged.pools["bulk"]["id"])["storagepool"][0]
    assert pool["disksizeallocated"] == 5 * GiB
    destroy(api, vm)
    assert api.listVolumes(virtualmachineid=vm["id"]).get("volume", []) == []
    # The expunge kept the data volume, detached, on its pool until it is deleted.
    assert api.listStoragePools(id=tagged.pools["bulk"]["id"])["storagepool"][0]["disksizeallocated"] == 5 * GiB
    _answer, job = run_job(api, "deleteVolume", id=data["id"])
    assert job["jobstatus"] == 1, job
    assert api.listStoragePools(id=tagged.pools["bulk"]["id"])["storagepool"][0]["disksizeallocated"] == 0


def test_customized_disk_offering_takes_the_deployments_size(api, tagged):
    offering = tagged.offering()
    custom = tagged.disk_offering("custom", customized="true", tags="fast")
    vm = tagged.running(offering, diskofferingid=custom["id"], size=20)
    data = tagged.volumes(vm)["DATADISK"]
    assert (data["size"], data["storageid"]) == (20 * GiB, tagged.pools["ssd"]["id"])
    destroy(api, vm)


@pytest.mark.parametrize("size, text", [
    (None, "This disk offering requires a custom size specified"),
    ("2000", "Volume size: 2000GB is out of allowed range. Max: 1024 Min:1"),
    ("0", "Volume size: 0GB is out of allowed range. Max: 1024 Min:1"),
])
def test_bad_data_disk_sizes_create_nothing(api, tagged, size, text):
    offering = tagged.offering()
    custom = tagged.disk_offering("custom", customized="true")
    before = tagged.vm_count()
    params = {"size": size} if size is not None else {}
    error = api_error(api.deployVirtualMachine, 431, serviceofferingid=offering["id"],
                      templateid=tagged.template["id"], zoneid=tagged.zone["id"], diskofferingid=custom["id"], **params)
    assert text in error["errortext"]
    assert tagged.vm_count() == before


@pytest.mark.parametrize("kind", ["root", "data"])
def test_no_pool_with_the_tags_is_533_naming_them(api, tagged, kind):
    if kind == "root":
        offering, params = tagged.offering(tags="nvme,ssd"), {}
        source = "service offering"
    else:
        disk = tagged.disk_offering("nvme", disksize=5, tags="nvme")
        offering, params = tagged.offering(), {"diskofferingid": disk["id"]}
        source = "disk offering"
    answer, job = tagged.deploy(offering, **params)
    assert (job["jobstatus"], job["jobresultcode"]) == (2, 533), job
    text = job["jobresult"]["errortext"]
    tags = "nvme,ssd" if kind == "root" else "nvme"
    assert "carries the storage tags %s of the %s for the" % (tags, source) in text and kind + " volume" in text
    refused = api.listVirtualMachines(id=answer["id"])["virtualmachine"][0]
    assert refused["state"] == "Error" and "hostid" not in refused
    # No volume was placed or created anywhere.
    volumes = api.listVolumes(virtualmachineid=answer["id"])["volume"]
    assert {v["state"] for v in volumes} == {"Allocated"} and not any("storageid" in v for v in volumes)
    destroy(api, refused)
