"""kvm_bridge's input checks and boot-time files; the running-state side (iproute2) is covered by tests/host."""

from __future__ import annotations

import pytest
import yaml

from ansible_collections.stackwright.cloudstack.plugins.module_utils.bridge_persistence import (
    BridgeConfig,
    files_for,
    owned_files,
)
from ansible_collections.stackwright.cloudstack.plugins.modules import kvm_bridge

ADDRESSES = [
    {"family": "inet", "cidr": "192.0.2.10/24", "dynamic": False},
    {"family": "inet", "cidr": "192.0.2.11/24", "dynamic": False},
    {"family": "inet6", "cidr": "2001:db8::10/64", "dynamic": False},
]
ROUTES = [
    {"family": "-4", "dst": "default", "gateway": "192.0.2.1", "metric": 100},
    {"family": "-4", "dst": "198.51.100.0/24", "gateway": "192.0.2.254"},
    {"family": "-6", "dst": "default", "gateway": "2001:db8::1", "metric": 1024},
]
VXLAN = {"name": "vxlan100", "vni": 100, "dstport": 4789, "local": "192.0.2.10", "remote": "192.0.2.20",
         "group": None, "dev": "eth0"}


def config(**overrides):
    values = dict(name="cloudbr0", uplink="eth0", vxlans=[VXLAN], stp=False, forward_delay=0, mtu=1500,
                  addresses=ADDRESSES, routes=ROUTES)
    values.update(overrides)
    return BridgeConfig(**values)


def test_ifupdown_stanzas(tmp_path):
    (path, text), = files_for("ifupdown", config(), str(tmp_path)).items()
    assert path == str(tmp_path / "cloudbr0")
    assert text.splitlines()[1:] == [
        "",
        "auto eth0",
        "iface eth0 inet manual",
        "    mtu 1500",
        "",
        "auto vxlan100",
        "iface vxlan100 inet manual",
        "    pre-up ip link add vxlan100 type vxlan id 100 dstport 4789 local 192.0.2.10 remote 192.0.2.20 dev eth0",
        "    post-down ip link del vxlan100",
        "    mtu 1500",
        "",
        "auto cloudbr0",
        "iface cloudbr0 inet static",
        "    address 192.0.2.10/24",
        "    gateway 192.0.2.1",
        "    metric 100",
        "    bridge_ports eth0 vxlan100",
        "    bridge_stp off",
        "    bridge_fd 0",
        "    mtu 1500",
        "    up ip -4 address add 192.0.2.11/24 dev cloudbr0",
        "    up ip -4 route replace 198.51.100.0/24 via 192.0.2.254 dev cloudbr0",
        "iface cloudbr0 inet6 static",
        "    address 2001:db8::10/64",
        "    gateway 2001:db8::1",
        "    metric 1024",
    ]


def test_ifupdown_dhcp_and_vlan_names(tmp_path):
    dynamic = [{"family": "inet", "cidr": "192.0.2.50/24", "dynamic": True}]
    vlans = [{"name": "eth0.20", "id": 20, "dev": "eth0"}, {"name": "guest30", "id": 30, "dev": "eth0"}]
    (_path, text), = files_for("ifupdown", config(addresses=dynamic, routes=ROUTES[:1], vxlans=[], vlans=vlans),
                               str(tmp_path)).items()
    assert "iface cloudbr0 inet dhcp" in text
    assert "gateway" not in text and "inet6" not in text
    assert "    vlan-raw-device eth0" in text
    assert "    pre-up ip link add link eth0 name guest30 type vlan id 30" in text


def test_netplan_document(tmp_path):
    (path, text), = files_for("netplan", config(stp=True, forward_delay=4), str(tmp_path)).items()
    assert path == str(tmp_path / "90-stackwright-cloudbr0.yaml")
    network = yaml.safe_load(text)["network"]
    assert network["version"] == 2
    assert network["ethernets"] == {"eth0": {"dhcp4": False, "dhcp6": False, "accept-ra": False, "mtu": 1500}}
    assert network["tunnels"]["vxlan100"] == {"mode": "vxlan", "id": 100, "port": 4789, "local": "192.0.2.10",
                                              "remote": "192.0.2.20", "link": "eth0"}
    bridge = network["bridges"]["cloudbr0"]
    assert bridge["interfaces"] == ["eth0", "vxlan100"]
    assert bridge["addresses"] == ["192.0.2.10/24", "192.0.2.11/24", "2001:db8::10/64"]
    assert bridge["parameters"] == {"stp": True, "forward-delay": 4}
    assert {"to": "default", "via": "2001:db8::1", "metric": 1024} in bridge["routes"]
    assert bridge["dhcp4"] is False


def test_networkmanager_keyfiles_are_stable(tmp_path):
    files = files_for("networkmanager", config(), str(tmp_path))
    assert sorted(files) == [str(tmp_path / n) for n in
                             ("cloudbr0-port-eth0.nmconnection", "cloudbr0-port-vxlan100.nmconnection",
                              "cloudbr0.nmconnection")]
    bridge = files[str(tmp_path / "cloudbr0.nmconnection")]
    for line in ("type=bridge", "stp=false", "method=manual", "address1=192.0.2.10/24", "gateway=192.0.2.1",
                 "route1=198.51.100.0/24,192.0.2.254", "address1=2001:db8::10/64"):
        assert line in bridge.splitlines()
    port = files[str(tmp_path / "cloudbr0-port-eth0.nmconnection")]
    assert "master=cloudbr0" in port.splitlines() and "slave-type=bridge" in port.splitlines()
    assert files == files_for("networkmanager", config(), str(tmp_path))


def test_owned_files_finds_stale_ports(tmp_path):
    for name in ("cloudbr0.nmconnection", "cloudbr0-port-old0.nmconnection", "cloudbr1.nmconnection"):
        (tmp_path / name).write_text("x")
    assert sorted(owned_files("networkmanager", "cloudbr0", str(tmp_path))) == [
        str(tmp_path / "cloudbr0-port-old0.nmconnection"), str(tmp_path / "cloudbr0.nmconnection")]


@pytest.mark.parametrize("args, message", [
    ({"name": "a-name-longer-than-15"}, "is not a valid interface name"),
    ({"name": "cloudbr0", "uplink": "cloudbr0"}, "interface names must differ"),
    ({"name": "cloudbr0", "stp": True, "forward_delay": 1}, "forward_delay 1 is out of range: use 2 to 30"),
    ({"name": "cloudbr0", "mtu": 20}, "mtu 20 is out of range"),
    ({"name": "cloudbr0", "vlans": [{"id": 5000, "dev": "eth0"}]}, "VLAN id 5000 is out of range"),
    ({"name": "cloudbr0", "vlans": [{"id": 10}]}, "needs a parent interface"),
    ({"name": "cloudbr0", "vxlans": [{"vni": 0}]}, "vni 0 is out of range"),
    ({"name": "cloudbr0", "vxlans": [{"vni": 5, "remote": "192.0.2.1", "group": "239.1.1.1", "dev": "eth0"}]},
     "mutually exclusive"),
])
def test_bad_input_fails_before_touching_the_network(run_module, args, message):
    result = run_module(kvm_bridge.main, args, connection=False)
    assert result["failed"] is True
    assert message in result["msg"]
    assert result.get("commands", []) == []
