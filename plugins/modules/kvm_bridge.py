#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kvm_bridge
short_description: Manage the Linux bridge a KVM host gives its guests
description:
  - Creates, updates or removes a Linux bridge such as C(cloudbr0) together with its uplink interface,
    MTU, spanning tree settings and VLAN or VXLAN member devices.
  - When an uplink is given, its global IPv4/IPv6 addresses and the routes that leave through it via a
    gateway (the default route among them) move to the bridge.  The order keeps the host reachable;
    addresses are added to the bridge, the uplink joins the bridge, routes are re-pointed at the bridge,
    and only then are the addresses removed from the uplink.  O(state=absent) moves them back.
  - The running state is read and changed through netlink with the C(ip) command of iproute2
    (JSON output), so the target needs no Python packages.
  - Optionally writes the boot-time configuration for ifupdown, netplan or NetworkManager.
  - Ports that something else added to the bridge, such as the tap devices of running guests, are
    never removed.
version_added: "0.1.0"
author:
  - Stackwright maintainers (@stackwright)
options:
  name:
    description:
      - Name of the bridge, for example C(cloudbr0).
    type: str
    required: true
  state:
    description:
      - Whether the bridge should exist.
      - With V(absent) the bridge and the VLAN/VXLAN members listed in the task are deleted; when
        O(uplink) is given the bridge's addresses and gateway routes move back to it first.
    type: str
    choices: [present, absent]
    default: present
  uplink:
    description:
      - Physical (or bond, or veth) interface that joins the bridge and whose addresses and routes move to it.
      - It must not be a port of another bridge.
    type: str
  mtu:
    description:
      - MTU of the bridge, the uplink and the member devices.
      - Left as it is when not set.
    type: int
  stp:
    description:
      - Whether the bridge runs the spanning tree protocol.
    type: bool
    default: false
  forward_delay:
    description:
      - Forwarding delay in seconds (0 to 30; 2 to 30 when O(stp=true)).
      - Left as it is when not set.
    type: int
  vlans:
    description:
      - 802.1Q VLAN devices that join the bridge.
      - The kernel must support 802.1Q; without it the module fails before changing anything.
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: VLAN id (1 to 4094).
        type: int
        required: true
      dev:
        description: Parent interface of the VLAN device; defaults to O(uplink).
        type: str
      name:
        description: Name of the VLAN device; defaults to C(DEV.ID).
        type: str
  vxlans:
    description:
      - VXLAN devices that join the bridge.
      - A device whose settings differ from the task is deleted and created again.
    type: list
    elements: dict
    default: []
    suboptions:
      vni:
        description: VXLAN network identifier (1 to 16777215).
        type: int
        required: true
      name:
        description: Name of the VXLAN device; defaults to C(vxlanVNI).
        type: str
      local:
        description: Source address of the tunnel.
        type: str
      remote:
        description: Unicast address of the far end; mutually exclusive with O(vxlans[].group).
        type: str
      group:
        description: Multicast group of the VNI; needs O(vxlans[].dev).
        type: str
      dstport:
        description: UDP destination port.
        type: int
        default: 4789
      dev:
        description: Interface the tunnel's packets leave through.
        type: str
  persistent:
    description:
      - Which boot-time network configuration to write as well.
      - V(none) leaves boot-time configuration alone; V(auto) picks NetworkManager when it runs,
        else netplan when it is installed, else ifupdown when C(/etc/network/interfaces) exists.
      - V(ifupdown) writes C(PERSISTENT_DIR/NAME); V(netplan) writes C(PERSISTENT_DIR/90-stackwright-NAME.yaml);
        V(networkmanager) writes keyfiles C(NAME.nmconnection) and C(NAME-port-PORT.nmconnection) and
        asks NetworkManager to reload them.
      - Neither netplan nor ifupdown is asked to apply the file; the running state is already changed
        by this module.
    type: str
    choices: [auto, ifupdown, netplan, networkmanager, none]
    default: none
  persistent_dir:
    description:
      - Directory for the boot-time configuration files.
      - Defaults to C(/etc/network/interfaces.d), C(/etc/netplan) or C(/etc/NetworkManager/system-connections).
    type: path
notes:
  - Needs root and the C(ip) command from iproute2.
  - Dynamic (DHCP or SLAAC) addresses move like static ones, but the DHCP client keeps running on the
    uplink; with O(persistent) set the bridge is configured for DHCP from the next boot on.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
"""

EXAMPLES = r"""
- name: Guest bridge on eth0, keeping the host's address and default route
  stackwright.cloudstack.kvm_bridge:
    name: cloudbr0
    uplink: eth0
    stp: false
    forward_delay: 0
    persistent: auto

- name: Storage bridge with jumbo frames
  stackwright.cloudstack.kvm_bridge:
    name: cloudbr1
    uplink: eth1
    mtu: 9000

- name: Overlay bridge joined by a unicast VXLAN tunnel
  stackwright.cloudstack.kvm_bridge:
    name: cloudbr2
    vxlans:
      - vni: 100
        local: 192.0.2.10
        remote: 192.0.2.20
        dev: eth0

- name: Give eth0 its addresses back and remove the bridge
  stackwright.cloudstack.kvm_bridge:
    name: cloudbr0
    uplink: eth0
    state: absent
"""

RETURN = r"""
bridge:
  description: State of the bridge after the run (predicted in check mode).
  returned: always
  type: dict
  sample:
    state: present
    ports: [eth0]
    mtu: 1500
    stp: false
    forward_delay: 0
    addresses: [192.0.2.10/24]
    routes: [default via 192.0.2.1 metric 100]
commands:
  description: The C(ip) commands run (or, in check mode, that would run), in order.
  returned: always
  type: list
  elements: str
  sample: ["ip link add name cloudbr0 type bridge stp_state 0", "ip link set dev eth0 master cloudbr0"]
persistent:
  description: Boot-time configuration backend used and the files it owns after the run.
  returned: always
  type: dict
  sample:
    backend: ifupdown
    files: [/etc/network/interfaces.d/cloudbr0]
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.stackwright.cloudstack.plugins.module_utils.bridge_persistence import (
    BACKENDS,
    DEFAULT_DIRECTORIES,
    FILE_MODES,
    BridgeConfig,
    files_for,
    owned_files,
    vxlan_ip_args,
)
from ansible_collections.stackwright.cloudstack.plugins.module_utils.host_files import read_text, write_atomically
from ansible_collections.stackwright.cloudstack.plugins.module_utils.iproute2_bridge import (
    VXLAN_DEFAULT_PORT,
    IpCommandError,
    IpRoute2,
    add_address_args,
    bridge_settings,
    delete_address_args,
    delete_route_args,
    describe_route,
    kernel_has_8021q,
    link_kind,
    replace_route_args,
    vlan_settings,
    vxlan_settings,
)

_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
# Answers of `ip` that mean "already gone", which is what a cleanup step wants.
_ALREADY_GONE = ("No such process", "Cannot find device", "does not exist", "Cannot assign requested address")

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    uplink=dict(type="str"),
    mtu=dict(type="int"),
    stp=dict(type="bool", default=False),
    forward_delay=dict(type="int"),
    vlans=dict(type="list", elements="dict", default=[], options=dict(
        id=dict(type="int", required=True),
        dev=dict(type="str"),
        name=dict(type="str"),
    )),
    vxlans=dict(type="list", elements="dict", default=[], options=dict(
        vni=dict(type="int", required=True),
        name=dict(type="str"),
        local=dict(type="str"),
        remote=dict(type="str"),
        group=dict(type="str"),
        dstport=dict(type="int", default=VXLAN_DEFAULT_PORT),
        dev=dict(type="str"),
    ), mutually_exclusive=[("remote", "group")], required_by={"group": "dev"}),
    persistent=dict(type="str", choices=["auto"] + list(BACKENDS) + ["none"], default="none"),
    persistent_dir=dict(type="path"),
)


class BridgeError(Exception):
    """A request the module refuses, with the reason and the way out."""


class Step(object):
    """One ``ip`` command, what undoes it, and whether "already gone" counts as done."""

    def __init__(self, args, undo=None, cleanup=False):
        self.args = [str(arg) for arg in args]
        self.undo = [str(arg) for arg in undo] if undo else None
        self.cleanup = cleanup

    def __str__(self):
        return "ip " + " ".join(self.args)


class KvmBridge(object):

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.name = module.params["name"]
        self.uplink = module.params["uplink"]
        self.ip = IpRoute2(module)
        self.vlans, self.vxlans = [], []
        self.commands = []

    # -- validation --------------------------------------------------------------------

    def _vlan_specs(self):
        specs = []
        for vlan in self.params["vlans"]:
            dev = vlan["dev"] or self.uplink
            if not dev:
                raise BridgeError("VLAN %s needs a parent interface: set vlans[].dev or uplink" % vlan["id"])
            if not 1 <= vlan["id"] <= 4094:
                raise BridgeError("VLAN id %s is out of range: use 1 to 4094" % vlan["id"])
            specs.append({"id": vlan["id"], "dev": dev, "name": vlan["name"] or "%s.%s" % (dev, vlan["id"])})
        return specs

    def _vxlan_specs(self):
        specs = []
        for vxlan in self.params["vxlans"]:
            if not 1 <= vxlan["vni"] <= 16777215:
                raise BridgeError("VXLAN vni %s is out of range: use 1 to 16777215" % vxlan["vni"])
            if not 1 <= vxlan["dstport"] <= 65535:
                raise BridgeError("VXLAN dstport %s is not a UDP port number" % vxlan["dstport"])
            spec = dict(vxlan)
            spec["name"] = vxlan["name"] or "vxlan%s" % vxlan["vni"]
            specs.append(spec)
        return specs

    def validate(self):
        self.vlans = self._vlan_specs()
        self.vxlans = self._vxlan_specs()
        members = [m["name"] for m in self.vlans + self.vxlans]
        for label, value in [("name", self.name), ("uplink", self.uplink)] + [("member", m) for m in members]:
            if value is not None and not _IFNAME.match(value):
                raise BridgeError("%s '%s' is not a valid interface name: use 1 to 15 characters without "
                                  "spaces, '/' or ':'" % (label, value))
        names = [self.name] + ([self.uplink] if self.uplink else []) + members
        duplicates = sorted(set(n for n in names if names.count(n) > 1))
        if duplicates:
            raise BridgeError("interface names must differ: %s is used twice among name, uplink, vlans and vxlans"
                              % ", ".join(duplicates))
        mtu = self.params["mtu"]
        if mtu is not None and not 68 <= mtu <= 65535:
            raise BridgeError("mtu %s is out of range: use 68 to 65535" % mtu)
        delay = self.params["forward_delay"]
        if delay is not None:
            low = 2 if self.params["stp"] else 0
            if not low <= delay <= 30:
                raise BridgeError("forward_delay %s is out of range: use %d to 30 seconds%s"
                                  % (delay, low, " when stp is on" if low else ""))

    # -- observation -------------------------------------------------------------------

    def bridge_link(self):
        link = self.ip.link(self.name)
        if link is not None and link_kind(link) != "bridge":
            raise BridgeError("interface %s exists but is a %s device, not a bridge; pick another name or "
                              "delete it first" % (self.name, link_kind(link) or "plain"))
        return link

    def observe(self, link):
        if link is None:
            return {"state": "absent"}
        state = {
            "state": "present",
            "ports": sorted(entry["ifname"] for entry in self.ip.query(["link", "show", "master", self.name])),
            "mtu": link.get("mtu"),
            "addresses": sorted(a["cidr"] for a in self.ip.addresses(self.name)),
            "routes": sorted(describe_route(r) for r in self.ip.gateway_routes(self.name)),
        }
        state.update(bridge_settings(link))
        return state

    # -- planning ----------------------------------------------------------------------

    def plan_present(self, bridge):
        uplink = self._checked_uplink(bridge)
        self._check_vlan_support()
        steps = []
        settings = bridge_settings(bridge) if bridge else None
        stp, delay, mtu = self.params["stp"], self.params["forward_delay"], self.params["mtu"]
        if bridge is None:
            args = ["link", "add", "name", self.name]
            if mtu:
                args += ["mtu", mtu]
            if uplink is not None and uplink.get("address"):
                # The host keeps its MAC on the wire, so neighbours' ARP entries stay valid.
                args += ["address", uplink["address"]]
            args += ["type", "bridge", "stp_state", int(stp)]
            if delay is not None:
                args += ["forward_delay", delay * 100]
            steps.append(Step(args, undo=["link", "del", self.name]))
        else:
            change = []
            if delay is not None and settings["forward_delay"] != delay:
                change += ["forward_delay", delay * 100]
            if settings["stp"] != stp:
                change += ["stp_state", int(stp)]
            if change:
                steps.append(Step(["link", "set", "dev", self.name, "type", "bridge"] + change))

        port_links = {}
        for spec, kind in [(v, "vlan") for v in self.vlans] + [(x, "vxlan") for x in self.vxlans]:
            port_links[spec["name"]] = self._member_steps(spec, kind, steps)
        if uplink is not None:
            port_links[self.uplink] = uplink

        for name, link in port_links.items():
            if mtu and (link is None or link.get("mtu") != mtu):
                steps.append(Step(["link", "set", "dev", name, "mtu", mtu]))
        if mtu and bridge is not None and bridge.get("mtu") != mtu:
            steps.append(Step(["link", "set", "dev", self.name, "mtu", mtu]))
        for name, link in [(self.name, bridge)] + list(port_links.items()):
            if link is None or "UP" not in link.get("flags", []):
                steps.append(Step(["link", "set", "dev", name, "up"]))
        for name, link in port_links.items():
            if name != self.uplink and (link is None or link.get("master") != self.name):
                steps.append(Step(["link", "set", "dev", name, "master", self.name],
                                  undo=["link", "set", "dev", name, "nomaster"]))
        if uplink is not None:
            steps += self._move_steps(self.uplink, self.name, enslave=uplink.get("master") != self.name)
        return steps

    def plan_absent(self, bridge):
        steps = []
        if bridge is not None and self.uplink:
            uplink = self.ip.link(self.uplink)
            if uplink is None:
                self.module.warn("uplink %s does not exist; the addresses of %s go away with it"
                                 % (self.uplink, self.name))
            else:
                if "UP" not in uplink.get("flags", []):
                    steps.append(Step(["link", "set", "dev", self.uplink, "up"]))
                steps += self._move_steps(self.name, self.uplink, release=uplink.get("master") == self.name)
        for spec, kind in [(v, "vlan") for v in self.vlans] + [(x, "vxlan") for x in self.vxlans]:
            link = self.ip.link(spec["name"])
            if link is not None and link_kind(link) == kind:
                steps.append(Step(["link", "del", spec["name"]], cleanup=True))
        if bridge is not None:
            steps.append(Step(["link", "del", self.name], cleanup=True))
        return steps

    def _checked_uplink(self, bridge):
        if not self.uplink:
            return None
        uplink = self.ip.link(self.uplink)
        if uplink is None:
            raise BridgeError("uplink interface %s does not exist on this host" % self.uplink)
        if link_kind(uplink) == "bridge":
            raise BridgeError("uplink %s is itself a bridge; give the interface under it instead" % self.uplink)
        master = uplink.get("master")
        if master and master != self.name:
            raise BridgeError("uplink %s is already a port of %s; remove it there first" % (self.uplink, master))
        return uplink

    def _check_vlan_support(self):
        missing = [v["name"] for v in self.vlans if self.ip.link(v["name"]) is None]
        if missing and not kernel_has_8021q():
            raise BridgeError("kernel has no 802.1Q support, so VLAN device %s cannot be created: load the 8021q "
                              "module (modprobe 8021q) or use a VXLAN member instead" % ", ".join(missing))

    def _member_steps(self, spec, kind, steps):
        """Steps that make member `spec` exist as wanted; returns its current link (None if new)."""
        link = self.ip.link(spec["name"])
        if link is not None:
            if link_kind(link) == kind and self._member_matches(link, spec, kind):
                return link
            if link_kind(link) != kind:
                raise BridgeError("interface %s exists but is a %s device, not %s; pick another name"
                                  % (spec["name"], link_kind(link) or "plain", kind))
            # VXLAN and VLAN settings cannot be changed in place.
            steps.append(Step(["link", "del", spec["name"]]))
        if kind == "vlan":
            args = ["link", "add", "link", spec["dev"], "name", spec["name"], "type", "vlan", "id", spec["id"]]
        else:
            args = vxlan_ip_args(spec)
        steps.append(Step(args, undo=["link", "del", spec["name"]]))
        return None

    @staticmethod
    def _member_matches(link, spec, kind):
        if kind == "vlan":
            return vlan_settings(link) == {"id": spec["id"], "dev": spec["dev"]}
        current = vxlan_settings(link)
        return all(current[key] == spec.get(key) for key in ("vni", "dstport", "local", "remote", "group", "dev"))

    def _move_steps(self, source, target, enslave=False, release=False):
        """Move addresses and gateway routes from `source` to `target` without a gap in reachability."""
        addresses = self.ip.addresses(source)
        routes = self.ip.gateway_routes(source)
        present = set(a["cidr"] for a in self.ip.addresses(target))
        steps = [Step(add_address_args(a, target), undo=delete_address_args(a, target))
                 for a in addresses if a["cidr"] not in present]
        if enslave:
            steps.append(Step(["link", "set", "dev", source, "master", target],
                              undo=["link", "set", "dev", source, "nomaster"]))
        if release:
            steps.append(Step(["link", "set", "dev", target, "nomaster"],
                              undo=["link", "set", "dev", target, "master", source]))
        # Routes move while both ends still hold the addresses, so the gateway stays reachable.
        for route in routes:
            steps.append(Step(replace_route_args(route, target), undo=replace_route_args(route, source)))
        for address in addresses:
            steps.append(Step(delete_address_args(address, source), undo=add_address_args(address, source),
                              cleanup=True))
        # IPv6 may keep the old route beside the new one; drop it if it survived.
        for route in routes:
            steps.append(Step(delete_route_args(route, source), cleanup=True))
        return steps

    def predict(self, before, uplink_addresses, uplink_routes):
        """The bridge's state after plan_present, for check mode."""
        uplink = self.ip.link(self.uplink) if self.uplink else None
        ports = set(before.get("ports", []))
        ports.update(m["name"] for m in self.vlans + self.vxlans)
        if self.uplink:
            ports.add(self.uplink)
        if self.params["mtu"]:
            mtu = self.params["mtu"]
        elif before["state"] == "present":
            mtu = before["mtu"]
        else:
            mtu = uplink.get("mtu", 1500) if uplink else 1500
        delay = self.params["forward_delay"]
        if delay is None:
            delay = before.get("forward_delay", 15)
        return {
            "state": "present",
            "ports": sorted(ports),
            "mtu": mtu,
            "stp": self.params["stp"],
            "forward_delay": delay,
            "addresses": sorted(set(before.get("addresses", [])) | set(a["cidr"] for a in uplink_addresses)),
            "routes": sorted(set(before.get("routes", [])) | set(describe_route(r) for r in uplink_routes)),
        }

    # -- execution ---------------------------------------------------------------------

    def execute(self, steps):
        done = []
        for step in steps:
            self.commands.append(str(step))
            if self.module.check_mode:
                continue
            try:
                self.ip.run(step.args)
            except IpCommandError as exc:
                if step.cleanup and any(text in str(exc) for text in _ALREADY_GONE):
                    continue
                undone = self._undo(done)
                raise BridgeError("%s%s" % (exc, "; undid the %d change(s) made before it" % undone if undone else "")) from exc
            done.append(step)

    def _undo(self, done):
        undone = 0
        for step in reversed(done):
            if step.undo is None:
                continue
            try:
                self.ip.run(step.undo)
                undone += 1
            except IpCommandError as exc:
                self.module.warn("could not undo '%s': %s" % (step, exc))
        return undone

    # -- boot-time configuration --------------------------------------------------------

    def backend(self):
        choice = self.params["persistent"]
        if choice != "auto":
            return None if choice == "none" else choice
        if self._networkmanager_running():
            return "networkmanager"
        if self.module.get_bin_path("netplan") and os.path.isdir("/etc/netplan"):
            return "netplan"
        if os.path.exists("/etc/network/interfaces"):
            return "ifupdown"
        raise BridgeError("persistent=auto found no NetworkManager, netplan or /etc/network/interfaces on this "
                          "host; set persistent to ifupdown, netplan, networkmanager or none")

    def _networkmanager_running(self):
        nmcli = self.module.get_bin_path("nmcli")
        if not nmcli:
            return False
        rc, out, _err = self.module.run_command([nmcli, "-t", "-f", "RUNNING", "general"],
                                                environ_update={"LANG": "C", "LC_ALL": "C"})
        return rc == 0 and out.strip() == "running"

    def wanted_files(self, backend, uplink_addresses, uplink_routes, bridge_addresses, bridge_routes):
        config = BridgeConfig(
            self.name, uplink=self.uplink, vlans=self.vlans, vxlans=self.vxlans, stp=self.params["stp"],
            forward_delay=self.params["forward_delay"],
            mtu=self.params["mtu"], addresses=_unique(bridge_addresses + uplink_addresses, "cidr"),
            routes=_unique(bridge_routes + uplink_routes, None),
        )
        return files_for(backend, config, self.params["persistent_dir"])

    def sync_files(self, backend, wanted):
        """Make the backend's files for this bridge exactly `wanted`; returns (before, after, changed)."""
        directory = self.params["persistent_dir"] or DEFAULT_DIRECTORIES[backend]
        existing = owned_files(backend, self.name, directory)
        before = dict((path, read_text(path)) for path in sorted(set(existing) | set(wanted)))
        before = dict((path, text) for path, text in before.items() if text is not None)
        changed = before != wanted
        if changed and not self.module.check_mode:
            for path in sorted(set(before) - set(wanted)):
                os.unlink(path)
            for path, content in sorted(wanted.items()):
                if before.get(path) != content:
                    write_atomically(self.module, path, content, FILE_MODES[backend])
            if backend == "networkmanager":
                self._reload_networkmanager()
        if backend == "ifupdown" and self.params["state"] == "present":
            self._warn_about_ifupdown(directory)
        return before, wanted, changed

    def _reload_networkmanager(self):
        nmcli = self.module.get_bin_path("nmcli")
        if nmcli:
            rc, _out, err = self.module.run_command([nmcli, "connection", "reload"])
            if rc != 0:
                self.module.warn("nmcli connection reload failed: %s" % err.strip())

    def _warn_about_ifupdown(self, directory):
        interfaces = "/etc/network/interfaces"
        text = read_text(interfaces)
        if text is None or self.params["persistent_dir"]:
            return
        if not re.search(r"^\s*source(-directory)?\s+%s" % re.escape(directory), text, re.M):
            self.module.warn("%s does not source %s, so ifupdown will not read the bridge's file" % (interfaces, directory))
        if self.uplink and re.search(r"^\s*iface\s+%s\s" % re.escape(self.uplink), text, re.M):
            self.module.warn("%s still configures %s; remove that stanza so the bridge owns its addresses"
                             % (interfaces, self.uplink))

    # -- the one flow ------------------------------------------------------------------

    def run(self):
        try:
            self.apply()
        except (BridgeError, IpCommandError) as exc:
            self.module.fail_json(msg=str(exc), commands=self.commands)
        except (IOError, OSError) as exc:
            self.module.fail_json(msg="could not write the boot-time configuration: %s" % exc, commands=self.commands)

    def apply(self):
        self.validate()
        backend = self.backend()
        bridge = self.bridge_link()
        before = self.observe(bridge)
        present = self.params["state"] == "present"
        uplink_addresses, uplink_routes = [], []
        if present and self.uplink and self.ip.link(self.uplink) is not None:
            uplink_addresses = self.ip.addresses(self.uplink)
            uplink_routes = self.ip.gateway_routes(self.uplink)
        bridge_addresses = self.ip.addresses(self.name) if bridge else []
        bridge_routes = self.ip.gateway_routes(self.name) if bridge else []

        steps = self.plan_present(bridge) if present else self.plan_absent(bridge)
        if not present:
            expected = {"state": "absent"}
        elif bridge is not None and not steps:
            expected = before
        else:
            expected = self.predict(before, uplink_addresses, uplink_routes)
        # Files are computed before the running state changes, written after it succeeded.
        wanted = {}
        if backend and present:
            wanted = self.wanted_files(backend, uplink_addresses, uplink_routes, bridge_addresses, bridge_routes)

        self.execute(steps)
        persistent = {"backend": backend, "files": []}
        files_before, files_after, files_changed = {}, {}, False
        if backend:
            files_before, files_after, files_changed = self.sync_files(backend, wanted)
            persistent["files"] = sorted(files_after)
        after = expected if self.module.check_mode else self.observe(self.bridge_link())
        diff_before, diff_after = dict(before), dict(after)
        if backend:
            diff_before["persistent"], diff_after["persistent"] = files_before, files_after
        self.module.exit_json(
            changed=bool(steps) or files_changed,
            bridge=after,
            commands=self.commands,
            persistent=persistent,
            diff={"before": diff_before, "after": diff_after},
        )


def _unique(items, key):
    seen, result = set(), []
    for item in items:
        marker = item[key] if key else tuple(sorted(item.items()))
        if marker not in seen:
            seen.add(marker)
            result.append(item)
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    KvmBridge(module).run()


if __name__ == "__main__":
    main()
