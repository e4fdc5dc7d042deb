"""Data volumes over the CloudStack API with the `cs` client: createVolume, attachVolume,
detachVolume, resizeVolume, deleteVolume, on Simulator hosts (their simulated agents take the
same hot-plug and resize requests a KVM agent does), and the errors of bad requests."""

from __future__ import annotations

import pytest
from cs import CloudStack

from tests.e2e.test_vms import World, events_of, vm_job
from tests.support.hierarchy import api_error
from tests.support.jobs import run_job

GiB = 1024 ** 3


def volume_job(api, command, **params):
    _answer, job = run_job(api, command, **params)
    assert (job["jobstatus"], job["jobresultcode"]) == (1, 0), job.get("jobresult")
    return job["jobresult"].get("volume", job["jobresult"])


def volume_of(api, volume_id):
    answer = api.listVolumes(id=volume_id)
    return answer["volume"][0] if answer else None


@pytest.fixture(scope="module")
def site(engine):
    """One zone of Simulator hosts for the module, with a fixed and a customized disk offering."""
    api = engine.client()
    world = World(api, "vol" + engine.backend[:3], hosts=1)
    world.fixed = api.createDiskOffering(name="fixed-1g-" + engine.backend, disksize=1)["diskoffering"]
    world.custom = api.createDiskOffering(name="custom-" + engine.backend, customized="true")["diskoffering"]
    return world


def test_volume_life_cycle_on_a_running_guest(api, engine, site, unique):
    vm = site.deploy(name="v-" + unique)
    # Created without a VM: Allocated, no storage pool, no image yet.
    volume = volume_job(api, "createVolume", name="data-" + unique, diskofferingid=site.custom["id"], size=2,
                        zoneid=site.zone["id"])
    assert (volume["state"], volume["type"], volume["size"], volume["name"]) == ("Allocated", "DATADISK", 2 * GiB,
                                                                                 "data-" + unique)
    assert "storageid" not in volume and "virtualmachineid" not in volume and "attached" not in volume
    # Attached to the running guest: created on the zone's pool and hot-plugged as vdb.
    attached = volume_job(api, "attachVolume", id=volume["id"], virtualmachineid=vm["id"])
    assert (attached["state"], attached["virtualmachineid"], attached["deviceid"]) == ("Ready", vm["id"], 1)
    assert attached["storageid"] == site.pool["id"] and "attached" in attached
    # Attached twice, deleted while attached, a ROOT volume detached: refused, nothing changed.
    api_error(api.attachVolume, 431, "Please specify a volume that is not attached to any VM: volume data-%s is "
              "attached to VM %s" % (unique, vm["name"]), id=volume["id"], virtualmachineid=vm["id"])
    api_error(api.deleteVolume, 431, id=volume["id"])
    [root] = api.listVolumes(virtualmachineid=vm["id"], type="ROOT")["volume"]
    error = api_error(api.detachVolume, 431, id=root["id"])
    assert error["errortext"].startswith("Please specify a data volume")
    # Grown live; shrinking needs shrinkok (and a guest that is not running).
    assert volume_job(api, "resizeVolume", id=volume["id"], size=3)["size"] == 3 * GiB
    error = api_error(api.resizeVolume, 431, id=volume["id"], size=1)
    assert "Need to sign off by supplying the shrinkok parameter with value of true" in error["errortext"]
    api_error(api.resizeVolume, 431, id=volume["id"], size=1, shrinkok=True)
    assert volume_of(api, volume["id"])["size"] == 3 * GiB
    # Detached (hot-unplugged), shrunk, deleted.
    detached = volume_job(api, "detachVolume", id=volume["id"])
    assert "virtualmachineid" not in detached and detached["state"] == "Ready"
    assert volume_job(api, "resizeVolume", id=volume["id"], size=1, shrinkok=True)["size"] == GiB
    assert volume_job(api, "deleteVolume", id=volume["id"]) == {"success": True}
    assert volume_of(api, volume["id"]) is None
    types = [e.type for e in events_of(engine, volume["id"])]
    assert types[0] == "VOLUME.CREATE" and {"VOLUME.ATTACH", "VOLUME.DETACH", "VOLUME.RESIZE"} <= set(types)
    assert types[-1] == "VOLUME.DELETE"
    vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge=True)


def test_attached_to_a_stopped_guest_it_is_made_at_start_and_kept_after_expunge(api, site, unique):
    vm = site.deploy(name="s-" + unique, startvm=False)
    volume = volume_job(api, "createVolume", diskofferingid=site.fixed["id"], virtualmachineid=vm["id"])
    assert (volume["state"], volume["virtualmachineid"], volume["size"]) == ("Allocated", vm["id"], GiB)
    assert volume["name"].startswith("DATA-") and volume["zoneid"] == site.zone["id"]
    vm_job(api, "startVirtualMachine", id=vm["id"])
    assert volume_of(api, volume["id"])["state"] == "Ready"
    # A fixed offering's volume is resized through another offering only.
    error = api_error(api.resizeVolume, 431, id=volume["id"], size=5)
    assert "its current disk offering must be customizable" in error["errortext"]
    # detachVolume by VM and device id.
    assert "virtualmachineid" not in volume_job(api, "detachVolume", virtualmachineid=vm["id"], deviceid=1)
    volume_job(api, "attachVolume", id=volume["id"], virtualmachineid=vm["id"], deviceid=2)
    assert volume_of(api, volume["id"])["deviceid"] == 2
    # Expunging the VM detaches its data volume: it stays, Ready, for another guest.
    vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge=True)
    kept = volume_of(api, volume["id"])
    assert kept["state"] == "Ready" and "virtualmachineid" not in kept
    assert volume_job(api, "deleteVolume", id=volume["id"]) == {"success": True}


def test_bad_volume_requests_are_refused_with_nothing_done(api, engine, site, unique):
    before = api.listVolumes(listall=True).get("count", 0)
    error = api_error(api.createVolume, 431, diskofferingid=site.fixed["id"], size=5, zoneid=site.zone["id"])
    assert error["errortext"].startswith("This disk offering does not allow custom size")
    api_error(api.createVolume, 431, diskofferingid=site.custom["id"], zoneid=site.zone["id"])
    api_error(api.createVolume, 431, name="x", zoneid=site.zone["id"])
    # A VM of another zone.
    other = World(api, unique, hosts=1)
    vm = other.deploy(name="o-" + unique, startvm=False)
    volume = volume_job(api, "createVolume", diskofferingid=site.fixed["id"], zoneid=site.zone["id"])
    error = api_error(api.attachVolume, 431, id=volume["id"], virtualmachineid=vm["id"])
    assert error["errortext"].startswith("Please specify a VM that is in the same zone as the volume")
    api_error(api.detachVolume, 431, "Volume %s is not attached to any VM" % volume["name"], id=volume["id"])
    api_error(api.detachVolume, 431, id=volume["id"], deviceid=1)
    assert volume_job(api, "deleteVolume", id=volume["id"]) == {"success": True}
    assert api.listVolumes(listall=True).get("count", 0) == before + 1      # the other VM's ROOT volume
    vm_job(api, "destroyVirtualMachine", id=vm["id"], expunge=True)
    # Over the account's volume limit: 535, and no volume is created.
    account = api.createAccount(username="vl-" + unique, password="pw-" + unique, email="v@example.org",
                                firstname="V", lastname="L", accounttype=0)["account"]
    keys = api.registerUserKeys(id=account["user"][0]["id"])["userkeys"]
    user = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"], timeout=30)
    api.updateResourceLimit(resourcetype=2, max=1, account=account["name"], domainid=account["domainid"])
    volume_job(user, "createVolume", diskofferingid=site.fixed["id"], zoneid=site.zone["id"])
    error = api_error(user.createVolume, 535, cserrorcode=4370, diskofferingid=site.fixed["id"],
                      zoneid=site.zone["id"])
    assert "Type = 'volume'" in error["errortext"]
    assert user.listVolumes()["count"] == 1
    # Another account's volume is not the user's to delete.
    theirs = volume_job(api, "createVolume", diskofferingid=site.fixed["id"], zoneid=site.zone["id"])
    api_error(user.deleteVolume, 531, id=theirs["id"])
    volume_job(api, "deleteVolume", id=theirs["id"])
