"""Fault: the network between a host's agent and the engine is cut, then restored.

The engine runs inside a network namespace the test makes, its agent channel on one veth
pair and its API on another; the real `stackwright-agent` (libvirt driver, qemu:///system)
runs beside libvirtd and the NFS server that hold its guest. With ping.interval=2 and
ping.timeout=2, taking the agent's veth down must make the host Alert, then Down; bringing
it up must bring the agent back by itself and the host Up, while the guest keeps running
untouched: same libvirt domain id and UUID, started once.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from bench.report import table
from tests.support.engine import BIN, EngineProcess
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network
from tests.support.netns import NamespaceSet, namespaces_supported
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.slow]

PING_INTERVAL = 2
PING_TIMEOUT = 2
BACKOFF_MAX = 5              # the agent's longest reconnect delay (reconnect.backoff.max)
# Scheduling on a loaded 2-core machine, the heartbeat monitor's tick and the API round trip.
SLACK = 15.0
KVM_TEMPLATE = "Blank disk (no OS)"
SESSION_ENDED = re.compile(r"^(\S+ \S+) WARNING \[stackwright\.agent\.link\] session with engine \S+ ended", re.MULTILINE)


def run(*argv, timeout=60):
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, "%s: %s" % (" ".join(argv), result.stderr.strip())
    return result.stdout.strip()


def free_subnet():
    """A /24 of 10.254.0.0/16 that no route of this machine touches, for the two veth pairs."""
    routes = json.loads(run("ip", "-4", "-json", "route", "show", "table", "all"))
    taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst", "default") != "default"
             and r["dst"][0].isdigit()]
    for _attempt in range(50):
        candidate = ipaddress.ip_network("10.254.%d.0/24" % random.randrange(256))
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise AssertionError("no free /24 in 10.254.0.0/16 for the test's veth pairs")


def link(namespace, outside, inside, subnet):
    """A veth pair: `outside` here with the first address of `subnet`, `inside` in the namespace
    with the second; returns the inside address."""
    first, second = list(subnet.hosts())[:2]
    run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace.name)
    run("ip", "addr", "add", "%s/%d" % (first, subnet.prefixlen), "dev", outside)
    run("ip", "link", "set", outside, "up")
    namespace.ip("addr", "add", "%s/%d" % (second, subnet.prefixlen), "dev", inside)
    namespace.ip("link", "set", inside, "up")
    return str(second)


class NamespacedEngine(EngineProcess):
    """The engine inside `namespace`: the API on `api_address`, the agent channel on `agent_address`."""

    def __init__(self, workdir, db_url, namespace, api_address, agent_address):
        super().__init__(workdir, db_url)
        self.namespace = namespace
        self.api_address, self.agent_address = api_address, agent_address
        self.endpoint = "http://%s:%d/client/api" % (api_address, self.port)

    def start(self, timeout=30.0):
        if self.api_key is None:
            self.setup_database()
        command = self.namespace.exec_argv([
            str(BIN / "stackwright-management"), "--db-url", self.db_url,
            "--listen", "%s:%d" % (self.api_address, self.port),
            "--agent-listen", "%s:%d" % (self.agent_address, self.agent_port),
            "--pki-dir", str(self.workdir / "pki"), "--key-file", str(self.key_file),
            "--log-file", str(self.log_file),
        ])
        with open(self.stderr_file, "ab") as stderr:
            # `ip netns exec` execs the engine, so the PID is the engine's.
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=self.env)
        self.wait_ready(timeout)
        return self


class Agent:
    """One `stackwright-agent` process with its own agent.properties, certificates and log."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.properties = self.workdir / "agent.properties"
        self.log_file = self.workdir / "agent.log"
        self.proc = None

    def setup(self, token, *args):
        token_file = self.workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        command = [str(BIN / "stackwright-setup-agent"), "--properties", str(self.properties), "--json",
                   "--token-file", str(token_file), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        token_file.unlink(missing_ok=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def start(self):
        self.proc = subprocess.Popen([str(BIN / "stackwright-agent"), "--properties", str(self.properties),
                                      "--log-file", str(self.log_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self):
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def session_ended_after(self, since):
        """The time (epoch seconds, from the log) the agent ended its session after `since`, or None."""
        for stamp in SESSION_ENDED.findall(self.log()):
            when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if when >= since:
                return when
        return None


def virsh(uri, *args):
    return run("virsh", "-c", uri, *args, timeout=30)


def domain_names(uri):
    return set(virsh(uri, "list", "--all", "--name").split())


def tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log at %s)" % path
    return "\n".join([line for line in text.splitlines() if "[stackwright.management.access]" not in line][-lines:])


@pytest.fixture
def engine_in_namespace(tmp_path):
    """The engine in a namespace of its own, reached over two veth pairs."""
    if not namespaces_supported():
        pytest.skip("network namespaces need root and iproute2")
    subnet = free_subnet()
    agent_net, api_net = list(subnet.subnets(new_prefix=30))[:2]
    tag = "%x" % (os.getpid() % 0xFFFF)
    # Whatever happens to the veths, nothing for these addresses may leave by the default route.
    run("ip", "route", "add", "unreachable", str(subnet))
    try:
        with NamespaceSet(prefix="swpa") as namespaces:
            namespace = namespaces.create()
            agent_address = link(namespace, "swpa%sa" % tag, "agent0", agent_net)
            api_address = link(namespace, "swpa%sp" % tag, "api0", api_net)
            engine = NamespacedEngine(tmp_path / "engine", "sqlite:///%s" % (tmp_path / "engine" / "cloud.db"),
                                      namespace, api_address, agent_address)
            try:
                engine.start()
                yield engine
            finally:
                engine.kill()
    finally:
        subprocess.run(["ip", "route", "del", "unreachable", str(subnet)], capture_output=True, timeout=30,
                       check=False)


def test_agent_connection_cut_and_restored(engine_in_namespace, libvirtd, nfs_server, tmp_path, record_reliability):
    engine = engine_in_namespace
    api = engine.client()
    # The agent channel reads these when the engine starts.
    api.updateConfiguration(name="ping.interval", value=str(PING_INTERVAL))
    api.updateConfiguration(name="ping.timeout", value=str(PING_TIMEOUT))
    engine.restart()
    api = engine.client()

    unique = uuid.uuid4().hex[:6]
    zone = new_zone(api, unique)
    physical_network(api, zone, unique, traffic=("Management", "Guest"))
    api.updateZone(id=zone["id"], allocationstate="Enabled")
    pod = new_pod(api, zone, unique)
    cluster = new_cluster(api, pod, unique, hypervisor="KVM")
    primary = nfs_server.scratch(nfs_server.primary, "agent-cut-%s" % unique)
    agent = Agent(tmp_path / "agent")
    vm = None
    try:
        token = api.createAgentEnrollmentToken()["agentenrollmenttoken"]["token"]
        enrolled = agent.setup(token, "--host", engine.agent_address, "--port", str(engine.agent_port),
                               "--zone", zone["name"], "--pod", pod["name"], "--cluster", cluster["name"],
                               "--private-device", "lo", "--hypervisor-driver", "libvirt",
                               "--libvirt-uri", libvirtd.uri, "--set", "reconnect.backoff.max=%d" % BACKOFF_MAX)
        guid = enrolled["guid"]
        agent.start()
        host = api.addHost(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"], hypervisor="KVM",
                           url="http://127.0.0.1", username="root", password="unused")["host"][0]

        def host_state(state):
            def reached():
                now = api.listHosts(id=host["id"])["host"][0]
                return now if now["state"] == state else None
            return reached

        wait_for("host Up", host_state("Up"), 60)
        pool = api.createStoragePool(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"],
                                     name="primary-%s" % unique, url=primary.url)["storagepool"]
        wait_for("primary storage Up", lambda: api.listStoragePools(id=pool["id"])["storagepool"][0]["state"] == "Up",
                 60)

        # A guest whose instance name no other engine's guest on this libvirtd already has.
        template = api.listTemplates(templatefilter="executable", name=KVM_TEMPLATE)["template"][0]
        offering = api.listServiceOfferings(name="Small Instance")["serviceoffering"][0]
        for _attempt in range(5):
            vm = api.deployVirtualMachine(zoneid=zone["id"], templateid=template["id"], serviceofferingid=offering["id"],
                                          startvm=False, fetch_result=True)["virtualmachine"]
            if vm["instancename"] not in domain_names(libvirtd.uri):
                break
        else:
            pytest.skip("guests named like this engine's already exist on %s" % libvirtd.uri)
        vm = api.startVirtualMachine(id=vm["id"], fetch_result=True)["virtualmachine"]
        name = vm["instancename"]
        assert vm["state"] == "Running", vm
        domain_id, domain_uuid = virsh(libvirtd.uri, "domid", name), virsh(libvirtd.uri, "domuuid", name)
        assert domain_uuid == vm["id"]
        agent_pid = agent.proc.pid
        registered = "registered with engine %s:%d" % (engine.agent_address, engine.agent_port)
        registrations = agent.log().count(registered)

        # Cut: the engine's end of the agent's veth goes down; the agent's packets vanish silently.
        engine.namespace.ip("link", "set", "agent0", "down")
        cut, cut_wall = time.monotonic(), time.time()
        vm_states = set()

        def watching(state):
            probe = host_state(state)

            def reached():
                vm_states.add(api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"])
                return probe()
            return reached

        try:
            wait_for("host Alert", watching("Alert"), PING_INTERVAL * PING_TIMEOUT + SLACK)
            alert_at = time.monotonic()
            wait_for("host Down", watching("Down"), 2 * PING_INTERVAL * PING_TIMEOUT + SLACK)
            down_at = time.monotonic()
            dropped = wait_for("the agent dropped its connection", lambda: agent.session_ended_after(cut_wall),
                               2 * PING_INTERVAL * PING_TIMEOUT + SLACK)
        finally:
            engine.namespace.ip("link", "set", "agent0", "up")
        restored = time.monotonic()
        try:
            wait_for("host Up again", watching("Up"), BACKOFF_MAX + SLACK + 15)
        except AssertionError as exc:
            raise AssertionError("%s\nengine log:\n%s\nagent log:\n%s" % (
                exc, tail(engine.log_file), tail(agent.log_file))) from None
        up_at = time.monotonic()

        # The agent came back by itself; the guest ran all along, never started again.
        assert agent.proc.poll() is None and agent.proc.pid == agent_pid
        assert agent.log().count(registered) > registrations
        assert virsh(libvirtd.uri, "domstate", name) == "running"
        assert (virsh(libvirtd.uri, "domid", name), virsh(libvirtd.uri, "domuuid", name)) == (domain_id, domain_uuid)
        # The only guest of this agent: one StartVm from the engine, one boot by libvirt.
        log_text = agent.log()
        assert len(re.findall(r"host=%s seq=\d+ executing StartVm " % re.escape(guid), log_text)) == 1
        assert len(re.findall(r"started domain %s$" % re.escape(name), log_text, re.MULTILINE)) == 1
        after = api.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
        assert (after["state"], after["hostid"]) == ("Running", host["id"]), after
        assert vm_states == {"Running"}, vm_states
        assert "host %s missed its pings" % guid in Path(engine.log_file).read_text()

        rows = [
            ["ping.interval x ping.timeout", "%d s x %d" % (PING_INTERVAL, PING_TIMEOUT)],
            ["agent's reconnect.backoff.max", "%d s" % BACKOFF_MAX],
            ["cut to host Alert", "%.1f s" % (alert_at - cut)],
            ["cut to host Down", "%.1f s" % (down_at - cut)],
            ["cut to the agent dropping its connection (agent log)", "%.1f s" % (dropped - cut_wall)],
            ["link restored to host Up", "%.1f s" % (up_at - restored)],
            ["guest (KVM, libvirt domain) while cut off", "kept running; same domain id and UUID, started once"],
            ["VM state reported by the API throughout", ", ".join(sorted(vm_states))],
            ["agent process", "same PID, reconnected by itself"],
        ]
        record_reliability("Agent connection cut", "Engine in a network namespace, agent (libvirt driver, "
                           "qemu:///system) outside it; the engine's end of the agent's veth taken down (the "
                           "agent's packets vanish without an error) until the host is Down, then brought up "
                           "again.\n\n" + table(["measure", "value"], rows))
    finally:
        try:
            if vm is not None and agent.proc is not None and agent.proc.poll() is None:
                api.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)
        except Exception as exc:  # clean-up only: the guest goes below in any case
            print("could not destroy the VM through the engine: %s" % exc)
        finally:
            agent.stop()
            nfs_server.discard(primary)
            if vm is not None:
                remove_guest(libvirtd.uri, vm)


def remove_guest(uri, vm):
    """Destroy and undefine the test's guest if it is still there, and only that guest (same UUID).
    When libvirtd itself is gone (another test session stopped the one it had started), the
    guest's QEMU process is ended by its PID, found by the UUID on its command line."""
    found = subprocess.run(["virsh", "-c", uri, "domuuid", vm["id"]], capture_output=True, text=True, timeout=30,
                           check=False)
    if found.returncode == 0 and found.stdout.strip() == vm["id"]:
        for action in ("destroy", "undefine"):
            subprocess.run(["virsh", "-c", uri, action, vm["id"]], capture_output=True, timeout=30, check=False)
        return
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and vm["id"].encode() in argv:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except ProcessLookupError:
                pass
