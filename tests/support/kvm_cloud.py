"""Two real KVM hosts registered with a live engine, for tests and benchmarks of live migration.

Each host is a network namespace with its own libvirtd (its own host UUID, listening on TCP as
the `libvirt_tcp` role sets it up) and its own `stackwright-agent` running inside it (in the
daemon's network and mount namespaces); the two namespaces are joined by a veth pair and
migrate over it. Inside each namespace the engine's agent port and nfs-ganesha's ports
(portmapper, MOUNT, NFS) are relayed from the machine's loopback (`nsforward`), so both hosts
use the same NFS export as primary storage, through QEMU's own NFS client. `KvmCloud.start`
builds it all: a zone with a KVM cluster, both hosts Up, a primary pool Up, the zone Enabled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.support.engine import EngineProcess, terminate
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network
from tests.support.jobs import run_job
from tests.support.libvirtd import IsolatedLibvirtd, isolated_workdir
from tests.support.netns import Namespace, veth_pair
from tests.support.nfs import MOUNT_PORT, NFS_PORT, PORTMAP_PORT
from tests.support.nsforward import LoopbackForwarder
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent
ADDRESSES = ("10.250.72.1", "10.250.72.2")
DEVICES = ("swkm0", "swkm1")
BRIDGE = "cloudbr0"


def log_tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log at %s)" % path
    return "\n".join([line for line in text.splitlines() if "[stackwright.management.access]" not in line][-lines:])


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
    """Start both nodes' libvirtd and join their namespaces by a veth pair, each end carrying its
    node's address (the address the other migrates to)."""
    first, second = nodes
    for node in nodes:
        node.libvirtd.start()
    veth_pair(first.namespace, first.device, second.namespace, second.device)
    for node in nodes:
        node.namespace.ip("addr", "add", node.address + "/24", "dev", node.device)


class KvmHost(LibvirtNode):
    """A LibvirtNode with an agent of its own."""

    def __init__(self, address: str, device: str, workdir: Path):
        super().__init__(address, device)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.forwarder: LoopbackForwarder | None = None
        self.agent: subprocess.Popen | None = None
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
             "--set", "storage.mode=userspace", "--set", "reconnect.backoff.max=2", "--token-file", str(token_file)],
            capture_output=True, text=True, timeout=60, check=False)
        token_file.unlink(missing_ok=True)
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(run.stdout)

    def start_agent(self):
        log = open(self.workdir / "agent.stderr", "ab")
        self.agent = subprocess.Popen(
            self.libvirtd.exec_argv([str(BIN / "stackwright-agent"), "--properties", str(self.properties),
                                     "--log-file", str(self.log_file)]),
            stdout=subprocess.DEVNULL, stderr=log, cwd="/")
        log.close()

    def stop(self):
        terminate(self.agent, 20)
        if self.forwarder is not None:
            self.forwarder.stop()
        self.stop_libvirt()


class KvmCloud:
    """An engine (SQLite, loopback) with a KVM cluster of two real hosts sharing an NFS pool."""

    def __init__(self, workdir: Path, nfs_server, memory_mb: int = 128):
        self.workdir, self.nfs_server, self.memory_mb = Path(workdir), nfs_server, memory_mb
        self.engine = EngineProcess(self.workdir / "engine", "sqlite:///%s" % (self.workdir / "engine" / "cloud.db"))
        self.scratch = None
        self.api = None
        self.zone = self.pod = self.cluster = None
        self.hosts: list[KvmHost] = []
        self.template = self.offering = None

    def diagnostics(self):
        parts = ["engine log:\n%s" % log_tail(self.engine.log_file)]
        parts += ["agent %s log:\n%s" % (h.address, log_tail(h.log_file, 15)) for h in self.hosts]
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
        unique = uuid.uuid4().hex[:8]
        self.zone = new_zone(api, unique, networktype="Advanced")
        network = physical_network(api, self.zone, unique, traffic=("Management", "Guest"), label=BRIDGE)
        api.addTrafficType(physicalnetworkid=network["id"], traffictype="Public", kvmnetworklabel=BRIDGE,
                           fetch_result=True)
        self.pod = new_pod(api, self.zone, unique)
        self.cluster = new_cluster(api, self.pod, unique, hypervisor="KVM")
        for address, device in zip(ADDRESSES, DEVICES, strict=True):
            self.hosts.append(KvmHost(address, device, self.workdir / address))
        start_pair(self.hosts)
        for host in self.hosts:
            namespace = host.namespace
            namespace.ip("link", "add", BRIDGE, "type", "bridge")
            namespace.ip("link", "set", BRIDGE, "up")
            host.forwarder = LoopbackForwarder(namespace.name, [engine.agent_port, PORTMAP_PORT, MOUNT_PORT,
                                                                NFS_PORT]).start()
            token = api.createAgentEnrollmentToken()["agentenrollmenttoken"]["token"]
            host.enroll(engine, self, token)
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
        api.updateZone(id=self.zone["id"], allocationstate="Enabled")
        self.template = next(t for t in api.listTemplates(templatefilter="all")["template"]
                             if t["name"] == "Blank disk (no OS)")
        self.offering = api.createServiceOffering(name="mig-" + unique, displaytext="migration", cpunumber=1,
                                                  cpuspeed=500, memory=self.memory_mb)["serviceoffering"]

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
