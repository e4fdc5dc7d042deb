# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Boot-time configuration of a bridge for ifupdown, netplan and NetworkManager.

Each backend turns one description of the bridge (a `BridgeConfig`) into the files it
would own, as ``{path: content}``.  Writing, comparing and removing those files is the
caller's job, so all three backends share check mode, diff and atomic writes.
"""

from __future__ import annotations

import json
import os
import re
import uuid

HEADER = "Managed by stackwright.cloudstack.kvm_bridge; local changes are overwritten."
BACKENDS = ("ifupdown", "netplan", "networkmanager")
DEFAULT_DIRECTORIES = {
    "ifupdown": "/etc/network/interfaces.d",
    "netplan": "/etc/netplan",
    "networkmanager": "/etc/NetworkManager/system-connections",
}
# Files that may hold credentials or that their tools refuse when world-readable.
FILE_MODES = {"ifupdown": 0o644, "netplan": 0o600, "networkmanager": 0o600}
# Stable connection UUIDs: the same bridge always renders the same keyfile.
_NM_NAMESPACE = uuid.UUID("5d0b6a8e-3f7c-4c52-9a8e-2c1b7f0e4d11")
_PLAIN_YAML_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class BridgeConfig(object):
    """What the boot-time files must say about one bridge and the ports it owns."""

    def __init__(self, name, uplink=None, vlans=(), vxlans=(), stp=False, forward_delay=None,
                 mtu=None, addresses=(), routes=()):
        self.name = name
        self.uplink = uplink
        self.vlans = list(vlans)
        self.vxlans = list(vxlans)
        self.stp = stp
        self.forward_delay = forward_delay
        self.mtu = mtu
        self.addresses = list(addresses)
        self.routes = list(routes)

    @property
    def ports(self):
        names = [self.uplink] if self.uplink else []
        return names + [vlan["name"] for vlan in self.vlans] + [vxlan["name"] for vxlan in self.vxlans]

    def family(self, family):
        """(method, static addresses, gateway routes) for "inet" or "inet6"."""
        addresses = [a for a in self.addresses if a["family"] == family]
        routes = [r for r in self.routes if r["family"] == ("-4" if family == "inet" else "-6")]
        if any(a.get("dynamic") for a in addresses):
            return "dynamic", [], routes
        if addresses:
            return "static", [a["cidr"] for a in addresses], routes
        return "none", [], routes


def files_for(backend, config, directory=None):
    """The files `backend` needs for `config`, as ``{absolute path: content}``."""
    directory = directory or DEFAULT_DIRECTORIES[backend]
    return {
        "ifupdown": _ifupdown_files,
        "netplan": _netplan_files,
        "networkmanager": _networkmanager_files,
    }[backend](config, directory)


def owned_files(backend, bridge, directory=None):
    """Every file in `directory` that a previous run may have written for `bridge`."""
    directory = directory or DEFAULT_DIRECTORIES[backend]
    if backend == "networkmanager":
        prefix = bridge + "-port-"
        try:
            names = sorted(n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(".nmconnection"))
        except OSError:
            names = []
        candidates = [_nm_path(directory, bridge)] + [os.path.join(directory, n) for n in names]
    else:
        candidates = list(files_for(backend, BridgeConfig(bridge), directory))
    return [path for path in candidates if os.path.exists(path)]


def vxlan_ip_args(vxlan):
    """``ip link add`` arguments that make the VXLAN device `vxlan` (shared with the live path)."""
    args = ["link", "add", vxlan["name"], "type", "vxlan", "id", str(vxlan["vni"]), "dstport", str(vxlan["dstport"])]
    for key in ("local", "remote", "group", "dev"):
        if vxlan.get(key):
            args += [key, str(vxlan[key])]
    return args


# ifupdown ---------------------------------------------------------------------------

def _ifupdown_files(config, directory):
    lines = ["# " + HEADER]
    if config.uplink:
        lines += ["", "auto %s" % config.uplink, "iface %s inet manual" % config.uplink]
        if config.mtu:
            lines.append("    mtu %d" % config.mtu)
    for vlan in config.vlans:
        lines += ["", "auto %s" % vlan["name"], "iface %s inet manual" % vlan["name"]]
        if vlan["name"] == "%s.%s" % (vlan["dev"], vlan["id"]):
            lines.append("    vlan-raw-device %s" % vlan["dev"])
        else:
            # ifupdown derives the VLAN id from the name only for DEV.ID names.
            lines += ["    pre-up ip link add link %s name %s type vlan id %s" % (vlan["dev"], vlan["name"], vlan["id"]),
                      "    post-down ip link del %s" % vlan["name"]]
    for vxlan in config.vxlans:
        lines += ["", "auto %s" % vxlan["name"], "iface %s inet manual" % vxlan["name"],
                  "    pre-up ip %s" % " ".join(vxlan_ip_args(vxlan)),
                  "    post-down ip link del %s" % vxlan["name"]]
        if config.mtu:
            lines.append("    mtu %d" % config.mtu)
    lines += ["", "auto %s" % config.name]
    lines += _ifupdown_family(config, "inet", {"dynamic": "dhcp", "static": "static", "none": "manual"}, True)
    if config.family("inet6")[0] != "none":
        lines += _ifupdown_family(config, "inet6", {"dynamic": "auto", "static": "static"}, False)
    return {os.path.join(directory, config.name): "\n".join(lines) + "\n"}


def _ifupdown_family(config, family, methods, with_bridge_options):
    method, addresses, routes = config.family(family)
    lines = ["iface %s %s %s" % (config.name, family, methods[method])]
    if addresses:
        lines.append("    address %s" % addresses[0])
    default = [r for r in routes if r["dst"] == "default"]
    # The gateway line carries the first default route; DHCP brings its own.
    gateway = default[0] if method == "static" and default else None
    if gateway:
        lines.append("    gateway %s" % gateway["gateway"])
        if gateway.get("metric") is not None:
            lines.append("    metric %s" % gateway["metric"])
    if with_bridge_options:
        lines.append("    bridge_ports %s" % (" ".join(config.ports) or "none"))
        lines.append("    bridge_stp %s" % ("on" if config.stp else "off"))
        if config.forward_delay is not None:
            lines.append("    bridge_fd %d" % config.forward_delay)
        if config.mtu:
            lines.append("    mtu %d" % config.mtu)
    flag = "-4" if family == "inet" else "-6"
    for extra in addresses[1:]:
        lines.append("    up ip %s address add %s dev %s" % (flag, extra, config.name))
    for route in routes:
        if route is gateway or (method == "dynamic" and route["dst"] == "default"):
            continue
        text = "%s route replace %s via %s dev %s" % (flag, route["dst"], route["gateway"], config.name)
        if route.get("metric") is not None:
            text += " metric %s" % route["metric"]
        lines.append("    up ip " + text)
    return lines


# netplan ----------------------------------------------------------------------------

def _netplan_files(config, directory):
    network = {"version": 2}
    if config.uplink:
        uplink = {"dhcp4": False, "dhcp6": False, "accept-ra": False}
        if config.mtu:
            uplink["mtu"] = config.mtu
        network["ethernets"] = {config.uplink: uplink}
    if config.vlans:
        network["vlans"] = dict(
            (vlan["name"], {"id": vlan["id"], "link": vlan["dev"]}) for vlan in config.vlans
        )
    if config.vxlans:
        network["tunnels"] = dict((vxlan["name"], _netplan_vxlan(vxlan)) for vxlan in config.vxlans)
    bridge = {"interfaces": config.ports}
    parameters = {"stp": bool(config.stp)}
    if config.forward_delay is not None:
        parameters["forward-delay"] = config.forward_delay
    bridge["parameters"] = parameters
    if config.mtu:
        bridge["mtu"] = config.mtu
    addresses, routes = [], []
    for family, dhcp_key in (("inet", "dhcp4"), ("inet6", "dhcp6")):
        method, static, family_routes = config.family(family)
        bridge[dhcp_key] = method == "dynamic"
        addresses += static
        for route in family_routes:
            if method == "dynamic" and route["dst"] == "default":
                continue
            entry = {"to": route["dst"], "via": route["gateway"]}
            if route.get("metric") is not None:
                entry["metric"] = route["metric"]
            if route.get("onlink"):
                entry["on-link"] = True
            routes.append(entry)
    if addresses:
        bridge["addresses"] = addresses
    if routes:
        bridge["routes"] = routes
    network["bridges"] = {config.name: bridge}
    body = "# %s\n%s" % (HEADER, _yaml({"network": network}, 0))
    return {os.path.join(directory, "90-stackwright-%s.yaml" % config.name): body}


def _netplan_vxlan(vxlan):
    tunnel = {"mode": "vxlan", "id": vxlan["vni"], "port": vxlan["dstport"]}
    for key in ("local", "remote"):
        if vxlan.get(key):
            tunnel[key] = vxlan[key]
    if vxlan.get("group"):
        tunnel["remote"] = vxlan["group"]
    if vxlan.get("dev"):
        tunnel["link"] = vxlan["dev"]
    return tunnel


def _yaml(value, indent):
    """Block-style YAML for dicts, lists and scalars; strings are quoted JSON-style."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for key in sorted(value, key=_yaml_key_order):
            item = value[key]
            name = key if _PLAIN_YAML_KEY.match(key) else json.dumps(key)
            if isinstance(item, (dict, list)) and item:
                lines.append("%s%s:" % (pad, name))
                lines.append(_yaml(item, indent + 1).rstrip("\n"))
            else:
                lines.append("%s%s: %s" % (pad, name, _yaml_scalar(item)))
    else:
        for item in value:
            if isinstance(item, dict) and item:
                nested = _yaml(item, indent + 1).rstrip("\n").split("\n")
                lines.append("%s- %s" % (pad, nested[0].lstrip()))
                lines.extend(nested[1:])
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(item)))
    return "\n".join(lines) + "\n"


def _yaml_key_order(key):
    # netplan reads any order; a fixed one keeps the file stable for idempotence.
    return (key != "version", key)


def _yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(str(value))


# NetworkManager ---------------------------------------------------------------------

def _nm_path(directory, name):
    return os.path.join(directory, "%s.nmconnection" % name)


def _keyfile(sections):
    chunks = []
    for section, values in sections:
        chunks.append("[%s]" % section)
        chunks.extend("%s=%s" % (key, value) for key, value in values if value is not None)
        chunks.append("")
    return "# %s\n%s" % (HEADER, "\n".join(chunks))


def _nm_connection(conn_id, kind, interface, extra=()):
    return [("id", conn_id), ("uuid", str(uuid.uuid5(_NM_NAMESPACE, conn_id))), ("type", kind),
            ("interface-name", interface), ("autoconnect", "true")] + list(extra)


def _nm_port(config, port_name, kind, settings):
    conn_id = "%s-port-%s" % (config.name, port_name)
    # Above the distribution's default so the port wins over an older profile of the uplink.
    connection = _nm_connection(conn_id, kind, port_name, [
        ("autoconnect-priority", "10"), ("master", config.name), ("slave-type", "bridge")])
    sections = [("connection", connection)] + settings
    if config.mtu:
        sections.append(("ethernet", [("mtu", str(config.mtu))]))
    return conn_id, _keyfile(sections)


def _nm_family(config, family):
    method, addresses, routes = config.family(family)
    methods = {"dynamic": "auto", "static": "manual", "none": "disabled" if family == "inet" else "ignore"}
    values = [("method", methods[method])]
    default = [r for r in routes if r["dst"] == "default"]
    for index, cidr in enumerate(addresses, start=1):
        values.append(("address%d" % index, cidr))
    if method == "static" and default:
        values.append(("gateway", default[0]["gateway"]))
        if default[0].get("metric") is not None:
            values.append(("route-metric", str(default[0]["metric"])))
    others = [r for r in routes if r["dst"] != "default"]
    for index, route in enumerate(others, start=1):
        text = "%s,%s" % (route["dst"], route["gateway"])
        if route.get("metric") is not None:
            text += ",%s" % route["metric"]
        values.append(("route%d" % index, text))
    return values


def _networkmanager_files(config, directory):
    bridge_values = [("stp", "true" if config.stp else "false")]
    if config.forward_delay is not None:
        bridge_values.append(("forward-delay", str(config.forward_delay)))
    sections = [
        ("connection", _nm_connection(config.name, "bridge", config.name)),
        ("bridge", bridge_values),
    ]
    if config.mtu:
        sections.append(("ethernet", [("mtu", str(config.mtu))]))
    sections += [("ipv4", _nm_family(config, "inet")), ("ipv6", _nm_family(config, "inet6"))]
    files = {_nm_path(directory, config.name): _keyfile(sections)}
    ports = []
    if config.uplink:
        ports.append(_nm_port(config, config.uplink, "ethernet", []))
    for vlan in config.vlans:
        ports.append(_nm_port(config, vlan["name"], "vlan", [("vlan", [("id", str(vlan["id"])), ("parent", vlan["dev"])])]))
    for vxlan in config.vxlans:
        values = [("id", str(vxlan["vni"])), ("destination-port", str(vxlan["dstport"])),
                  ("local", vxlan.get("local")), ("remote", vxlan.get("remote") or vxlan.get("group")),
                  ("parent", vxlan.get("dev"))]
        ports.append(_nm_port(config, vxlan["name"], "vxlan", [("vxlan", values)]))
    for conn_id, content in ports:
        files[_nm_path(directory, conn_id)] = content
    return files
