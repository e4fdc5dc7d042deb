"""cs_api: which commands run in check mode, and what changed means."""

from __future__ import annotations

from ansible_collections.stackwright.cloudstack.plugins.modules import cs_api


def test_read_command_runs_in_check_mode_and_changes_nothing(run_module, recorded_api):
    api = recorded_api(answers={"listZones": {"count": 1, "zone": [{"name": "z1"}]}})
    result = run_module(cs_api.main, {"command": "listZones", "args": {"name": "z1"}, "_ansible_check_mode": True})
    assert api.calls == [("listZones", {"name": "z1"})]
    assert result["changed"] is False and result["result"]["zone"] == [{"name": "z1"}]


def test_other_commands_are_skipped_in_check_mode(run_module, recorded_api):
    api = recorded_api()
    result = run_module(cs_api.main, {"command": "deleteZone", "params": {"id": "x"}, "_ansible_check_mode": True})
    assert api.calls == []
    assert result["changed"] is True and result["result"] == {}
    assert result["msg"] == "deleteZone skipped in check mode: only read commands run"


def test_other_commands_run_and_report_a_change(run_module, recorded_api):
    api = recorded_api(answers={"updateZone": {"zone": {"name": "z1", "dns2": "192.0.2.53"}}})
    result = run_module(cs_api.main, {"command": "updateZone", "args": {"id": "x", "dns2": "192.0.2.53"}})
    assert api.calls == [("updateZone", {"id": "x", "dns2": "192.0.2.53"})]
    assert result["changed"] is True and result["result"]["zone"]["dns2"] == "192.0.2.53"


def test_list_key_of_an_answer():
    assert cs_api.list_key({"count": 2, "host": [{}, {}]}) == "host"
    assert cs_api.list_key({"count": 0}) is None
    assert cs_api.is_read_command("queryAsyncJobResult") and not cs_api.is_read_command("createZone")
