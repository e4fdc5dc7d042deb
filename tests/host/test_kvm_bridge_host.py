"""kvm_bridge against the real kernel, inside network namespaces the tests make.

Topology: namespace `host` has veth `eth0` (10.203.0.2/24, fd00:203::2/64, default routes
via the peer); namespace `peer` has the other end (10.203.0.1, fd00:203::1).  Every
packet stays inside these two namespaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.netns import Namespace, NamespaceSet, veth_pair

HOST_V4, PEER_V4 = "10.203.0.2", "10.203.0.1"
HOST_V6, PEER_V6 = "fd00:203::2", "fd00:203::1"
BRIDGE = "cloudbr0"
UPLINK = "eth0"


@dataclass
class Lab:
    host: Namespace
    peer: Namespace

    def addresses(self, dev: str) -> set[str]:
        found = set()
        for entry in self.host.ip_json("address", "show", "dev", dev):
            for info in entry.get("addr_info", []):
                if info.get("scope") == "global":
                    found.add("%s/%s" % (info["local"], info["prefixlen"]))
        return found

    def default_routes(self) -> dict[str, str]:
        """family -> device of the default route."""
        routes = {}
        for family in ("-4", "-6"):
            for route in self.host.ip_json(family, "route", "show", "default"):
                routes[family] = route.get("dev")
        return routes

    def link(self, name: str) -> dict | None:
        result = self.host.ip("-json", "-details", "link", "show", "dev", name, check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)[0]

    def reachable(self) -> bool:
        return self.peer.ping(HOST_V4) and self.peer.ping(HOST_V6)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with NamespaceSet(prefix="swbr") as namespaces:
        host, peer = namespaces.create(), namespaces.create()
        veth_pair(host, UPLINK, peer, "eth0p")
        host.ip("address", "add", f"{HOST_V4}/24", "dev", UPLINK)
        host.ip("address", "add", f"{HOST_V6}/64", "dev", UPLINK, "nodad")
        peer.ip("address", "add", f"{PEER_V4}/24", "dev", "eth0p")
        peer.ip("address", "add", f"{PEER_V6}/64", "dev", "eth0p", "nodad")
        host.ip("route", "add", "default", "via", PEER_V4, "metric", "100")
        host.ip("-6", "route", "add", "default", "via", PEER_V6)
        yield Lab(host, peer)


def test_bridge_takes_over_the_uplink_and_gives_it_back(lab, run_module, tmp_path):
    wrap = lab.host.exec_argv([])
    args = {"name": BRIDGE, "uplink": UPLINK, "stp": False, "forward_delay": 0, "mtu": 1400,
            "persistent": "ifupdown", "persistent_dir": str(tmp_path / "interfaces.d")}
    assert lab.reachable()

    checked = run_module("kvm_bridge", args, wrap=wrap, check=True)
    assert checked["changed"] is True, checked
    assert lab.link(BRIDGE) is None
    assert lab.addresses(UPLINK) == {f"{HOST_V4}/24", f"{HOST_V6}/64"}
    assert not (tmp_path / "interfaces.d").exists()
    assert checked["diff"]["after"]["addresses"] == sorted([f"{HOST_V4}/24", f"{HOST_V6}/64"])

    created = run_module("kvm_bridge", args, wrap=wrap)
    assert created["changed"] is True, created
    assert lab.addresses(BRIDGE) == {f"{HOST_V4}/24", f"{HOST_V6}/64"}
    assert lab.addresses(UPLINK) == set()
    assert lab.default_routes() == {"-4": BRIDGE, "-6": BRIDGE}
    assert lab.link(UPLINK)["master"] == BRIDGE
    assert lab.link(BRIDGE)["mtu"] == 1400
    assert lab.reachable()
    # What check mode predicted is what the real run produced.
    assert checked["bridge"] == created["bridge"]
    interfaces = (tmp_path / "interfaces.d" / BRIDGE).read_text()
    assert f"address {HOST_V4}/24" in interfaces and f"bridge_ports {UPLINK}" in interfaces

    again = run_module("kvm_bridge", args, wrap=wrap)
    assert again["changed"] is False, again
    assert again["commands"] == []

    removed = run_module("kvm_bridge", {**args, "state": "absent"}, wrap=wrap)
    assert removed["changed"] is True, removed
    assert lab.link(BRIDGE) is None
    assert lab.addresses(UPLINK) == {f"{HOST_V4}/24", f"{HOST_V6}/64"}
    assert lab.default_routes() == {"-4": UPLINK, "-6": UPLINK}
    assert not (tmp_path / "interfaces.d" / BRIDGE).exists()
    assert lab.reachable()
    assert run_module("kvm_bridge", {**args, "state": "absent"}, wrap=wrap)["changed"] is False


def test_stp_and_forward_delay_change_in_place(lab, run_module):
    wrap = lab.host.exec_argv([])
    run_module("kvm_bridge", {"name": BRIDGE, "uplink": UPLINK}, wrap=wrap)
    changed = run_module("kvm_bridge", {"name": BRIDGE, "uplink": UPLINK, "stp": True, "forward_delay": 4}, wrap=wrap)
    assert changed["changed"] is True
    assert changed["commands"] == [f"ip link set dev {BRIDGE} type bridge forward_delay 400 stp_state 1"]
    assert changed["diff"]["before"]["stp"] is False and changed["diff"]["after"]["stp"] is True
    data = lab.link(BRIDGE)["linkinfo"]["info_data"]
    assert data["stp_state"] == 1 and data["forward_delay"] == 400
    assert lab.reachable()


def test_vxlan_member_joins_the_bridge(lab, run_module):
    wrap = lab.host.exec_argv([])
    args = {"name": "cloudbr1", "vxlans": [{"vni": 4242, "local": HOST_V4, "remote": PEER_V4, "dev": UPLINK}]}
    created = run_module("kvm_bridge", args, wrap=wrap)
    assert created["changed"] is True, created
    vxlan = lab.link("vxlan4242")
    assert vxlan["master"] == "cloudbr1"
    data = vxlan["linkinfo"]["info_data"]
    assert (data["id"], data["remote"], data["local"], data["port"]) == (4242, PEER_V4, HOST_V4, 4789)
    assert run_module("kvm_bridge", args, wrap=wrap)["changed"] is False

    moved = {**args, "vxlans": [{**args["vxlans"][0], "dstport": 8472}]}
    recreated = run_module("kvm_bridge", moved, wrap=wrap)
    assert recreated["changed"] is True
    assert lab.link("vxlan4242")["linkinfo"]["info_data"]["port"] == 8472
    assert lab.link("vxlan4242")["master"] == "cloudbr1"

    removed = run_module("kvm_bridge", {**moved, "state": "absent"}, wrap=wrap)
    assert removed["changed"] is True
    assert lab.link("vxlan4242") is None and lab.link("cloudbr1") is None


def test_vlan_member_fails_clearly_without_8021q(lab, run_module):
    if lab.host.run(["test", "-d", "/proc/net/vlan"], check=False).returncode == 0:
        pytest.skip("this kernel has 802.1Q support")
    wrap = lab.host.exec_argv([])
    result = run_module("kvm_bridge", {"name": BRIDGE, "uplink": UPLINK, "vlans": [{"id": 100}]}, wrap=wrap)
    assert result["failed"] is True
    assert "kernel has no 802.1Q support" in result["msg"]
    assert "eth0.100" in result["msg"]
    # Refused before touching anything.
    assert lab.link(BRIDGE) is None
    assert lab.addresses(UPLINK) == {f"{HOST_V4}/24", f"{HOST_V6}/64"}


def test_uplink_of_another_bridge_is_refused(lab, run_module):
    wrap = lab.host.exec_argv([])
    lab.host.ip("link", "add", "otherbr", "type", "bridge")
    lab.host.ip("link", "set", UPLINK, "master", "otherbr")
    result = run_module("kvm_bridge", {"name": BRIDGE, "uplink": UPLINK}, wrap=wrap)
    assert result["failed"] is True
    assert "already a port of otherbr" in result["msg"]
    assert lab.link(BRIDGE) is None
