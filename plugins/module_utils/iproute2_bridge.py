# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Running network state of a Linux bridge, read and changed through iproute2.

Everything goes through ``ip -json`` with ``LANG=C`` so that targets need nothing
beyond iproute2.  Readers return plain dicts; writers are argument lists for ``ip``
so that a caller can show them in check mode exactly as they would run.
"""

from __future__ import annotations

import json
import os

# Routes the kernel derives from an address; they follow the address by themselves.
_DERIVED_ROUTE_PROTOCOLS = frozenset({"kernel", "ra"})
_FOREVER = 4294967295
VXLAN_DEFAULT_PORT = 4789


class IpCommandError(Exception):
    """An ``ip`` command failed; the message names the command and the kernel's answer."""


class IpRoute2(object):
    """Runs ``ip`` for a module, always in the C locale and with JSON output for reads."""

    def __init__(self, module):
        self.module = module
        self.binary = module.get_bin_path("ip", required=True)

    def run(self, args):
        rc, out, err = self.module.run_command(
            [self.binary] + list(args), environ_update={"LANG": "C", "LC_ALL": "C"}
        )
        if rc != 0:
            # The first line holds the kernel's answer; usage text after it only adds noise.
            answer = ((err or out).strip().splitlines() or ["exit status %d" % rc])[0]
            raise IpCommandError("'ip %s' failed: %s" % (" ".join(args), answer))
        return out

    def query(self, args):
        out = self.run(["-json"] + list(args))
        if not out.strip():
            return []
        try:
            return json.loads(out)
        except ValueError as exc:
            raise IpCommandError("'ip -json %s' printed something that is not JSON: %s" % (" ".join(args), exc)) from exc

    def link(self, name):
        """The link called `name` with details (``ip -d``), or None when there is none."""
        links = self._query_device(["-details", "link", "show", "dev", name])
        return links[0] if links else None

    def _query_device(self, args):
        """Like query, but a missing device reads as nothing rather than an error."""
        try:
            return self.query(args)
        except IpCommandError as exc:
            if "does not exist" in str(exc):
                return []
            raise

    def addresses(self, name):
        """Global IPv4/IPv6 addresses of `name` (link-local ones stay with their device)."""
        found = []
        for entry in self._query_device(["address", "show", "dev", name]):
            for info in entry.get("addr_info", []):
                if info.get("scope") == "global":
                    found.append(address_from_ip(info))
        return found

    def gateway_routes(self, name):
        """Routes in the main table that leave through `name` via a gateway."""
        found = []
        for family in ("-4", "-6"):
            for route in self.query([family, "route", "show", "table", "main"]):
                if route.get("dev") != name or not route.get("gateway"):
                    continue
                if route.get("protocol") in _DERIVED_ROUTE_PROTOCOLS:
                    continue
                found.append(route_from_ip(route, family))
        return found


def address_from_ip(info):
    """One ``addr_info`` entry reduced to what is needed to compare and re-create it."""
    family = info["family"]
    address = {
        "family": family,
        "cidr": "%s/%s" % (info["local"], info["prefixlen"]),
        "dynamic": bool(info.get("dynamic")),
    }
    if family == "inet" and info.get("broadcast"):
        address["broadcast"] = info["broadcast"]
    if info.get("noprefixroute"):
        address["noprefixroute"] = True
    for key in ("valid_life_time", "preferred_life_time"):
        value = info.get(key)
        if value is not None and value != _FOREVER:
            address[key] = value
    return address


def route_from_ip(route, family):
    wanted = {"family": family, "dst": route["dst"], "gateway": route["gateway"]}
    for key in ("metric", "protocol", "prefsrc"):
        if route.get(key) is not None:
            wanted[key] = route[key]
    if "onlink" in route.get("flags", []):
        wanted["onlink"] = True
    return wanted


def describe_route(route):
    text = "%s via %s" % (route["dst"], route["gateway"])
    if route.get("metric") is not None:
        text += " metric %s" % route["metric"]
    return text


def add_address_args(address, dev):
    args = ["address", "add", address["cidr"], "dev", dev]
    if address.get("broadcast"):
        args += ["broadcast", address["broadcast"]]
    if address.get("noprefixroute"):
        args.append("noprefixroute")
    if "valid_life_time" in address:
        args += ["valid_lft", str(address["valid_life_time"])]
        args += ["preferred_lft", str(address.get("preferred_life_time", address["valid_life_time"]))]
    if address["family"] == "inet6":
        # The host already owns the address: duplicate detection would only delay it.
        args.append("nodad")
    return args


def delete_address_args(address, dev):
    return ["address", "del", address["cidr"], "dev", dev]


def replace_route_args(route, dev):
    args = [route["family"], "route", "replace", route["dst"], "via", route["gateway"], "dev", dev]
    if route.get("metric") is not None:
        args += ["metric", str(route["metric"])]
    if route.get("protocol") and route["protocol"] not in ("boot", "unspec"):
        args += ["proto", str(route["protocol"])]
    if route.get("prefsrc"):
        args += ["src", route["prefsrc"]]
    if route.get("onlink"):
        args.append("onlink")
    return args


def delete_route_args(route, dev):
    args = [route["family"], "route", "del", route["dst"], "via", route["gateway"], "dev", dev]
    if route.get("metric") is not None:
        args += ["metric", str(route["metric"])]
    return args


def link_kind(link):
    return (link or {}).get("linkinfo", {}).get("info_kind")


def bridge_settings(link):
    """STP and forward delay (seconds) of a bridge link as ``ip -d`` shows them."""
    data = link.get("linkinfo", {}).get("info_data", {})
    # The kernel counts the delay in hundredths of a second.
    return {
        "stp": bool(data.get("stp_state", 0)),
        "forward_delay": int(round(data.get("forward_delay", 0) / 100.0)),
    }


def vxlan_settings(link):
    """The parts of a VXLAN link that kvm_bridge manages, in its option names."""
    data = link.get("linkinfo", {}).get("info_data", {})
    settings = {
        "vni": data.get("id"),
        "dstport": data.get("port", VXLAN_DEFAULT_PORT),
        "local": data.get("local") or data.get("local6"),
        "remote": None,
        "group": None,
        "dev": data.get("link"),
    }
    peer = data.get("remote") or data.get("remote6")
    multicast = data.get("group") or data.get("group6")
    if multicast:
        settings["group"] = multicast
    elif peer:
        settings["remote"] = peer
    return settings


def vlan_settings(link):
    data = link.get("linkinfo", {}).get("info_data", {})
    return {"id": data.get("id"), "dev": link.get("link")}


def kernel_has_8021q():
    """True when 802.1Q VLAN devices can be made: the module is loaded or built in."""
    return os.path.isdir("/proc/net/vlan") or os.path.isdir("/sys/module/8021q")
