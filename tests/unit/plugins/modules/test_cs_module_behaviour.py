"""Module-specific flows (host and pool state machines, traffic types, settings) and argument checks."""

from __future__ import annotations

import json

import pytest

from ansible_collections.stackwright.cloudstack.plugins.modules import (
    cs_cluster,
    cs_configuration,
    cs_host,
    cs_host_info,
    cs_image_store,
    cs_overprovision,
    cs_physical_network,
    cs_storage_pool,
)

ZONE = {"id": "0b9a6c1e-1111-4c3e-8a2f-1d2e3f4a5b6c", "name": "z1"}
CLUSTER = {"id": "0b9a6c1e-2222-4c3e-8a2f-1d2e3f4a5b6c", "name": "c1", "zoneid": ZONE["id"], "zonename": "z1"}
HOST = {"id": "0b9a6c1e-3333-4c3e-8a2f-1d2e3f4a5b6c", "name": "kvm1", "ipaddress": "10.0.0.11", "state": "Up",
        "resourcestate": "Enabled", "type": "Routing", "hosttags": "perf", "zoneid": ZONE["id"], "zonename": "z1"}
POOL = {"id": "0b9a6c1e-4444-4c3e-8a2f-1d2e3f4a5b6c", "name": "ps1", "state": "Up", "tags": "ssd",
        "scope": "CLUSTER", "zoneid": ZONE["id"], "zonename": "z1"}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(cs_host, "POLL_INTERVAL", 0)


def host_lists(*states):
    """listHosts answers: the first for find(), then one per poll."""
    answers = [dict(HOST, resourcestate=state) for state in states]
    return lambda params: [answers.pop(0) if len(answers) > 1 else answers[0]]


def test_host_found_by_ip_address(run_module, recorded_api):
    recorded_api(lists={"listZones": [ZONE], "listHosts": [HOST]})
    result = run_module(cs_host.main, {"name": "10.0.0.11", "zone": "z1", "host_tags": ["perf"]})
    assert result["changed"] is False and result["host"]["name"] == "kvm1"


def test_host_tags_replace(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE], "listHosts": [HOST]},
                       answers={"updateHost": {"host": dict(HOST, hosttags="perf,gpu")}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "host_tags": ["gpu", "perf"]})
    assert api.changes() == [("updateHost", {"id": HOST["id"], "hosttags": "gpu,perf"})]
    assert result["diff"]["before"]["host_tags"] == ["perf"]
    assert result["diff"]["after"]["host_tags"] == ["perf", "gpu"]


def test_disabled_host_is_enabled_before_maintenance(run_module, recorded_api):
    api = recorded_api(
        lists={"listZones": [ZONE], "listHosts": host_lists("Disabled", "PrepareForMaintenance", "Maintenance")},
        answers={"updateHost": {"host": dict(HOST, resourcestate="Enabled")},
                 "prepareHostForMaintenance": {"host": dict(HOST, resourcestate="PrepareForMaintenance")}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "maintenance"})
    assert api.changes() == [("updateHost", {"id": HOST["id"], "allocationstate": "Enable"}),
                             ("prepareHostForMaintenance", {"id": HOST["id"]})]
    assert result["host"]["resource_state"] == "Maintenance"
    assert result["diff"]["before"]["resource_state"] == "Disabled"


def test_maintenance_error_state_fails(run_module, recorded_api):
    recorded_api(lists={"listZones": [ZONE], "listHosts": host_lists("Enabled", "ErrorInPrepareForMaintenance")},
                 answers={"prepareHostForMaintenance": {"host": dict(HOST, resourcestate="PrepareForMaintenance")}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "maintenance"})
    assert result["failed"] is True
    assert result["msg"] == "host 'kvm1' went to ErrorInPrepareForMaintenance instead of resource state Maintenance"


def test_maintenance_reports_where_the_guests_went(run_module, recorded_api):
    vm = {"id": "0b9a6c1e-5555-4c3e-8a2f-1d2e3f4a5b6c", "name": "web1", "state": "Running", "hostname": "kvm1"}
    stopped = dict(vm, id="0b9a6c1e-6666-4c3e-8a2f-1d2e3f4a5b6c", name="db1", state="Stopped")
    api = recorded_api(
        lists={"listZones": [ZONE], "listHosts": host_lists("Enabled", "Maintenance"),
               "listVirtualMachines": lambda params: ([dict(vm, hostname="kvm2")] if "ids" in params
                                                      else [vm, stopped])},
        answers={"prepareHostForMaintenance": {"host": dict(HOST, resourcestate="PrepareForMaintenance")}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "maintenance"})
    assert api.changes() == [("prepareHostForMaintenance", {"id": HOST["id"]})]
    assert result["migrated"] == [{"name": "web1", "id": vm["id"], "from": "kvm1", "to": "kvm2"}]


def test_a_failed_maintenance_is_cancelled_and_tried_again(run_module, recorded_api):
    api = recorded_api(
        lists={"listZones": [ZONE], "listHosts": host_lists("ErrorInPrepareForMaintenance", "Maintenance")},
        answers={"cancelHostMaintenance": {"host": dict(HOST, resourcestate="Enabled")},
                 "prepareHostForMaintenance": {"host": dict(HOST, resourcestate="Maintenance")}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "maintenance"})
    assert api.changes() == [("cancelHostMaintenance", {"id": HOST["id"]}),
                             ("prepareHostForMaintenance", {"id": HOST["id"]})]
    assert result["host"]["resource_state"] == "Maintenance"


def test_maintenance_wait_is_bounded(run_module, recorded_api):
    recorded_api(lists={"listZones": [ZONE], "listHosts": host_lists("Enabled", "PrepareForMaintenance")},
                 answers={"prepareHostForMaintenance": {"host": dict(HOST, resourcestate="PrepareForMaintenance")}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "maintenance", "wait_timeout": 0})
    assert result["failed"] is True
    assert "did not reach resource state Maintenance within 0 seconds (wait_timeout)" in result["msg"]


def test_enabled_cancels_maintenance(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE], "listHosts": [dict(HOST, resourcestate="Maintenance")]},
                       answers={"cancelHostMaintenance": {"host": HOST}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "enabled"})
    assert api.changes() == [("cancelHostMaintenance", {"id": HOST["id"]})]
    assert result["host"]["resource_state"] == "Enabled"


def test_host_removal_is_maintenance_then_delete(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE], "listHosts": host_lists("Enabled", "Maintenance")},
                       answers={"prepareHostForMaintenance": {"host": dict(HOST, resourcestate="Maintenance")},
                                "deleteHost": {"success": True}})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "absent"})
    assert [call[0] for call in api.changes()] == ["prepareHostForMaintenance", "deleteHost"]
    assert result["diff"]["after"] == {}


def test_new_host_is_added_and_awaited(run_module, recorded_api):
    pod = {"id": "0b9a6c1e-5555-4c3e-8a2f-1d2e3f4a5b6c", "name": "p1"}
    polls = [[], [dict(HOST, state="Up", hosttags="")]]
    api = recorded_api(lists={"listZones": [ZONE], "listPods": [pod], "listClusters": [CLUSTER],
                              "listHosts": lambda params: polls.pop(0)},
                       answers={"addHost": {"count": 1, "host": [dict(HOST, state="Connecting", hosttags="")]}})
    result = run_module(cs_host.main, {"name": "10.0.0.11", "zone": "z1", "pod": "p1", "cluster": "c1",
                                       "hypervisor": "KVM", "username": "root", "password": "pw"})
    assert api.changes() == [("addHost", {"zoneid": ZONE["id"], "podid": pod["id"], "clusterid": CLUSTER["id"],
                                          "url": "http://10.0.0.11", "hypervisor": "KVM", "username": "root",
                                          "password": "pw", "hosttags": None})]
    assert result["host"]["state"] == "Up"
    assert "pw" not in str(result)


def test_pool_removal_enters_maintenance_first(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE], "listStoragePools": [POOL]},
                       answers={"enableStorageMaintenance": {"storagepool": dict(POOL, state="Maintenance")},
                                "deleteStoragePool": {"success": True}})
    run_module(cs_storage_pool.main, {"name": "ps1", "zone": "z1", "state": "absent"})
    assert api.changes() == [("enableStorageMaintenance", {"id": POOL["id"]}),
                             ("deleteStoragePool", {"id": POOL["id"]})]


def test_pool_disable_from_maintenance_cancels_first(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE], "listStoragePools": [dict(POOL, state="Maintenance")]},
                       answers={"cancelStorageMaintenance": {"storagepool": POOL},
                                "updateStoragePool": {"storagepool": dict(POOL, state="Disabled")}})
    result = run_module(cs_storage_pool.main, {"name": "ps1", "zone": "z1", "state": "disabled"})
    assert api.changes() == [("cancelStorageMaintenance", {"id": POOL["id"]}),
                             ("updateStoragePool", {"id": POOL["id"], "enabled": False})]
    assert result["storage_pool"]["state"] == "Disabled"


def test_cluster_pool_needs_a_cluster(run_module, recorded_api):
    recorded_api(lists={"listZones": [ZONE], "listStoragePools": []})
    result = run_module(cs_storage_pool.main, {"name": "ps1", "zone": "z1", "url": "nfs://127.0.0.1/p"})
    assert result["msg"] == "creating storage pool 'ps1' of scope cluster needs cluster"


def test_image_store_cannot_change_in_place(run_module, recorded_api):
    store = {"id": "s", "name": "ss1", "url": "nfs://a/b", "providername": "NFS", "zoneid": ZONE["id"]}
    api = recorded_api(lists={"listZones": [ZONE], "listImageStores": [store]})
    result = run_module(cs_image_store.main, {"name": "ss1", "zone": "z1", "url": "nfs://a/c"})
    assert result["failed"] is True and "exists with url nfs://a/b" in result["msg"]
    assert api.changes() == []


def test_traffic_types_are_merged():
    merged = cs_physical_network.PhysicalNetwork.merge_traffic_types(
        [{"type": "Storage", "kvm_network_label": None}, {"type": "Management", "kvm_network_label": "cloudbr1"}],
        [{"type": "Management", "kvm_network_label": "cloudbr0"}, {"type": "Guest", "kvm_network_label": None}])
    assert merged == [{"type": "Guest", "kvm_network_label": None},
                      {"type": "Management", "kvm_network_label": "cloudbr0"},
                      {"type": "Storage", "kvm_network_label": None}]


def test_configuration_values_compare_as_strings(run_module, recorded_api):
    row = {"name": "cpu.overprovisioning.factor", "value": "2", "scope": "cluster"}
    api = recorded_api(lists={"listZones": [ZONE], "listClusters": [CLUSTER], "listConfigurations": [row]},
                       answers={"updateConfiguration": {"configuration": dict(row, value="2.0")}})
    result = run_module(cs_configuration.main, {"name": row["name"], "value": 2.0, "cluster": "c1", "zone": "z1"})
    assert api.changes() == [("updateConfiguration", {"name": row["name"], "value": "2.0",
                                                      "clusterid": CLUSTER["id"]})]
    assert result["diff"]["before"]["value"] == "2" and result["diff"]["after"]["value"] == "2.0"
    assert result["configuration"]["cluster"] == "c1"


def test_configuration_booleans_are_lower_case(run_module, recorded_api):
    row = {"name": "use.external.dns", "value": "true"}
    api = recorded_api(lists={"listZones": [ZONE], "listConfigurations": [row]})
    result = run_module(cs_configuration.main, {"name": row["name"], "value": True, "zone": "z1"})
    assert result["changed"] is False and api.changes() == []


def test_unknown_configuration_key(run_module, recorded_api):
    recorded_api(lists={"listConfigurations": [{"name": "ping.interval.extra", "value": "1"}]})
    result = run_module(cs_configuration.main, {"name": "ping.interval", "value": "30"})
    assert result["msg"] == "configuration 'ping.interval' not found"


def test_configuration_account_scope_looks_in_root(run_module, recorded_api):
    domain = {"id": "0b9a6c1e-6666-4c3e-8a2f-1d2e3f4a5b6c", "name": "ROOT", "path": "ROOT"}
    account = {"id": "0b9a6c1e-7777-4c3e-8a2f-1d2e3f4a5b6c", "name": "admin"}
    row = {"name": "allow.public.user.templates", "value": "true", "scope": "account"}
    api = recorded_api(lists={"listDomains": [domain], "listAccounts": [account], "listConfigurations": [row]})
    result = run_module(cs_configuration.main, {"name": row["name"], "value": "true", "account": "admin"})
    assert ("listAccounts", {"name": "admin", "domainid": domain["id"]}) in api.calls
    assert result["configuration"]["account"] == "admin"


@pytest.mark.parametrize("args, message", [
    ({"cpu": 0.5}, "cpu must be a number at least 1, got 0.5"),
    ({"memory": -2}, "memory must be a number at least 1, got -2.0"),
    ({"storage": 0}, "storage must be a number greater than 0, got 0.0"),
])
def test_overprovision_factors_are_validated_before_any_call(run_module, recorded_api, args, message):
    api = recorded_api()
    result = run_module(cs_overprovision.main, args)
    assert result["failed"] is True and result["msg"] == message
    assert api.calls == []


def test_overprovision_cluster_factors_and_capacity(run_module, recorded_api):
    values = {"cpu.overprovisioning.factor": "1.0", "mem.overprovisioning.factor": "1.0"}
    memory = {"type": 0, "capacitytotal": 100, "capacityused": 50}
    capacity = [[{"type": 1, "capacitytotal": 8000, "capacityused": 2000}, memory],
                [{"type": 1, "capacitytotal": 32000, "capacityused": 2000}, memory]]
    api = recorded_api(
        lists={"listClusters": [CLUSTER], "listCapacity": lambda params: capacity.pop(0),
               "listConfigurations": lambda params: [{"name": params["name"], "value": values[params["name"]]}]},
        answers={"updateConfiguration": {"configuration": {}}})
    result = run_module(cs_overprovision.main, {"cluster": "c1", "cpu": 4, "memory": 1})
    assert api.changes() == [("updateConfiguration", {"name": "cpu.overprovisioning.factor", "value": "4.0",
                                                      "clusterid": CLUSTER["id"]})]
    assert result["diff"]["before"] == {"cpu": 1.0, "memory": 1.0, "cluster": "c1"}
    assert result["diff"]["after"] == {"cpu": 4.0, "memory": 1.0, "cluster": "c1"}
    assert result["capacity_before"]["cpu"] == {"total": 8000, "used": 2000, "percent_used": 25.0}
    assert result["capacity_after"]["cpu"]["total"] == 32000


def test_overprovision_summarises_capacity_rows():
    rows = [{"type": 3, "capacitytotal": 100, "capacityused": 10},
            {"type": 3, "capacitytotal": 300, "capacityused": 30},
            {"type": 6, "capacitytotal": 5, "capacityused": 5},
            {"type": 0, "capacitytotal": 0, "capacityused": 0}]
    assert cs_overprovision.summarise_capacity(rows) == {
        "storage_allocated": {"total": 400, "used": 40, "percent_used": 10.0},
        "memory": {"total": 0, "used": 0, "percent_used": 0.0}}


@pytest.mark.parametrize("entry, args, message", [
    (cs_host.main, {"zone": "z1"}, "missing required arguments: name"),
    (cs_host.main, {"name": "h", "zone": "z1", "state": "down"}, "value of state must be one of"),
    (cs_cluster.main, {"name": "c", "zone": "z", "hypervisor": "XenServer"}, "value of hypervisor must be one of"),
    (cs_configuration.main, {"name": "x", "value": 1, "cluster": "c", "storage": "s"},
     "parameters are mutually exclusive: cluster|storage|account"),
    (cs_overprovision.main, {"cluster": "c1"}, "one of the following is required: cpu, memory, storage"),
    (cs_host_info.main, {"cluster": "c1"}, "missing parameter(s) required by 'cluster': zone"),
    (cs_physical_network.main, {"name": "n", "zone": "z", "traffic_types": [{"kvm_network_label": "br"}]},
     "missing required arguments: type found in traffic_types"),
])
def test_argument_validation(run_module, recorded_api, entry, args, message):
    api = recorded_api()
    result = run_module(entry, args)
    assert result["failed"] is True and message in result["msg"]
    assert api.calls == []


def test_missing_connection_settings_are_explained(run_module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    result = run_module(cs_host_info.main, {}, connection=False)
    assert result["failed"] is True
    assert result["msg"].startswith("missing CloudStack connection settings: api_url, api_key, api_secret")


def test_connection_settings_from_environment(run_module, recorded_api, monkeypatch):
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", "http://127.0.0.1:9/client/api")
    monkeypatch.setenv("CLOUDSTACK_KEY", "k")
    monkeypatch.setenv("CLOUDSTACK_SECRET", "s")
    recorded_api(lists={"listHosts": [HOST]})
    result = run_module(cs_host_info.main, {}, connection=False)
    assert result["hosts"][0]["name"] == "kvm1"


@pytest.fixture
def warnings_of():
    """The warning texts a module run returned (ansible keeps warnings per process: cleared first)."""
    from ansible.module_utils.common import warnings

    warnings._global_warnings.clear()
    return lambda result: [json.dumps(item) if not isinstance(item, str) else item
                           for item in result.get("warnings", [])]


def overprovision_api(recorded_api, vms, memory="1.0"):
    rows = {"cpu.overprovisioning.factor": "1.0", "mem.overprovisioning.factor": memory,
            "storage.overprovisioning.factor": "2"}
    return recorded_api(
        lists={"listZones": [ZONE], "listClusters": [CLUSTER], "listVirtualMachines": vms,
               "listConfigurations": lambda params: [{"name": params["name"], "value": rows[params["name"]]}],
               "listCapacity": [{"type": 0, "capacitytotal": 2048, "capacityused": 1024}]},
        answers={"updateConfiguration": {"configuration": {}}})


@pytest.mark.parametrize("check_mode", [False, True])
def test_overprovision_names_the_running_vms_that_keep_their_ratios(run_module, recorded_api, warnings_of,
                                                                    check_mode):
    vms = [{"id": "vm-1", "name": "web1", "details": {"cpuOvercommitRatio": "1.0", "memoryOvercommitRatio": "1.0"}},
           {"id": "vm-2", "name": "web2", "details": {"cpuOvercommitRatio": "1.0", "memoryOvercommitRatio": "2.0"}}]
    api = overprovision_api(recorded_api, vms)
    args = {"cluster": "c1", "zone": "z1", "memory": 2, "_ansible_check_mode": check_mode}
    result = run_module(cs_overprovision.main, args)
    assert result["changed"] is True
    assert result["keeping_started_ratios"] == [{"id": "vm-1", "name": "web1", "cpu": 1.0, "memory": 1.0}]
    assert ("listVirtualMachines", {"clusterid": CLUSTER["id"], "state": "Running", "listall": "true"}) in [
        (command, {k: v for k, v in params.items() if k in ("clusterid", "state", "listall")})
        for command, params in api.calls]
    [warning] = warnings_of(result)
    assert "1 running VM(s) of cluster c1 (web1) keep the over-provisioning ratios they were started with" in warning
    assert api.changes() == ([] if check_mode else [
        ("updateConfiguration", {"name": "mem.overprovisioning.factor", "value": "2.0", "clusterid": CLUSTER["id"]})])
    assert result["capacity_before"]["memory"] == {"total": 2048, "used": 1024, "percent_used": 50.0}


def test_overprovision_unchanged_factors_look_at_no_vm(run_module, recorded_api, warnings_of):
    api = overprovision_api(recorded_api, [], memory="2.0")
    result = run_module(cs_overprovision.main, {"cluster": "c1", "zone": "z1", "memory": 2})
    assert result["changed"] is False and result["keeping_started_ratios"] == []
    assert warnings_of(result) == []
    assert not any(command == "listVirtualMachines" for command, _params in api.calls)


def test_overprovision_global_change_warns_that_clusters_keep_theirs(run_module, recorded_api, warnings_of):
    overprovision_api(recorded_api, [])
    result = run_module(cs_overprovision.main, {"cpu": 3})
    assert result["changed"] is True and result["keeping_started_ratios"] == []
    [warning] = warnings_of(result)
    assert "existing clusters keep their own" in warning
