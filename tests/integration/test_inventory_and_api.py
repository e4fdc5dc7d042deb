"""The hosts inventory plugin, cs_api and the _info modules against a live engine with Simulator hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ansible import ansible_env, collection_tree
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network

BIN = Path(sys.executable).parent
RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def collections_path(tmp_path_factory):
    return collection_tree(tmp_path_factory.mktemp("collections"))


@pytest.fixture
def simulated_zone(api, unique):
    """A zone with one cluster of two Simulator hosts, the second disabled."""
    zone = new_zone(api, unique, name="invz%s" % unique)
    pod = new_pod(api, zone, unique, subnet="10.100.60", name="invp%s" % unique)
    cluster = new_cluster(api, pod, unique, name="invc%s" % unique, clustername="invc%s" % unique)
    hosts = []
    for index in range(2):
        answer = api.addHost(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"], hypervisor="Simulator",
                             url="http://sim/invc%s/h%d" % (unique, index))
        hosts.append(answer["host"][0])
    api.updateHost(id=hosts[1]["id"], allocationstate="Disable")
    return {"zone": zone, "pod": pod, "cluster": cluster, "hosts": hosts}


def plain(value):
    """ansible-inventory's JSON without its marks of untrusted strings ({"__ansible_unsafe": ...})."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return dict((key, plain(item)) for key, item in value.items())
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def inventory(path, env, cwd):
    run = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(path), "--list"], cwd=str(cwd), env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    return run, (plain(json.loads(run.stdout)) if run.returncode == 0 else None)


@pytest.mark.slow
def test_inventory_groups_simulator_hosts(engine, simulated_zone, collections_path, tmp_path, unique):
    source = tmp_path / "cloud.cloudstack_hosts.yml"
    source.write_text(json.dumps(indent=2, obj={
        "plugin": "stackwright.cloudstack.hosts",
        "api_url": engine.endpoint, "api_key": engine.api_key, "api_secret": engine.api_secret,
        "filters": {"zone": simulated_zone["zone"]["name"]},
        "compose": {"cpu_mhz": "cs_cpu_number * cs_cpu_speed"},
        "groups": {"drained": "cs_resource_state != 'Enabled'"},
        "keyed_groups": [{"key": "cs_cluster", "prefix": "in"}],
    }))
    run, listed = inventory(source, ansible_env(collections_path, tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr
    hosts = simulated_zone["hosts"]
    names = sorted(host["name"] for host in hosts)
    hostvars = listed["_meta"]["hostvars"]
    assert sorted(hostvars) == names
    for host in hosts:
        assert hostvars[host["name"]]["ansible_host"] == host["ipaddress"]
        assert hostvars[host["name"]]["cs_id"] == host["id"]
        assert hostvars[host["name"]]["cpu_mhz"] == host["cpunumber"] * host["cpuspeed"]
    members = dict((group, sorted(body.get("hosts", []))) for group, body in listed.items() if group != "_meta")
    assert members["zone_invz%s" % unique] == names
    assert members["pod_invp%s" % unique] == names
    assert members["cluster_invc%s" % unique] == names
    assert members["in_invc%s" % unique] == names
    assert members["hypervisor_simulator"] == names
    assert members["state_up"] == names
    assert members["resource_state_enabled"] == [hosts[0]["name"]]
    assert members["resource_state_disabled"] == [hosts[1]["name"]]
    assert members["drained"] == [hosts[1]["name"]]

    # A filter the API applies: only enabled hosts.
    source.write_text(json.dumps(indent=2, obj={
        "plugin": "stackwright.cloudstack.hosts",
        "api_url": engine.endpoint, "api_key": engine.api_key, "api_secret": engine.api_secret,
        "filters": {"zone": simulated_zone["zone"]["id"], "resource_state": "Enabled"},
    }))
    run, listed = inventory(source, ansible_env(collections_path, tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(listed["_meta"]["hostvars"]) == [hosts[0]["name"]]


@pytest.mark.slow
def test_inventory_errors_are_plain(engine, collections_path, tmp_path):
    source = tmp_path / "cloud.cloudstack_hosts.yml"
    source.write_text(json.dumps(indent=2, obj={
        "plugin": "stackwright.cloudstack.hosts", "api_url": engine.endpoint, "api_key": engine.api_key,
        "api_secret": engine.api_secret, "filters": {"zone": "no-such-zone"}, "strict": True}))
    env = dict(ansible_env(collections_path, tmp_path), ANSIBLE_INVENTORY_UNPARSED_FAILED="1")
    run, listed = inventory(source, env, tmp_path)
    assert listed is None
    assert run.returncode != 0
    assert "filter zone 'no-such-zone' matches 0 zones" in run.stderr
    assert "Traceback" not in run.stderr


PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Read through the raw API
      stackwright.cloudstack.cs_api:
        command: listZones
        args: {name: "%(zone)s"}
      register: zones
    - name: A change in check mode is skipped
      stackwright.cloudstack.cs_api:
        command: updateZone
        args: {id: "{{ zones.result.zone[0].id }}", dns2: 192.0.2.53}
      check_mode: true
      register: skipped
    - name: A read in check mode runs
      stackwright.cloudstack.cs_api:
        command: listHosts
        args: {zoneid: "{{ zones.result.zone[0].id }}", type: Routing}
        fetch_list: true
      check_mode: true
      register: hosts
    - name: An asynchronous command is followed to its end
      stackwright.cloudstack.cs_api:
        command: updatePhysicalNetwork
        args: {id: "%(network)s", vlan: "100-199"}
      register: updated
    - name: The _info modules
      stackwright.cloudstack.cs_physical_network_info:
        zone: "%(zone)s"
      register: networks
    - stackwright.cloudstack.cs_configuration_info:
        name: cpu.overprovisioning.factor
        zone: "%(zone)s"
        cluster: "%(cluster)s"
      register: settings
    - stackwright.cloudstack.cs_image_store_info:
        zone: "%(zone)s"
      register: stores
    - stackwright.cloudstack.cs_zone_info:
        name: "%(zone)s"
      register: after
    - ansible.builtin.assert:
        that:
          - zones is not changed and zones.result.count == 1
          - "skipped is changed and skipped.result == {} and 'skipped in check mode' in skipped.msg"
          - after.zones[0].dns2 | default(none) != "192.0.2.53"
          - hosts is not changed and hosts.result | length == 2
          - updated is changed and updated.result.physicalnetwork.vlan == "100-199"
          - networks.physical_networks | length == 1
          - networks.physical_networks[0].vlan == "100-199"
          - "networks.physical_networks[0].traffic_types == [{'type': 'Management', 'kvm_network_label': 'cloudbr0'}]"
          - settings.configurations | map(attribute="name") | list == ["cpu.overprovisioning.factor"]
          - settings.configurations[0].scope == "cluster"
          - stores.image_stores == []
"""


@pytest.mark.slow
def test_cs_api_and_info_modules(engine, api, simulated_zone, collections_path, tmp_path, unique):
    network = physical_network(api, simulated_zone["zone"], unique)
    play = tmp_path / "play.yml"
    play.write_text(PLAY % {"zone": simulated_zone["zone"]["name"], "cluster": simulated_zone["cluster"]["name"],
                            "network": network["id"]})
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(play)], cwd=str(tmp_path),
                         env=ansible_env(collections_path, tmp_path, engine), capture_output=True, text=True,
                         timeout=RUN_TIMEOUT, check=False)
    assert run.returncode == 0, run.stdout[-10000:] + run.stderr[-3000:]


@pytest.mark.slow
def test_refused_signature_names_the_causes(engine, collections_path, tmp_path):
    play = tmp_path / "play.yml"
    play.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                    "    - stackwright.cloudstack.cs_zone_info:\n")
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(play)], cwd=str(tmp_path),
                         env=ansible_env(collections_path, tmp_path, engine, secret="not-the-secret"),
                         capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    assert run.returncode != 0
    assert "refused the request's credentials" in run.stdout
    assert "api_key and api_secret" in run.stdout and "clock" in run.stdout
