"""Zones over the CloudStack API: createZone, updateZone, deleteZone, listZones."""

import json
import uuid

import pytest

from tests.support.hierarchy import (
    api_error,
    invalid_uuid_text,
    missing_text,
    new_pod,
    new_zone,
    physical_network,
)


def test_create_zone_as_ngine_io_expects(api, unique):
    zone = api.createZone(name="z-" + unique, dns1="8.8.8.8", dns2="8.8.4.4", internaldns1="10.0.0.53",
                          internaldns2="10.0.0.54", networktype="basic")["zone"]
    assert (zone["dns1"], zone["dns2"]) == ("8.8.8.8", "8.8.4.4")
    assert (zone["internaldns1"], zone["internaldns2"]) == ("10.0.0.53", "10.0.0.54")
    assert zone["networktype"] == "Basic"
    assert zone["localstorageenabled"] is False
    assert zone["securitygroupsenabled"] is True
    assert zone["dhcpprovider"] == "VirtualRouter"
    assert zone["allocationstate"] == "Disabled"
    assert zone["tags"] == []
    uuid.UUID(zone["zonetoken"])
    assert "null" not in json.dumps(zone)
    assert api.listZones(name=zone["name"]) == {"count": 1, "zone": [zone]}


def test_advanced_zone(api, unique):
    zone = new_zone(api, unique, networktype="Advanced", guestcidraddress="10.1.1.0/24", domain="cloud.example")
    assert zone["networktype"] == "Advanced"
    assert zone["securitygroupsenabled"] is False
    assert zone["guestcidraddress"] == "10.1.1.0/24"
    assert zone["domain"] == "cloud.example"
    assert zone["internaldns1"] == "8.8.8.8"
    grouped = new_zone(api, unique, networktype="Advanced", securitygroupenabled=True)
    assert grouped["securitygroupsenabled"] is True


@pytest.mark.parametrize("params, text", [
    ({"dns1": "8.8.8"}, "Please enter a valid IP address for DNS1"),
    ({"dns2": "dns.example"}, "Please enter a valid IP address for DNS2"),
    ({"internaldns1": "10.0.0.256"}, "Please enter a valid IP address for internal DNS1"),
    ({"internaldns2": "x"}, "Please enter a valid IP address for internal DNS2"),
    ({"networktype": "Edge"}, "Invalid zone type; only Advanced and Basic values are supported"),
    ({"allocationstate": "Enable"}, "Unable to resolve Allocation State 'Enable' to a supported state"),
    ({"guestcidraddress": "10.1.1.0/24"}, "guestcidraddress can only be set for Advanced zones"),
])
def test_invalid_zone_parameters_leave_no_zone(api, unique, params, text):
    params = dict({"name": "bad-" + unique, "dns1": "8.8.8.8", "networktype": "Basic"}, **params)
    api_error(api.createZone, 431, text, 4350, **params)
    assert api.listZones(name="bad-" + unique) == {}


@pytest.mark.parametrize("missing", ["name", "dns1", "networktype"])
def test_missing_parameters(api, unique, missing):
    params = {"name": "m-" + unique, "dns1": "8.8.8.8", "networktype": "Basic"}
    del params[missing]
    api_error(api.createZone, 431, missing_text("createZone", missing), 9999, **params)


def test_duplicate_zone_names_ignore_case(api, unique):
    zone = new_zone(api, unique, name="dup-" + unique)
    text = "A zone with that name already exists. Please specify a unique zone name."
    api_error(lambda **kw: new_zone(api, unique, **kw), 431, text, 4350, name="DUP-" + unique)
    other = new_zone(api, unique)
    api_error(api.updateZone, 431, text, 4350, id=other["id"], name=zone["name"].upper())
    # Renaming a zone to its own name (any case) is no conflict.
    assert api.updateZone(id=zone["id"], name=zone["name"].upper())["zone"]["name"] == zone["name"].upper()


def test_update_zone_as_ngine_io_does(api, unique):
    zone = new_zone(api, unique)
    # ngine_io sends the same name and an unknown `networktype` parameter.
    updated = api.updateZone(id=zone["id"], name=zone["name"], networktype="Basic", internaldns1="10.0.0.1",
                             internaldns2="10.0.0.2", localstorageenabled=True)["zone"]
    assert (updated["internaldns1"], updated["internaldns2"]) == ("10.0.0.1", "10.0.0.2")
    assert updated["localstorageenabled"] is True
    assert updated["dns1"] == zone["dns1"] and updated["zonetoken"] == zone["zonetoken"]
    assert api.listZones(id=zone["id"])["zone"] == [updated]


def test_update_zone_fields_and_details(api, unique):
    zone = new_zone(api, unique, networktype="Advanced", domain="a.example")
    updated = api.updateZone(id=zone["id"], dns2="1.1.1.1", guestcidraddress="10.9.0.0/16",
                             dhcpprovider="External", details=[{"key": "rack", "value": "r1"}])["zone"]
    assert updated["dns2"] == "1.1.1.1"
    assert updated["guestcidraddress"] == "10.9.0.0/16"
    assert updated["dhcpprovider"] == "External"
    assert updated["resourcedetails"] == {"rack": "r1"}
    # An empty network domain clears it.
    cleared = api.updateZone(id=zone["id"], domain="")["zone"]
    assert "domain" not in cleared and cleared["dns2"] == "1.1.1.1"


@pytest.mark.parametrize("params, text", [
    ({"dns1": "nope"}, "Please enter a valid IP address for DNS1"),
    ({"internaldns2": "1.2.3.4.5"}, "Please enter a valid IP address for internal DNS2"),
    ({"allocationstate": "Up"}, "Unable to resolve Allocation State 'Up' to a supported state"),
])
def test_update_zone_refusals_change_nothing(api, unique, params, text):
    zone = new_zone(api, unique)
    api_error(api.updateZone, 431, text, 4350, id=zone["id"], name="changed-" + unique, **params)
    assert api.listZones(id=zone["id"])["zone"] == [zone]


def test_enable_and_disable_any_case(api, unique):
    zone = new_zone(api, unique)
    physical_network(api, zone, unique)
    assert api.updateZone(id=zone["id"], allocationstate="enabled")["zone"]["allocationstate"] == "Enabled"
    assert api.listZones(id=zone["id"])["zone"][0]["allocationstate"] == "Enabled"
    assert api.updateZone(id=zone["id"], allocationstate="DISABLED")["zone"]["allocationstate"] == "Disabled"
    assert api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]["allocationstate"] == "Enabled"


def test_create_enabled_zone_needs_a_physical_network(api, unique):
    name = "on-" + unique
    error = api_error(lambda **kw: new_zone(api, unique, **kw), 431, None, 4350, name=name, allocationstate="Enabled")
    assert error["errortext"].startswith("Cannot enable this Zone since: ")
    assert api.listZones(name=name) == {}


def test_delete_zone(api, unique):
    zone = new_zone(api, unique)
    assert api.deleteZone(id=zone["id"]) == {"success": True}
    assert api.listZones(id=zone["id"]) == {}
    api_error(api.deleteZone, 431, "Unable to find zone by id %s" % zone["id"], id=zone["id"])
    api_error(api.updateZone, 431, "Unable to find zone by id %s" % zone["id"], id=zone["id"], dns1="1.1.1.1")
    # The name can be used again.
    assert new_zone(api, unique, name=zone["name"])["id"] != zone["id"]


def test_delete_zone_refused_while_it_has_pods_or_physical_networks(api, unique):
    zone = new_zone(api, unique)
    pod = new_pod(api, zone, unique)
    api_error(api.deleteZone, 530, "The zone cannot be deleted because there are pods in this zone.", 4250,
              id=zone["id"])
    api.deletePod(id=pod["id"])
    network = physical_network(api, zone, unique)
    api_error(api.deleteZone, 530, "The zone cannot be deleted because there are physical networks in this zone.",
              4250, id=zone["id"])
    api.deletePhysicalNetwork(id=network["id"], fetch_result=True)
    assert api.deleteZone(id=zone["id"]) == {"success": True}


def test_unknown_and_malformed_zone_ids(api, unique):
    zone = new_zone(api, unique)
    unknown = str(uuid.uuid4())
    api_error(api.deleteZone, 431, invalid_uuid_text("deleteZone", "id", unknown), 4350, id=unknown)
    api_error(api.updateZone, 431, invalid_uuid_text("updateZone", "id", "zone-1"), id="zone-1")
    api_error(api.listZones, 431, invalid_uuid_text("listZones", "id", unknown), id=unknown)
    for junk in ("zone-1", zone["id"].upper()):
        assert api.listZones(id=junk, name=zone["name"])["zone"] == [zone]


def test_list_zones_filters(api, unique):
    basic = new_zone(api, unique, name="Basic-" + unique)
    advanced = new_zone(api, unique, name="adv-" + unique, networktype="Advanced")
    assert api.listZones(id=basic["id"]) == {"count": 1, "zone": [basic]}
    assert api.listZones(ids="%s,%s" % (advanced["id"], basic["id"]))["zone"] == [basic, advanced]
    assert api.listZones(name="BASIC-" + unique)["zone"] == [basic]
    # `name` matches whole names, not substrings.
    assert api.listZones(name="Basic-" + unique[:4]) == {}
    assert api.listZones(keyword=unique, networktype="advanced")["zone"] == [advanced]
    assert api.listZones(keyword="ASIC-" + unique)["zone"] == [basic]
    assert api.listZones(keyword="nothing-" + unique) == {}


def test_list_zones_paging(api, unique):
    zones = [new_zone(api, unique) for _index in range(3)]
    assert api.listZones(keyword=unique, page=1, pagesize=2) == {"count": 3, "zone": zones[:2]}
    assert api.listZones(keyword=unique, page=2, pagesize=2) == {"count": 3, "zone": zones[2:]}
    assert api.listZones(keyword=unique, page=3, pagesize=2) == {"count": 3}
    assert api.listZones(keyword=unique, fetch_list=True) == zones
    api_error(api.listZones, 431, '"page" parameter is required when "pagesize" is specified', 9999,
              keyword=unique, pagesize=2)
    api_error(api.listZones, 431, "Page size can't exceed max allowed page size value: 500", 9999,
              keyword=unique, page=1, pagesize=501)
