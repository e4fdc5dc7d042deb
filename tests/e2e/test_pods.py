"""Pods over the CloudStack API: createPod, updatePod, deletePod, listPods, against a live engine."""

import uuid

import pytest

from tests.support.hierarchy import (
    api_error,
    call_exactly,
    invalid_uuid_text,
    missing_text,
    new_cluster,
    new_pod,
    new_zone,
)


@pytest.fixture
def zone(api, unique):
    return new_zone(api, unique)


def pods_named(api, zone, name):
    return api.listPods(zoneid=zone["id"], name=name)


def test_create_pod_fidelity(api, zone, unique):
    # Fidelity check 7: a pod in a fresh Disabled zone, the end address defaulted.
    assert zone["allocationstate"] == "Disabled"
    pod = api.createPod(zoneid=zone["id"], name="p1-" + unique, startip="10.100.10.101",
                        gateway="10.100.10.1", netmask="255.255.255.0")["pod"]
    assert pod["allocationstate"] == "Enabled"
    assert pod["startip"] == ["10.100.10.101"]
    assert pod["endip"] == ["10.100.10.254"]
    assert pod["gateway"] == "10.100.10.1"
    assert pod["netmask"] == "255.255.255.0"
    assert pod["forsystemvms"] == ["0"]
    assert pod["vlanid"] == ["vlan://untagged"]
    assert pod["ipranges"] == [{"startip": "10.100.10.101", "endip": "10.100.10.254",
                                "forsystemvms": "0", "vlanid": "vlan://untagged"}]
    assert pod["zoneid"] == zone["id"]
    assert pod["zonename"] == zone["name"]
    listed = pods_named(api, zone, pod["name"])
    assert listed == {"count": 1, "pod": [pod]}


def test_end_address_defaults_to_last_usable_of_any_netmask(api, zone, unique):
    pod = new_pod(api, zone, unique, gateway="172.16.0.1", netmask="255.255.252.0", startip="172.16.1.10")
    assert pod["endip"] == ["172.16.3.254"]


def test_explicit_range_and_disabled_state(api, zone, unique):
    pod = new_pod(api, zone, unique, endip="10.100.10.150", allocationstate="disabled")
    assert (pod["startip"], pod["endip"]) == (["10.100.10.101"], ["10.100.10.150"])
    assert pod["allocationstate"] == "Disabled"


@pytest.mark.parametrize("params, text", [
    ({"gateway": "10.100.10.300"}, "The gateway is invalid"),
    ({"netmask": "255.0.255.0"}, "The netmask is invalid"),
    ({"netmask": "255.255.255.255"}, "The netmask is invalid"),
    ({"gateway": "10.100.10.0"}, "The gateway is not in the CIDR subnet."),
    ({"gateway": "10.100.10.255"}, "The gateway is not in the CIDR subnet."),
    ({"startip": "10.100.10"}, "The start address of the IP range is not a valid IP address."),
    ({"startip": ""}, "The start address of the IP range is not a valid IP address."),
    ({"endip": "nowhere"}, "The end address of the IP range is not a valid IP address."),
    ({"startip": "10.100.11.5"}, "The start address of the IP range is not in the CIDR subnet."),
    ({"endip": "10.100.11.5"}, "The end address of the IP range is not in the CIDR subnet."),
    ({"endip": "10.100.10.255"}, "The end address of the IP range is not in the CIDR subnet."),
    ({"startip": "10.100.10.200", "endip": "10.100.10.100"},
     "The start IP address must have a lower value than the end IP address."),
    ({"startip": "10.100.10.1"}, "The gateway shouldn't overlap start/end IP addresses"),
    ({"gateway": "10.100.10.120"}, "The gateway shouldn't overlap start/end IP addresses"),
    ({"allocationstate": "Enable"}, "Unable to resolve Allocation State 'Enable' to a supported state"),
])
def test_invalid_ranges_are_refused_and_leave_no_pod(api, zone, unique, params, text):
    name = "bad-" + unique
    error = api_error(lambda **kw: new_pod(api, zone, unique, name=name, **kw), 431, text, 4350, **params)
    assert error["uuidList"] == []
    assert pods_named(api, zone, name) == {}


@pytest.mark.parametrize("missing", ["name", "zoneid", "gateway", "netmask", "startip"])
def test_missing_parameters(api, zone, unique, missing):
    params = {"name": "m-" + unique, "zoneid": zone["id"], "gateway": "10.100.10.1",
              "netmask": "255.255.255.0", "startip": "10.100.10.101"}
    del params[missing]
    api_error(api.createPod, 431, missing_text("createPod", missing), 9999, **params)


def test_duplicate_name_in_zone_any_case(api, zone, unique):
    pod = new_pod(api, zone, unique, name="dup-" + unique)
    text = ("A pod with name: DUP-%s already exists in zone %s. Please specify a different pod name. "
            % (unique, zone["id"]))
    api_error(lambda **kw: new_pod(api, zone, unique, **kw), 431, text, 4350,
              name="DUP-" + unique, subnet="10.100.20")
    # The same name in another zone is fine.
    other = new_pod(api, new_zone(api, unique), unique, name=pod["name"])
    assert other["name"] == pod["name"]


def test_overlapping_pod_cidrs_in_one_zone_are_refused(api, zone, unique):
    first = new_pod(api, zone, unique, subnet="10.100.30")
    error = api_error(lambda **kw: new_pod(api, zone, unique, **kw), 431, None, 4350,
                      gateway="10.100.30.129", netmask="255.255.255.128", startip="10.100.30.130")
    assert "overlaps with the CIDR 10.100.30.0/24 of pod %s" % first["name"] in error["errortext"]
    assert "check.pod.cidrs" in error["errortext"]
    # A different subnet in the same zone, and the same subnet in another zone, are fine.
    new_pod(api, zone, unique, subnet="10.100.31")
    new_pod(api, new_zone(api, unique), unique, subnet="10.100.30")


def test_unknown_and_malformed_zone(api, unique):
    unknown = str(uuid.uuid4())
    params = {"name": "p-" + unique, "gateway": "10.1.1.1", "netmask": "255.255.255.0", "startip": "10.1.1.10"}
    api_error(api.createPod, 431, invalid_uuid_text("createPod", "zoneid", unknown), 4350, zoneid=unknown, **params)
    # A malformed UUID on a required parameter cannot be treated as absent.
    api_error(api.createPod, 431, invalid_uuid_text("createPod", "zoneid", "zone-1"), zoneid="zone-1", **params)


def test_update_pod(api, zone, unique):
    pod = new_pod(api, zone, unique)
    updated = api.updatePod(id=pod["id"], gateway="10.100.10.2")["pod"]
    assert updated["gateway"] == "10.100.10.2"
    assert updated["startip"] == pod["startip"] and updated["endip"] == pod["endip"]
    assert api.listPods(id=pod["id"])["pod"][0]["gateway"] == "10.100.10.2"
    # Newer CloudStack ignores startip/endip here; so does the engine.
    updated = api.updatePod(id=pod["id"], name="renamed-" + unique, startip="10.100.10.5", endip="10.100.10.6")["pod"]
    assert updated["name"] == "renamed-" + unique
    assert updated["startip"] == ["10.100.10.101"] and updated["endip"] == ["10.100.10.254"]
    # A wider netmask keeps the range inside the subnet.
    updated = api.updatePod(id=pod["id"], netmask="255.255.0.0")["pod"]
    assert updated["netmask"] == "255.255.0.0"


def test_pod_allocation_state_round_trip(api, zone, unique):
    pod = new_pod(api, zone, unique)
    assert api.updatePod(id=pod["id"], allocationstate="Disabled")["pod"]["allocationstate"] == "Disabled"
    assert api.listPods(id=pod["id"], allocationstate="disabled")["pod"][0]["id"] == pod["id"]
    assert api.listPods(id=pod["id"], allocationstate="Enabled") == {}
    assert api.updatePod(id=pod["id"], allocationstate="ENABLED")["pod"]["allocationstate"] == "Enabled"
    api_error(api.updatePod, 431, "Unable to resolve Allocation State 'Maintenance' to a supported state",
              4350, id=pod["id"], allocationstate="Maintenance")
    assert api.listPods(id=pod["id"])["pod"][0]["allocationstate"] == "Enabled"


@pytest.mark.parametrize("params, text", [
    ({"gateway": "10.100.10.150"}, "The gateway shouldn't overlap start/end IP addresses"),
    ({"netmask": "255.255.255.128"}, "The end address of the IP range is not in the CIDR subnet."),
    ({"gateway": "10.100.11.1"}, "The start address of the IP range is not in the CIDR subnet."),
    ({"gateway": "bogus"}, "The gateway is invalid"),
    ({"netmask": "255.255.255.1"}, "The netmask is invalid"),
])
def test_update_pod_refusals_change_nothing(api, zone, unique, params, text):
    pod = new_pod(api, zone, unique, name="u-" + unique)
    api_error(api.updatePod, 431, text, 4350, id=pod["id"], name="other-" + unique, **params)
    assert api.listPods(id=pod["id"])["pod"] == [pod]


def test_update_pod_name_and_cidr_conflicts(api, zone, unique):
    first = new_pod(api, zone, unique, subnet="10.100.40")
    second = new_pod(api, zone, unique, subnet="10.100.41")
    text = ("A pod with name: %s already exists in zone %s. Please specify a different pod name. "
            % (first["name"].upper(), zone["id"]))
    api_error(api.updatePod, 431, text, id=second["id"], name=first["name"].upper())
    error = api_error(api.updatePod, 431, None, id=second["id"], netmask="255.255.254.0")
    assert "overlaps with the CIDR 10.100.40.0/24 of pod %s" % first["name"] in error["errortext"]
    # Changing only the case of its own name is no conflict.
    assert api.updatePod(id=first["id"], name=first["name"].upper())["pod"]["name"] == first["name"].upper()


def test_delete_pod_refused_while_clusters_exist(api, zone, unique):
    pod = new_pod(api, zone, unique)
    cluster = new_cluster(api, pod, unique)
    api_error(api.deletePod, 530, "The pod cannot be deleted because there are clusters in this pod.",
              4250, id=pod["id"])
    assert api.listPods(id=pod["id"])["count"] == 1
    assert api.deleteCluster(id=cluster["id"]) == {"success": True}
    assert api.deletePod(id=pod["id"]) == {"success": True}
    # A removed pod's UUID is still recognised, but it lists nothing and cannot be changed.
    assert api.listPods(id=pod["id"]) == {}
    api_error(api.updatePod, 431, "Unable to find pod by id %s" % pod["id"], id=pod["id"], name="x")
    api_error(api.deletePod, 431, "Unable to find pod by id %s" % pod["id"], id=pod["id"])
    # Its name and subnet are free again.
    again = new_pod(api, zone, unique, name=pod["name"])
    assert again["id"] != pod["id"]


def test_unknown_and_malformed_pod_ids(api, zone, unique):
    pod = new_pod(api, zone, unique)
    unknown = str(uuid.uuid4())
    api_error(api.deletePod, 431, invalid_uuid_text("deletePod", "id", unknown), 4350, id=unknown)
    api_error(api.updatePod, 431, invalid_uuid_text("updatePod", "id", "not-a-uuid"), id="not-a-uuid")
    api_error(api.listPods, 431, invalid_uuid_text("listPods", "id", unknown), id=unknown)
    # On an optional parameter a non-UUID string (upper-case hex included) counts as absent.
    for junk in ("not-a-uuid", pod["id"].upper()):
        assert api.listPods(zoneid=zone["id"], id=junk) == {"count": 1, "pod": [pod]}
    # A zone UUID is not a pod UUID.
    api_error(api.listPods, 431, invalid_uuid_text("listPods", "id", zone["id"]), id=zone["id"])


def test_list_pods_filters(api, zone, unique):
    alpha = new_pod(api, zone, unique, name="Alpha-" + unique, subnet="10.100.50")
    beta = new_pod(api, zone, unique, name="beta-" + unique, subnet="10.100.51", allocationstate="Disabled")
    other_zone = new_zone(api, unique)
    gamma = new_pod(api, other_zone, unique, name="alpha-" + unique)

    assert api.listPods(zoneid=zone["id"]) == {"count": 2, "pod": [alpha, beta]}
    assert api.listPods(id=beta["id"]) == {"count": 1, "pod": [beta]}
    assert api.listPods(name="ALPHA-" + unique)["pod"] == [alpha, gamma]
    assert api.listPods(name="alpha-" + unique, zoneid=other_zone["id"])["pod"] == [gamma]
    # `name` matches whole names, not substrings.
    assert api.listPods(zoneid=zone["id"], name="Alpha") == {}
    assert api.listPods(zoneid=zone["id"], allocationstate="DISABLED")["pod"] == [beta]
    assert api.listPods(keyword="ETA-" + unique)["pod"] == [beta]
    assert api.listPods(keyword=unique, zoneid=zone["id"])["count"] == 2
    assert api.listPods(zoneid=zone["id"], name="nothing-" + unique) == {}
    # cs's fetch_list pages through everything.
    assert [p["id"] for p in api.listPods(zoneid=zone["id"], fetch_list=True)] == [alpha["id"], beta["id"]]


def test_list_pods_paging(api, zone, unique):
    pods = [new_pod(api, zone, unique, subnet="10.100.6%d" % i) for i in range(3)]
    assert api.listPods(zoneid=zone["id"], page=1, pagesize=2) == {"count": 3, "pod": pods[:2]}
    assert api.listPods(zoneid=zone["id"], page=2, pagesize=2) == {"count": 3, "pod": pods[2:]}
    assert api.listPods(zoneid=zone["id"], page=3, pagesize=2) == {"count": 3}
    assert api.listPods(zoneid=zone["id"], page=1, pagesize=-1) == {"count": 3, "pod": pods}
    api_error(api.listPods, 431, '"page" parameter is required when "pagesize" is specified', 9999,
              zoneid=zone["id"], pagesize=2)
    # cs always completes a page with a pagesize, so this one goes out as written.
    status, error = call_exactly(api, "listPods", zoneid=zone["id"], page="1")
    assert (status, error["cserrorcode"]) == (431, 9999)
    assert error["errortext"] == '"pagesize" parameter is required when "page" is specified'
    api_error(api.listPods, 431, "Page size can't exceed max allowed page size value: 500", 9999,
              zoneid=zone["id"], page=1, pagesize=501)
    api_error(api.listPods, 431, "Unable to execute API command listpods due to invalid value x for parameter page",
              9999, zoneid=zone["id"], page="x", pagesize=2)
