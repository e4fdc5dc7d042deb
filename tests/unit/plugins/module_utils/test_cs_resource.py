"""Field tables, comparison and the find -> compare -> apply flow of the module base class."""

from __future__ import annotations

import pytest

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_client import CloudStackError
from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    HOST,
    POD,
    ZONE,
    looks_like_uuid,
    values_differ,
)
from ansible_collections.stackwright.cloudstack.plugins.modules import cs_pod, cs_zone

ZONE_ID = "9f1c1a0e-5b7d-4c3e-8a2f-1d2e3f4a5b6c"
ZONE_ROW = {"id": ZONE_ID, "name": "z1", "dns1": "8.8.8.8", "internaldns1": "8.8.8.8", "dns2": "8.8.4.4",
            "networktype": "Advanced", "allocationstate": "Disabled", "localstorageenabled": False,
            "securitygroupsenabled": False, "zonetoken": "tok", "tags": []}


@pytest.mark.parametrize("want, have, differ", [
    ("8.8.8.8", "8.8.8.8", False),
    ("8.8.8.8", "1.1.1.1", True),
    ("x", None, True),
    (8080, "8080", False),
    (True, True, False),
    (True, "true", False),
    (False, True, True),
    (["perf", "gpu"], "gpu,perf", False),
    (["perf"], "gpu,perf", True),
    ([], "", False),
    ([], None, False),
    (["a"], ["a"], False),
])
def test_values_differ(want, have, differ):
    assert values_differ(want, have) is differ


def test_to_result_renames_and_converts():
    pod = POD.to_result({"id": "p", "name": "p1", "zoneid": "z", "zonename": "z1", "startip": ["10.0.0.10"],
                         "endip": ["10.0.0.20"], "allocationstate": "Enabled", "unknown": 1})
    assert pod == {"id": "p", "name": "p1", "zone_id": "z", "zone": "z1", "start_ip": "10.0.0.10",
                   "end_ip": "10.0.0.20", "allocation_state": "Enabled"}
    assert HOST.to_result({"hosttags": "perf,gpu"}) == {"host_tags": ["perf", "gpu"]}
    assert ZONE.to_result({"domain": "cloud.example"}) == {"network_domain": "cloud.example"}


def test_uuid_detection():
    assert looks_like_uuid(ZONE_ID) and looks_like_uuid(ZONE_ID.upper())
    assert not looks_like_uuid("zone1")


def test_check_mode_create_predicts_and_changes_nothing(run_module, recorded_api):
    api = recorded_api(lists={"listZones": []})
    result = run_module(cs_zone.main, {"name": "z1", "dns1": "8.8.8.8", "_ansible_check_mode": True})
    assert result["changed"] is True
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["name"] == "z1"
    assert result["diff"]["after"]["allocation_state"] == "Disabled"
    assert result["diff"]["after"]["internal_dns1"] == "8.8.8.8"
    assert result["zone"] == result["diff"]["after"]
    assert api.changes() == []


def test_create_sends_the_field_table_names(run_module, recorded_api):
    api = recorded_api(lists={"listZones": []}, answers={"createZone": {"zone": ZONE_ROW}})
    result = run_module(cs_zone.main, {"name": "z1", "dns1": "8.8.8.8", "network_domain": "cloud.example",
                                       "state": "enabled"})
    assert api.changes() == [("createZone", {"name": "z1", "dns1": "8.8.8.8", "internaldns1": "8.8.8.8",
                                             "networktype": "Advanced", "domain": "cloud.example",
                                             "allocationstate": "Enabled"})]
    assert result["zone"]["zone_token"] == "tok"


def test_unchanged_object_is_not_updated(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE_ROW]})
    result = run_module(cs_zone.main, {"name": "Z1", "dns1": "8.8.8.8", "network_type": "Basic"})
    assert result["changed"] is False
    assert result["diff"]["before"] == result["diff"]["after"]
    assert api.changes() == []


def test_update_sends_only_what_differs(run_module, recorded_api):
    updated = dict(ZONE_ROW, dns2="9.9.9.9")
    api = recorded_api(lists={"listZones": [ZONE_ROW]}, answers={"updateZone": {"zone": updated}})
    result = run_module(cs_zone.main, {"name": "z1", "dns1": "8.8.8.8", "dns2": "9.9.9.9"})
    assert api.changes() == [("updateZone", {"id": ZONE_ID, "dns2": "9.9.9.9"})]
    assert result["changed"] is True
    assert (result["diff"]["before"]["dns2"], result["diff"]["after"]["dns2"]) == ("8.8.4.4", "9.9.9.9")


def test_check_mode_update_predicts(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE_ROW]})
    result = run_module(cs_zone.main, {"name": "z1", "state": "enabled", "_ansible_check_mode": True})
    assert result["changed"] is True
    assert result["diff"]["after"]["allocation_state"] == "Enabled"
    assert result["diff"]["before"]["allocation_state"] == "Disabled"
    assert api.changes() == []


def test_delete_and_check_mode_delete(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE_ROW]}, answers={"deleteZone": {"success": True}})
    result = run_module(cs_zone.main, {"name": "z1", "state": "absent", "_ansible_check_mode": True})
    assert result["changed"] is True and result["diff"]["after"] == {} and api.changes() == []
    result = run_module(cs_zone.main, {"name": "z1", "state": "absent"})
    assert api.changes() == [("deleteZone", {"id": ZONE_ID})]
    assert result["zone"]["name"] == "z1"


def test_absent_object_stays_absent(run_module, recorded_api):
    api = recorded_api(lists={"listZones": []})
    result = run_module(cs_zone.main, {"name": "z1", "state": "absent"})
    assert result["changed"] is False and result["diff"] == {"before": {}, "after": {}}
    assert api.changes() == []


def test_create_requires_its_options(run_module, recorded_api):
    recorded_api(lists={"listZones": []})
    result = run_module(cs_zone.main, {"name": "z1"})
    assert result["failed"] is True
    assert result["msg"] == "creating zone 'z1' needs dns1"


def test_unknown_zone_is_named(run_module, recorded_api):
    recorded_api(lists={"listZones": []})
    result = run_module(cs_pod.main, {"name": "p1", "zone": "z9"})
    assert result["failed"] is True and result["msg"] == "zone 'z9' not found"


def test_lookup_by_id_uses_the_id_filter(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE_ROW], "listPods": []})
    result = run_module(cs_pod.main, {"name": "p1", "zone": ZONE_ID, "gateway": "10.0.0.1",
                                      "netmask": "255.255.255.0", "start_ip": "10.0.0.10",
                                      "_ansible_check_mode": True})
    assert ("listZones", {"id": ZONE_ID}) in api.calls
    assert result["pod"]["zone"] == "z1" and result["pod"]["zone_id"] == ZONE_ID
    assert result["pod"]["allocation_state"] == "Enabled"


def test_api_errors_fail_with_the_api_text(run_module, recorded_api):
    error = CloudStackError("updateZone failed: Please enter a valid IP address for DNS1", command="updateZone",
                            errorcode=431, cserrorcode=4350, errortext="Please enter a valid IP address for DNS1")
    recorded_api(lists={"listZones": [ZONE_ROW]}, answers={"updateZone": error})
    result = run_module(cs_zone.main, {"name": "z1", "dns1": "bad"})
    assert result["failed"] is True
    assert result["msg"] == "updateZone failed: Please enter a valid IP address for DNS1"
    assert (result["errorcode"], result["cserrorcode"]) == (431, 4350)


def test_duplicate_names_are_refused(run_module, recorded_api):
    recorded_api(lists={"listZones": [ZONE_ROW, dict(ZONE_ROW, id="other")]})
    result = run_module(cs_pod.main, {"name": "p1", "zone": "z1"})
    assert result["failed"] is True and "2 zones named 'z1'" in result["msg"]
