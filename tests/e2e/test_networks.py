"""Physical networks and traffic types, and the rule that gates enabling a zone."""

import pytest
from cs import CloudStackApiException

from tests.support.hierarchy import api_error, new_zone, physical_network

CANNOT_ENABLE = "Cannot enable this Zone since: "


@pytest.fixture
def api(engine):
    # Network commands are async; poll faster than cs's default of 2 s.
    return engine.client(poll_interval=0.1)


def job_error(call, **params):
    """Run an async command to its end, expecting the job to fail; returns the job's error."""
    with pytest.raises(CloudStackApiException) as caught:
        call(fetch_result=True, **params)
    return caught.value.error


def traffic_of(api, network):
    answer = api.listTrafficTypes(physicalnetworkid=network["id"])
    return {t["traffictype"]: t for t in answer.get("traffictype", [])}


def test_create_physical_network_is_an_async_create(api, unique):
    zone = new_zone(api, unique)
    answer = api.createPhysicalNetwork(zoneid=zone["id"], name="phy-" + unique, isolationmethods="vlan")
    assert set(answer) == {"id", "jobid"}
    # The row exists before the job has run.
    assert api.listPhysicalNetworks(id=answer["id"])["count"] == 1
    result = api.queryAsyncJobResult(jobid=answer["jobid"])
    while result["jobstatus"] == 0:
        result = api.queryAsyncJobResult(jobid=answer["jobid"])
    assert result["jobstatus"] == 1 and result["jobinstancetype"] == "PhysicalNetwork"
    network = result["jobresult"]["physicalnetwork"]
    assert network["id"] == answer["id"]
    assert network["state"] == "Disabled"
    assert network["isolationmethods"] == "VLAN"
    # Basic zones span their physical network over a pod, Advanced ones over the zone.
    assert network["broadcastdomainrange"] == "POD"
    assert (network["zoneid"], network["zonename"]) == (zone["id"], zone["name"])
    advanced = new_zone(api, unique, networktype="Advanced")
    assert physical_network(api, advanced, unique, traffic=())["broadcastdomainrange"] == "ZONE"


def test_physical_network_refusals_leave_nothing(api, unique):
    zone = new_zone(api, unique)
    for params, text in (
        ({"isolationmethods": "VLAN,QinQ"}, "Invalid isolation method QinQ; use one of "),
        ({"broadcastdomainrange": "Region"}, "Invalid broadcast domain range Region; use ZONE or POD"),
        ({"tags": "a,b"}, "Only one tag can be specified for a physical network at this time"),
    ):
        error = api_error(api.createPhysicalNetwork, 431, None, 4350, zoneid=zone["id"], name="bad-" + unique, **params)
        assert error["errortext"].startswith(text)
    assert api.listPhysicalNetworks(zoneid=zone["id"]) == {}


def test_list_and_update_physical_networks(api, unique):
    zone = new_zone(api, unique)
    first = physical_network(api, zone, unique, traffic=())
    second = physical_network(api, zone, unique, traffic=())
    assert api.listPhysicalNetworks(zoneid=zone["id"]) == {"count": 2, "physicalnetwork": [first, second]}
    assert api.listPhysicalNetworks(zoneid=zone["id"], name=second["name"].upper())["physicalnetwork"] == [second]
    assert api.listPhysicalNetworks(zoneid=zone["id"], page=2, pagesize=1) == {"count": 2, "physicalnetwork": [second]}
    enabled = api.updatePhysicalNetwork(id=first["id"], state="enabled", vlan="100-200", fetch_result=True)
    assert enabled["physicalnetwork"]["state"] == "Enabled"
    assert enabled["physicalnetwork"]["vlan"] == "100-200"
    error = job_error(api.updatePhysicalNetwork, id=first["id"], state="Up")
    assert error["errorcode"] == 431
    assert error["errortext"] == "Unable to resolve state 'Up' to a supported value (Enabled or Disabled)"
    assert api.listPhysicalNetworks(id=first["id"])["physicalnetwork"][0]["state"] == "Enabled"


def test_traffic_types_carry_the_kvm_label(api, unique):
    zone = new_zone(api, unique)
    network = physical_network(api, zone, unique, traffic=())
    answer = api.addTrafficType(physicalnetworkid=network["id"], traffictype="management", kvmnetworklabel="cloudbr0")
    assert set(answer) == {"id", "jobid"}
    added = api.addTrafficType(physicalnetworkid=network["id"], traffictype="Guest", kvmnetworklabel="cloudbr1",
                               fetch_result=True)["traffictype"]
    assert added == {"id": added["id"], "physicalnetworkid": network["id"], "traffictype": "Guest",
                     "kvmnetworklabel": "cloudbr1"}
    traffic = traffic_of(api, network)
    assert traffic["Management"]["id"] == answer["id"]
    assert traffic["Management"]["kvmnetworklabel"] == "cloudbr0"
    relabelled = api.updateTrafficType(id=added["id"], kvmnetworklabel="cloudbr2", fetch_result=True)["traffictype"]
    assert relabelled["kvmnetworklabel"] == "cloudbr2"
    assert traffic_of(api, network)["Guest"]["kvmnetworklabel"] == "cloudbr2"
    # A traffic type is carried once per physical network; unknown types are refused at once.
    api_error(api.addTrafficType, 431, "This physical network already supports the traffic type: Management", 4350,
              physicalnetworkid=network["id"], traffictype="MANAGEMENT")
    api_error(api.addTrafficType, 431,
              "Unable to resolve trafficType 'Video' to a supported value; use one of Public, Guest, Management, Storage",
              4350, physicalnetworkid=network["id"], traffictype="Video")
    assert sorted(traffic_of(api, network)) == ["Guest", "Management"]
    assert api.deleteTrafficType(id=added["id"], fetch_result=True) == {"success": True}
    assert sorted(traffic_of(api, network)) == ["Management"]


def test_enabling_a_zone_without_physical_network_is_refused(api, unique):
    zone = new_zone(api, unique)
    error = api_error(api.updateZone, 431, None, 4350, id=zone["id"], allocationstate="Enabled")
    assert error["errortext"] == (CANNOT_ENABLE + "No physical network is set up in the zone; create one with "
                                  "createPhysicalNetwork")
    assert api.listZones(id=zone["id"])["zone"][0]["allocationstate"] == "Disabled"


def test_enabling_needs_management_traffic_and_adds_storage_traffic(api, unique):
    zone = new_zone(api, unique)
    network = physical_network(api, zone, unique, traffic=("Guest",), label="cloudbr1")
    error = api_error(api.updateZone, 431, None, 4350, id=zone["id"], allocationstate="Enabled", dns2="1.1.1.1")
    assert error["errortext"] == (CANNOT_ENABLE + "No physical network in the zone carries Management traffic; "
                                  "add it with addTrafficType traffictype=Management")
    # Nothing of the refused update was written.
    assert "dns2" not in api.listZones(id=zone["id"])["zone"][0]
    assert sorted(traffic_of(api, network)) == ["Guest"]

    management = api.addTrafficType(physicalnetworkid=network["id"], traffictype="Management",
                                    kvmnetworklabel="cloudbr0", xennetworklabel="xenbr0",
                                    fetch_result=True)["traffictype"]
    assert api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]["allocationstate"] == "Enabled"
    traffic = traffic_of(api, network)
    assert sorted(traffic) == ["Guest", "Management", "Storage"]
    assert traffic["Storage"]["kvmnetworklabel"] == management["kvmnetworklabel"] == "cloudbr0"
    assert traffic["Storage"]["xennetworklabel"] == "xenbr0"
    # Disabling and enabling again adds no second Storage traffic type.
    api.updateZone(id=zone["id"], allocationstate="Disabled")
    api.updateZone(id=zone["id"], allocationstate="Enabled")
    assert sorted(traffic_of(api, network)) == ["Guest", "Management", "Storage"]


def test_management_traffic_may_sit_on_another_physical_network(api, unique):
    zone = new_zone(api, unique)
    physical_network(api, zone, unique, traffic=("Guest",))
    management = physical_network(api, zone, unique, traffic=("Management", "Storage"))
    assert api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]["allocationstate"] == "Enabled"
    assert sorted(traffic_of(api, management)) == ["Management", "Storage"]


def test_advanced_zone_without_security_groups_needs_public_traffic(api, unique):
    zone = new_zone(api, unique, networktype="Advanced")
    network = physical_network(api, zone, unique, traffic=("Management",))
    error = api_error(api.updateZone, 431, None, 4350, id=zone["id"], allocationstate="Enabled")
    assert error["errortext"] == (CANNOT_ENABLE + "No physical network in the zone carries Public traffic, which an "
                                  "Advanced zone without security groups needs; add it with addTrafficType "
                                  "traffictype=Public")
    api.addTrafficType(physicalnetworkid=network["id"], traffictype="Public", kvmnetworklabel="cloudbr1",
                       fetch_result=True)
    assert api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]["allocationstate"] == "Enabled"


def test_advanced_zone_with_security_groups_needs_no_public_traffic(api, unique):
    zone = new_zone(api, unique, networktype="Advanced", securitygroupenabled=True)
    physical_network(api, zone, unique, traffic=("Management",))
    assert api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]["allocationstate"] == "Enabled"


def test_removed_management_traffic_no_longer_counts(api, unique):
    zone = new_zone(api, unique)
    network = physical_network(api, zone, unique, traffic=("Management",))
    api.deleteTrafficType(id=traffic_of(api, network)["Management"]["id"], fetch_result=True)
    error = api_error(api.updateZone, 431, None, id=zone["id"], allocationstate="Enabled")
    assert "carries Management traffic" in error["errortext"]


def test_last_physical_network_of_an_enabled_zone_stays(api, unique):
    zone = new_zone(api, unique)
    network = physical_network(api, zone, unique)
    api.updateZone(id=zone["id"], allocationstate="Enabled")
    error = job_error(api.deletePhysicalNetwork, id=network["id"])
    assert error["errorcode"] == 530
    assert error["errortext"] == ("Unable to delete physical network %s: zone %s is enabled and this is its only "
                                  "physical network; disable the zone first" % (network["id"], zone["name"]))
    assert api.listPhysicalNetworks(id=network["id"])["count"] == 1
    api.updateZone(id=zone["id"], allocationstate="Disabled")
    assert api.deletePhysicalNetwork(id=network["id"], fetch_result=True) == {"success": True}
    assert api.listPhysicalNetworks(zoneid=zone["id"]) == {}
    api_error(api.addTrafficType, 431, "Unable to find physical network by id %s" % network["id"],
              physicalnetworkid=network["id"], traffictype="Guest")


def test_system_traffic_sits_on_one_physical_network_per_zone(api, unique):
    zone = new_zone(api, unique)
    first = physical_network(api, zone, unique, traffic=("Management", "Guest"))
    second = physical_network(api, zone, unique, traffic=("Guest",))
    for kind in ("Management", "public"):
        if kind == "public":
            api.addTrafficType(physicalnetworkid=first["id"], traffictype="Public", fetch_result=True)
        name = kind.capitalize()
        api_error(api.addTrafficType, 431,
                  "Zone %s already has a physical network with traffic type %s (%s); a zone carries Management, "
                  "Public, Storage traffic on one physical network each" % (zone["name"], name, first["name"]),
                  4350, physicalnetworkid=second["id"], traffictype=kind)
    assert sorted(traffic_of(api, second)) == ["Guest"]
    # Another zone is not affected.
    physical_network(api, new_zone(api, unique), unique, traffic=("Management",))
