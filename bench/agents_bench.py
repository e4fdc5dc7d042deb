"""Scale of the agent channel: N simulated agents (TLS) pinging one engine every second.

Starts a real engine on loopback (SQLite, ping.interval=1), a Simulator cluster, then one
load process (`python -m stackwright.agent.simulated`) holding N agent connections with
client certificates from the engine's CA. Measures, in the same run:

- baseline: the engine's CPU while idle (no agents) over a fixed window;
- the time until all N hosts are Up (listHosts through the `cs` client);
- the engine's CPU while the N agents ping at 1 s, over the same window.

Bounded: the load process stops by itself after --duration seconds. Loopback only.

    .venv/bin/python bench/agents_bench.py [--count 2000] [--window 20] [--write-docs]
"""

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.engine import EngineProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_share(pid, window):
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    return (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def up_count(api, cluster_id):
    return api.listHosts(clusterid=cluster_id, state="Up", page=1, pagesize=1).get("count", 0)


def run(args):
    work = Path(tempfile.mkdtemp(prefix="sw-agents-bench-"))
    engine = EngineProcess(work / "engine", "sqlite:///%s" % (work / "engine" / "cloud.db"))
    engine.start()
    try:
        api = engine.client()
        api.updateConfiguration(name="ping.interval", value="1")
        engine.restart()  # ping settings are read at start
        zone = api.createZone(name="bench", dns1="192.0.2.53", networktype="Advanced")["zone"]
        pod = api.createPod(zoneid=zone["id"], name="bench-pod", gateway="10.10.0.1",
                            netmask="255.255.0.0", startip="10.10.0.10")["pod"]
        cluster = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername="bench-sim",
                                 hypervisor="Simulator", clustertype="CloudManaged")["cluster"][0]
        idle = cpu_share(engine.pid, args.window)
        idle_rss = rss_mib(engine.pid)
        duration = args.ramp + args.settle + args.window + 30
        load = subprocess.Popen(
            [sys.executable, "-m", "stackwright.agent.simulated", "--host", "127.0.0.1",
             "--port", str(engine.agent_port), "--count", str(args.count), "--ramp", str(args.ramp),
             "--duration", str(duration), "--ca-dir", str(engine.workdir / "pki"),
             "--zone", zone["id"], "--pod", pod["id"], "--cluster", cluster["id"]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        all_up_after = None
        while time.monotonic() - started < args.ramp + args.settle:
            if up_count(api, cluster["id"]) >= args.count:
                all_up_after = time.monotonic() - started
                break
            time.sleep(1)
        busy = cpu_share(engine.pid, args.window)
        busy_rss = rss_mib(engine.pid)
        up_end = up_count(api, cluster["id"])
        out, err = load.communicate(timeout=duration + 60)
        return {
            "count": args.count, "ramp": args.ramp, "window": args.window,
            "idle_cpu": idle, "busy_cpu": busy, "idle_rss": idle_rss, "busy_rss": busy_rss,
            "all_up_after": all_up_after, "up_at_end_of_window": up_end,
            "load": out.strip().splitlines()[-1] if out.strip() else err.strip()[-500:],
        }
    finally:
        engine.stop()


def table(r):
    lines = [
        "| measurement | value |",
        "| --- | --- |",
        "| simulated agents (TLS, ping every 1 s) | %d, opened over %ds |" % (r["count"], r["ramp"]),
        "| all hosts Up after | %s |" % ("%.1f s" % r["all_up_after"] if r["all_up_after"] else "not all within the bound"),
        "| hosts Up at the end of the window | %d |" % r["up_at_end_of_window"],
        "| engine CPU, idle (baseline, %ds) | %.3f cores |" % (r["window"], r["idle_cpu"]),
        "| engine CPU, %d agents pinging (%ds) | %.3f cores |" % (r["count"], r["window"], r["busy_cpu"]),
        "| engine CPU per 1,000 pings/s | %.3f cores |" % ((r["busy_cpu"] - r["idle_cpu"]) * 1000 / r["count"]),
        "| engine memory (RSS) idle / loaded | %.0f MiB / %.0f MiB |" % (r["idle_rss"], r["busy_rss"]),
        "| load process summary | `%s` |" % r["load"],
    ]
    return "\n".join(lines)


def write_docs(r, command):
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head = "## Agent channel scale"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    section = "\n".join([
        head, "",
        "Machine: %s, %d CPUs, Python %s. Date: %s. Commit: %s." % (
            platform.platform(), os.cpu_count(), platform.python_version(),
            dt.date.today().isoformat(), commit or "uncommitted"),
        "Command: `%s`" % command, "",
        "The load process and the engine share the same two cores, so the figures are an upper",
        "bound for the engine's own cost; the idle engine in the same run is the baseline.", "",
        table(r), "",
    ])
    if head in text:
        before, rest = text.split(head, 1)
        after = rest.split("\n## ", 1)
        text = before + section + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--ramp", type=int, default=30, help="seconds over which agents connect")
    ap.add_argument("--settle", type=int, default=90, help="seconds allowed beyond the ramp for all to be Up")
    ap.add_argument("--window", type=int, default=20, help="seconds of each CPU measurement")
    ap.add_argument("--write-docs", action="store_true", help="record the figures in docs/benchmarks.md")
    args = ap.parse_args()
    if not 1 <= args.count <= 20000:
        ap.error("--count must be between 1 and 20000")
    result = run(args)
    print(table(result))
    if args.write_docs:
        write_docs(result, "python bench/agents_bench.py " + " ".join(sys.argv[1:]))
    return 0 if result["all_up_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
