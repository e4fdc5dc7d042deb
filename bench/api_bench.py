"""API benchmark of the management engine, loopback only, bounded in time.

What it does, in one run:

1. Sets up a fresh database (`stackwright-setup-databases`) in a temporary directory.
2. Loads a zone with 1,000 Simulator hosts through the engine's own service layer
   (HostService.add_host, in this process, against the same database, before the engine
   starts), which is the same code path as addHost without the HTTP round trip.
3. Starts a real engine (`stackwright-management`) and, in a separate process, a bare
   aiohttp handler that answers a constant: the baseline of the HTTP stack.
4. Measures signed requests (HMAC-SHA1, signatureVersion 3, as `cs` signs them):
   the baseline and `listZones` with 1,000 hosts in the database.
5. Stops the engine, loads another zone up to the listHosts host count (25,000 by
   default), restarts the engine and measures `listHosts zoneid=<zone> page=<k>
   pagesize=500`, cycling over all pages.

Each measurement is a fixed number of requests; throughput is measured with several
requests in flight, latency (p50/p99) one request at a time. Run:

    .venv/bin/python bench/api_bench.py            # defaults as documented in docs/benchmarks.md
    .venv/bin/python bench/api_bench.py --quick    # small numbers, a smoke run
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import pathlib
import platform
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


def load_hosts(db_url, zone_name, count, hosts_per_cluster=1000, batch=1000):
    """Create `zone_name` (one pod, clusters of `hosts_per_cluster`) with `count` Simulator hosts."""
    from sqlalchemy import select

    from stackwright.management.context import Context
    from stackwright.management.engine import Engine
    from stackwright.management.options import Options
    from stackwright.management.persistence.models import User

    engine = Engine(Options(db_url=db_url))
    engine.settings.load()
    started = time.monotonic()
    try:
        with engine.db.transaction() as session:
            admin = session.execute(select(User).where(User.username == "admin")).scalar_one()
            ctx = Context(engine, session, admin)
            zone = ctx.hierarchy.create_zone(name=zone_name, dns1="127.0.0.53", network_type="Advanced")
            pod = ctx.hierarchy.create_pod(zone=zone, name=zone_name + "-pod", gateway="10.200.0.1",
                                           netmask="255.255.0.0", start_ip="10.200.0.10")
            ids = (zone.id, pod.id, admin.id)
        added = 0
        cluster_id = None
        while added < count:
            with engine.db.transaction() as session:
                from stackwright.management.persistence.models import Cluster, Pod, Zone

                admin = session.get(User, ids[2])
                ctx = Context(engine, session, admin)
                zone, pod = session.get(Zone, ids[0]), session.get(Pod, ids[1])
                cluster = session.get(Cluster, cluster_id) if cluster_id else None
                for _host in range(min(batch, count - added)):
                    if added % hosts_per_cluster == 0:
                        cluster = ctx.hierarchy.add_cluster(
                            zone=zone, pod=pod, name="%s-c%d" % (zone_name, added // hosts_per_cluster),
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


def wait_settled(db_url, since, timeout=180):
    """Wait until every Simulator host that has an agent is Up and registered since `since`.

    The engine runs an agent for every Simulator host; after a start they all register
    again, and measuring during that storm would measure the storm. Gives up when nothing
    has changed for 20 s or after `timeout`; returns (seconds waited, hosts still waiting).
    """
    from sqlalchemy import func, or_, select

    from stackwright.management.persistence.db import Database
    from stackwright.management.persistence.models import Host

    db = Database(db_url)
    started = time.monotonic()
    last, changed, waiting = None, started, None
    try:
        while time.monotonic() - started < timeout:
            with db.transaction(readonly=True) as session:
                waiting = session.execute(
                    select(func.count(Host.id)).where(
                        Host.removed.is_(None), Host.hypervisor == "Simulator", Host.guid.is_not(None),
                        or_(Host.state != "Up", Host.last_pinged < int(since)))
                ).scalar_one()
            if waiting == 0:
                break
            if waiting != last:
                last, changed = waiting, time.monotonic()
            elif time.monotonic() - changed > 20:
                break
            time.sleep(1)
    finally:
        db.dispose()
    return time.monotonic() - started, waiting


def settled(results, phase, outcome):
    seconds, waiting = outcome
    results.setdefault("settle", {})[phase] = {"seconds": round(seconds), "hosts_not_settled": waiting}
    print("after %.0f s: %d Simulator host(s) not Up or not registered since the start" % (seconds, waiting),
          flush=True)


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


async def measure(endpoint, key, secret, make_params, requests, concurrency):
    """Send `requests` signed GETs, `concurrency` at a time; returns (req/s, [latency s])."""
    import aiohttp

    latencies = []
    counter = iter(range(requests))
    failures = []

    async def worker(session):
        for i in counter:
            url = signed_url(endpoint, key, secret, make_params(i))
            t0 = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    failures.append(response.status)
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _worker in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError("%d of %d requests failed (HTTP %s)" % (len(failures), requests, sorted(set(failures))))
    return requests / elapsed, latencies


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def run_case(name, endpoint, key, secret, make_params, requests, concurrency, warmup, samples):
    """Throughput over `requests` with `concurrency` in flight; latency over `samples` sent one by one."""
    asyncio.run(measure(endpoint, key, secret, make_params, warmup, 1))
    rate, _latencies = asyncio.run(measure(endpoint, key, secret, make_params, requests, concurrency))
    _rate, latencies = asyncio.run(measure(endpoint, key, secret, make_params, samples, 1))
    result = {
        "case": name, "requests": requests, "concurrency": concurrency, "rps": rate,
        "p50_ms": statistics.median(latencies) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
        "latency_samples": len(latencies),
    }
    print("%-40s %8.0f req/s   p50 %7.2f ms   p99 %7.2f ms" % (name, rate, result["p50_ms"], result["p99_ms"]),
          flush=True)
    return result


# --- main ---------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--db-url", help="database URL (default: SQLite in the work directory)")
    ap.add_argument("--workdir", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--zone-hosts", type=int, default=1000, help="hosts in the database for listZones")
    ap.add_argument("--list-hosts", type=int, default=25000, help="hosts in the zone that listHosts pages through")
    ap.add_argument("--requests", type=int, default=2000, help="requests per throughput measurement")
    ap.add_argument("--page-requests", type=int, default=200, help="requests per listHosts measurement")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight for throughput")
    ap.add_argument("--quick", action="store_true", help="small numbers for a smoke run")
    ap.add_argument("--no-simulated-agents", action="store_true",
                    help="do not start the in-engine agents of the loaded Simulator hosts")
    ap.add_argument("--settle-timeout", type=float, default=180,
                    help="seconds to wait for the Simulator hosts' agents to register after a start")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0
    if args.quick:
        args.zone_hosts, args.list_hosts, args.requests, args.page_requests = 100, 1500, 300, 40

    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="stackwright-bench-"))
    db_url = args.db_url or "sqlite:///%s" % (workdir / "cloud.db")
    engine = EngineProcess(workdir / "engine", db_url, extra_args=["--log-level", "WARNING"])
    results = {"simulated_agents": not args.no_simulated_agents, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": "%s, %d CPUs, Python %s" % (platform.platform(), os.cpu_count(), platform.python_version()),
               "database": "sqlite" if db_url.startswith("sqlite") else db_url.split(":", 1)[0],
               "cases": []}
    try:
        engine.setup_database()
        _loaded, took = load_hosts(db_url, "bench-zones", args.zone_hosts)
        print("loaded %d Simulator hosts through the service layer in %.1f s" % (args.zone_hosts, took), flush=True)
        if args.no_simulated_agents:
            detach_simulated_agents(db_url)
        key, secret = engine.api_key, engine.api_secret
        with Baseline() as baseline:
            since = time.time()
            engine.start()
            settled(results, "zones", wait_settled(db_url, since, args.settle_timeout))
            try:
                results["cases"].append(run_case(
                    "baseline (bare aiohttp handler)", baseline.endpoint, key, secret,
                    lambda i: {"command": "listZones"}, args.requests, args.concurrency, 50, args.requests // 2))
                results["cases"].append(run_case(
                    "listZones (%d hosts in the DB)" % args.zone_hosts, engine.endpoint, key, secret,
                    lambda i: {"command": "listZones"}, args.requests, args.concurrency, 50, args.requests // 2))
            finally:
                engine.stop()
        more = args.list_hosts
        zone, took = load_hosts(db_url, "bench-hosts", more)
        print("loaded %d more Simulator hosts in %.1f s" % (more, took), flush=True)
        if args.no_simulated_agents:
            detach_simulated_agents(db_url)
        since = time.time()
        engine.start()
        settled(results, "hosts", wait_settled(db_url, since, args.settle_timeout))
        try:
            pages = max(1, (more + 499) // 500)
            results["cases"].append(run_case(
                "listHosts page of 500 (%d hosts in zone)" % more, engine.endpoint, key, secret,
                lambda i: {"command": "listHosts", "zoneid": zone, "page": str(i % pages + 1), "pagesize": "500"},
                args.page_requests, 2, 10, args.page_requests))
        finally:
            engine.stop()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    base, zones, hosts = results["cases"]
    results["listzones_ratio"] = zones["rps"] / base["rps"]
    print("listZones / baseline throughput: %.2f (target >= 0.5)" % results["listzones_ratio"])
    print("listHosts page p99: %.1f ms (target < 100 ms)" % hosts["p99_ms"])
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
