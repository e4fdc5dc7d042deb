"""Live migration and maintenance that evacuates.

- **KVM, through the API.** A real engine with two KVM hosts, each a network namespace with its
  own libvirtd (own host UUID, TCP listener) and its own agent, joined by a veth pair, sharing
  one NFS export of the test nfs-ganesha as primary storage (tests/support/kvm_cloud.py, as
  tests/e2e/test_kvm_engine_migration.py sets it up). An idle 256 MiB guest (a blank root disk
  on the pool) is live-migrated back and forth with `migrateVirtualMachine` (the job's time as
  a client sees it: request to final `queryAsyncJobResult`, polled every 0.1 s), alternating
  with a twin of it (the same definition, its disk read-only) moved by
  `virsh migrate --live --p2p --persistent --undefinesource` between the same two daemons.
  Target: the API's migration takes at most 1.25 x virsh's (median of the runs). Then a host
  running 4 such guests is drained with `prepareHostForMaintenance`.
- **Simulator, a host of 200 guests.** A real engine (SQLite, loopback) with a Simulator
  cluster of five hosts; 200 guests run on one of them, and prepareHostForMaintenance drains
  it through the API: its job's time, and per guest.

    .venv/bin/python bench/migration_bench.py [--runs 5] [--kvm-guests 4] [--guests 200] [--write-docs]

Needs root, libvirt-daemon-system and nfs-ganesha for the KVM part (skipped otherwise, and said so).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import BENCHMARKS, table, verdict, write_section  # noqa: E402
from tests.support.engine import EngineProcess  # noqa: E402
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network  # noqa: E402
from tests.support.jobs import run_job  # noqa: E402
from tests.support.kvm_cloud import KvmCloud  # noqa: E402
from tests.support.libvirtd import missing_prerequisites  # noqa: E402
from tests.support.nfs import NfsTestServer  # noqa: E402

GiB = 1024 ** 3
TARGET = 1.25
SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"


def twin_xml(xml: str, name: str) -> str:
    """A copy of a guest's definition under another name and UUID, its MACs left to libvirt and
    its disks read-only (the copy shares the guest's volume), its console on every address."""
    root = ET.fromstring(xml)
    root.find("name").text = name
    root.find("uuid").text = str(uuid.uuid4())
    for interface in root.iter("interface"):
        for mac in interface.findall("mac"):
            interface.remove(mac)
    for disk in root.iter("disk"):
        if disk.find("readonly") is None:
            ET.SubElement(disk, "readonly")
    # Its console listens on every address, so it starts on either host (the guest's console
    # listens on its host's address, which the engine rewrites when it migrates it).
    for graphics in root.iter("graphics"):
        graphics.set("listen", "0.0.0.0")
        for listen in graphics.findall("listen"):
            listen.set("address", "0.0.0.0")
    return ET.tostring(root, encoding="unicode")


def kvm(runs, guests):
    problems = missing_prerequisites()
    if problems:
        return None, None, "skipped: " + "; ".join(problems)
    work = Path(tempfile.mkdtemp(prefix="sw-migration-bench-"))
    nfs = NfsTestServer().start()
    cloud = KvmCloud(work, nfs, memory_mb=256)
    try:
        cloud.start()
        a, b = cloud.hosts
        vm = cloud.deploy(a)
        # The same guest for virsh: a twin of the API's guest, unknown to the engine.
        twin = "bench-twin"
        twin_file = work / "twin.xml"
        twin_file.write_text(twin_xml(a.virsh("dumpxml", "--migratable", vm["instancename"]), twin))
        a.virsh("define", str(twin_file))
        a.virsh("start", twin)
        time.sleep(2)           # let the guests settle into idling
        where = {"api": a, "virsh": a}
        timings = {"api": [], "virsh": []}
        for _run in range(runs):
            for how in ("api", "virsh"):
                source = where[how]
                dest = b if source is a else a
                started = time.monotonic()
                if how == "api":
                    _answer, job = run_job(cloud.api, "migrateVirtualMachine", virtualmachineid=vm["id"],
                                           hostid=dest.id)
                    assert job["jobstatus"] == 1, job
                else:
                    run = source.libvirtd.run(
                        ["virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", "--persistent",
                         "--undefinesource", twin, "qemu+tcp://%s/system" % dest.address, "--migrateuri",
                         "tcp://%s" % dest.address], check=False, timeout=120)
                    assert run.returncode == 0, run.stderr
                timings[how].append(time.monotonic() - started)
                where[how] = dest
        where["virsh"].virsh("destroy", twin)
        where["virsh"].virsh("undefine", twin)
        cloud.discard(vm)

        drained = [cloud.deploy(a) for _guest in range(guests)]
        started = time.monotonic()
        _answer, job = run_job(cloud.api, "prepareHostForMaintenance", id=a.id)
        drain = time.monotonic() - started
        assert job["jobstatus"] == 1, job
        assert a.running() == set() and {v["instancename"] for v in drained} <= b.running()
        return timings, drain, None
    finally:
        cloud.stop()
        nfs.stop()


def simulator(guests):
    work = Path(tempfile.mkdtemp(prefix="sw-migration-bench-"))
    engine = EngineProcess(work / "engine", "sqlite:///%s" % (work / "engine" / "cloud.db"))
    try:
        engine.start()
        api = engine.client()
        zone = new_zone(api, "migb")
        physical_network(api, zone, "migb")
        zone = api.updateZone(id=zone["id"], allocationstate="Enabled")["zone"]
        pod = new_pod(api, zone, "migb")
        cluster = new_cluster(api, pod, "migb")
        hosts = [api.addHost(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"], hypervisor="Simulator",
                             url="http://sim/b/h%d?cpus=128&cpuspeed=2000&memory=%d" % (i, 128 * GiB))["host"][0]
                 for i in range(5)]
        api.createStoragePool(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"], name="ps-migb",
                              url="nfs://127.0.0.1/export/primary-migb", capacitybytes=1000 * GiB)
        offering = api.listServiceOfferings(name="Small Instance")["serviceoffering"][0]
        template = api.listTemplates(templatefilter="executable", name=SIM_TEMPLATE,
                                     zoneid=zone["id"])["template"][0]
        draining = hosts[0]["id"]
        for _guest in range(guests):
            _answer, job = run_job(api, "deployVirtualMachine", serviceofferingid=offering["id"],
                                   templateid=template["id"], zoneid=zone["id"], hostid=draining)
            assert job["jobstatus"] == 1, job
        started = time.monotonic()
        _answer, job = run_job(api, "prepareHostForMaintenance", id=draining)
        took = time.monotonic() - started
        assert job["jobstatus"] == 1, job
        left = api.listVirtualMachines(hostid=draining, listall=True).get("count", 0)
        assert left == 0, left
        return took
    finally:
        engine.kill()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kvm-guests", type=int, default=4)
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    timings, kvm_drain, skipped = kvm(args.runs, args.kvm_guests)
    print("KVM:", timings or skipped, kvm_drain, flush=True)
    drain = simulator(args.guests)
    body = [__doc__.split("\n\n    ", maxsplit=1)[0].split("\n", 1)[1].strip(), ""]
    if timings is None:
        body.append("KVM: %s." % skipped)
    else:
        api, virsh = statistics.median(timings["api"]), statistics.median(timings["virsh"])
        ratio = api / virsh
        body += ["Live migration of an idle 256 MiB guest between two libvirtd (%d runs each, alternating):" % args.runs,
                 "", table(["how", "median", "min", "max"], [
                     ["API (migrateVirtualMachine job)", "%.2f s" % api, "%.2f s" % min(timings["api"]),
                      "%.2f s" % max(timings["api"])],
                     ["virsh migrate --live --p2p", "%.2f s" % virsh, "%.2f s" % min(timings["virsh"]),
                      "%.2f s" % max(timings["virsh"])]]),
                 "", "API / virsh: %.2f (target <= %.2f: %s)" % (ratio, TARGET, verdict(ratio <= TARGET)),
                 "", "Draining a KVM host of %d running guests through the API (prepareHostForMaintenance, one job):"
                 % args.kvm_guests, "", table(["guests", "job time", "per guest"],
                                              [[args.kvm_guests, "%.1f s" % kvm_drain,
                                                "%.1f s" % (kvm_drain / args.kvm_guests)]])]
    body += ["", "Draining a Simulator host of %d guests through the API (prepareHostForMaintenance, one job):"
             % args.guests, "", table(["guests", "job time", "per guest"],
                                      [[args.guests, "%.1f s" % drain, "%.0f ms" % (1000 * drain / args.guests)]])]
    text = "\n".join(body)
    print(text)
    if args.write_docs:
        write_section(BENCHMARKS, "Live migration and maintenance", text,
                      "python bench/migration_bench.py --write-docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
