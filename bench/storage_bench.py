"""NFS primary storage through the engine and a KVM host's agent, against the storage work alone.

Real processes on loopback: nfs-ganesha (tests/support/nfs.py, 127.0.0.1:2049 with rpcbind on
:111), the host's libvirtd on qemu:///system (started for the run when none answers), an
engine (SQLite) and a `stackwright-agent` with the libvirt driver, enrolled and added as a
KVM host. Measured in one bounded run:

1. createStoragePool on the host's cluster until listStoragePools shows the pool Up (the
   engine asks the agent to attach it; the agent reaches the export with libnfs and proves
   it writable), against the same attach done by the agent's storage driver alone, in
   this process.
2. Root volumes on the pool: startVirtualMachine of a VM deployed with `startvm=false` (the
   agent creates the qcow2 volume on NFS with `qemu-img create nfs://...`, then libvirt
   starts the guest), against `qemu-img create` alone on the same export; the agent's own
   time for CreateVolume comes from its log.

Only one NFS server can run on a machine; run it under the lock the other NFS users take:

    flock /tmp/sw-nfs.lock .venv/bin/python bench/storage_bench.py [--pools 5] [--volumes 20] [--write-docs]
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import BENCHMARKS, table, run_in_workdir, write_section  # noqa: E402
from stackwright.agent.storage.base import PoolSpec  # noqa: E402
from stackwright.agent.storage.nfs import NfsStorageDriver, kernel_nfs_available  # noqa: E402
from tests.support.engine import EngineProcess  # noqa: E402
from tests.support.libvirtd import SystemLibvirtd, missing_prerequisites  # noqa: E402
from tests.support.nfs import NfsTestServer  # noqa: E402
from tests.support import waiting  # noqa: E402

BIN = Path(sys.executable).parent
POLL = 0.05
VOLUME_BYTES = 1 << 30          # the size of the built-in "Blank disk (no OS)" template
CREATE_VOLUME = re.compile(r"host=(\S+) seq=\d+ CreateVolume -> VolumeAnswer in (\d+) ms")


# The tests' bounded polling, at this benchmark's interval.
wait_for = functools.partial(waiting.wait_for, interval=POLL)


def stats(values):
    ordered = sorted(values)
    return {"n": len(ordered), "mean": sum(ordered) / len(ordered), "p50": ordered[len(ordered) // 2],
            "max": ordered[-1], "total": sum(ordered)}


class Agent:
    """`stackwright-agent` with the libvirt driver, enrolled with a token from the engine."""

    def __init__(self, workdir, engine, zone, pod, cluster, libvirt_uri):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.properties = self.workdir / "agent.properties"
        self.log_file = self.workdir / "agent.log"
        token = engine.client().createAgentEnrollmentToken(description="storage benchmark")["agentenrollmenttoken"]
        token_file = self.workdir / "token"
        token_file.write_text(token["token"])
        token_file.chmod(0o600)
        run = subprocess.run(
            [str(BIN / "stackwright-setup-agent"), "--properties", str(self.properties), "--json",
             "--host", "127.0.0.1", "--port", str(engine.agent_port), "--zone", zone["id"], "--pod", pod["id"],
             "--cluster", cluster["id"], "--private-device", "lo", "--hypervisor-driver", "libvirt",
             "--libvirt-uri", libvirt_uri, "--token-file", str(token_file)],
            capture_output=True, text=True, timeout=60, check=False)
        token_file.unlink(missing_ok=True)
        if run.returncode != 0:
            raise RuntimeError("stackwright-setup-agent failed: %s%s" % (run.stdout, run.stderr))
        self.guid = json.loads(run.stdout)["guid"]
        self.proc = subprocess.Popen([str(BIN / "stackwright-agent"), "--properties", str(self.properties),
                                      "--log-file", str(self.log_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def create_volume_ms(self):
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return [int(m.group(2)) for m in CREATE_VOLUME.finditer(text)]


def domains(uri):
    run = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True, text=True,
                         timeout=30, check=False)
    if run.returncode != 0:
        raise RuntimeError("virsh list failed: %s" % run.stderr.strip())
    return set(run.stdout.split())


# --- baselines -----------------------------------------------------------------------------------


def attach_alone(nfs, count):
    """The agent's storage driver attaching fresh pools (libnfs mount, statvfs, write probe)."""
    driver = NfsStorageDriver(timeout=10.0, kernel_available=lambda: False)
    times = []
    for i in range(count):
        scratch = nfs.scratch(nfs.primary, "bench-attach-%s-%d" % (uuid.uuid4().hex[:6], i))
        try:
            pool = PoolSpec(uuid=str(uuid.uuid4()), url=scratch.url, mode="userspace")
            started = time.perf_counter()
            driver.attach(pool)
            times.append(time.perf_counter() - started)
            driver.detach(pool)
        finally:
            nfs.discard(scratch)
    return times


def qemu_img_alone(nfs, count):
    """`qemu-img create` of qcow2 images straight onto the export through QEMU's NFS client (libnfs)."""
    scratch = nfs.scratch(nfs.primary, "bench-qemu-img-%s" % uuid.uuid4().hex[:6])
    times = []
    try:
        for i in range(count):
            target = "%s/vol-%d.qcow2" % (scratch.url, i)
            started = time.perf_counter()
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", target, str(VOLUME_BYTES)],
                           check=True, capture_output=True, timeout=60)
            times.append(time.perf_counter() - started)
        made = sorted(p.name for p in scratch.path.iterdir())
        if len(made) != count:
            raise RuntimeError("qemu-img made %d images, expected %d: %s" % (len(made), count, made))
    finally:
        nfs.discard(scratch)
    return times


# --- through the engine --------------------------------------------------------------------------


def run(args, work):
    results = {}
    nfs = NfsTestServer()
    libvirtd = engine = agent = None
    scratches = []
    try:
        nfs.start()
        libvirtd = SystemLibvirtd.start_or_reuse()
        engine = EngineProcess(work / "engine", "sqlite:///%s" % (work / "engine" / "cloud.db"))
        engine.start()
        api = engine.client(poll_interval=POLL)
        zone = api.createZone(name="bench-storage", dns1="192.0.2.53", networktype="Advanced")["zone"]
        network = api.createPhysicalNetwork(zoneid=zone["id"], name="bench-physnet",
                                            fetch_result=True)["physicalnetwork"]
        for kind in ("Management", "Guest", "Public"):
            api.addTrafficType(physicalnetworkid=network["id"], traffictype=kind, kvmnetworklabel="cloudbr0",
                               fetch_result=True)
        pod = api.createPod(zoneid=zone["id"], name="bench-pod", gateway="10.10.0.1", netmask="255.255.255.0",
                            startip="10.10.0.10")["pod"]
        cluster = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername="bench-kvm", hypervisor="KVM",
                                 clustertype="CloudManaged")["cluster"][0]
        api.updateZone(id=zone["id"], allocationstate="Enabled")
        agent = Agent(work / "agent", engine, zone, pod, cluster, libvirtd.uri)
        host = api.addHost(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"], hypervisor="KVM",
                           url="http://127.0.0.1", username="root", password="unused")["host"][0]
        wait_for("KVM host Up", lambda: api.listHosts(id=host["id"])["host"][0]["state"] == "Up", 60)

        # 1. Pools: createStoragePool until Up.
        pool_times = []
        for i in range(args.pools):
            scratch = nfs.scratch(nfs.primary, "bench-pool-%s-%d" % (uuid.uuid4().hex[:6], i))
            scratches.append(scratch)
            started = time.perf_counter()
            pool = api.createStoragePool(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"],
                                         name="bench-primary-%d" % i, url=scratch.url, scope="cluster")["storagepool"]
            wait_for("pool %s Up" % pool["name"],
                     lambda p=pool["id"]: api.listStoragePools(id=p)["storagepool"][0]["state"] == "Up", 60)
            pool_times.append(time.perf_counter() - started)
        results["pool_up"] = stats(pool_times)
        results["attach_alone"] = stats(attach_alone(nfs, args.pools))

        # 2. Volumes: root volumes created by starting VMs (they go to the first pool).
        template = next(t for t in api.listTemplates(templatefilter="all")["template"]
                        if t["name"] == "Blank disk (no OS)")
        offering = next(o for o in api.listServiceOfferings()["serviceoffering"] if o["name"] == "Small Instance")
        start_times, skipped = [], 0
        while len(start_times) < args.volumes:
            vm = api.deployVirtualMachine(zoneid=zone["id"], templateid=template["id"],
                                          serviceofferingid=offering["id"], startvm="false",
                                          fetch_result=True)["virtualmachine"]
            try:
                if vm["instancename"] in domains(libvirtd.uri):
                    # Another engine on this libvirtd has a guest of that name; never touch it.
                    skipped += 1
                    if skipped > 5:
                        raise RuntimeError("libvirtd already holds guests named like this engine's (%s)"
                                           % vm["instancename"])
                    continue
                started = time.perf_counter()
                running = api.startVirtualMachine(id=vm["id"], fetch_result=True)["virtualmachine"]
                start_times.append(time.perf_counter() - started)
                if running["state"] != "Running":
                    raise RuntimeError("VM %s is %s after its start" % (vm["instancename"], running["state"]))
                api.stopVirtualMachine(id=vm["id"], forced="true", fetch_result=True)
            finally:
                api.destroyVirtualMachine(id=vm["id"], expunge="true", fetch_result=True)
        leftovers = [p.name for p in scratches[0].path.iterdir()]
        if leftovers:
            raise RuntimeError("volumes left on the pool after the VMs were expunged: %s" % leftovers)
        results["start"] = stats(start_times)
        agent_ms = agent.create_volume_ms()
        if len(agent_ms) != args.volumes:
            raise RuntimeError("the agent log shows %d CreateVolume commands, expected %d"
                               % (len(agent_ms), args.volumes))
        results["agent_create"] = stats([ms / 1000 for ms in agent_ms])
        results["qemu_img"] = stats(qemu_img_alone(nfs, args.volumes))
        # The agent's `auto` storage mode mounts with the kernel when it can.
        results["mode"] = "kernel mount" if kernel_nfs_available() else "user space (libnfs)"
    finally:
        if agent is not None:
            agent.stop()
        if engine is not None:
            engine.stop()
        for scratch in scratches:
            nfs.discard(scratch)
        if libvirtd is not None:
            libvirtd.stop()
        nfs.stop()
    return results


def report(r):
    def row(label, s, baseline=None):
        ratio = "%.2f" % (s["mean"] / baseline["mean"]) if baseline else "1 (baseline)"
        return [label, "%d" % s["n"], "%.0f ms" % (1000 * s["mean"]), "%.0f ms" % (1000 * s["p50"]),
                "%.0f ms" % (1000 * s["max"]), "%.1f /s" % (s["n"] / s["total"]), ratio]

    header = ["operation", "n", "mean", "p50", "max", "throughput (sequential)", "mean / baseline"]
    pools = [row("attach by the agent's NFS driver alone (baseline)", r["attach_alone"]),
             row("createStoragePool → pool Up (API, engine, agent)", r["pool_up"], r["attach_alone"])]
    volumes = [row("`qemu-img create -f qcow2 nfs://…` 1 GiB alone (baseline)", r["qemu_img"]),
               row("CreateVolume as the agent runs it (its log: libnfs check + qemu-img)", r["agent_create"],
                   r["qemu_img"]),
               row("startVirtualMachine job: CreateVolume + guest start (API, engine, agent, libvirt)",
                   r["start"], r["qemu_img"])]
    return "\n".join([
        "Primary pool attach (agent's NFS access: %s):" % r["mode"], "", table(header, pools), "",
        "Root volumes (qcow2, 1 GiB, thin) on the NFS pool:", "", table(header, volumes), "",
        "The whole benchmark took %.0f s." % r["wall"],
    ])


DOC_INTRO = """`bench/storage_bench.py` runs nfs-ganesha on 127.0.0.1 (the test suite's server,
`tests/support/nfs.py`), the host's libvirtd (qemu:///system), an engine (SQLite) and a
`stackwright-agent` with the libvirt driver, enrolled with a token and added as a KVM host
of an enabled zone. Where the machine has no kernel NFS client (the first table says which
access the agent used), the agent reaches the export from user space: libnfs for attach and
checks, QEMU's NFS client for images and guest disks.

- **Pools.** `createStoragePool` on a fresh directory of the export, timed until
  `listStoragePools` shows it Up (polled every 50 ms): the engine answers at once with the
  pool Initialized and asks the agent to attach it (libnfs mount, FSSTAT, a write probe).
  The baseline is the agent's NFS storage driver doing the same attach in the benchmark's
  process, without engine or channel.
- **Volumes.** The engine creates a volume on a pool when it starts a VM whose root volume
  does not exist yet: a VM is deployed with `startvm=false` (the instance name is checked
  against the guests libvirtd already has, so another engine's guest is never touched),
  then `startVirtualMachine` runs CreateVolume (the agent checks the name over libnfs and
  runs `qemu-img create -f qcow2 nfs://…`) and StartVm (libvirt boots the guest from the
  NFS disk); the VM is then stopped and expunged, which deletes the volume. The agent's own
  time for each CreateVolume comes from its log (whole milliseconds). The baseline is
  `qemu-img create` of the same 1 GiB qcow2 straight onto the export.

Operations run one after another; throughput is n / sum of the times. Everything shares
the machine's two CPUs with the NFS server."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", type=int, default=5, help="storage pools created (and attaches timed alone)")
    ap.add_argument("--volumes", type=int, default=20, help="volumes through the engine and with qemu-img alone")
    ap.add_argument("--workdir", help="keep the engine's and agent's files here (default: temporary, removed)")
    ap.add_argument("--write-docs", action="store_true", help="record the figures in docs/benchmarks.md")
    args = ap.parse_args()
    if not (1 <= args.pools <= 10 and 1 <= args.volumes <= 50):
        ap.error("out of range: --pools 1-10, --volumes 1-50")
    problems = missing_prerequisites()
    if problems or shutil.which("ganesha.nfsd") is None:
        ap.error("cannot run here: %s" % "; ".join(problems or ["nfs-ganesha is not installed"]))
    results = run_in_workdir(args.workdir, "sw-storage-bench-", lambda work: run(args, work))
    text = report(results)
    print(text)
    if args.write_docs:
        write_section(BENCHMARKS, "NFS primary storage", DOC_INTRO + "\n\n" + text,
                      "flock /tmp/sw-nfs.lock python bench/storage_bench.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
