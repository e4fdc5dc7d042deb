"""Failure detection and recovery: a killed agent's host going Down, agents coming back after an engine restart.

Three real engines on loopback (SQLite), measured at the same time to keep the run short:

- engine A, default heartbeat (ping.interval 60 s, ping.timeout 2.5): one `stackwright-agent`
  process (simulator driver, enrolled with a token like any host) is killed with SIGKILL;
  the time until listHosts shows the host Down. Bound: 60 × 2.5 = 150 s.
- engine B, tuned heartbeat (5 s × 2): the same, several times. Bound: 10 s.
- engine C: 50 simulated agents in one separate process (`python -m stackwright.simulation.agent`)
  are connected; the engine is restarted (SIGTERM, then SIGKILL variants) and the time from
  the engine answering again until every host has registered again is measured.

Targets: Down within interval × timeout + 1 s of the kill (the engine counts the silence
from the last ping, so the kill can only shorten it); every agent back within one backoff
step (5 s) of the engine answering. The API is polled every 0.2 s; the engine's log gives
the exact moments of the engine's own decisions. Every wait is bounded.

    .venv/bin/python bench/failure_bench.py [--tuned-runs 3] [--restart-runs 2] [--agents 50] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import BENCHMARKS, table, verdict, write_section  # noqa: E402
from tests.support.engine import EngineProcess  # noqa: E402

BIN = Path(sys.executable).parent
POLL = 0.2
DEFAULT_PING = (60.0, 2.5)
TUNED_PING = (5.0, 2.0)
TARGET_SLACK = 1.0          # the heartbeat monitor looks once a second
RECONNECT_TARGET = 5.0      # one backoff step
# The load generator's agents back off from 0.5 s, doubling up to 10 s, each delay drawn
# from [d/2, d] (stackwright.simulation.agent.SimulatedAgent).
LOAD_BACKOFF = (0.5, 10.0)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
AGENT_UP = re.compile(r"\[stackwright\.management\.agentlink\.registrar\].* agent (\S+) connected: host ")
SILENT = re.compile(r"host (\S+) missed its pings: silent for ([\d.]+) s")


def wait_for(what, probe, timeout, interval=POLL):
    """Poll `probe()` until it returns something true; returns (value, epoch seconds when seen)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value, time.time()
        time.sleep(interval)
    raise RuntimeError("%s: not reached within %.0f s (last seen: %r)" % (what, timeout, value))


def log_lines(engine, pattern, after=None):
    """(epoch seconds, match) of the engine log lines matching `pattern`, optionally after a moment."""
    found = []
    for line in engine.log_file.read_text(errors="replace").splitlines():
        stamp, hit = LOG_TIME.match(line), pattern.search(line)
        if stamp and hit:
            when = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if after is None or when >= after:
                found.append((when, hit))
    return found


def new_engine(work, name, ping):
    engine = EngineProcess(work / name, "sqlite:///%s" % (work / name / "cloud.db"))
    engine.start()
    api = engine.client()
    if ping != DEFAULT_PING:
        api.updateConfiguration(name="ping.interval", value="%g" % ping[0])
        api.updateConfiguration(name="ping.timeout", value="%g" % ping[1])
        engine.restart()  # the agent channel reads them at start
    settings = {c["name"]: c["value"] for c in api.listConfigurations(keyword="ping.")["configuration"]}
    zone = api.createZone(name=name, dns1="192.0.2.53", networktype="Advanced")["zone"]
    pod = api.createPod(zoneid=zone["id"], name=name + "-pod", gateway="10.10.0.1", netmask="255.255.255.0",
                        startip="10.10.0.10")["pod"]
    cluster = api.addCluster(zoneid=zone["id"], podid=pod["id"], clustername=name + "-sim", hypervisor="Simulator",
                             clustertype="CloudManaged")["cluster"][0]
    return engine, (float(settings["ping.interval"]), float(settings["ping.timeout"])), zone, pod, cluster


class Agent:
    """One `stackwright-agent` process with the simulator driver, enrolled with a token."""

    def __init__(self, workdir, engine, zone, pod, cluster):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.properties = self.workdir / "agent.properties"
        self.log_file = self.workdir / "agent.log"
        self.proc = None
        token = engine.client().createAgentEnrollmentToken(description="failure benchmark")["agentenrollmenttoken"]
        token_file = self.workdir / "token"
        token_file.write_text(token["token"])
        token_file.chmod(0o600)
        run = subprocess.run(
            [str(BIN / "stackwright-setup-agent"), "--properties", str(self.properties), "--json",
             "--host", "127.0.0.1", "--port", str(engine.agent_port), "--zone", zone["id"], "--pod", pod["id"],
             "--cluster", cluster["id"], "--hypervisor-driver", "simulator", "--token-file", str(token_file)],
            capture_output=True, text=True, timeout=60, check=False)
        token_file.unlink(missing_ok=True)
        if run.returncode != 0:
            raise RuntimeError("stackwright-setup-agent failed: %s%s" % (run.stdout, run.stderr))
        self.guid = json.loads(run.stdout)["guid"]

    def start(self):
        self.proc = subprocess.Popen([str(BIN / "stackwright-agent"), "--properties", str(self.properties),
                                      "--log-file", str(self.log_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


# --- a killed agent --------------------------------------------------------------------------


def killed_agent(work, name, ping, runs, results):
    engine, ping_now, zone, pod, cluster = new_engine(work, name, ping)
    agent = None
    try:
        api = engine.client()
        results["settings"] = ping_now
        bound = ping_now[0] * ping_now[1]
        agent = Agent(work / (name + "-agent"), engine, zone, pod, cluster)
        for _run in range(runs):
            agent.start()
            host, _seen = wait_for("host of agent %s Up" % agent.guid, lambda: _up_host(api, cluster), 60)
            # Kill at a random moment (within the tuned ping cycle); the bound holds from any of them.
            time.sleep(random.uniform(0.5, min(ping_now[0], 5.0)))
            agent.kill()
            killed = time.time()
            _host, alert_seen = wait_for("host Alert", lambda h=host["id"]: _state_is(api, h, ("Alert", "Down")), 30)
            _host, down_seen = wait_for("host Down", lambda h=host["id"]: _state_is(api, h, ("Down",)), bound + 60)
            silent = [float(m.group(2)) for _when, m in log_lines(engine, SILENT, after=killed)]
            results.setdefault("runs", []).append({
                "alert": alert_seen - killed, "down": down_seen - killed, "bound": bound,
                "engine_silence": silent[0] if silent else None,
            })
            print("%s: killed agent -> Alert %.1f s, Down %.1f s (bound %.0f s)"
                  % (name, alert_seen - killed, down_seen - killed, bound), flush=True)
    finally:
        if agent is not None:
            agent.kill()
        engine.kill()


def _up_host(api, cluster):
    hosts = api.listHosts(clusterid=cluster["id"], type="Routing").get("host", [])
    return hosts[0] if hosts and hosts[0]["state"] == "Up" else None


def _state_is(api, host_id, states):
    host = api.listHosts(id=host_id)["host"][0]
    return host if host["state"] in states else None


# --- an engine restart -----------------------------------------------------------------------


def backoff_bound(downtime, initial=LOAD_BACKOFF[0], maximum=LOAD_BACKOFF[1]):
    """The longest an agent may still wait once the engine is back after `downtime` seconds.

    Step k waits at most d_k = min(max, initial × 2^k) and at least d_k / 2, so the step an
    agent can be in when the engine comes back is the last one it can reach within the
    downtime at the shortest delays; it may then wait up to that step's d_k.
    """
    reached, step = 0.0, 0
    while True:
        ceiling = min(maximum, initial * 2 ** step)
        if reached + ceiling / 2 > downtime or ceiling >= maximum:
            return ceiling
        reached += ceiling / 2
        step += 1


def restarts(work, count, runs, results):
    engine, _ping, zone, pod, cluster = new_engine(work, "engine-c", DEFAULT_PING)
    load = None
    try:
        api = engine.client()
        # Long enough for every restart (each is bounded below); the load process then stops by itself.
        duration = 40 + 2 * runs * 25
        results["agents"] = count
        load = subprocess.Popen(
            [sys.executable, "-m", "stackwright.simulation.agent", "--host", "127.0.0.1",
             "--port", str(engine.agent_port), "--count", str(count), "--ramp", "2", "--duration", str(duration),
             "--ca-dir", str(engine.workdir / "pki"), "--zone", zone["id"], "--pod", pod["id"],
             "--cluster", cluster["id"]],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_for("%d simulated hosts Up" % count, lambda: _all_back(api, engine, cluster, count, 0), 60)
        for variant in ["SIGTERM", "SIGKILL"] * runs:
            time.sleep(2)
            stopping = time.time()
            if variant == "SIGTERM":
                engine.stop()
            else:
                engine.kill()
            dead = time.time()
            engine.start()
            answering = time.time()
            # A host is back when listHosts shows it Up and its agent has registered with the
            # new engine (the old engine's Up state survives a SIGKILL in the database).
            _hosts, all_seen = wait_for("all %d agents registered again" % count,
                                        lambda since=dead: _all_back(api, engine, cluster, count, since), 60)
            registered = sorted(_registered_since(engine, dead).values())
            results.setdefault("runs", []).append({
                "variant": variant, "stop": dead - stopping, "answering": answering - dead,
                "all_up_api": all_seen - answering,
                "last_registered": (max(registered) - answering) if registered else None,
                "first_registered": (min(registered) - answering) if registered else None,
                "registered": len(registered), "bound": backoff_bound(answering - stopping),
            })
            print("engine-c: %s restart, engine answering %.1f s after it went down, all %d agents Up %.1f s later"
                  % (variant, answering - dead, count, all_seen - answering), flush=True)
        out, _err = load.communicate(timeout=duration + 30)
        results["load"] = out.strip().splitlines()[-1] if out.strip() else ""
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(10)
        engine.kill()


def _registered_since(engine, since):
    """{agent guid: first registration (epoch s)} in the engine log since `since`."""
    registered = {}
    for when, match in log_lines(engine, AGENT_UP, after=since):
        registered.setdefault(match.group(1), when)
    return registered


def _all_back(api, engine, cluster, count, since):
    hosts = api.listHosts(clusterid=cluster["id"], type="Routing", pagesize=500, page=1).get("host", [])
    up = [h for h in hosts if h["state"] == "Up"]
    return hosts if len(up) >= count and len(_registered_since(engine, since)) >= count else None


# --- the run ---------------------------------------------------------------------------------


def run(args, work):
    results = {"default": {}, "tuned": {}, "restart": {}}
    errors = []

    def guarded(fn, *a):
        try:
            fn(*a)
        except Exception:
            errors.append(traceback.format_exc())

    threads = [
        threading.Thread(target=guarded, args=(killed_agent, work, "engine-a", DEFAULT_PING, 1, results["default"])),
        threading.Thread(target=guarded, args=(killed_agent, work, "engine-b", TUNED_PING, args.tuned_runs,
                                               results["tuned"])),
        threading.Thread(target=guarded, args=(restarts, work, args.agents, args.restart_runs, results["restart"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(230)
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError("a measurement failed:\n" + "\n".join(errors or ["a measurement did not finish"]))
    return results


def report(r):
    kill_rows, met = [], True
    for key, label in (("default", "default"), ("tuned", "tuned")):
        interval, timeout = r[key]["settings"]
        for i, run_ in enumerate(r[key]["runs"], 1):
            ok = run_["down"] <= run_["bound"] + TARGET_SLACK
            met &= ok
            kill_rows.append([
                "%s (%g s × %g), run %d" % (label, interval, timeout, i), "%.1f s" % run_["alert"],
                "%.1f s" % run_["down"],
                "%.1f s" % run_["engine_silence"] if run_["engine_silence"] is not None else "-",
                "%.0f s (+1 s)" % run_["bound"], verdict(ok)])
    restart_rows = []
    for run_ in r["restart"]["runs"]:
        ok = run_["all_up_api"] <= RECONNECT_TARGET
        met &= ok
        restart_rows.append([
            run_["variant"], "%.1f s" % run_["stop"], "%.1f s" % run_["answering"],
            "%.2f s / %.2f s" % (run_["first_registered"], run_["last_registered"])
            if run_["last_registered"] is not None else "-",
            "%.1f s" % run_["all_up_api"], "%.1f s" % run_["bound"], verdict(ok)])
    text = "\n".join([
        "SIGKILL of a `stackwright-agent` (simulator driver) until listHosts shows its host Down:", "",
        table(["heartbeat", "kill → Alert", "kill → Down", "engine: silent for", "bound (interval × timeout)",
               "within bound + 1 s"], kill_rows), "",
        "Engine restart with %d simulated agents connected, until every host is Up again and "
        "registered with the new engine:" % r["restart"]["agents"],
        "",
        table(["signal", "engine gone after", "engine answering after", "registrations after it answered (first / last)",
               "all hosts Up (API) after it answered", "backoff bound", "within 5 s"], restart_rows), "",
        "Load generator summary: `%s`" % r["restart"].get("load", ""),
    ])
    return text, met


DOC_INTRO = """`bench/failure_bench.py` measures on three real engines (SQLite, loopback) at once:

- **A killed agent.** A `stackwright-agent` process with the simulator driver, enrolled with a
  token and registered into a Simulator cluster, is killed with SIGKILL 0.5 to 5 s (at random)
  after its host came Up. The kernel closes its connection, so the engine marks the host Alert at
  once; with no connection left, the host goes Down once it has been silent for
  `ping.interval` × `ping.timeout`. Engine A keeps the defaults (60 s × 2.5 = 150 s), engine B
  is tuned to 5 s × 2 = 10 s and repeats the kill. The engine counts the silence from the
  last ping, so from the kill it can only be shorter than the bound; the heartbeat monitor
  looks once a second (the + 1 s). "engine: silent for" is the silence the engine logged
  when it decided.
- **An engine restart.** 50 simulated agents (one `python -m stackwright.simulation.agent`
  process, TLS, client certificates from the engine's CA) are connected; the engine is
  stopped with SIGTERM (agents get a goodbye) or SIGKILL (the kernel closes the
  connections) and started again. Measured from the moment the new engine answers on its
  API until listHosts shows every host Up and the engine's log shows every agent registered
  since the restart (after a SIGKILL the database still says Up for hosts whose agents have
  not come back yet). The registration times come from the engine's log. The
  agents reconnect with backoff (0.5 s doubling up to 10 s, each delay drawn from [d/2, d]);
  "backoff bound" is the longest delay an agent can be in when the engine comes back after
  that downtime, the theoretical worst case of this measurement.

The API is polled every 0.2 s, so the figures from listHosts are late by up to that much
plus a request. The three engines, their agents and the pollers share the two CPUs."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tuned-runs", type=int, default=3, help="kills with the tuned heartbeat")
    ap.add_argument("--restart-runs", type=int, default=2, help="SIGTERM and SIGKILL restarts, each")
    ap.add_argument("--agents", type=int, default=50, help="simulated agents during the restarts")
    ap.add_argument("--workdir", help="keep the engines' files here (default: temporary, removed)")
    ap.add_argument("--write-docs", action="store_true", help="record the figures in docs/benchmarks.md")
    args = ap.parse_args()
    if not (1 <= args.tuned_runs <= 8 and 1 <= args.restart_runs <= 4 and 1 <= args.agents <= 500):
        ap.error("out of range: --tuned-runs 1-8, --restart-runs 1-4, --agents 1-500")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sw-failure-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    text, met = report(results)
    print(text)
    if args.write_docs:
        write_section(BENCHMARKS, "Failure detection and recovery", DOC_INTRO + "\n\n" + text,
                      "python bench/failure_bench.py " + " ".join(sys.argv[1:]))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
