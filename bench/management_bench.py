"""Several management servers: API throughput through HAProxy on MariaDB Galera, and the
takeover of 1,000 agents when a server is killed. Loopback only, bounded, one run.

1. API throughput, three set-ups measured one after the other in the same run, each with its
   own fresh database set up by `stackwright-setup-databases`:
   - one engine on one MariaDB server, called directly (no balancer): the reference;
   - one engine on a three-node Galera cluster, the API and the database both through HAProxy
     (the haproxy role's configuration: API round robin, database on one node at a time);
   - two engines on that Galera cluster through the same HAProxy.
   Cases: `listZones` (on MariaDB the engine's answer cache is off: every call reads the
   database) and `createPod` + `deletePod` pairs (writes), at each of --clients, signed
   requests as in bench/api_bench.py.
2. Agent takeover: two engines on one MariaDB server (heartbeat --heartbeat-ms, threshold
   --threshold-ms), --agents simulated agents (`python -m stackwright.simulation.agent --host A,B`)
   all Up on A; A is killed (SIGKILL) and the time until every one is Up on B is measured,
   read from the database four times a second.

    .venv/bin/python bench/management_bench.py                    # as recorded in docs/benchmarks.md
    .venv/bin/python bench/management_bench.py --quick            # small numbers, a smoke run
    .venv/bin/python bench/management_bench.py --write-docs       # also rewrite its sections
"""

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.api_bench import Api, pod_pair, run_case  # noqa: E402
from tests.support.engine import EngineProcess, engine_pair, start_pair  # noqa: E402
from tests.support.galera import GaleraCluster  # noqa: E402
from tests.support.haproxy import Balancer  # noqa: E402
from tests.support.mariadb import MariaDBServer  # noqa: E402

THROUGHPUT = "Several management servers: API through HAProxy on Galera"
TAKEOVER = "Several management servers: agent takeover"
QUIET = ["--log-level", "WARNING"]


def zone_id(engine):
    api = engine.client()
    zone = api.createZone(name="bench-ha", dns1="8.8.8.8", networktype="Advanced")["zone"]
    return zone["id"]


def measure(results, label, endpoint, engine, zone, args, run):
    api = Api(endpoint, engine.api_key, engine.api_secret)
    for clients in args.clients:
        run_case(results, "%s: listZones" % label, api.get(lambda i: {"command": "listZones"}), args.requests, clients)
        run_case(results, "%s: createPod + deletePod" % label, pod_pair(api, zone, run * 10 + clients), args.pairs,
                 clients)


def throughput(args, work, results):
    # The reference: one engine, one MariaDB server, no balancer.
    server = MariaDBServer(work / "mariadb.log")
    server.start()
    try:
        database = server.create_database(prefix="bench_single")
        engine = EngineProcess(work / "single", database.url, extra_args=QUIET)
        engine.start()
        try:
            measure(results, "1 engine, MariaDB, direct", engine.endpoint, engine, zone_id(engine), args, 1)
        finally:
            engine.stop()
    finally:
        server.close()

    cluster = GaleraCluster(work / "galera").start()
    balancer = None
    a = EngineProcess(work / "a", "", extra_args=QUIET)
    b = EngineProcess(work / "b", "", extra_args=QUIET, key_file=a.key_file)
    try:
        first = cluster.nodes[0]
        with first.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute("CREATE USER IF NOT EXISTS 'haproxy_check'@'127.0.0.1'")
        database = first.create_database(prefix="bench_galera")
        # One balancer for both engines; B is started for the second measure only (until then
        # HAProxy's checks find it down and send every call to A).
        balancer = Balancer(work / "haproxy", [a, b], databases=cluster.nodes)
        a.db_url = b.db_url = dataclasses.replace(database, port=balancer.database_port).url
        balancer.start()
        a.start()
        zone = zone_id(a)
        time.sleep(2)          # B found down: fall 3 checks, every 500 ms
        measure(results, "1 engine, Galera, HAProxy", balancer.endpoint, a, zone, args, 2)
        b.api_key, b.api_secret = a.api_key, a.api_secret
        b.start()
        time.sleep(2)          # B found up: rise 2 checks
        measure(results, "2 engines, Galera, HAProxy", balancer.endpoint, a, zone, args, 3)
    finally:
        if balancer is not None:
            balancer.stop()
        a.stop()
        b.stop()
        cluster.close()


def up_on(engine, msid_of_b, cluster_uuid):
    from sqlalchemy import func, select

    from stackwright.management.persistence.models import Cluster, Host

    with engine.transaction(readonly=True) as s:
        return s.execute(select(func.count()).select_from(Host).join(Cluster, Cluster.id == Host.cluster_id).where(
            Cluster.uuid == cluster_uuid, Host.state == "Up", Host.mgmt_server_id == msid_of_b,
            Host.removed.is_(None))).scalar_one()


def takeover(args, work, results):
    from sqlalchemy import select

    from stackwright.management.persistence.db import Database
    from stackwright.management.persistence.models import ManagementServer
    from tests.support.hierarchy import new_cluster, new_pod

    server = MariaDBServer(work / "mariadb-takeover.log")
    server.start()
    a = b = load = db = None
    try:
        database = server.create_database(prefix="bench_takeover")
        a, b = engine_pair(work / "takeover", database.url, extra_args=QUIET)
        api = start_pair(a, b, args.heartbeat_ms, args.threshold_ms)
        zone = api.createZone(name="bench-takeover", dns1="8.8.8.8", networktype="Advanced")["zone"]
        cluster = new_cluster(api, new_pod(api, zone, "takeover"), "takeover")
        db = Database(database.url)
        with db.transaction(readonly=True) as s:
            msid = dict(s.execute(select(ManagementServer.agent_port, ManagementServer.msid)).all())
        load = subprocess.Popen(
            [sys.executable, "-m", "stackwright.simulation.agent",
             "--host", "127.0.0.1:%d,127.0.0.1:%d" % (a.agent_port, b.agent_port), "--count", str(args.agents),
             "--ramp", "10", "--duration", "900", "--ca-dir", str(a.workdir / "pki"), "--cluster", cluster["id"],
             "--guid-prefix", "takeover"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while up_on(db, msid[a.agent_port], cluster["id"]) < args.agents:
            if time.monotonic() > deadline:
                raise RuntimeError("the %d agents were not Up on A within 300 s" % args.agents)
            time.sleep(0.5)
        killed = time.monotonic()
        a.kill()
        counts = []
        while True:
            on_b = up_on(db, msid[b.agent_port], cluster["id"])
            counts.append((time.monotonic() - killed, on_b))
            if on_b >= args.agents or time.monotonic() - killed > args.limit:
                break
            time.sleep(0.25)
        half = next((t for t, n in counts if n >= args.agents / 2), None)
        results["takeover"] = {"agents": args.agents, "on_b": counts[-1][1], "seconds": counts[-1][0],
                               "half": half, "heartbeat_ms": args.heartbeat_ms, "threshold_ms": args.threshold_ms}
        print("takeover: %d of %d agents Up on B %.1f s after the kill (half by %s s)" % (
            counts[-1][1], args.agents, counts[-1][0], "%.1f" % half if half is not None else "-"), flush=True)
    finally:
        if load is not None:
            load.terminate()
            load.wait(60)
        if db is not None:
            db.dispose()
        for engine in (a, b):
            if engine is not None:
                engine.kill()
        server.close()


def throughput_document(results, args):
    rows = []
    reference = {(c["case"].split(": ", 1)[1], c["clients"]): c["rps"] for c in results["cases"]
                 if c["case"].startswith("1 engine, MariaDB")}
    for case in results["cases"]:
        setup, what = case["case"].split(": ", 1)
        rows.append([setup, what, case["clients"], "%.0f" % case["rps"],
                     "%.2f" % (case["rps"] / reference[what, case["clients"]]),
                     "%.1f" % case["p50_ms"], "%.1f" % case["p99_ms"]])
    return ("The same run, one set-up after the other: one engine on one MariaDB server called directly; "
            "one and then two engines on a three-node MariaDB Galera cluster (`tests/support/galera.py`) with "
            "the API and the database through HAProxy (the haproxy role's configuration: API round robin, "
            "database on the first node, the others backups). %d requests per `listZones` case, %d pairs per "
            "`createPod` + `deletePod` case (a pair counts as one).\n\n%s\n\nThe client and all servers share "
            "the machine's 2 CPUs: a second engine adds capacity only where the engine, not the database, "
            "the balancer or the client, is the limit." % (
                args.requests, args.pairs,
                report.table(["set-up", "case", "clients", "per second", "of direct", "p50 ms", "p99 ms"], rows)))


def takeover_document(results):
    t = results["takeover"]
    met = t["on_b"] == t["agents"]
    rows = [["simulated agents (`--host A,B`, all on A)", "{:,}".format(t["agents"])],
            ["`cluster.heartbeat.interval` / `threshold`", "%d ms / %d ms" % (t["heartbeat_ms"], t["threshold_ms"])],
            ["kill of A to half of them Up on B", "%.1f s" % t["half"] if t["half"] is not None else "-"],
            ["kill of A to all of them Up on B", "%.1f s" % t["seconds"] if met else "not reached (%d in %.0f s)" % (
                t["on_b"], t["seconds"])]]
    return ("Two engines on one MariaDB server; engine A is killed (SIGKILL) with every agent connected to it; "
            "the agents reconnect to B at once (their connection drops) and B registers them: the time is the "
            "reconnect storm on B, not the heartbeat threshold.\n\n%s" % report.table(["measure", "value"], rows))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--heartbeat-ms", type=int, default=500)
    ap.add_argument("--threshold-ms", type=int, default=4000)
    ap.add_argument("--limit", type=float, default=180.0, help="seconds to wait for the takeover")
    ap.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    ap.add_argument("--skip", choices=["throughput", "takeover"], action="append", default=[])
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.pairs, args.agents = [1, 8], 200, 30, 100
    results = {"cases": []}
    with tempfile.TemporaryDirectory(prefix="stackwright-ha-bench-") as tmp:
        work = Path(tmp)
        if "throughput" not in args.skip:
            throughput(args, work, results)
        if "takeover" not in args.skip:
            takeover(args, work, results)
    command = "python bench/management_bench.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    command = command.replace(" --write-docs", "")
    if results["cases"]:
        body = throughput_document(results, args)
        print(body)
        if args.write_docs:
            report.write_section(report.BENCHMARKS, THROUGHPUT, body, command)
    if "takeover" in results:
        body = takeover_document(results)
        print(body)
        if args.write_docs:
            report.write_section(report.BENCHMARKS, TAKEOVER, body, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
