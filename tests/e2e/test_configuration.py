"""Configuration against a live engine, through the `cs` client (contract §5.7, §6, §9 #13-14).

Global values changed here are put back, since the engine is shared by the whole session.
"""

import uuid

import pytest

from tests.e2e.test_storage_pools import api_error, build_site, raw_call

FIELDS = {"id", "name", "value", "defaultvalue", "scope", "category", "description", "isdynamic",
          "component", "group", "subgroup", "type"}


@pytest.fixture(scope="module")
def site(engine):
    api = engine.client()
    site = build_site(api, uuid.uuid4().hex[:8])
    site.pool = api.createStoragePool(zoneid=site.zone["id"], podid=site.pod["id"], clusterid=site.sim["id"],
                                      name="cfg-pool-%s" % site.unique,
                                      url="nfs://10.0.0.5/cfg-%s" % site.unique)["storagepool"]
    site.account = api.listAccounts(name="admin", listall=True)["account"][0]
    return site


@pytest.fixture
def restore_global(api):
    """Names given to it get their global value back after the test."""
    names = []
    yield names.append
    for name in names:
        api.resetConfiguration(name=name)


def one(api, name, **scope):
    """The configuration `name` as listConfigurations shows it (exact match among substring hits)."""
    found = [c for c in api.listConfigurations(name=name, **scope).get("configuration", []) if c["name"] == name]
    assert len(found) == 1, found
    return found[0]


def test_list_by_name_substring_any_case(api):
    res = api.listConfigurations(name="OVERPROVISIONING.Factor")
    names = [c["name"] for c in res["configuration"]]
    assert names == ["cpu.overprovisioning.factor", "mem.overprovisioning.factor",
                     "storage.overprovisioning.factor"]
    assert res["count"] == 3
    cpu = res["configuration"][0]
    assert set(cpu) == FIELDS
    assert (cpu["defaultvalue"], cpu["type"], cpu["isdynamic"]) == ("1.0", "Float", True)
    assert isinstance(cpu["id"], int)


def test_list_ordered_paged_and_filtered(api):
    everything = api.listConfigurations(fetch_list=True)
    names = [c["name"] for c in everything]
    assert names == sorted(names) and "ping.interval" in names
    first = api.listConfigurations(name="threshold", page=1, pagesize=2)
    second = api.listConfigurations(name="threshold", page=2, pagesize=2)
    assert first["count"] == second["count"] >= 4
    pages = [c["name"] for c in first["configuration"] + second["configuration"]]
    assert pages == sorted(pages) and len(set(pages)) == 4
    assert {c["category"] for c in api.listConfigurations(category="advanced")["configuration"]} == {"Advanced"}
    haproxy = [c["name"] for c in api.listConfigurations(keyword="haproxy")["configuration"]]
    assert "network.loadbalancer.haproxy.stats.visibility" in haproxy
    assert all("haproxy" in name for name in haproxy) and len(haproxy) >= 5
    status, body = raw_call(api, "listConfigurations", name="no.such.key.anywhere")
    assert (status, body) == (200, {"listconfigurationsresponse": {}})
    status, error = api_error(api.listConfigurations, pagesize=5)
    assert (status, error["errortext"]) == (431, '"page" parameter is required when "pagesize" is specified')


def test_scoped_listing_shows_only_keys_of_that_scope(api, site):
    cluster_keys = api.listConfigurations(clusterid=site.sim["id"])["configuration"]
    assert {c["scope"] for c in cluster_keys} == {"cluster"}
    names = {c["name"] for c in cluster_keys}
    assert "cpu.overprovisioning.factor" in names and "ping.interval" not in names
    assert one(api, "cpu.overprovisioning.factor", clusterid=site.sim["id"])["value"] == "1.0"
    zone_keys = api.listConfigurations(zoneid=site.zone["id"])["configuration"]
    assert "use.external.dns" in {c["name"] for c in zone_keys}
    assert {c["scope"] for c in zone_keys} == {"zone"}
    pool = one(api, "storage.overprovisioning.factor", storageid=site.pool["id"])
    assert pool["scope"] == "storagepool"
    account = one(api, "allow.public.user.templates", accountid=site.account["id"])
    assert (account["scope"], account["value"]) == ("account", "true")


def test_multiple_scope_ids_are_refused(api, site):
    for call, extra in ((api.listConfigurations, {}), (api.updateConfiguration, {"value": "2.0"}),
                        (api.resetConfiguration, {})):
        status, error = api_error(call, name="cpu.overprovisioning.factor", zoneid=site.zone["id"],
                                  clusterid=site.sim["id"], **extra)
        assert (status, error["errortext"]) == (
            431, "cannot handle multiple IDs, provide only one ID corresponding to the scope")


def test_cluster_overprovisioning_changes_cluster_ratio(api, site):
    """Fidelity check 13 (configuration part) and ngine_io's cluster task."""
    cid = site.sim["id"]
    try:
        status, body = raw_call(api, "updateConfiguration", name="cpu.overprovisioning.factor", value="2.0",
                                clusterid=cid)
        assert status == 200
        conf = body["updateconfigurationresponse"]["configuration"]
        assert (conf["name"], conf["value"], conf["scope"]) == ("cpu.overprovisioning.factor", "2.0", "cluster")
        assert api.listClusters(id=cid)["cluster"][0]["cpuovercommitratio"] == "2.0"
        assert one(api, "cpu.overprovisioning.factor", clusterid=cid)["value"] == "2.0"
        # Other clusters and the global value are untouched.
        assert api.listClusters(id=site.kvm["id"])["cluster"][0]["cpuovercommitratio"] == "1.0"
        assert one(api, "cpu.overprovisioning.factor")["value"] == "1.0"

        mem = api.updateConfiguration(name="mem.overprovisioning.factor", value="1.5", clusterid=cid)
        assert mem["configuration"]["value"] == "1.5"
        assert api.listClusters(id=cid)["cluster"][0]["memoryovercommitratio"] == "1.5"
    finally:
        reset = api.resetConfiguration(name="cpu.overprovisioning.factor", clusterid=cid)["configuration"]
        api.resetConfiguration(name="mem.overprovisioning.factor", clusterid=cid)
    # Reset at cluster scope writes the global value into the cluster detail.
    assert (reset["value"], reset["scope"]) == ("1.0", "cluster")
    cluster = api.listClusters(id=cid)["cluster"][0]
    assert (cluster["cpuovercommitratio"], cluster["memoryovercommitratio"]) == ("1.0", "1.0")


@pytest.mark.parametrize("scope", [None, "cluster"])
def test_overprovisioning_factor_at_least_one(api, site, scope):
    """Fidelity check 14."""
    extra = {"clusterid": site.sim["id"]} if scope else {}
    status, error = api_error(api.updateConfiguration, name="mem.overprovisioning.factor", value="0.5", **extra)
    assert (status, error["cserrorcode"]) == (431, 4350)
    assert error["errortext"] == "mem.overprovisioning.factor should be greater than or equal to 1 and at most 8"
    assert one(api, "mem.overprovisioning.factor", **extra)["value"] == "1.0"


@pytest.mark.parametrize("name, value, text", [
    ("no.such.setting", "1", "Config parameter with name no.such.setting doesn't exist"),
    ("vmware.recycle.hung.wokervm", "yes", "Please enter either 'true' or 'false'."),
    ("ping.interval", "often", "Please enter a valid integer value for parameter ping.interval"),
    ("agent.load.threshold", "1.5",
     "Please enter a value between 0 and 1 for the configuration parameter: agent.load.threshold"),
    ("network.loadbalancer.haproxy.stats.visibility", "everyone",
     "Please enter : global,guest-network,link-local,disabled,all,default"),
])
def test_update_errors(api, name, value, text):
    status, error = api_error(api.updateConfiguration, name=name, value=value)
    assert (status, error["errortext"]) == (431, text)


def test_scope_not_valid_for_key(api, site):
    status, error = api_error(api.updateConfiguration, name="ping.interval", value="30", zoneid=site.zone["id"])
    assert (status, error["errortext"]) == (431, "Invalid scope id provided for the parameter ping.interval")
    status, error = api_error(api.resetConfiguration, name="ping.interval", clusterid=site.sim["id"])
    assert (status, error["errortext"]) == (431, "Invalid scope id provided for the parameter ping.interval")


@pytest.mark.parametrize("name, values", [
    ("network.loadbalancer.haproxy.stats.visibility", ("global", "all")),
    ("vmware.recycle.hung.wokervm", ("false", "true")),
    ("agent.load.threshold", ("0.7", "0.81")),
])
def test_ngine_io_global_keys(api, restore_global, name, values):
    """ngine_io's configuration target: set, change, idempotent re-set, set back; values echoed verbatim."""
    restore_global(name)
    initial, changed = values
    for value in (initial, changed, changed, initial):
        conf = api.updateConfiguration(name=name, value=value)["configuration"]
        assert (conf["name"], conf["value"]) == (name, value)
        assert one(api, name)["value"] == value


@pytest.mark.parametrize("key, param, name, values", [
    ("storage", "storageid", "storage.overprovisioning.factor", ("2.0", "3.0")),
    ("account", "accountid", "allow.public.user.templates", ("true", "false")),
    ("zone", "zoneid", "use.external.dns", ("false", "true")),
    ("cluster", "clusterid", "cpu.overprovisioning.factor", ("1.0", "2.0")),
])
def test_ngine_io_scoped_keys(api, site, key, param, name, values):
    resource = {"storage": site.pool, "account": site.account, "zone": site.zone, "cluster": site.sim}[key]
    scope = {param: resource["id"]}
    expected_scope = {"storage": "storagepool"}.get(key, key)
    initial, changed = values
    try:
        for value in (initial, changed, changed, initial):
            conf = api.updateConfiguration(name=name, value=value, **scope)["configuration"]
            assert (conf["name"], conf["value"], conf["scope"]) == (name, value, expected_scope)
            listed = one(api, name, **scope)
            assert (listed["value"], listed["scope"]) == (value, expected_scope)
            if key == "storage":
                pool = api.listStoragePools(id=site.pool["id"])["storagepool"][0]
                assert pool["overprovisionfactor"] == "%.1f" % float(value)
    finally:
        api.resetConfiguration(name=name, **scope)


def test_value_verbatim_absent_empty_and_reset(api, restore_global):
    name = "agent.load.threshold"
    restore_global(name)
    assert api.updateConfiguration(name=name, value="0.50")["configuration"]["value"] == "0.50"
    # No value: nothing changes.
    assert api.updateConfiguration(name=name)["configuration"]["value"] == "0.50"
    assert one(api, name)["value"] == "0.50"
    # Empty value: null, so `value` is left out.
    cleared = api.updateConfiguration(name=name, value="")["configuration"]
    assert "value" not in cleared and "value" not in one(api, name)
    reset = api.resetConfiguration(name=name)["configuration"]
    assert reset["value"] == reset["defaultvalue"] == "0.7"
    assert one(api, name)["value"] == "0.7"


def test_global_change_is_seen_by_new_clusters(api, site, restore_global):
    """A cluster snapshots the global factors when it is added."""
    restore_global("cpu.overprovisioning.factor")
    api.updateConfiguration(name="cpu.overprovisioning.factor", value="3.0")
    cluster = api.addCluster(zoneid=site.zone["id"], podid=site.pod["id"], clustername="cfg-late-%s" % site.unique,
                             hypervisor="Simulator", clustertype="CloudManaged")["cluster"][0]
    assert cluster["cpuovercommitratio"] == "3.0"
    assert api.listClusters(id=site.sim["id"])["cluster"][0]["cpuovercommitratio"] == "1.0"
    assert one(api, "cpu.overprovisioning.factor", clusterid=cluster["id"])["value"] == "3.0"


def test_catalogue_of_hundreds_with_honoured_ones_marked(api):
    everything = api.listConfigurations(page=1, pagesize=1)
    assert everything["count"] >= 400
    ping = one(api, "ping.interval")
    assert ping["description"].endswith("The engine honours this setting.")
    ssl = one(api, "consoleproxy.sslEnabled")
    assert (ssl["value"], ssl["defaultvalue"], ssl["type"], ssl["isdynamic"], ssl["category"]) == (
        "false", "false", "Boolean", False, "Console Proxy")
    assert ssl["description"].endswith("The engine honours this setting.")
    # Stored and returned faithfully, not acted on: the console proxy runs inside the engine.
    rpfilter = one(api, "consoleproxy.disable.rpfilter")
    assert (rpfilter["value"], rpfilter["type"]) == ("true", "Boolean")
    assert "honours" not in rpfilter["description"]


def test_expunge_delay_settable_and_reset(api, restore_global):
    restore_global("expunge.delay")
    conf = api.updateConfiguration(name="expunge.delay", value="120")["configuration"]
    assert (conf["name"], conf["value"], conf["defaultvalue"]) == ("expunge.delay", "120", "86400")
    assert one(api, "expunge.delay")["value"] == "120"
    status, error = api_error(api.updateConfiguration, name="expunge.delay", value="two minutes")
    assert (status, error["errortext"]) == (431, "Please enter a valid integer value for parameter expunge.delay")
    assert api.resetConfiguration(name="expunge.delay")["configuration"]["value"] == "86400"


@pytest.mark.parametrize("key, param, name, value", [
    ("domain", "domainid", "destroy.root.volume.on.vm.destruction", "true"),
    ("zone", "zoneid", "guest.domain.suffix", "guests.example"),
    ("cluster", "clusterid", "force.ha", "true"),
    ("storage", "storageid", "storage.pool.disk.wait", "90"),
    ("account", "accountid", "allow.user.expunge.recover.vm", "true"),
])
def test_catalogue_keys_at_every_scope(api, site, key, param, name, value):
    domain = api.listDomains(name="ROOT")["domain"][0]
    resource = {"storage": site.pool, "account": site.account, "zone": site.zone, "cluster": site.sim,
                "domain": domain}[key]
    scope = {param: resource["id"]}
    expected_scope = {"storage": "storagepool"}.get(key, key)
    default = one(api, name)["value"]
    try:
        conf = api.updateConfiguration(name=name, value=value, **scope)["configuration"]
        assert (conf["value"], conf["scope"]) == (value, expected_scope)
        listed = one(api, name, **scope)
        assert (listed["value"], listed["scope"]) == (value, expected_scope)
        assert one(api, name)["value"] == default
    finally:
        api.resetConfiguration(name=name, **scope)
    assert one(api, name, **scope)["value"] == default


def test_a_secret_setting_is_never_shown(api, restore_global):
    restore_global("alert.smtp.password")
    conf = api.updateConfiguration(name="alert.smtp.password", value="Sm7p-secret")["configuration"]
    assert conf["value"] == "*****"
    listed = one(api, "alert.smtp.password")
    assert (listed["value"], listed["category"]) == ("*****", "Secure")
    assert "Sm7p-secret" not in str(api.listConfigurations(keyword="Sm7p"))
    assert api.listConfigurations(keyword="Sm7p-secret").get("configuration", []) == []
    assert one(api, "alert.smtp.username").get("value") != "*****"
