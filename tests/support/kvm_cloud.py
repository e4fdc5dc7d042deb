"""Real KVM hosts registered with a live engine, for tests and benchmarks of live migration and HA.

Each host is a network namespace with its own libvirtd (its own host UUID, listening on TCP as
the `libvirt_tcp` role sets it up) and its own `stackwright-agent` running inside it (in the
daemon's network and mount namespaces), and optionally its own `stackwright-heartbeat`. Two
namespaces are joined by a veth pair and migrate over it; with three, the first one's device
is a bridge the others' veths end on. Inside each namespace the engine's agent port and nfs-ganesha's ports
(portmapper, MOUNT, NFS) are relayed from the machine's loopback (`nsforward`), so both hosts
use the same NFS export as primary storage, through QEMU's own NFS client. `KvmCloud.start`
builds it all: a zone with a KVM cluster, every host Up, a primary pool Up, the zone Enabled.
`KvmHost.die` stops everything of a host at once (a host death) and `revive` boots it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.support.engine import EngineProcess
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network
from tests.support.jobs import run_job
from tests.support.libvirtd import ISOLATED_VIRTLOGD_PID_FILE, IsolatedLibvirtd, isolated_workdir
from tests.support.netns import Namespace, veth_pair
from tests.support.nfs import MOUNT_PORT, NFS_PORT, PORTMAP_PORT
from tests.support.nsforward import LoopbackForwarder
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent
ADDRESSES = ("10.250.72.1", "10.250.72.2", "10.250.72.3")
DEVICES = ("swkm0", "swkm1", "swkm2")
BRIDGE = "cloudbr0"


def log_tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log at %s)" % path
    return "\n".join([line for line in text.splitlines() if "[stackwright.management.access]" not in line][-lines:])


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(10)


def _stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            _kill(process)


class LibvirtNode:
    """A KVM host's hypervisor side: a network namespace with a libvirtd of its own, listening on
    TCP without authentication as the `libvirt_tcp` role sets it up, under a host UUID of its own
    (libvirt refuses to migrate to a host with its own UUID). `start_pair` starts two and joins
    them."""

    def __init__(self, address: str, device: str):
        self.address, self.device = address, device
        self.libvirt_dir = isolated_workdir()
        settings = {"listen_tcp": "1", "listen_tls": "0", "auth_tcp": '"none"', "host_uuid": '"%s"' % uuid.uuid4()}
        self.libvirtd = IsolatedLibvirtd(self.libvirt_dir, settings=settings, listen=True)

    @property
    def namespace(self) -> Namespace:
        return self.libvirtd.namespace

    def virsh(self, *args: str, check: bool = True) -> str:
        run = self.libvirtd.run(["virsh", "-c", "qemu:///system", *args], check=False)
        if check:
            assert run.returncode == 0, "virsh %s on %s: %s" % (" ".join(args), self.address, run.stderr)
        return run.stdout.strip()

    def running(self) -> set[str]:
        """The guests running here (none while libvirtd is down: a dead host runs nothing)."""
        if self.libvirtd.daemon_pid() is None:
            return set()
        return set(self.virsh("list", "--name").split())

    def defined(self) -> set[str]:
        """Every guest libvirtd knows here, running or not."""
        return set(self.virsh("list", "--all", "--name").split())

    def stop_libvirt(self) -> None:
        """Power off what still runs here, stop the daemons and remove the namespaces."""
        if self.libvirtd.daemon_pid() is not None:
            for name in self.virsh("list", "--name", check=False).split():
                self.virsh("destroy", name, check=False)
        self.libvirtd.stop()
        shutil.rmtree(self.libvirt_dir, ignore_errors=True)


def start_pair(nodes: Sequence[LibvirtNode]) -> None:
    """Start the nodes' libvirtd and join their namespaces, each device carrying its node's
    address (the address the others migrate to): two nodes by a veth pair; more by a bridge, the
    first node's device, that a veth from each other node ends on."""
    first, *others = nodes
    for node in nodes:
        node.libvirtd.start()
    if len(others) == 1:
        veth_pair(first.namespace, first.device, others[0].namespace, others[0].device)
    else:
        first.namespace.ip("link", "add", first.device, "type", "bridge")
        first.namespace.ip("link", "set", first.device, "up")
        for number, node in enumerate(others, 1):
            port = "%sp%d" % (first.device, number)
            veth_pair(first.namespace, port, node.namespace, node.device)
            first.namespace.ip("link", "set", port, "master", first.device)
    for node in nodes:
        node.namespace.ip("addr", "add", node.address + "/24", "dev", node.device)


class KvmHost(LibvirtNode):
    """A LibvirtNode with an agent of its own and, with `heartbeat_interval`, the heartbeat
    service beside it."""

    def __init__(self, address: str, device: str, workdir: Path, heartbeat_interval: float | None = None):
        super().__init__(address, device)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.forwarder: LoopbackForwarder | None = None
        self.agent: subprocess.Popen | None = None
        self.heartbeat: subprocess.Popen | None = None
        self.heartbeat_interval = heartbeat_interval
        self.properties = self.workdir / "agent.properties"
        self.log_file = self.workdir / "agent.log"
        self.id = None

    def enroll(self, engine, site, token, hosts="127.0.0.1"):
        """Enroll with `engine` (`hosts`: the agent's comma list of engines, by default the one
        on loopback at `engine.agent_port`)."""
        token_file = self.workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        run = subprocess.run(
            [str(BIN / "stackwright-setup-agent"), "--properties", str(self.properties), "--json",
             "--host", hosts, "--port", str(engine.agent_port), "--zone", site.zone["name"],
             "--pod", site.pod["name"], "--cluster", site.cluster["name"], "--private-device", self.device,
             "--hypervisor-driver", "libvirt", "--libvirt-uri", "qemu:///system",
             "--set", "storage.mode=userspace", "--set", "reconnect.backoff.max=2",
             "--set", "ha.pools.file=%s" % (self.workdir / "pools.json"), "--token-file", str(token_file)],
            capture_output=True, text=True, timeout=60, check=False)
        token_file.unlink(missing_ok=True)
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(run.stdout)

    def _spawn(self, argv: list[str], stderr_name: str) -> subprocess.Popen:
        """`argv` running in this host's namespaces, its stderr appended to a file of the host."""
        with open(self.workdir / stderr_name, "ab") as log:
            return subprocess.Popen(self.libvirtd.exec_argv(argv), stdout=subprocess.DEVNULL, stderr=log, cwd="/")

    def start_agent(self):
        self.agent = self._spawn([str(BIN / "stackwright-agent"), "--properties", str(self.properties),
                                  "--log-file", str(self.log_file)], "agent.stderr")

    def start_heartbeat(self):
        """The heartbeat service, when this host has one (every `heartbeat_interval` seconds)."""
        if self.heartbeat_interval is not None:
            # As the packaged unit runs it (docs/ha.md): the module, whatever scripts are installed.
            self.heartbeat = self._spawn([sys.executable, "-m", "stackwright.agent.heartbeat", "--properties",
                                          str(self.properties), "--interval", str(self.heartbeat_interval)],
                                         "heartbeat.log")

    def kill_agent(self):
        """SIGKILL the agent alone (a crash): libvirtd, its guests and the heartbeat go on."""
        _kill(self.agent)

    def qemu_pids(self) -> list[int]:
        """The QEMU processes of this host's namespace."""
        return self.libvirtd.processes("qemu")

    def qemu_pid(self, name: str) -> int | None:
        """The pid of guest `name`'s QEMU, as libvirtd recorded it, while it lives."""
        try:
            pid = int((Path("/proc/%d/root" % self.libvirtd.holder.pid) / "run/libvirt/qemu"
                       / ("%s.pid" % name)).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid in self.qemu_pids() else None

    def die(self):
        """Everything of the host stops at once, as in a power loss: the agent, the heartbeat,
        every QEMU and the daemons (SIGKILL). The namespaces stay, as the machine does."""
        _kill(self.agent)
        _kill(self.heartbeat)
        for pid in (self.libvirtd.daemon_pid(), self.libvirtd.daemon_pid(ISOLATED_VIRTLOGD_PID_FILE)):
            if pid is not None:
                _signal(pid, signal.SIGKILL)
        for pid in self.qemu_pids():
            _signal(pid, signal.SIGKILL)
        wait_for("the QEMU processes of %s gone" % self.address, lambda: not self.qemu_pids(), 20)

    def dead(self) -> bool:
        return self.libvirtd.daemon_pid() is None

    def revive(self):
        """Boot the host again after `die`: its daemons, heartbeat and agent."""
        self.libvirtd.start_daemons()
        self.start_heartbeat()
        self.start_agent()

    def stop(self):
        _stop(self.heartbeat)
        _stop(self.agent)
        if self.forwarder is not None:
            self.forwarder.stop()
        self.stop_libvirt()


class KvmCloud:
    """An engine (SQLite, loopback) with a KVM cluster of real hosts (two, or `hosts`) sharing an
    NFS pool. `settings`: global settings the engine starts with (set, then the engine restarted,
    before any host joins: ping.interval and ping.timeout are read at start);
    `heartbeat_interval`: every host runs stackwright-heartbeat that often."""

    def __init__(self, workdir: Path, nfs_server, memory_mb: int = 128, hosts: int = 2,
                 settings: dict[str, object] | None = None, heartbeat_interval: float | None = None):
        self.workdir, self.nfs_server, self.memory_mb = Path(workdir), nfs_server, memory_mb
        self.host_count, self.settings, self.heartbeat_interval = hosts, dict(settings or {}), heartbeat_interval
        self.engine = EngineProcess(self.workdir / "engine", "sqlite:///%s" % (self.workdir / "engine" / "cloud.db"))
        self.scratch = None
        self.api = None
        self.zone = self.pod = self.cluster = None
        self.hosts: list[KvmHost] = []
        self.template = self.offering = None

    def diagnostics(self):
        parts = ["engine log:\n%s" % log_tail(self.engine.log_file)]
        parts += ["agent %s log:\n%s" % (h.address, log_tail(h.log_file, 15)) for h in self.hosts]
        parts += ["heartbeat %s log:\n%s" % (h.address, log_tail(h.workdir / "heartbeat.log", 5))
                  for h in self.hosts if h.heartbeat_interval is not None]
        return "\n".join(parts)

    def host_now(self, host):
        return self.api.listHosts(id=host.id)["host"][0]

    def by_id(self, host_id):
        return next(h for h in self.hosts if h.id == host_id)

    def vm(self, vm_id):
        return self.api.listVirtualMachines(id=vm_id)["virtualmachine"][0]

    def deploy(self, host, **params):
        params.setdefault("serviceofferingid", self.offering["id"])
        answer, job = run_job(self.api, "deployVirtualMachine", zoneid=self.zone["id"], templateid=self.template["id"],
                              hostid=host.id, **params)
        assert job["jobstatus"] == 1, "%s\n%s" % (job, self.diagnostics())
        return job["jobresult"]["virtualmachine"]

    def discard(self, *vms):
        """Power the guests off (they have no OS to answer ACPI) and expunge them."""
        for vm in vms:
            self.job("stopVirtualMachine", id=vm["id"], forced=True)
            self.job("destroyVirtualMachine", id=vm["id"], expunge=True)

    def job(self, command, **params):
        _answer, job = run_job(self.api, command, **params)
        return job

    def copies(self, name):
        """The hosts whose libvirtd runs guest `name`."""
        return [h for h in self.hosts if name in h.running()]

    def start(self) -> KvmCloud:
        engine, nfs_server = self.engine, self.nfs_server
        try:
            self._start(engine, nfs_server)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, engine: EngineProcess, nfs_server) -> None:
        engine.start()
        api = self.api = engine.client()
        if self.settings:
            for name, value in self.settings.items():
                api.updateConfiguration(name=name, value=str(value))
            engine.restart()
            api = self.api = engine.client()
        unique = uuid.uuid4().hex[:8]
        self.zone = new_zone(api, unique, networktype="Advanced")
        network = physical_network(api, self.zone, unique, traffic=("Management", "Guest"), label=BRIDGE)
        api.addTrafficType(physicalnetworkid=network["id"], traffictype="Public", kvmnetworklabel=BRIDGE,
                           fetch_result=True)
        self.pod = new_pod(api, self.zone, unique)
        self.cluster = new_cluster(api, self.pod, unique, hypervisor="KVM")
        for address, device in zip(ADDRESSES[:self.host_count], DEVICES[:self.host_count], strict=True):
            self.hosts.append(KvmHost(address, device, self.workdir / address, self.heartbeat_interval))
        start_pair(self.hosts)
        for host in self.hosts:
            namespace = host.namespace
            namespace.ip("link", "add", BRIDGE, "type", "bridge")
            namespace.ip("link", "set", BRIDGE, "up")
            host.forwarder = LoopbackForwarder(namespace.name, [engine.agent_port, PORTMAP_PORT, MOUNT_PORT,
                                                                NFS_PORT]).start()
            token = api.createAgentEnrollmentToken()["agentenrollmenttoken"]["token"]
            host.enroll(engine, self, token)
            host.start_heartbeat()
            host.start_agent()
            added = api.addHost(zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"],
                                hypervisor="KVM", url="http://%s" % host.address, username="root",
                                password="unused")["host"][0]
            host.id = added["id"]
        for host in self.hosts:
            self.wait("host %s Up" % host.address, lambda h=host: self.host_now(h)["state"] == "Up", 60)
        self.scratch = nfs_server.scratch(nfs_server.primary, "kvm-migration-%s" % unique)
        pool = api.createStoragePool(zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"],
                                     name="primary-%s" % unique, url=self.scratch.url, scope="cluster")["storagepool"]
        self.wait("pool Up", lambda: api.listStoragePools(id=pool["id"])["storagepool"][0]["state"] == "Up", 60)
        if self.heartbeat_interval is not None:
            self.wait("a heartbeat of every host on the pool", lambda: len(self.heartbeats()) == len(self.hosts),
                      2 * self.heartbeat_interval + 30)
        api.updateZone(id=self.zone["id"], allocationstate="Enabled")
        self.template = next(t for t in api.listTemplates(templatefilter="all")["template"]
                             if t["name"] == "Blank disk (no OS)")
        self.offering = api.createServiceOffering(name="mig-" + unique, displaytext="migration", cpunumber=1,
                                                  cpuspeed=500, memory=self.memory_mb)["serviceoffering"]

    def heartbeats(self) -> dict[str, float]:
        """The heartbeat files on the pool (stackwright-heartbeat's), and their modification times."""
        found = {}
        for path in self.scratch.path.glob(".stackwright-heartbeat-*"):
            try:
                found[path.name] = path.stat().st_mtime
            except FileNotFoundError:
                pass
        return found

    def wait(self, what, condition, timeout):
        """wait_for, with the engine's and agents' logs when it times out."""
        try:
            return wait_for(what, condition, timeout)
        except AssertionError as exc:
            raise AssertionError("%s\n%s" % (exc, self.diagnostics())) from None

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
        self.engine.kill()
        if self.scratch is not None:
            self.nfs_server.discard(self.scratch)
            self.scratch = None


# --- one KVM host on the machine's own libvirtd ------------------------------------------------
#
# The agent's end-to-end tests, the template tests and the template benchmarks build the same
# site: an engine of their own, a zone with a KVM cluster, scratch directories on the NFS
# exports, and `stackwright-agent` processes enrolled with `stackwright-setup-agent`.

SETUP_AGENT = str(BIN / "stackwright-setup-agent")
AGENT = str(BIN / "stackwright-agent")


class Agent:
    """One `stackwright-agent` process with its own agent.properties, certificates and log."""

    def __init__(self, workdir, engine):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self.properties = self.workdir / "agent.properties"
        self.log_file = self.workdir / "agent.log"
        self.proc = None

    def setup(self, *args, token=None):
        """Run stackwright-setup-agent --json; returns (exit status, parsed output)."""
        command = [SETUP_AGENT, "--properties", str(self.properties), "--json", *args]
        if token is not None:
            token_file = self.workdir / "token"
            token_file.write_text(token)
            token_file.chmod(0o600)
            command += ["--token-file", str(token_file)]
        run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        (self.workdir / "token").unlink(missing_ok=True)
        return run.returncode, json.loads(run.stdout)

    def start(self):
        self.proc = subprocess.Popen([AGENT, "--properties", str(self.properties), "--log-file", str(self.log_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        """SIGTERM, the clean way; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("agent did not stop within 20 s of SIGTERM:\n%s" % log_tail(self.log_file)) from None

    def log(self):
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class Site:
    """An engine with a zone, a pod and a KVM cluster, scratch directories on both NFS exports, the
    machine's libvirtd, and the agents started for it."""

    def __init__(self, engine, api, zone, pod, cluster, workdir, agents, primary, secondary, libvirtd):
        self.engine, self.api = engine, api
        self.zone, self.pod, self.cluster = zone, pod, cluster
        self.workdir, self.agents = workdir, agents
        self.primary, self.secondary = primary, secondary
        self.libvirtd = libvirtd
        self.host = None
        self.agent = None
        self.guid = None
        self.pool = None
        self.store = None
        self.physical_network = None
        # The agent's longest reconnect delay (reconnect.backoff.max), set by setup_args.
        self.agent_backoff_max = 5

    def new_agent(self, name):
        agent = Agent(self.workdir / name, self.engine)
        self.agents.append(agent)
        return agent

    def token(self, **params):
        return self.api.createAgentEnrollmentToken(**params)["agentenrollmenttoken"]

    def host_now(self):
        return self.api.listHosts(id=self.host["id"])["host"][0]

    def wait_host(self, state, timeout):
        seen = {}

        def reached():
            seen.update(self.host_now())
            return dict(seen) if seen["state"] == state else None

        try:
            return wait_for("host %s state %s" % (self.host["id"], state), reached, timeout)
        except AssertionError as exc:
            raise AssertionError("%s\nhost is %s (%s)\n%s" % (exc, seen.get("state"), seen.get("details"),
                                                              self.diagnostics())) from None

    def diagnostics(self):
        agent_log = log_tail(self.agent.log_file, 40) if self.agent else "(no agent)"
        return "engine log:\n%s\nagent log:\n%s" % (log_tail(self.engine.log_file, 40), agent_log)

    def virsh(self, *args):
        run = subprocess.run(["virsh", "-c", self.libvirtd.uri, *args], capture_output=True, text=True, timeout=30,
                             check=False)
        assert run.returncode == 0, "virsh %s: %s" % (" ".join(args), run.stderr)
        return run.stdout.strip()

    def add_host(self, *setup_extra):
        """Enroll an agent with `setup_extra` settings, start it and add its host; waits for Up."""
        agent = self.agent = self.new_agent("agent")
        status, result = agent.setup(*setup_args(self, *setup_extra), token=self.token()["token"])
        assert status == 0, result
        self.guid = result["guid"]
        agent.start()
        self.host = self.api.addHost(zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"],
                                     hypervisor="KVM", url="http://127.0.0.1", username="root",
                                     password="unused")["host"][0]
        self.wait_host("Up", 60)
        return self.host

    def add_storage(self, unique):
        """The primary pool Up on the cluster and the NFS image store checked, on the scratch directories."""
        api = self.api
        self.pool = api.createStoragePool(zoneid=self.zone["id"], podid=self.pod["id"], clusterid=self.cluster["id"],
                                          name="primary-%s" % unique, url=self.primary.url,
                                          scope="cluster")["storagepool"]
        wait_for("primary storage Up", lambda: api.listStoragePools(id=self.pool["id"])["storagepool"][0]["state"]
                 == "Up", 30)
        self.store = api.addImageStore(provider="NFS", zoneid=self.zone["id"], url=self.secondary.url,
                                       name="secondary-%s" % unique)["imagestore"]
        wait_for("image store checked", lambda: api.listImageStores(id=self.store["id"])["imagestore"][0].get(
            "disksizetotal"), 30)

    def enable(self):
        """A Public traffic type on the bridge and the zone Enabled: ready for guests."""
        self.api.addTrafficType(physicalnetworkid=self.physical_network["id"], traffictype="Public",
                                kvmnetworklabel=BRIDGE, fetch_result=True)
        self.api.updateZone(id=self.zone["id"], allocationstate="Enabled")


def setup_args(site, *extra):
    """stackwright-setup-agent's arguments for an agent of `site` on the machine's libvirtd."""
    return ["--host", "127.0.0.1", "--port", str(site.engine.agent_port), "--zone", site.zone["name"],
            "--pod", site.pod["name"], "--cluster", site.cluster["name"], "--private-device", "lo",
            "--hypervisor-driver", "libvirt", "--libvirt-uri", site.libvirtd.uri,
            "--set", "reconnect.backoff.max=%d" % site.agent_backoff_max, *extra]


@contextlib.contextmanager
def kvm_site(workdir, libvirtd, nfs_server, prefix, configure=None):
    """A `Site` (engine on SQLite under `workdir`) for the duration of the block; then its agents and
    engine are stopped and its scratch directories discarded. `configure(engine)` runs before the
    zone is created and returns the API client to use (for settings read at the engine's start)."""
    workdir = Path(workdir)
    engine = EngineProcess(workdir / "engine", "sqlite:///%s" % (workdir / "engine" / "cloud.db"))
    agents, scratch = [], []
    try:
        engine.start()
        api = configure(engine) if configure is not None else engine.client()
        unique = uuid.uuid4().hex[:8]
        zone = new_zone(api, unique, networktype="Advanced")
        network = physical_network(api, zone, unique, traffic=("Management", "Guest"), label=BRIDGE)
        pod = new_pod(api, zone, unique)
        cluster = new_cluster(api, pod, unique, hypervisor="KVM")
        primary = nfs_server.scratch(nfs_server.primary, "%s-%s" % (prefix, unique))
        secondary = nfs_server.scratch(nfs_server.secondary, "%s-%s" % (prefix, unique))
        scratch += [primary, secondary]
        site = Site(engine, api, zone, pod, cluster, workdir, agents, primary, secondary, libvirtd)
        site.physical_network = network
        site.unique = unique
        yield site
    finally:
        for agent in agents:
            agent.kill()
        engine.kill()
        for directory in scratch:
            nfs_server.discard(directory)
