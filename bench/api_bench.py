"""API benchmark of the management engine, loopback only, bounded in time.

What it does, in one run (about 3 minutes on 2 CPUs):

1. Sets up a fresh database (`stackwright-setup-databases`) in a temporary directory and
   loads a zone with 1,000 Simulator hosts through the engine's own service layer
   (HostService.add_host, in this process, before the engine starts): the code addHost
   runs, without an HTTP round trip per host.
2. Starts a bare aiohttp handler that answers a constant (the baseline: the same HTTP stack,
   in its own process) and a real engine (`stackwright-management`).
3. At 1, 8 and 64 concurrent clients, sends signed requests (HMAC-SHA1, signatureVersion 3,
   as `cs` signs them, each signed afresh) and reports requests per second and p50/p99
   latency: the baseline; `listZones` as the engine runs by default (its answer cache on)
   and with the cache off (`--api-cache-size 0`); then, with a second zone of 10,000
   hosts loaded, `listHosts zoneid=<zone> page=<k> pagesize=500` cycling over all pages
   (cache off, so every page is computed; and cache on) and `createPod`/`deletePod` pairs.
4. Then grows that zone to `--large-hosts` hosts (25,000 by default; 0 skips it) and measures
   the page of 500 again at 1 client with every page computed (cache off).

    .venv/bin/python bench/api_bench.py                 # as recorded in docs/benchmarks.md
    .venv/bin/python bench/api_bench.py --quick         # small numbers, a smoke run
    .venv/bin/python bench/api_bench.py --write-docs    # also rewrite the "API" section
"""

import argparse
import asyncio
import datetime as dt
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.engine import EngineProcess, free_port  # noqa: E402

from stackwright.management.api import signing  # noqa: E402


# --- loading hosts through the service layer ---------------------------------------------


def load_hosts(db_url, zone_name, count, hosts_per_cluster=1000, batch=1000, extend=False, key_file=None):
    """Create `zone_name` (one pod, clusters of `hosts_per_cluster`) with `count` Simulator hosts,
    or with `extend`, add `count` more hosts to that zone (`key_file`: the engine's key for
    secrets at rest). Returns (zone uuid, seconds)."""
    from sqlalchemy import func, select

    from stackwright.management.context import Context
    from stackwright.management.engine import Engine
    from stackwright.management.options import Options
    from stackwright.management.persistence.models import Cluster, Host, Pod, User, Zone

    engine = Engine(Options(db_url=db_url, key_file=str(key_file) if key_file else None))
    engine.settings.load()
    started = time.monotonic()
    try:
        with engine.db.transaction() as session:
            admin = session.execute(select(User).where(User.username == "admin")).scalar_one()
            ctx = Context(engine, session, admin)
            if extend:
                zone = session.execute(select(Zone).where(Zone.name == zone_name)).scalar_one()
                pod = session.execute(select(Pod).where(Pod.zone_id == zone.id)).scalars().first()
                first = session.execute(select(func.count(Host.id)).where(Host.zone_id == zone.id)).scalar_one()
            else:
                zone = ctx.hierarchy.create_zone(name=zone_name, dns1="127.0.0.53", network_type="Advanced")
                pod = ctx.hierarchy.create_pod(zone=zone, name=zone_name + "-pod", gateway="10.200.0.1",
                                               netmask="255.255.0.0", start_ip="10.200.0.10")
                first = 0
            ids = (zone.id, pod.id, admin.id)
        added, total = first, first + count
        cluster_id = None
        while added < total:
            with engine.db.transaction() as session:
                admin = session.get(User, ids[2])
                ctx = Context(engine, session, admin)
                zone, pod = session.get(Zone, ids[0]), session.get(Pod, ids[1])
                cluster = session.get(Cluster, cluster_id) if cluster_id else None
                for _host in range(min(batch, total - added)):
                    if cluster is None or added % hosts_per_cluster == 0:
                        cluster = ctx.hierarchy.add_cluster(
                            zone=zone, pod=pod, name="%s-c%d-%d" % (zone_name, first, added // hosts_per_cluster),
                            hypervisor="Simulator", kind="CloudManaged")
                        cluster_id = cluster.id
                    ctx.hosts.add_host(zone=zone, pod=pod, cluster=cluster, hypervisor="Simulator",
                                       url="http://sim/%s/h%d" % (cluster.name, added), host_tags=["bench"])
                    added += 1
        return zone_uuid(engine, ids[0]), time.monotonic() - started
    finally:
        engine.db.dispose()


def zone_uuid(engine, zone_id):
    from stackwright.management.persistence.models import Zone

    with engine.db.transaction(readonly=True) as session:
        return session.get(Zone, zone_id).uuid


def detach_simulated_agents(db_url):
    """Leave the loaded Simulator hosts without an in-engine agent (no guid: none is started),
    so that what is measured is the API and not thousands of agents registering and pinging."""
    from sqlalchemy import update

    from stackwright.management.persistence.db import Database
    from stackwright.management.persistence.models import Host

    db = Database(db_url)
    try:
        with db.transaction() as session:
            session.execute(update(Host).where(Host.hypervisor == "Simulator").values(guid=None))
    finally:
        db.dispose()


# --- the baseline server ---------------------------------------------------------------------


def serve_baseline(port):
    """A bare aiohttp handler returning a constant JSON body, on the engine's HTTP stack."""
    from aiohttp import web

    body = b'{"listzonesresponse":{}}'

    async def handler(request):
        return web.Response(body=body, content_type="application/json", charset="UTF-8")

    app = web.Application()
    app.router.add_route("GET", "/client/api", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Baseline:
    def __init__(self):
        self.port = free_port()
        self.endpoint = "http://127.0.0.1:%d/client/api" % self.port
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(self.port)])
        deadline = time.monotonic() + 20
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("the baseline server did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


# --- the load client -------------------------------------------------------------------------


def signed_url(endpoint, key, secret, params):
    params = dict(params, apiKey=key, response="json", signatureVersion="3",
                  expires=(dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S+0000"))
    params["signature"] = signing.sign(params, secret)
    return endpoint + "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


async def drive(operation, count, concurrency):
    """Run `operation(session, i)` `count` times, `concurrency` at a time.

    Returns (operations per second, [latency in s of each operation]).
    """
    import aiohttp

    latencies = []
    counter = iter(range(count))

    async def worker(session):
        for i in counter:
            t0 = time.perf_counter()
            await operation(session, i)
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _worker in range(concurrency)))
        elapsed = time.perf_counter() - started
    return count / elapsed, latencies


class Api:
    """Signed calls to one endpoint; every answer must be a 200."""

    def __init__(self, endpoint, key, secret):
        self.endpoint, self.key, self.secret = endpoint, key, secret

    async def call(self, session, params, decode=True):
        async with session.get(signed_url(self.endpoint, self.key, self.secret, params)) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError("%s answered HTTP %d: %s" % (params["command"], response.status, body[:300]))
            return json.loads(body) if decode else body

    def get(self, make_params):
        """Reads: the answer is received whole but not parsed, so the client's JSON decoding
        (5 ms for a page of 500 hosts) is not counted as the server's latency."""
        async def operation(session, i):
            await self.call(session, make_params(i), decode=False)
        return operation


def pod_pair(api, zone_id, run):
    """createPod then deletePod: each in-flight pair has its own name and /24."""

    async def operation(session, i):
        net = "10.%d.%d" % (100 + run, i % 250)
        created = await api.call(session, {
            "command": "createPod", "zoneid": zone_id, "name": "bench-pod-%d-%d" % (run, i),
            "gateway": net + ".1", "netmask": "255.255.255.0", "startip": net + ".10", "endip": net + ".200"})
        await api.call(session, {"command": "deletePod", "id": created["createpodresponse"]["pod"]["id"]})
    return operation


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def run_case(results, name, operation, count, concurrency, warmup=20):
    asyncio.run(drive(operation, warmup, 1))
    rate, latencies = asyncio.run(drive(operation, count, concurrency))
    case = {"case": name, "clients": concurrency, "requests": count, "rps": rate,
            "p50_ms": statistics.median(latencies) * 1000, "p99_ms": percentile(latencies, 99) * 1000}
    results["cases"].append(case)
    print("%-52s %3d clients %8.0f /s   p50 %7.2f ms   p99 %7.2f ms" % (
        name, concurrency, rate, case["p50_ms"], case["p99_ms"]), flush=True)
    return case


def case_of(results, name, clients):
    return next(c for c in results["cases"] if c["case"] == name and c["clients"] == clients)


# --- the document ------------------------------------------------------------------------


BASELINE = "baseline: bare aiohttp handler"
ZONES = "`listZones`, 1,000 hosts in the DB"
ZONES_UNCACHED = "`listZones`, answer cache off"
HOSTS = "`listHosts` page of 500, %s hosts in the zone, cache off"
HOSTS_CACHED = "`listHosts` page of 500, %s hosts in the zone, cache on"
PODS = "`createPod` + `deletePod` pair"


def summary(results):
    """Rows of (target, measured, met) for the document and the console."""
    rows = []
    for clients in results["clients"]:
        base, zones = case_of(results, BASELINE, clients), case_of(results, ZONES, clients)
        ratio = zones["rps"] / base["rps"]
        rows.append(("`listZones` ≥ 0.5 × baseline throughput, %d clients" % clients,
                     "%.2f (%.0f / %.0f req/s)" % (ratio, zones["rps"], base["rps"]), ratio >= 0.5))
    hosts = case_of(results, HOSTS % "{:,}".format(results["list_hosts"]), 1)
    rows.append(("`listHosts` page of 500 of %s hosts: p99 < 50 ms (1 client, every page computed)"
                 % "{:,}".format(results["list_hosts"]), "%.1f ms" % hosts["p99_ms"], hosts["p99_ms"] < 50))
    cached = case_of(results, HOSTS_CACHED % "{:,}".format(results["list_hosts"]), 1)
    rows.append(("`listHosts` page of 500 of %s hosts: p99 < 50 ms (1 client, as the engine runs by default)"
                 % "{:,}".format(results["list_hosts"]), "%.1f ms" % cached["p99_ms"], cached["p99_ms"] < 50))
    if results.get("large_hosts"):
        large = case_of(results, HOSTS % "{:,}".format(results["large_hosts"]), 1)
        rows.append(("`listHosts` page of 500 of %s hosts: p99 < 20 ms (1 client, every page computed)"
                     % "{:,}".format(results["large_hosts"]), "%.1f ms" % large["p99_ms"], large["p99_ms"] < 20))
    return rows


def document(results):
    from bench import report

    table = report.table(
        ["case", "clients", "requests", "req/s", "p50", "p99"],
        [[c["case"], c["clients"], "{:,}".format(c["requests"]), "{:,.0f}".format(c["rps"]),
          "%.2f ms" % c["p50_ms"], "%.2f ms" % c["p99_ms"]] for c in results["cases"]])
    targets = report.targets(summary(results))
    return "\n".join([
        "`bench/api_bench.py` (method in its docstring): a real engine on SQLite and a bare aiohttp",
        "handler on the same HTTP stack, both on loopback, driven by one client process on the same",
        "two CPUs. Requests are signed as `cs` signs them (HMAC-SHA1, `signatureVersion=3`), each",
        "afresh. Latency is per request (per pair for `createPod` + `deletePod`) at that concurrency.",
        "Hosts were loaded through the engine's service layer in %.0f s (%s hosts)." % (
            results["load_seconds"], "{:,}".format(results["hosts_loaded"])),
        "The machine is shared with other work and noisy: absolute figures move from run to run by",
        "tens of percent; the ratios to the bare handler, measured side by side, move much less.",
        "", table, "", targets, "",
        "The engine keeps the answers of `listZones`, `listPods`, `listClusters` and `listHosts`",
        "until the next write transaction commits (SQLite only, where it is the only writer;",
        "`api.cache.size`, default 256, 0 turns it off). A stored answer is served on the event loop",
        "after the signature, expiry, key and role checks, without the database. The rows with the",
        "cache off show the cost of computing each answer; an agent's ping or any change empties it.",
    ])


# --- main ---------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--db-url", help="database URL (default: SQLite in the work directory)")
    ap.add_argument("--workdir", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--zone-hosts", type=int, default=1000, help="hosts in the database for listZones")
    ap.add_argument("--list-hosts", type=int, default=10000, help="hosts in the zone that listHosts pages through")
    ap.add_argument("--large-hosts", type=int, default=25000,
                    help="then grow that zone to this many hosts and measure the page again (0: skip)")
    ap.add_argument("--requests", type=int, default=3000, help="requests per listZones/baseline case")
    ap.add_argument("--page-requests", type=int, default=200, help="requests per listHosts case")
    ap.add_argument("--pairs", type=int, default=300, help="createPod/deletePod pairs per case")
    ap.add_argument("--clients", default="1,8,64", help="concurrent clients, comma-separated")
    ap.add_argument("--quick", action="store_true", help="small numbers for a smoke run")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the API section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if args.quick:
        args.zone_hosts, args.list_hosts, args.requests, args.page_requests, args.pairs = 100, 1500, 300, 40, 40
        args.large_hosts = min(args.large_hosts, 3000)
    clients = [int(c) for c in args.clients.split(",")]

    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="stackwright-bench-"))
    db_url = args.db_url or "sqlite:///%s" % (workdir / "cloud.db")
    quiet = ["--log-level", "WARNING"]
    results = {"clients": clients, "list_hosts": args.list_hosts, "cases": [],
               "large_hosts": args.large_hosts if args.large_hosts > args.list_hosts else 0}
    try:
        cached = EngineProcess(workdir / "engine", db_url, extra_args=quiet)
        cached.setup_database()
        uncached = EngineProcess(workdir / "engine", db_url, extra_args=quiet + ["--api-cache-size", "0"])
        uncached.api_key, uncached.api_secret = cached.api_key, cached.api_secret
        key, secret = cached.api_key, cached.api_secret
        _zone, took = load_hosts(db_url, "bench-zones", args.zone_hosts)
        detach_simulated_agents(db_url)
        print("loaded %d Simulator hosts through the service layer in %.1f s" % (args.zone_hosts, took), flush=True)
        list_zones = {"command": "listZones"}
        with Baseline() as baseline:
            cached.start()
            try:
                for c in clients:
                    run_case(results, BASELINE, Api(baseline.endpoint, key, secret).get(lambda i: list_zones),
                             args.requests, c)
                    run_case(results, ZONES, Api(cached.endpoint, key, secret).get(lambda i: list_zones),
                             args.requests, c)
            finally:
                cached.stop()
        uncached.start()
        try:
            for c in clients:
                run_case(results, ZONES_UNCACHED, Api(uncached.endpoint, key, secret).get(lambda i: list_zones),
                         args.requests, c)
        finally:
            uncached.stop()

        zone, took2 = load_hosts(db_url, "bench-hosts", args.list_hosts)
        detach_simulated_agents(db_url)
        results["load_seconds"], results["hosts_loaded"] = took + took2, args.zone_hosts + args.list_hosts
        print("loaded %d more Simulator hosts in %.1f s" % (args.list_hosts, took2), flush=True)
        pages = max(1, (args.list_hosts + 499) // 500)

        def page(i):
            return {"command": "listHosts", "zoneid": zone, "page": str(i % pages + 1), "pagesize": "500"}

        uncached.start()
        try:
            for c in clients:
                run_case(results, HOSTS % "{:,}".format(args.list_hosts), Api(uncached.endpoint, key, secret).get(page),
                         args.page_requests, c)
        finally:
            uncached.stop()
        cached.start()
        try:
            api = Api(cached.endpoint, key, secret)
            for c in clients:
                run_case(results, HOSTS_CACHED % "{:,}".format(args.list_hosts), api.get(page),
                         args.page_requests, c)
            for run, c in enumerate(clients):
                run_case(results, PODS, pod_pair(api, zone, run), args.pairs, c)
        finally:
            cached.stop()
        if args.large_hosts > args.list_hosts:
            _zone, took3 = load_hosts(db_url, "bench-hosts", args.large_hosts - args.list_hosts, extend=True)
            detach_simulated_agents(db_url)
            results["load_seconds"] += took3
            results["hosts_loaded"] += args.large_hosts - args.list_hosts
            pages = max(1, (args.large_hosts + 499) // 500)
            uncached.start()
            try:
                run_case(results, HOSTS % "{:,}".format(args.large_hosts), Api(uncached.endpoint, key, secret).get(
                    lambda i: {"command": "listHosts", "zoneid": zone, "page": str(i % pages + 1), "pagesize": "500"}),
                    args.page_requests, 1)
            finally:
                uncached.stop()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    from bench import report

    report.finish("api_bench.py", argv, results, summary(results), "API",
                  document(results) if args.write_docs else None, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
