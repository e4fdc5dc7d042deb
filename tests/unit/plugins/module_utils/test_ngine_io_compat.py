"""ngine_io.cloudstack names: option aliases and flat result keys, derived from the field tables."""

from __future__ import annotations

import pytest

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    HOST,
    PHYSICAL_NETWORK,
    RESERVED_RESULT_KEYS,
    STORAGE_POOL,
    ZONE,
    CloudStackResource,
    Kind,
    add_aliases,
)
from ansible_collections.stackwright.cloudstack.plugins.modules import (
    cs_host,
    cs_physical_network,
    cs_pod,
    cs_storage_pool,
    cs_zone,
    cs_zone_info,
)

ZONE_ID = "9f1c1a0e-5b7d-4c3e-8a2f-1d2e3f4a5b6c"
ZONE_ROW = {"id": ZONE_ID, "name": "z1", "dns1": "8.8.8.8", "internaldns1": "8.8.8.8", "networktype": "Basic",
            "allocationstate": "Enabled", "localstorageenabled": False, "securitygroupsenabled": True,
            "zonetoken": "tok", "tags": []}
POD_ROW = {"id": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", "name": "p1", "zoneid": ZONE_ID, "zonename": "z1",
           "gateway": "10.0.0.1", "netmask": "255.255.255.0", "startip": ["10.0.0.10"], "endip": ["10.0.0.20"],
           "allocationstate": "Enabled"}
HOST_ROW = {"id": "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e", "name": "kvm1", "ipaddress": "192.0.2.11",
            "type": "Routing", "state": "Up", "resourcestate": "Enabled", "hypervisor": "Simulator",
            "zoneid": ZONE_ID, "zonename": "z1", "podname": "p1", "clustername": "c1", "version": "4.20.0",
            "hosttags": "perf"}


def test_compat_result_adds_ngine_io_names_beside_ours():
    flat = ZONE.compat_result(ZONE.to_result(ZONE_ROW))
    assert flat["security_groups_enabled"] is True and flat["securitygroups_enabled"] is True
    host = HOST.compat_result(HOST.to_result(HOST_ROW))
    assert (host["type"], host["host_type"]) == ("Routing", "Routing")
    assert (host["version"], host["host_version"]) == ("4.20.0", "4.20.0")
    assert (host["resource_state"], host["allocation_state"]) == ("Enabled", "enabled")
    assert host["pod"] == "p1" and host["cluster"] == "c1" and host["host_tags"] == ["perf"]


def test_compat_converters():
    pool = STORAGE_POOL.compat_result({"state": "Up"})
    assert pool["allocation_state"] == "enabled"
    assert STORAGE_POOL.compat_result({"state": "Maintenance"})["allocation_state"] == "maintenance"
    network = PHYSICAL_NETWORK.compat_result(PHYSICAL_NETWORK.to_result({"isolationmethods": "VLAN,VXLAN"}))
    assert network["isolation_methods"] == ["VLAN", "VXLAN"] and network["isolation_method"] == "VLAN,VXLAN"


def test_flat_keys_never_shadow_ansible_keys_nor_the_nested_object():
    kind = Kind("thing", "listThings", "thing", plural="things",
                fields={"changed": "changed", "thing": "thing", "failed": "failed", "name": "name"})
    flat = kind.flat_keys({"changed": "x", "thing": "y", "failed": "z", "name": "n"}, "thing")
    assert flat == {"name": "n"}
    assert {"changed", "diff", "failed", "msg", "invocation"} <= RESERVED_RESULT_KEYS


def test_aliases_come_from_the_field_table_only_for_present_options():
    spec = {"security_groups_enabled": {"type": "bool"}, "name": {"type": "str"}}
    assert ZONE.compat_aliases(spec) == {"security_groups_enabled": ["securitygroups_enabled"]}
    # The ngine_io name is an option of its own: no alias.
    assert ZONE.compat_aliases(dict(spec, securitygroups_enabled={"type": "bool"})) == {}
    # state's ngine_io result name (allocation_state) is a different option, never an alias.
    assert STORAGE_POOL.compat_aliases({"state": {"type": "str"}}) == {}
    assert add_aliases({"a": {"aliases": ["b"]}}, {"a": ["b", "c"]}) == {"a": {"aliases": ["b", "c"]}}


def test_module_spec_gets_compat_aliases_and_poll_async():
    class Probe(CloudStackResource):
        kind = STORAGE_POOL
        option_aliases = {"url": ["storage_url"]}
        allocation_state_option = True
        state_values = {"enabled": "Up", "disabled": "Disabled"}

    spec = Probe.compat_spec(Probe.__new__(Probe), {"url": {"type": "str"}, "state": {"type": "str"}})
    assert spec["url"]["aliases"] == ["storage_url"]
    assert spec["allocation_state"] == {"type": "str", "choices": ["disabled", "enabled"]}
    assert "aliases" not in spec["state"]


def test_zone_module_takes_ngine_io_option_and_returns_flat_keys(run_module, recorded_api):
    api = recorded_api(lists={"listZones": []}, answers={"createZone": {"zone": ZONE_ROW}})
    result = run_module(cs_zone.main, {"name": "z1", "dns1": "8.8.8.8", "network_type": "Basic",
                                       "securitygroups_enabled": True, "poll_async": False})
    assert api.changes() == [("createZone", {"name": "z1", "dns1": "8.8.8.8", "internaldns1": "8.8.8.8",
                                             "networktype": "Basic", "securitygroupenabled": True})]
    assert result["id"] == ZONE_ID == result["zone"]["id"]
    assert result["securitygroups_enabled"] is True and result["network_type"] == "Basic"
    assert "securitygroups_enabled" not in result["zone"]
    assert result["changed"] is True and set(result["diff"]) == {"before", "after"}


def test_flat_keys_in_check_mode_and_on_removal(run_module, recorded_api):
    recorded_api(lists={"listZones": [ZONE_ROW], "listPods": []})
    result = run_module(cs_pod.main, {"name": "p1", "zone": "z1", "gateway": "10.0.0.1", "netmask": "255.255.255.0",
                                      "start_ip": "10.0.0.10", "_ansible_check_mode": True})
    assert result["name"] == "p1" and result["zone"] == "z1" and result["start_ip"] == "10.0.0.10"
    api = recorded_api(lists={"listZones": [ZONE_ROW], "listPods": [POD_ROW]}, answers={"deletePod": {}})
    result = run_module(cs_pod.main, {"name": "p1", "zone": "z1", "state": "absent"})
    assert result["changed"] is True and result["id"] == POD_ROW["id"] and result["pod"]["id"] == POD_ROW["id"]
    assert api.changes() == [("deletePod", {"id": POD_ROW["id"]})]


def test_host_takes_ip_address_and_allocation_state(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE_ROW], "listHosts": [HOST_ROW]},
                       answers={"updateHost": {"host": dict(HOST_ROW, resourcestate="Disabled")}})
    result = run_module(cs_host.main, {"ip_address": "192.0.2.11", "zone": "z1", "allocation_state": "disabled"})
    assert api.changes() == [("updateHost", {"id": HOST_ROW["id"], "allocationstate": "Disable"})]
    assert result["allocation_state"] == "disabled" and result["host"]["resource_state"] == "Disabled"
    assert result["host_type"] == "Routing" and result["ip_address"] == "192.0.2.11"


def test_allocation_state_yields_to_an_explicit_state(run_module, recorded_api):
    api = recorded_api(lists={"listZones": [ZONE_ROW], "listHosts": [HOST_ROW]})
    result = run_module(cs_host.main, {"name": "kvm1", "zone": "z1", "state": "enabled",
                                       "allocation_state": "disabled"})
    assert result["changed"] is False and api.changes() == []


def test_storage_pool_takes_storage_url_and_storage_tag(run_module, recorded_api):
    pool = {"id": "7c6b5a49-3827-4165-9f8e-7d6c5b4a3928", "name": "pri1", "zoneid": ZONE_ID, "zonename": "z1",
            "state": "Up", "scope": "ZONE", "tags": "ssd", "type": "NetworkFilesystem"}
    recorded_api(lists={"listZones": [ZONE_ROW], "listStoragePools": []},
                 answers={"createStoragePool": {"storagepool": pool}})
    result = run_module(cs_storage_pool.main, {"name": "pri1", "zone": "z1", "scope": "zone", "hypervisor": "Simulator",
                                               "storage_url": "nfs://192.0.2.10/export", "storage_tag": ["ssd"]})
    assert result["storage_pool"]["storage_tags"] == ["ssd"] and result["allocation_state"] == "enabled"
    assert result["state"] == "Up" and result["scope"] == "ZONE"


def test_physical_network_takes_ngine_io_names(run_module, recorded_api):
    network = {"id": "8d3b4c1e-5f6a-4b7c-9d8e-1f2a3b4c5d6e", "name": "phy1", "zoneid": ZONE_ID, "zonename": "z1",
               "state": "Disabled", "isolationmethods": "VLAN", "tags": "guest"}
    api = recorded_api(lists={"listZones": [ZONE_ROW], "listPhysicalNetworks": [], "listTrafficTypes": []},
                       answers={"createPhysicalNetwork": {"physicalnetwork": network}})
    api.lists["listPhysicalNetworks"] = lambda params: [network] if "id" in params else []
    args = {"physical_network": "phy1", "zone": "z1", "isolation_method": "VLAN", "tag": "guest", "poll_async": True}
    result = run_module(cs_physical_network.main, args)
    assert api.changes()[0] == ("createPhysicalNetwork", {"name": "phy1", "zoneid": ZONE_ID,
                                                          "isolationmethods": ["VLAN"], "tags": ["guest"]})
    assert result["isolation_method"] == "VLAN" and result["physical_network"]["isolation_methods"] == ["VLAN"]


def test_info_items_carry_both_names(run_module, recorded_api):
    recorded_api(lists={"listZones": [ZONE_ROW, dict(ZONE_ROW, id="x", name="z2")]})
    result = run_module(cs_zone_info.main, {"zone": "Z1"})
    assert [zone["name"] for zone in result["zones"]] == ["z1"]
    assert result["zones"][0]["securitygroups_enabled"] is True


@pytest.mark.parametrize("option", ["securitygroups_enabled", "security_groups_enabled"])
def test_both_names_document_the_same_option(option):
    import yaml
    doc = yaml.safe_load(cs_zone.DOCUMENTATION)["options"]["security_groups_enabled"]
    assert option == "security_groups_enabled" or option in doc["aliases"]


def test_result_only_names_are_not_aliases():
    from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import IMAGE_STORE
    assert IMAGE_STORE.compat_aliases({"provider": {"type": "str"}}) == {}
    assert HOST.compat_aliases({"type": {}, "version": {}, "resource_state": {}}) == {}


def cs_module_names():
    import pathlib
    modules = pathlib.Path(cs_zone.__file__).parent
    return sorted(path.stem for path in modules.glob("cs_*.py"))


@pytest.mark.parametrize("name", cs_module_names())
def test_every_alias_is_documented(name, monkeypatch):
    """The aliases a module really accepts (its own, the field table's, the extra ones) are in its DOCUMENTATION."""
    import importlib

    import yaml

    from ansible_collections.stackwright.cloudstack.plugins.module_utils import cs_resource
    from ansible_collections.stackwright.cloudstack.plugins.doc_fragments.cloudstack import ModuleDocFragment

    module = importlib.import_module("ansible_collections.stackwright.cloudstack.plugins.modules.%s" % name)
    captured = {}

    class Capture(object):
        def __init__(self, argument_spec, **kwargs):
            captured.update(argument_spec)
            raise SystemExit(0)

    monkeypatch.setattr(cs_resource, "AnsibleModule", Capture)
    with pytest.raises(SystemExit):
        module.main()
    documented = dict(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"])
    documented.update(yaml.safe_load(module.DOCUMENTATION)["options"])
    assert sorted(captured) == sorted(documented)
    for option, spec in captured.items():
        assert sorted(spec.get("aliases", [])) == sorted(documented[option].get("aliases", [])), option


@pytest.mark.parametrize("value, validate", [("true", False), ("1", False), ("false", True), ("no", True)])
def test_dangerous_no_tls_verify_environment_turns_validation_off(value, validate, run_module, monkeypatch):
    from ansible_collections.stackwright.cloudstack.plugins.module_utils import cs_resource

    seen = {}

    def client(*args, **kwargs):
        seen.update(kwargs)
        raise cs_resource.ResourceError("stop")

    monkeypatch.setattr(cs_resource, "CloudStackClient", client)
    monkeypatch.setenv("CLOUDSTACK_DANGEROUS_NO_TLS_VERIFY", value)
    monkeypatch.setenv("CLOUDSTACK_VERIFY", "/etc/ssl/cloud-ca.pem")
    result = run_module(cs_zone_info.main, {})
    assert result["msg"] == "stop"
    assert seen["validate_certs"] is validate and seen["ca_path"] == "/etc/ssl/cloud-ca.pem"
    # An explicit option wins over the environment.
    run_module(cs_zone_info.main, {"validate_certs": True})
    assert seen["validate_certs"] is True
