"""Hosts per engine: N simulated agents over TLS, pinging one engine, and the reconnect storm.

For each N in --counts, on a fresh engine (SQLite, loopback):

1. Baseline: the engine's CPU while idle, with no agent connected, over a fixed window.
2. One load process (`python -m stackwright.simulation.agent`) opens N agent connections
   with client certificates from the engine's CA, spread over a ramp, into one Simulator
   cluster; the time until all N hosts are Up is measured.
3. For each ping interval in --intervals: the engine's CPU and memory over a window of one
   interval (20 s at least; 30 s at most: pings are spread evenly over the interval), and the ping round trips the agents saw
   (p50/p99: the engine's ping handling, as an agent sees it). Before every interval after
   the first, `ping.interval` is changed and the engine is restarted (SIGTERM, start): the
   time from the engine answering again until all N hosts are Up is the reconnect storm
   (waited for up to --storm-limit, by default the 60 s target; how many were Up by then
   is recorded when not all were).

Bounded: every wait has a limit and the load process stops by itself. Loopback only.

    .venv/bin/python bench/agents_bench.py                                   # 1k/5k/10k at 60 s and 5 s
    .venv/bin/python bench/agents_bench.py --counts 2000 --intervals 1 \\
        --section "Agent channel scale"                                      # 2,000 agents at 1 s
    .venv/bin/python bench/agents_bench.py --counts 200 --intervals 5,2      # a smoke run
"""

import argparse
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from tests.support.engine import EngineProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
IDLE_WINDOW = 5


def cpu_seconds(pid):
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_share(pids, window):
    """CPU cores used by each of `pids` over `window` seconds."""
    before, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    return [(cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]


def up_count(db_path, cluster_uuid):
    """Hosts of the cluster that are Up, read from the engine's SQLite file (read-only)."""
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=30)
    try:
        return db.execute(
            "SELECT count(*) FROM host JOIN cluster ON cluster.id = host.cluster_id "
            "WHERE cluster.uuid = ? AND host.state = 'Up' AND host.removed IS NULL", (cluster_uuid,)
        ).fetchone()[0]
    finally:
        db.close()


def wait_all_up(db_path, cluster_uuid, count, limit):
    """Seconds until `count` hosts are Up, or None after `limit`; polls 4 times a second."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if up_count(db_path, cluster_uuid) >= count:
            return time.monotonic() - started
        time.sleep(0.25)
    return None


def raise_open_files(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit("need %d open files, the hard limit is %d (ulimit -Hn)" % (needed, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def run_count(count, intervals, args, work):
    """One engine, N agents, every interval; returns the figures."""
    engine = EngineProcess(work / ("engine-%d" % count), "sqlite:///%s" % (work / ("engine-%d" % count) / "cloud.db"),
                           extra_args=["--log-level", "WARNING"])
    db_path = engine.workdir / "cloud.db"
    engine.start()
    load = None
    try:
        api = engine.client()
        api.updateConfiguration(name="ping.interval", value="%d" % intervals[0])
        engine.restart()  # ping settings are read at start
        api = engine.client()
        zone = api.createZone(name="bench", dns1="192.0.2.53", networktype="Advanced")["zone"]
        pod = api.createPod(zoneid=zone["id"], name="bench-pod", gateway="10.10.0.1",
                            netmask="255.255.0.0", startip="10.10.0.10")["pod"]
        cluster = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername="bench-sim",
                                 hypervisor="Simulator", clustertype="CloudManaged")["cluster"][0]
        idle_cpu, = cpu_share([engine.pid], IDLE_WINDOW)
        result = {"count": count, "idle_cpu": idle_cpu, "idle_rss": rss_mib(engine.pid), "phases": []}

        ramp = max(10.0, count / args.connect_rate)
        settle = ramp + args.settle
        windows = [min(30.0, max(20.0, float(i))) for i in intervals]
        duration = 60 + settle + sum(windows) + (len(intervals) - 1) * (args.storm_limit + 30)
        out_file, err_file = work / ("load-%d.out" % count), work / ("load-%d.err" % count)
        with open(out_file, "w") as out, open(err_file, "w") as err:
            # Output goes to files: a full pipe would block the load process.
            load = subprocess.Popen(
                [sys.executable, "-m", "stackwright.simulation.agent", "--host", "127.0.0.1",
                 "--port", str(engine.agent_port), "--count", str(count), "--ramp", "%g" % ramp,
                 "--duration", "%g" % duration, "--ca-dir", str(engine.workdir / "pki"),
                 "--zone", zone["id"], "--pod", pod["id"], "--cluster", cluster["id"]],
                stdout=out, stderr=err)
        started = time.monotonic()
        result["ramp"] = ramp
        result["all_up_after"] = wait_all_up(db_path, cluster["id"], count, settle + 60)
        print("%d agents: all Up after %s s" % (count, result["all_up_after"]), flush=True)

        for index, interval in enumerate(intervals):
            phase = {"interval": interval, "limit": args.storm_limit}
            if index > 0:
                api.updateConfiguration(name="ping.interval", value="%d" % interval)
                engine.stop(timeout=120)
                engine.start(timeout=60)
                api = engine.client()
                phase["storm"] = wait_all_up(db_path, cluster["id"], count, args.storm_limit)
                phase["up_at_limit"] = up_count(db_path, cluster["id"])
                print("%d agents: all Up %s s after the engine answered again (ping %g s)" % (
                    count, phase["storm"], interval), flush=True)
            phase["window"] = windows[index]
            phase["engine_cpu"], phase["load_cpu"] = cpu_share([engine.pid, load.pid], windows[index])
            phase["engine_rss"] = rss_mib(engine.pid)
            phase["up"] = up_count(db_path, cluster["id"])
            print("%d agents at %g s: engine %.3f cores, %.0f MiB; load process %.3f cores; %d Up" % (
                count, interval, phase["engine_cpu"], phase["engine_rss"], phase["load_cpu"], phase["up"]),
                flush=True)
            result["phases"].append(phase)
        load.send_signal(signal.SIGTERM)
        load.wait(120)
        lines = out_file.read_text().strip().splitlines()
        result["load"] = json.loads(lines[-1]) if lines else {"error": err_file.read_text()[-2000:]}
        result["wall"] = time.monotonic() - started
        return result
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(30)
        engine.stop(timeout=120)


def rows(results):
    out = []
    for r in results:
        pings = r["load"].get("pings_by_interval_s", {})
        for index, phase in enumerate(r["phases"]):
            rtt = pings.get("%g" % phase["interval"], {})
            out.append([
                "{:,}".format(r["count"]), "%g s" % phase["interval"],
                "%.1f s" % r["all_up_after"] if index == 0 and r["all_up_after"] is not None
                else ("not all within the bound" if index == 0 else "–"),
                "–" if index == 0 else ("%.1f s" % phase["storm"] if phase["storm"] is not None
                                        else "{:,} Up after {:g} s".format(phase["up_at_limit"], phase["limit"])),
                "%.3f (idle %.3f)" % (phase["engine_cpu"], r["idle_cpu"]),
                "%.0f MiB (idle %.0f)" % (phase["engine_rss"], r["idle_rss"]),
                "%s / %s ms" % (rtt.get("rtt_p50_ms", "–"), rtt.get("rtt_p99_ms", "–")),
                "%.3f" % phase["load_cpu"],
            ])
    return out


def targets(results, interval_target=60.0):
    checks = []
    for r in results:
        for phase in r["phases"]:
            if "storm" in phase:
                ok = phase["storm"] is not None and phase["storm"] <= 60
                checks.append(("{:,} agents back Up within 60 s of an engine restart".format(r["count"]),
                               "%.1f s" % phase["storm"] if phase["storm"] is not None
                               else "{:,} Up after {:g} s".format(phase["up_at_limit"], phase["limit"]), ok))
            if r["count"] >= 10000 and phase["interval"] == interval_target:
                ok = phase["engine_cpu"] < 0.25
                checks.append(("{:,} hosts at a 60 s interval: engine under 0.25 core".format(r["count"]),
                               "%.3f cores" % phase["engine_cpu"], ok))
        if r["all_up_after"] is None:
            checks.append(("{:,} agents all reach Up".format(r["count"]), "%d Up" % r["phases"][0]["up"], False))
        else:
            checks.append(("{:,} agents all reach Up".format(r["count"]), "after %.1f s" % r["all_up_after"], True))
    return checks


def document(results):
    table = report.table(
        ["agents", "ping interval", "all Up after start", "all Up after restart", "engine CPU, cores",
         "engine memory", "ping round trip p50 / p99", "load process CPU"], rows(results))
    verdicts = report.targets(targets(results))
    return "\n".join([
        "`bench/agents_bench.py` (method in its docstring): one load process holds N simulated agents,",
        "each with its own TLS client certificate from the engine's CA, against a real engine on",
        "SQLite. The idle engine (no agent) in the same run is the baseline. The load process and the",
        "engine share the same two CPUs. The ping round trip is measured by the agents: from sending",
        "a ping to its answer, which includes the engine's handling and both processes' queues.",
        "", table, "", verdicts, "",
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,5000,10000", help="agents per run, comma-separated")
    ap.add_argument("--intervals", default="60,5", help="ping intervals in seconds; the engine restarts between")
    ap.add_argument("--connect-rate", type=float, default=200.0, help="new agent connections per second at start")
    ap.add_argument("--settle", type=float, default=90.0, help="seconds allowed after the ramp for all to be Up")
    ap.add_argument("--storm-limit", type=float, default=60.0, help="seconds to wait for all Up after a restart")
    ap.add_argument("--section", default="Hosts per engine", help="section of docs/benchmarks.md to rewrite")
    ap.add_argument("--write-docs", action="store_true", help="record the figures in docs/benchmarks.md")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    intervals = [int(i) for i in args.intervals.split(",")]
    if not all(1 <= c <= 20000 for c in counts) or not all(i >= 1 for i in intervals):
        ap.error("counts must be 1..20000 and intervals at least 1 s")
    # The engine and the load process each hold one socket per agent; both inherit the limit.
    raise_open_files(max(counts) + 1024)
    results = []
    with tempfile.TemporaryDirectory(prefix="sw-agents-bench-") as scratch:
        for count in counts:
            results.append(run_count(count, intervals, args, Path(scratch)))
    print(document(results))
    if args.write_docs:
        report.write_section(report.BENCHMARKS, args.section, document(results),
                             "python bench/agents_bench.py " + " ".join(sys.argv[1:]).replace("--write-docs", "").strip())
    return 0 if all(ok for _t, _m, ok in targets(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
