"""Live migration and maintenance that evacuates.

- **KVM, one idle guest.** Two isolated libvirtd, each in its own network namespace with its own
  host UUID and a TCP listener, joined by a veth pair (as tests/e2e/test_kvm_migration.py sets
  them up). An idle 256 MiB diskless guest is live-migrated back and forth, alternately by the
  agent's command handlers and libvirt driver (PrepareForMigration on the destination, MigrateVm
  on the source, as the engine's migration job sends them) and by
  `virsh migrate --live --p2p --persistent --undefinesource` between the same two daemons.
  Target: the agent's migration takes at most 1.25 x virsh's (median of the runs).
- **Simulator, a host of 200 guests.** A real engine (SQLite, loopback) with a Simulator
  cluster of five hosts; 200 guests run on one of them, and prepareHostForMaintenance drains
  it through the API: its job's time, and per guest.

    .venv/bin/python bench/migration_bench.py [--runs 5] [--guests 200] [--write-docs]

Needs root and libvirt-daemon-system for the KVM part (skipped otherwise, and said so).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import BENCHMARKS, table, verdict, write_section  # noqa: E402
from stackwright.agent.hypervisor.libvirt.guest import Guest  # noqa: E402
from stackwright.protocol import messages as m  # noqa: E402
from tests.e2e.test_kvm_migration import ADDRESSES, KvmHost, guest_spec, migrate  # noqa: E402
from tests.support.engine import EngineProcess  # noqa: E402
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network  # noqa: E402
from tests.support.jobs import run_job  # noqa: E402
from tests.support.libvirtd import missing_prerequisites  # noqa: E402
from tests.support.netns import veth_pair  # noqa: E402

GiB = 1024 ** 3
TARGET = 1.25
SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"


def kvm(runs):
    problems = missing_prerequisites()
    if problems:
        return None, "skipped: " + "; ".join(problems)
    pair = []
    try:
        for address in ADDRESSES:
            pair.append(KvmHost(address).start())
        a, b = pair
        veth_pair(a.libvirtd.namespace, "swmig0", b.libvirtd.namespace, "swmig1")
        for host, device in ((a, "swmig0"), (b, "swmig1")):
            host.libvirtd.namespace.ip("addr", "add", host.address + "/24", "dev", device)
            host.connect()
        spec = guest_spec("i-2-901-VM", a)
        spec.memory_mb = 256
        assert a.call(m.StartVm(spec=spec)).state == m.VmState.RUNNING
        time.sleep(2)           # let the guest settle into idling
        where, timings = a, {"agent": [], "virsh": []}
        try:
            for _run in range(runs):
                for how in ("agent", "virsh"):
                    other = b if where is a else a
                    if how == "virsh":
                        # The console listens on the destination's address, as the agent arranges it.
                        guest = Guest(where.driver.host, where.driver.host.get_domain(spec.name))
                        dest_xml = Path(tempfile.mkdtemp(prefix="sw-mig-")) / "dest.xml"
                        dest_xml.write_text(guest.migratable_xml(other.address))
                    started = time.monotonic()
                    if how == "agent":
                        answer = migrate(where, other, spec)
                        assert answer.state == m.VmState.STOPPED, answer
                    else:
                        uri = where.driver.host.uri
                        run = subprocess.run(
                            ["virsh", "-c", uri, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
                             "--xml", str(dest_xml), spec.name, "qemu+tcp://%s/system" % other.address,
                             "--migrateuri", "tcp://%s" % other.address],
                            check=False, capture_output=True, text=True, timeout=120)
                        assert run.returncode == 0, run.stderr
                    timings[how].append(time.monotonic() - started)
                    assert other.call(m.QueryVm(name=spec.name)).state == m.VmState.RUNNING
                    where = other
        finally:
            where.call(m.StopVm(name=spec.name, force=True))
        return timings, None
    finally:
        for host in pair:
            host.stop()


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
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    timings, skipped = kvm(args.runs)
    print("KVM:", timings or skipped, flush=True)
    drain = simulator(args.guests)
    body = [__doc__.split("\n\n    ", maxsplit=1)[0].split("\n", 1)[1].strip(), ""]
    if timings is None:
        body.append("KVM: %s." % skipped)
    else:
        agent, virsh = statistics.median(timings["agent"]), statistics.median(timings["virsh"])
        ratio = agent / virsh
        body += ["Live migration of an idle 256 MiB guest between two libvirtd (%d runs each, alternating):" % args.runs,
                 "", table(["how", "median", "min", "max"], [
                     ["agent (PrepareForMigration + MigrateVm)", "%.2f s" % agent, "%.2f s" % min(timings["agent"]),
                      "%.2f s" % max(timings["agent"])],
                     ["virsh migrate --live --p2p", "%.2f s" % virsh, "%.2f s" % min(timings["virsh"]),
                      "%.2f s" % max(timings["virsh"])]]),
                 "", "agent / virsh: %.2f (target <= %.2f: %s)" % (ratio, TARGET, verdict(ratio <= TARGET))]
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
