"""Hypothesis strategies for fuzzing a running engine: API requests and agent-channel frames.

API requests are built from the engine's own command list (`listApis`): each command's
declared parameters get values that look valid or are garbage of every kind (wrong types,
huge or empty strings, unicode and control characters, ids of the wrong kind, absurd
numbers, malformed map keys), plus unknown and duplicated parameters. What is drawn is the
request's content and how it is authenticated; the signature itself is computed when it is
sent, so `expires` is relative to that moment.

Frames for the agent listener follow docs/agent.md: a 4-byte length then one JSON envelope;
the strategies break every layer of that (length, bytes, JSON, envelope fields, body shape).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from hypothesis import strategies as st

# --- the API ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiParam:
    name: str
    type: str
    required: bool


@dataclass(frozen=True)
class ApiCommand:
    name: str
    params: tuple[ApiParam, ...]


def commands_from_list_apis(answer):
    """`listApis` items -> ApiCommand, sorted by name (so draws are reproducible)."""
    out = []
    for api in answer["api"]:
        params = tuple(ApiParam(p["name"], p["type"], bool(p["required"])) for p in api["params"])
        out.append(ApiCommand(api["name"], params))
    return sorted(out, key=lambda c: c.name)


@dataclass(frozen=True)
class Pools:
    """Values taken from the running engine, so that valid-looking requests reach deep code."""

    ids: dict = field(default_factory=dict)    # entity kind ("zone", "host", ...) -> real ids
    names: tuple[str, ...] = ()                # real configuration keys and entity names


# The entity a uuid parameter names, by parameter name; `id` (and `account`) name the
# entity of the command itself: updateZone's id is a zone, cancelStorageMaintenance's a pool.
KIND_OF_PARAM = {"zoneid": "zone", "podid": "pod", "clusterid": "cluster", "hostid": "host",
                 "storageid": "storagepool", "physicalnetworkid": "physicalnetwork", "templateid": "template",
                 "serviceofferingid": "serviceoffering", "domainid": "domain", "domainId": "domain",
                 "accountid": "account", "account": "account", "imagestoreuuid": "imagestore", "jobid": "job"}
NOUNS = (("virtualmachine", "virtualmachine"), ("physicalnetwork", "physicalnetwork"), ("storagepool", "storagepool"),
         ("storage", "storagepool"), ("imagestore", "imagestore"), ("traffictype", "traffictype"),
         ("serviceoffering", "serviceoffering"), ("template", "template"), ("cluster", "cluster"),
         ("zone", "zone"), ("pod", "pod"), ("host", "host"), ("account", "account"), ("user", "user"),
         ("domain", "domain"), ("asyncjob", "job"))


def kind_of(command, param):
    if param.name in KIND_OF_PARAM:
        return KIND_OF_PARAM[param.name]
    if param.name == "id":
        noun = command.lstrip("abcdefghijklmnopqrstuvwxyz").lower()
        for prefix, kind in NOUNS:
            if noun.startswith(prefix):
                return kind
    return None


# How a request is authenticated. The signing keys never come from the parameter strategies.
ADMIN, USER = "admin", "user"
UNSIGNED, BAD_SIGNATURE, UNKNOWN_KEY, TAMPERED = "unsigned", "bad-signature", "unknown-key", "tampered"
EXPIRED, NO_EXPIRES, BAD_EXPIRES = "expired", "v3-without-expires", "v3-unparsable-expires"
REFUSED_AUTH = (UNSIGNED, BAD_SIGNATURE, UNKNOWN_KEY, TAMPERED, EXPIRED, NO_EXPIRES, BAD_EXPIRES)
RESERVED = {"apikey", "signature", "signatureversion", "expires", "command", "response", "sessionkey"}


@dataclass
class FuzzRequest:
    command: str | None                 # the `command` value; None: no command parameter at all
    pairs: list[tuple[str, str]]        # parameters in order, duplicates allowed
    method: str = "GET"
    auth: str = ADMIN
    v3: bool = False                    # signatureVersion=3 with a future expires
    response_json: bool = True
    extra_commands: list[str] = field(default_factory=list)   # duplicated `command` parameters

    def describe(self):
        pairs = [(k[:60], v if len(v) <= 80 else "%s...(%d chars)" % (v[:60], len(v))) for k, v in self.pairs]
        return "%s command=%r auth=%s v3=%s params=%r%s" % (
            self.method, self.command, self.auth, self.v3, pairs[:20],
            " extra commands=%r" % self.extra_commands if self.extra_commands else "")


# Characters that break naive parsers, encoders and SQL; surrogates cannot be sent as UTF-8.
TRICKY = ["", " ", "  x  ", "%", "%zz", "%00", "+", "&", "=", "&command=deleteZone", "a=b&c", "'", "\"",
          "' OR '1'='1", "\\", "/", "..", "../../etc/passwd", "*", "~", "${jndi:ldap://127.0.0.1/x}",
          "<script>", "null", "None", "undefined", "[]", "{}", "\x00", "\t", "\r\n", "\x7f", "\u2028",
          "\u202e", "\ufeff", "\u2603", "\U0001f600", "Zo\u0308ne", "\u0130", "\u00df", "\u9f8d", "NaN"]
INTEGERS = ["0", "-1", "1", "2147483647", "2147483648", "-2147483649", "9223372036854775807",
            "9223372036854775808", "-9223372036854775809", "99999999999999999999999999", "1.5", "1e3",
            "1e309", "-0", " 7 ", "0x10", "1_000", "\u0663", "\uff17", "Infinity", "nan", "", "-"]
FLOATS = ["0", "0.5", "1.0", "2", "-1", "1e308", "1e309", "-1e309", "nan", "inf", "-inf", "Infinity",
          "1,5", "0x1p3", "", "1e-400", "\u0663.5"]
BOOLEANS = ["true", "false", "TRUE", "False", "tRuE", "1", "0", "yes", "no", "", " true", "t"]
UUID_GARBAGE = ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "not-a-uuid", "", "1", "-1", "{%s}", "urn:uuid:%s", "%s ", " %s", "%s,%s"]
DATES = ["2024-05-01T12:34:56+0000", "2024-05-01", "2024-13-45T99:99:99+0000", "0000-00-00", "yesterday",
         "9999-12-31T23:59:59Z", "1970-01-01T00:00:00+0000"]
# Values that mean something to some command (enums, addresses, URLs, settings).
KNOWN = ["Basic", "Advanced", "basic", "Enabled", "Disabled", "Enable", "Disable", "Up", "Down", "Maintenance",
         "KVM", "kvm", "Simulator", "XenServer", "VMware", "CloudManaged", "ExternalManaged", "Routing",
         "Management", "Guest", "Public", "Storage", "featured", "self", "executable", "community", "all",
         "primary", "image", "NFS", "DefaultPrimary", "cluster", "zone", "CLUSTER", "ZONE", "host", "usage",
         "shared", "local", "VLAN", "GRE", "Managed", "Unmanaged", "x86_64", "aarch64", "Running", "Stopped",
         "8.8.8.8", "8.8.8.888", "10.100.10.1", "10.100.10.101", "10.100.10.254", "255.255.255.0",
         "255.255.255.255", "0.0.0.0", "10.1.0.0/16", "10.1.0.0/33", "::1", "fe80::1", "2001:db8::1",
         "127.0.0.1", "nfs://127.0.0.1/export/fuzz", "nfs://10.147.28.6/export/home/sandbox/primary",
         "nfs://", "nfs:///", "rbd://ceph-mons.domain/pool", "http://sim/c0/h0", "http://sim/x?cpus=9999999",
         "http://sim/x?memory=99999999999999999999", "http://sim/x?cpus=0&memory=1",
         "http://127.0.0.1:1/x", "file:///etc/passwd", "PreSetup", "100", "100-200", "untagged", "vlan://100",
         "cloudbr0", "perf,gpu", "perf,,gpu,", "fuzz@example.org", "not-an-email", "ROOT", "admin", "1.0",
         "2.0", "0.5", "-1", "60", "3600", "604800", "604801"]


# Values that a parameter of this name accepts, so that creations succeed now and then and
# later requests find more to work on.
HINTS = {
    "networktype": ["Basic", "Advanced"], "dns1": ["8.8.8.8"], "dns2": ["1.1.1.1"], "internaldns1": ["10.0.0.53"],
    "internaldns2": ["10.0.0.54"], "ip6dns1": ["2001:db8::53"], "gateway": ["10.100.10.1", "10.200.0.1"],
    "netmask": ["255.255.255.0", "255.255.0.0"], "startip": ["10.100.10.101", "10.200.0.10"],
    "endip": ["10.100.10.200", "10.200.0.200"], "hypervisor": ["Simulator", "KVM"], "clustertype": ["CloudManaged"],
    "traffictype": ["Management", "Guest", "Public", "Storage"], "kvmnetworklabel": ["cloudbr0", "cloudbr1"],
    "templatefilter": ["featured", "self", "executable", "all"], "type": ["primary", "image", "0", "1"],
    "provider": ["NFS", "DefaultPrimary"], "scope": ["cluster", "zone"], "storagetype": ["shared", "local"],
    "allocationstate": ["Enabled", "Disabled", "Enable", "Disable"], "state": ["Enabled", "Disabled", "Up"],
    "url": ["nfs://10.147.28.6/export/fuzz", "http://sim/fuzz/h?cpus=2&cpuspeed=1000&memory=1073741824",
            "rbd://ceph-mons.domain/pool"],
    "email": ["fuzz@example.org"], "accounttype": ["0", "1", "2"], "isolationmethods": ["VLAN"],
    "vlan": ["100-200"], "cpunumber": ["1", "2"], "cpuspeed": ["500", "1000"], "memory": ["256", "512"],
}


def _repeated(alphabet, sizes):
    """A long string from few choices: keeps Hypothesis's buffer small for huge values."""
    return st.tuples(st.sampled_from(alphabet), sizes).map(lambda t: t[0] * t[1])


HUGE = [
    _repeated(["x", "9", "\u2603", "%", "a,", " ", "\x00"], st.integers(256, 5000)),
    _repeated(["y", "1"], st.sampled_from([255, 256, 2048, 2049, 4096, 4097, 20000])),
]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
ASCII = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)

# Values wrong for about any parameter. Values are drawn from lists of such simple strategies
# ("leaves", repeated for weight), the leaf picked by a roll: one Hypothesis draw per value.
GARBAGE_LEAVES = [
    st.sampled_from(TRICKY), TEXT, ASCII, *HUGE, st.sampled_from(INTEGERS), st.sampled_from(BOOLEANS),
    st.integers().map(str), st.floats().map(repr), st.uuids().map(str),
]
GARBAGE = st.one_of(GARBAGE_LEAVES)


class RequestSpace:
    """Every strategy an API request is drawn from, built once per command list and pools
    (building strategies costs far more than drawing from them)."""

    def __init__(self, commands, pools):
        self.commands = list(commands)
        every = sorted({i for ids in pools.ids.values() for i in ids})
        self.any_id = st.sampled_from(every) if every else st.uuids().map(str)
        names = st.sampled_from(pools.names) if pools.names else st.sampled_from(KNOWN)
        list_item = st.one_of(st.sampled_from(KNOWN), self.any_id, ASCII)
        valid = {
            "uuid": self._uuids(self.any_id),
            "integer": [st.integers(-3, 600).map(str), st.sampled_from(INTEGERS), st.integers().map(str)],
            "float": [st.sampled_from(FLOATS), st.floats().map(repr),
                      st.decimals(places=2, min_value=-10, max_value=10).map(str)],
            "boolean": [st.sampled_from(BOOLEANS)],
            "date": [st.sampled_from(DATES)],
            "list": [st.lists(list_item, max_size=4).map(",".join)],
            "string": [st.sampled_from(KNOWN), names, ASCII.map(lambda s: "fuzz-" + s), TEXT],
        }
        for alias, kind in (("long", "integer"), ("short", "integer"), ("double", "float"), ("tzdate", "date")):
            valid[alias] = valid[kind]
        # Three valid-looking values for one garbage value.
        self.values = {kind: self._weighted(leaves) for kind, leaves in valid.items()}
        # Ids of the right kind (or near it), by kind.
        self.uuid_of = {kind: self._weighted(self._uuids(st.sampled_from(sorted(ids))))
                        for kind, ids in pools.ids.items() if ids}
        self.maps = {}
        self.hinted = {}
        self.command_names = st.sampled_from([c.name for c in self.commands])
        self.strange_commands = st.one_of(
            self.command_names.map(lambda n: n.lower() if n != n.lower() else n.upper()),
            self.command_names.map(lambda n: n + " "),
            st.sampled_from(["", " ", "listZones\x00", "api", "listzones", "LISTZONES", "../listZones"]),
            ASCII, TEXT, st.none(),
        )
        self.unknown_names = st.one_of(
            st.sampled_from(["nosuchparam", "id[0].key", "ID", "zoneId", "Name", "page[0].x", "", " ", "=", "%",
                             "a" * 300, "\u2603", "name\x00", "listall", "projectid", "isrecursive", "filter"]),
            ASCII, TEXT,
        ).filter(lambda n: n.lower() not in RESERVED)

    @staticmethod
    def _weighted(valid):
        """Leaves giving a valid-looking value three times out of four, garbage otherwise."""
        size = len(GARBAGE_LEAVES)
        return tuple(valid * (3 * size)) + tuple(GARBAGE_LEAVES * len(valid))

    def _uuids(self, right):
        """Ids of the right kind, real ids of any kind, unknown ones, malformed ones."""
        return [right, right, right, self.any_id, st.uuids().map(str), right.map(str.upper),
                st.tuples(st.sampled_from(UUID_GARBAGE), right).map(lambda t: t[0].replace("%s", t[1]))]

    def value(self, command, param):
        """The leaves a value of `param` of `command` is drawn from."""
        if param.type == "uuid" or param.name == "jobid":
            kind = kind_of(command.name, param)
            if kind in self.uuid_of:
                return self.uuid_of[kind]
        if param.name in HINTS:
            if param.name not in self.hinted:
                hinted = st.sampled_from(HINTS[param.name])
                of_type = self.values.get(param.type, self.values["string"])
                # Half the values from the hints, the other half like any value of the type.
                self.hinted[param.name] = (hinted,) * len(of_type) + of_type
            return self.hinted[param.name]
        return self.values.get(param.type, self.values["string"])

    def map_pairs(self, name):
        """Entries of map parameter `name` in the accepted forms and in malformed ones."""
        if name not in self.maps:
            index = st.one_of(st.integers(0, 3).map(str), st.sampled_from(
                ["-1", "x", "", "99999999999999999999999", "0 ", "\u0663", "00"]))
            key = st.one_of(st.sampled_from(["key", "value", "cpuNumber", "cpuSpeed", "memory", "rootdisksize",
                                             "", ".", "key.value", "[0]"]), ASCII)
            well_formed = st.tuples(st.integers(0, 3), st.sampled_from(["cpuNumber", "memory", "k"]),
                                    st.sampled_from(["1", "256", "v"])).map(
                lambda t: [("%s[%d].key" % (name, t[0]), t[1]), ("%s[%d].value" % (name, t[0]), t[2])])
            malformed = st.tuples(index, key, st.one_of(st.sampled_from(KNOWN), GARBAGE)).map(
                lambda t: [("%s[%s].%s" % (name, t[0], t[1]), t[2])])
            odd_names = st.tuples(st.sampled_from(["%s[0]", "%s[]", "%s[0]..key", "%s[0].", "%s.0.key",
                                                   "%s[[0]].key", "%s[0][1].key", "%s[0].key[1]"]), GARBAGE).map(
                lambda t: [(t[0] % name, t[1])])
            self.maps[name] = st.lists(st.one_of(well_formed, malformed, odd_names), max_size=3).map(
                lambda groups: [pair for group in groups for pair in group])
        return self.maps[name]

    def requests(self):
        return _api_request(self)

    def batches(self, size):
        return st.lists(self.requests(), min_size=size, max_size=size)


class _Rolls:
    """Many small decisions from one drawn integer: one Hypothesis draw instead of dozens,
    which is what makes 100,000 requests affordable. Each integer is mixed first
    (splitmix64), since Hypothesis favours small numbers, which would make every roll 0;
    a new one is drawn when the bits run out."""

    def __init__(self, draw):
        self.draw = draw
        self.value = self.capacity = 0

    def roll(self, sides):
        """A number in range(sides)."""
        if self.capacity < sides * 1024:
            z = (self.draw(ROLLS) + 0x9E3779B97F4A7C15) & MASK64
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.value, self.capacity = z ^ (z >> 31), MASK64
        out = self.value % sides
        self.value //= sides
        self.capacity //= sides
        return out


MASK64 = 2 ** 64 - 1
ROLLS = st.integers(0, MASK64)


@st.composite
def _api_request(draw, space):
    """One request: a registered command with fuzzed parameters, now and then something stranger."""
    r = _Rolls(draw)
    if r.roll(100) < 92:
        cmd = space.commands[r.roll(len(space.commands))]
        name = cmd.name
    else:
        cmd, name = None, draw(space.strange_commands)
    pairs = []
    if cmd is not None:
        for param in cmd.params:
            if not r.roll(10) < (9 if param.required else 3):
                continue
            if param.type == "map":
                pairs.extend(draw(space.map_pairs(param.name)))
                continue
            pname = param.name
            if r.roll(50) == 0:
                pname = pname.upper() if pname != pname.upper() else pname.lower()
            leaves = space.value(cmd, param)
            pairs.append((pname, draw(leaves[r.roll(len(leaves))])))
        if cmd.params and r.roll(20) == 0:
            # A map-style key on a parameter that is not a map.
            param = cmd.params[r.roll(len(cmd.params))]
            pairs.append(("%s[0].key" % param.name, draw(GARBAGE)))
    if r.roll(5) == 0:
        for _step in range(1 + r.roll(2)):
            pairs.append((draw(space.unknown_names), draw(GARBAGE)))
    if pairs and r.roll(15) == 0:
        # Duplicates: the same name again, with the same or another value.
        dup_name, dup_value = pairs[r.roll(len(pairs))]
        pairs.append((dup_name, dup_value if r.roll(2) else draw(GARBAGE)))
    extra_commands = []
    if name is not None and r.roll(50) == 0:
        extra_commands.append(draw(space.command_names))
    auth_roll = r.roll(100)
    if auth_roll < 80:
        auth = ADMIN
    elif auth_roll < 88:
        auth = USER
    else:
        auth = REFUSED_AUTH[r.roll(len(REFUSED_AUTH))]
    # Long requests go as a form body, as a client would send them; GET lines are limited.
    long_request = sum(len(k) + len(v) for k, v in pairs) > 2000
    method = "POST" if long_request or r.roll(5) == 0 else "GET"
    return FuzzRequest(command=name, pairs=pairs, method=method, auth=auth, v3=bool(r.roll(2)),
                       response_json=r.roll(50) != 0, extra_commands=extra_commands)


# --- the agent channel ------------------------------------------------------------------

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20
# Requests an agent may send, requests only the engine sends, answers, notices, and nothing.
MESSAGE_TYPES = ["RegisterRequest", "Ping", "GetCa", "Enroll", "StartVm", "StopVm", "CheckHealth", "Ready",
                 "AttachPool", "ErrorAnswer", "Ack", "PingAnswer", "RegisterAnswer", "CaAnswer", "Goodbye",
                 "VmStateAnswer", "Message", "Request", "", "registerrequest", "__class__"]

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)


def _host_info():
    """A HostInfo body whose fields are sometimes of the wrong type or absurd."""
    def fieldval(good):
        return st.one_of(st.just(good), JSON)

    return st.fixed_dictionaries({
        "hostname": fieldval("fuzz-host"), "hypervisor": st.sampled_from(["Simulator", "KVM", "", "x" * 300]),
        "hypervisor_version": fieldval("1"), "arch": fieldval("x86_64"),
        "cpu_sockets": fieldval(1), "cpu_cores": fieldval(1), "cpu_threads": fieldval(1),
        "cpus": st.one_of(st.just(2), st.integers(), JSON), "cpu_mhz": st.one_of(st.just(1000), st.integers()),
        "memory_bytes": st.one_of(st.just(1 << 30), st.integers(), st.just(-1), st.just(2 ** 80)),
        "private_ip": st.one_of(st.none(), st.sampled_from(["127.0.0.1", "not-an-ip", ""])),
        "private_mac": st.one_of(st.none(), TEXT),
    })


def _bodies(cluster_ids):
    """Bodies for the types the engine accepts from agents, valid-looking or of the wrong shape."""
    guid = st.one_of(st.sampled_from(["fuzz-guid", "", "a/b", "x" * 200, " "]), TEXT)
    location = st.one_of(st.sampled_from(list(cluster_ids) or [""]), st.just(""), TEXT)
    register = st.fixed_dictionaries(
        {"guid": guid, "host": _host_info()},
        optional={"zone": location, "pod": location, "cluster": location,
                  "vms": st.one_of(st.dictionaries(TEXT, st.sampled_from(["Running", "Stopped", "Bogus"]),
                                                   max_size=3), JSON),
                  "agent_version": JSON})
    ping = st.fixed_dictionaries({}, optional={"vms": JSON, "vms_reported": JSON})
    enroll = st.fixed_dictionaries(
        {"token": st.one_of(st.sampled_from(["", "x.y", "secret." + "0" * 64]), TEXT),
         "csr_pem": st.one_of(st.sampled_from(["", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                               "-----END CERTIFICATE REQUEST-----\n"]), TEXT),
         "guid": guid})
    return st.one_of(register, ping, enroll, st.just({}), JSON)


@st.composite
def envelopes(draw, cluster_ids=()):
    """One JSON envelope; each field is right four times out of five, so that most frames get
    past the first check and break a later one."""
    def field(good, bad):
        return draw(st.one_of(good, good, good, good, bad))

    env = {
        "v": field(st.just(1), st.one_of(st.sampled_from([0, 2, -1, "1", 1.0, True, None, 2 ** 64]), JSON)),
        "seq": field(st.integers(0, 100), st.one_of(st.sampled_from([-1, "7", 1.5, True, None, 2 ** 70]), JSON)),
        "type": field(st.sampled_from(MESSAGE_TYPES), st.one_of(TEXT, JSON)),
        "reply": field(st.booleans(), st.sampled_from(["true", 1, None])),
        "body": draw(_bodies(cluster_ids)),
    }
    for key in draw(st.lists(st.sampled_from(list(env)), max_size=2, unique=True)) if draw(st.booleans()) else ():
        del env[key]
    if draw(st.integers(0, 9)) == 0:
        env[draw(TEXT)] = draw(JSON)
    return env


def frame(payload):
    return HEADER.pack(len(payload)) + payload


@st.composite
def raw_frames(draw, cluster_ids=()):
    """The bytes of one (usually broken) frame and what kind of break it is."""
    kind = draw(st.sampled_from(["envelope", "envelope", "envelope", "not-json", "json-not-object",
                                 "too-large", "empty", "truncated", "short-header", "bytes", "not-utf8",
                                 "deeply-nested", "nested-body", "largest"]))
    if kind == "envelope":
        data = frame(json.dumps(draw(envelopes(cluster_ids))).encode())
    elif kind == "not-json":
        data = frame(draw(st.one_of(st.binary(min_size=1, max_size=64),
                                    st.sampled_from([b"{", b"{\"v\":1,", b"nul", b"\x00" * 8, b"NaN"]))))
    elif kind == "json-not-object":
        data = frame(json.dumps(draw(st.one_of(st.lists(JSON, max_size=3), st.integers(), TEXT,
                                               st.none()))).encode())
    elif kind == "too-large":
        data = HEADER.pack(draw(st.integers(MAX_FRAME + 1, 2 ** 32 - 1))) + b"{}"
    elif kind == "empty":
        data = HEADER.pack(0)
    elif kind == "truncated":
        payload = json.dumps(draw(envelopes(cluster_ids))).encode()
        data = HEADER.pack(len(payload) + draw(st.integers(1, 5000))) + payload
    elif kind == "deeply-nested":
        depth = draw(st.integers(1000, 200000))
        data = frame(draw(st.sampled_from([b"[", b"{\"a\":"])) * depth)
    elif kind == "nested-body":
        # A valid envelope whose body nests deeper than any decoder's recursion goes.
        depth = draw(st.integers(900, 5000))
        data = frame(b'{"v":1,"seq":1,"type":"Ping","reply":false,"body":{"vms":' + b"[" * depth
                     + b"]" * depth + b"}}")
    elif kind == "largest":
        # A frame of exactly the largest size accepted, holding one long string.
        filler = MAX_FRAME - len(b'{"v":1,"seq":1,"type":"Ping","reply":false,"body":{"x":""}}')
        data = frame(b'{"v":1,"seq":1,"type":"Ping","reply":false,"body":{"x":"' + b"a" * filler + b'"}}')
    elif kind == "short-header":
        data = draw(st.binary(min_size=1, max_size=3))
    elif kind == "bytes":
        data = draw(st.binary(min_size=1, max_size=256))
    else:
        data = frame(b"{\"v\":1,\"type\":\"\xff\xfe\"}")
    return kind, data


OPENINGS = ("none", "getca", "register")
FATAL = {"not-json", "json-not-object", "too-large", "empty", "not-utf8", "deeply-nested"}   # must end the session at once


def connections(targets, cluster_ids=()):
    """What one connection does: where it goes (an index into `targets`), a valid opening
    message or none, then a few frames, mostly broken."""
    return st.tuples(st.integers(0, targets - 1), st.sampled_from(OPENINGS),
                     st.lists(raw_frames(cluster_ids), min_size=1, max_size=4))
