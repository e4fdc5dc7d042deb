"""Placement at scale: VMs deployed through the API on 50 and on 5,000 Simulator hosts.

For each host count in --hosts, on a fresh engine (SQLite, loopback):

1. Sets up a database and loads one zone with that many Simulator hosts through the
   engine's service layer (clusters of 1,000 hosts, as `bench/api_bench.py` does), then
   starts the engine, which starts a simulated agent for each host; waits until every agent
   has registered (each host pinged since the start), so that no registration runs during
   the measurements.
   A zone-wide Simulator pool large enough for every root volume and a small offering
   (1 x 100 MHz, 64 MB) are created over the API.
2. With --clients concurrent clients (8), measures `createPod` + `deletePod` pairs (the
   write path of the API without placement: the reference rate), then deploys --vms VMs
   (2,000): each client sends `deployVirtualMachine` and polls `queryAsyncJobResult` until
   the job ends, so a deploy counts once its VM runs. Reported: VMs per second and the
   latency of each deploy, pairs per second.
3. Stops the engine and times the planner alone in this process against the database as
   the deploys left it (2,000 VMs on the hosts): `Planner.plan()` for the same offering,
   --plans times, in a transaction that is rolled back. That is the planner's time per
   placement, free of HTTP, job and agent time.

Targets: the planner's time per placement at 5,000 hosts is at most 3 x its time at 50
hosts, and deploys reach at least 0.5 x the pairs' rate measured in the same run.

    .venv/bin/python bench/placement_bench.py                       # 2,000 VMs on 50 and 5,000 hosts
    .venv/bin/python bench/placement_bench.py --quick               # 200 VMs on 50 and 500 hosts
    .venv/bin/python bench/placement_bench.py --write-docs          # also rewrite its section
"""

import argparse
import asyncio
import calendar
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_bench import Api, drive, load_hosts, percentile, pod_pair  # noqa: E402
from tests.support.engine import EngineProcess  # noqa: E402

GiB = 1024 ** 3
SIM_TEMPLATE = "CentOS 5.6 (64-bit) no GUI (Simulator)"
HOSTS_UP_LIMIT = 600.0          # seconds to wait for every simulated agent
JOB_POLL = 0.05
JOB_LIMIT = 300.0
SECTION = "Placement"


# --- setup over the API ------------------------------------------------------------------------


async def call(api, params):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await api.call(session, params)


async def job(api, params):
    """An asynchronous command, waited for; its job result."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        answer = await api.call(session, params)
        jobid = next(iter(answer.values()))["jobid"]
        deadline = time.monotonic() + JOB_LIMIT
        while time.monotonic() < deadline:
            result = (await api.call(session, {"command": "queryAsyncJobResult", "jobid": jobid}))[
                "queryasyncjobresultresponse"]
            if result["jobstatus"] == 1:
                return result["jobresult"]
            if result["jobstatus"] != 0:
                raise RuntimeError("%s failed: %s" % (params["command"], result.get("jobresult")))
            await asyncio.sleep(JOB_POLL)
    raise RuntimeError("%s still pending after %.0f s" % (params["command"], JOB_LIMIT))


def setup_zone(api, zone_id, hosts, vms):
    """Give the zone a physical network, enable it, add a zone-wide pool for every root volume
    and a small offering. Returns (offering id, template id)."""
    run = asyncio.run
    network = run(job(api, {"command": "createPhysicalNetwork", "zoneid": zone_id, "name": "bench-phy"}))
    for traffic in ("Management", "Public", "Guest"):
        run(job(api, {"command": "addTrafficType", "physicalnetworkid": network["physicalnetwork"]["id"],
                      "traffictype": traffic, "kvmnetworklabel": "cloudbr0"}))
    run(call(api, {"command": "updateZone", "id": zone_id, "allocationstate": "Enabled"}))
    run(call(api, {"command": "createStoragePool", "zoneid": zone_id, "name": "bench-pool", "scope": "zone",
                   "hypervisor": "Simulator", "url": "nfs://127.0.0.1/bench-%d" % hosts,
                   "capacitybytes": str((vms + 100) * 4 * GiB)}))
    offering = run(call(api, {"command": "createServiceOffering", "name": "bench-tiny", "cpunumber": "1",
                              "cpuspeed": "100", "memory": "64"}))["createserviceofferingresponse"]
    template = run(call(api, {"command": "listTemplates", "templatefilter": "executable", "name": SIM_TEMPLATE,
                              "zoneid": zone_id}))["listtemplatesresponse"]["template"][0]
    return offering["serviceoffering"]["id"], template["id"]


def registered_since(api, zone_id, since):
    """How many Up hosts of the zone were last pinged at or after `since` (epoch seconds)."""
    count, page = 0, 1
    while True:
        answer = asyncio.run(call(api, {"command": "listHosts", "zoneid": zone_id, "state": "Up",
                                        "pagesize": "500", "page": str(page)}))["listhostsresponse"]
        rows = answer.get("host", [])
        count += sum(1 for h in rows if h.get("lastpinged") and calendar.timegm(
            time.strptime(h["lastpinged"], "%Y-%m-%dT%H:%M:%S+0000")) >= since)
        if len(rows) < 500:
            return count
        page += 1


def wait_hosts_up(api, zone_id, hosts, since):
    """Seconds until every host's agent registered with the engine started at `since` (epoch
    seconds). The hosts were loaded Up, so their state alone says nothing about the agents:
    until each registered, the registrations load the engine and would be measured with the
    pairs."""
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < HOSTS_UP_LIMIT:
        count = registered_since(api, zone_id, since)
        if count >= hosts:
            return time.monotonic() - started
        time.sleep(1)
    raise RuntimeError("only %s of %d hosts registered after %.0f s" % (count, hosts, HOSTS_UP_LIMIT))


def deploy(api, zone_id, offering_id, template_id, failures):
    """deployVirtualMachine, then queryAsyncJobResult until the job ends."""

    async def operation(session, i):
        answer = await api.call(session, {"command": "deployVirtualMachine", "zoneid": zone_id,
                                          "serviceofferingid": offering_id, "templateid": template_id,
                                          "name": "bench-vm-%d" % i})
        jobid = answer["deployvirtualmachineresponse"]["jobid"]
        deadline = time.monotonic() + JOB_LIMIT
        while time.monotonic() < deadline:
            await asyncio.sleep(JOB_POLL)
            job = (await api.call(session, {"command": "queryAsyncJobResult", "jobid": jobid}))[
                "queryasyncjobresultresponse"]
            if job["jobstatus"] != 0:
                if job["jobstatus"] != 1:
                    failures.append(job.get("jobresult", {}).get("errortext", "job %s failed" % jobid))
                return
        failures.append("job %s still pending after %.0f s" % (jobid, JOB_LIMIT))
    return operation


# --- the planner alone ----------------------------------------------------------------------------


def planner_seconds(db_url, key_file, zone_name, plans):
    """Seconds per `Planner.plan()` of a tiny guest in `zone_name`, `plans` times, rolled back."""
    from sqlalchemy import select, update

    from stackwright.management.context import Context
    from stackwright.management.engine import Engine
    from stackwright.management.options import Options
    from stackwright.management.persistence.models import Host, User, Zone
    from stackwright.management.services.placement import Demand, Planner

    engine = Engine(Options(db_url=db_url, key_file=str(key_file)))
    engine.settings.load()
    try:
        session = engine.db.session()
        try:
            admin = session.execute(select(User).where(User.username == "admin")).scalar_one()
            ctx = Context(engine, session, admin)
            zone = session.execute(select(Zone).where(Zone.name == zone_name)).scalar_one()
            # The engine left its hosts Disconnected when it stopped: as they were while it ran
            # (in this transaction only, which is rolled back).
            session.execute(update(Host).where(Host.zone_id == zone.id).values(state="Up"))
            demand = Demand(1, 100, 64, "Simulator", volume_bytes=2 * GiB)
            Planner(ctx).plan("VM[User|bench]", zone, demand)          # warm-up
            times = []
            for _plan in range(plans):
                t0 = time.perf_counter()
                Planner(ctx).plan("VM[User|bench]", zone, demand)
                times.append(time.perf_counter() - t0)
            return times
        finally:
            session.rollback()
            session.close()
    finally:
        engine.db.dispose()


# --- one host count ---------------------------------------------------------------------------------


def measure(workdir, hosts, args):
    db_url = "sqlite:///%s" % (workdir / "cloud.db")
    engine = EngineProcess(workdir / "engine", db_url, extra_args=["--log-level", "WARNING"])
    engine.setup_database()
    zone_name = "place-%d" % hosts
    zone_id, load_seconds = load_hosts(db_url, zone_name, hosts, key_file=engine.key_file)
    print("%d hosts: loaded in %.1f s" % (hosts, load_seconds), flush=True)
    result = {"hosts": hosts, "vms": args.vms, "clients": args.clients, "load_seconds": load_seconds}
    since = int(time.time())
    engine.start(timeout=120)
    try:
        api = Api(engine.endpoint, engine.api_key, engine.api_secret)
        result["up_seconds"] = wait_hosts_up(api, zone_id, hosts, since)
        print("%d hosts: every agent registered %.1f s after the engine started" % (hosts, result["up_seconds"]),
              flush=True)
        offering_id, template_id = setup_zone(api, zone_id, hosts, args.vms)
        asyncio.run(drive(pod_pair(api, zone_id, 0), 10, 1))             # warm-up
        rate, latencies = asyncio.run(drive(pod_pair(api, zone_id, 1), args.pairs, args.clients))
        result["pairs_per_s"], result["pair_p50_ms"] = rate, statistics.median(latencies) * 1000
        print("%d hosts: %d createPod+deletePod pairs, %d clients: %.1f pairs/s" % (
            hosts, args.pairs, args.clients, rate), flush=True)
        failures = []
        rate, latencies = asyncio.run(drive(deploy(api, zone_id, offering_id, template_id, failures), args.vms,
                                            args.clients))
        result.update(vms_per_s=rate, deploy_p50_ms=statistics.median(latencies) * 1000,
                      deploy_p99_ms=percentile(latencies, 99) * 1000, failed=len(failures),
                      failures=sorted(set(failures))[:5])
        print("%d hosts: %d deploys, %d clients: %.1f VMs/s (p50 %.0f ms, p99 %.0f ms), %d failed" % (
            hosts, args.vms, args.clients, rate, result["deploy_p50_ms"], result["deploy_p99_ms"], len(failures)),
            flush=True)
    finally:
        engine.stop(timeout=60)
    times = planner_seconds(db_url, engine.key_file, zone_name, args.plans)
    result["planner_ms"] = statistics.median(times) * 1000
    result["planner_p99_ms"] = percentile(times, 99) * 1000
    print("%d hosts: planner %.2f ms per placement (median of %d, p99 %.2f ms)" % (
        hosts, result["planner_ms"], args.plans, result["planner_p99_ms"]), flush=True)
    return result


# --- the document -----------------------------------------------------------------------------------


def summary(results):
    rows = []
    small, large = results[0], results[-1]
    ratio = large["planner_ms"] / small["planner_ms"]
    rows.append(("planner per placement at %s hosts ≤ 3 × at %s hosts" % (
        "{:,}".format(large["hosts"]), "{:,}".format(small["hosts"])),
        "%.2f (%.2f / %.2f ms)" % (ratio, large["planner_ms"], small["planner_ms"]), ratio <= 3))
    for r in results:
        share = r["vms_per_s"] / r["pairs_per_s"]
        rows.append(("deploys ≥ 0.5 × `createPod`+`deletePod` pairs, %s hosts" % "{:,}".format(r["hosts"]),
                     "%.2f (%.1f VMs/s / %.1f pairs/s)" % (share, r["vms_per_s"], r["pairs_per_s"]),
                     share >= 0.5 and not r["failed"]))
    return rows


def document(results):
    from bench import report

    table = report.table(
        ["hosts", "VMs", "clients", "VMs/s", "deploy p50", "deploy p99", "failed", "pairs/s", "planner/placement"],
        [["{:,}".format(r["hosts"]), "{:,}".format(r["vms"]), r["clients"], "%.1f" % r["vms_per_s"],
          "%.0f ms" % r["deploy_p50_ms"], "%.0f ms" % r["deploy_p99_ms"], r["failed"], "%.1f" % r["pairs_per_s"],
          "%.2f ms" % r["planner_ms"]] for r in results])
    targets = report.targets(summary(results))
    return "\n".join([
        "`bench/placement_bench.py` (method in its docstring): a real engine on SQLite with one zone of",
        "Simulator hosts and their simulated agents, on loopback. A deploy counts when its job has",
        "ended (the VM Running). The planner's time per placement is `Planner.plan()` timed alone on",
        "the database the deploys left, so HTTP, jobs and agents are not in it.",
        "", table, "", targets,
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="50,5000", help="host counts, comma-separated (the first is the reference)")
    ap.add_argument("--vms", type=int, default=2000, help="VMs deployed per host count")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--pairs", type=int, default=200, help="createPod/deletePod pairs")
    ap.add_argument("--plans", type=int, default=200, help="planner calls timed alone")
    ap.add_argument("--quick", action="store_true", help="200 VMs on 50 and 500 hosts: a smoke run")
    ap.add_argument("--workdir", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the Placement section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.hosts, args.vms, args.pairs, args.plans = "50,500", 200, 50, 50
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="stackwright-placement-"))
    results = []
    try:
        for hosts in (int(h) for h in args.hosts.split(",")):
            results.append(measure(workdir / ("hosts-%d" % hosts), hosts, args))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    from bench import report

    report.finish("placement_bench.py", argv, results, summary(results), SECTION,
                  document(results) if args.write_docs else None, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
