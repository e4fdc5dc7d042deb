"""The simulated agent of a Simulator host.

A Simulator host has no machine behind it: the engine answers for its agent. It reports
the same facts a real agent's registration carries (`stackwright.protocol.messages.HostInfo`),
so the host service treats both kinds alike once a host is connected.

The CPU and memory of a simulated host come from the query string of its URL
(``http://sim/c0/h0?cpus=4&cpuspeed=2400&memory=4294967296``), else from the global
settings ``simulator.host.cpus``, ``simulator.host.cpuspeed`` and ``simulator.host.memory``.
Its address is a label from 172.16.0.0/12; nothing ever connects to it.
"""

import ipaddress
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass

from stackwright.agent.hypervisor.simulator import SIMULATOR_VERSION as HYPERVISOR_VERSION
from stackwright.agent.link import AGENT_VERSION
from stackwright.protocol.messages import HostInfo, HostStats

# The versions are the ones the simulator driver reports when the engine runs a full
# simulated agent for the host, so a host's facts do not change when that agent registers.
HYPERVISOR = "Simulator"
ADDRESS_POOL = ipaddress.IPv4Network("172.16.0.0/12")

# URL query parameter -> (global key, smallest and largest accepted value); the largest are
# what the host's columns hold (a Java int, a long for bytes).
_SIZES = {
    "cpus": ("simulator.host.cpus", 1, 2**31 - 1),
    "cpuspeed": ("simulator.host.cpuspeed", 1, 2**31 - 1),
    "memory": ("simulator.host.memory", 1, 2**63 - 1),
}


class SimulatorUrlError(ValueError):
    """The URL of a Simulator host cannot describe a host; the message says why."""


@dataclass(frozen=True)
class SimulatedSize:
    cpus: int
    cpu_speed: int          # MHz
    memory: int             # bytes


def parse_size(url, defaults):
    """The CPU/memory a URL asks for; `defaults(name)` gives the global value of a key."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise SimulatorUrlError(
            "%s is not a valid Simulator host URL; use http://sim/<cluster>/<host>[?cpus=N&cpuspeed=MHz&memory=BYTES]"
            % url
        )
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_SIZES))
    if unknown:
        raise SimulatorUrlError(
            "unknown parameter(s) %s in Simulator host URL %s; accepted: cpus, cpuspeed, memory"
            % (", ".join(unknown), url)
        )
    values = {}
    for name, (setting, minimum, maximum) in _SIZES.items():
        raw = query.get(name, [None])[-1]
        if raw is None:
            values[name] = int(defaults(setting))
            continue
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise SimulatorUrlError(
                "invalid %s=%s in Simulator host URL %s; expected a whole number from %s to %s"
                % (name, raw, url, minimum, maximum)
            )
        values[name] = value
    return SimulatedSize(values["cpus"], values["cpuspeed"], values["memory"])


def address(index, taken=lambda _ip: False):
    """A unique label address for simulated host number `index` (its database id).

    `taken(ip)` says whether another host already uses an address, in which case the
    next free one after it is chosen.
    """
    usable = ADDRESS_POOL.num_addresses - 2
    for step in range(usable):
        candidate = str(ADDRESS_POOL.network_address + 1 + (index + step) % usable)
        if not taken(candidate):
            return candidate
    raise SimulatorUrlError("the Simulator address pool %s is exhausted" % ADDRESS_POOL)


class SimulatedAgent:
    """Plays the agent of one Simulator host: registration facts and statistics.

    `cpus`, `cpu_speed` (MHz) and `memory` (bytes) are the host's size, from its URL or
    the global defaults.
    """

    hypervisor = HYPERVISOR
    version = AGENT_VERSION

    def __init__(self, url, defaults):
        self.url = url
        size = parse_size(url, defaults)
        self.cpus, self.cpu_speed, self.memory = size.cpus, size.cpu_speed, size.memory

    @staticmethod
    def new_guid():
        return "%s-Simulator" % uuidlib.uuid4()

    def host_info(self, private_ip, hostname=None):
        """What a registration of this host reports."""
        return HostInfo(
            hostname=hostname or "SimulatedAgent.%s" % uuidlib.uuid4(),
            hypervisor=HYPERVISOR,
            hypervisor_version=HYPERVISOR_VERSION,
            arch="x86_64",
            cpu_sockets=1,
            cpu_cores=self.cpus,
            cpu_threads=1,
            cpus=self.cpus,
            cpu_mhz=self.cpu_speed,
            memory_bytes=self.memory,
            private_ip=private_ip,
            private_mac=_mac_for(private_ip),
            bridges=["cloudbr0"],
            accel="none",
        )

    def host_stats(self):
        """An idle simulated host: no CPU used, all memory free."""
        return HostStats(cpu_utilization=0.0, memory_total_bytes=self.memory, memory_free_bytes=self.memory)


def _mac_for(ip):
    """A locally administered MAC derived from the label address, stable across reconnects."""
    if not ip:
        return None
    octets = ipaddress.IPv4Address(ip).packed
    return "06:00:%02x:%02x:%02x:%02x" % tuple(octets)
