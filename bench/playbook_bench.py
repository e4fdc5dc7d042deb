"""Playbook benchmark: the cloud role building a zone of Simulator hosts, and the modules' overhead.

Against a real engine (`stackwright-management`, SQLite, loopback), in one bounded run:

1. The `cloud` role (as playbooks/site.yml runs it, through bench/playbooks/cloud.yml with
   the engine's endpoint and keys) builds 1 zone with a physical network, 4 pods, 16
   Simulator clusters with one primary storage pool each, 256 Simulator hosts (16 per
   cluster) and one image store, and enables the zone. Wall time of this first run.
2. The same playbook again: the idempotent re-run must report changed=0; its wall time
   against the first run's (target: at most a third).
3. The engine runs an agent for every Simulator host: the delay from each addHost to its
   agent's registration (engine log), and after an engine restart the time until all of
   them are registered again.
4. The overhead of the modules: the same create calls for a smaller hierarchy (zone, pods,
   clusters, pools, image store, N hosts), on a fresh engine each, once with the cs_*
   modules (bench/playbooks/hierarchy_modules.yml) and once with ansible.builtin.uri and
   requests signed by a filter (hierarchy_uri.yml, the baseline). Wall times and ratio.

Servers listen on 127.0.0.1 only; every playbook run and every wait has a time limit.

    .venv/bin/python bench/playbook_bench.py [--hosts-per-cluster 16] [--compare-hosts 64] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import BENCHMARKS, table, verdict, run_in_workdir, write_section  # noqa: E402
from tests.support.engine import EngineProcess  # noqa: E402

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
COLLECTIONS = ROOT / ".ansible" / "collections"
# Generous: the first run takes about 2.5 minutes on a quiet 2-CPU machine.
PLAYBOOK_TIMEOUT = 600
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                   r"\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
HOST_UP = re.compile(r"\[stackwright\.management\.services\.hosts\].* host \S+ \(([0-9a-f-]{36})\) is Up:")
AGENT_UP = re.compile(r"\[stackwright\.management\.agentlink\.registrar\].* agent \S+ connected: host \S+ \(([0-9a-f-]{36})\)")
ENGINE_UP = "management engine up"


# --- the hierarchy -----------------------------------------------------------------------------


def layout(pods, clusters_per_pod, hosts_per_cluster, prefix="bench"):
    """Pods, clusters, pools, hosts and the image store of one zone, as flat lists."""
    zone = {"name": prefix + "-zone", "dns1": "192.0.2.53", "pods": [], "clusters": [], "pools": [],
            "hosts": [], "store": {"name": prefix + "-secondary", "url": "nfs://127.0.0.1/bench/secondary"}}
    for p in range(pods):
        pod = "%s-pod%d" % (prefix, p)
        # Addresses are only recorded by the engine; nothing is routed to them.
        zone["pods"].append({"name": pod, "gateway": "10.%d.0.1" % (100 + p), "netmask": "255.255.255.0",
                             "start_ip": "10.%d.0.10" % (100 + p), "end_ip": "10.%d.0.250" % (100 + p)})
        for c in range(clusters_per_pod):
            cluster = "%s-p%dc%d" % (prefix, p, c)
            zone["clusters"].append({"name": cluster, "pod": pod})
            # Pools of Simulator clusters are simulated (Up at creation); the engine never mounts them.
            zone["pools"].append({"name": cluster + "-primary", "pod": pod, "cluster": cluster,
                                  "url": "nfs://127.0.0.1/bench/primary/" + cluster})
            for h in range(hosts_per_cluster):
                zone["hosts"].append({"name": "%s-h%d" % (cluster, h), "pod": pod, "cluster": cluster,
                                      "url": "http://sim/%s/h%d?cpus=8&cpuspeed=2400&memory=17179869184" % (cluster, h)})
    return zone


def cloud_zones(zone, hosts_per_cluster):
    """`cloud_zones` for the cloud role, from a layout."""
    pods = []
    for pod in zone["pods"]:
        clusters = [{"name": c["name"], "hypervisor": "Simulator",
                     "simulator_hosts": {"count": hosts_per_cluster, "cpus": 8, "cpu_mhz": 2400, "memory_mb": 16384},
                     "primary_storage": [{"name": p["name"], "url": p["url"]}
                                         for p in zone["pools"] if p["cluster"] == c["name"]]}
                    for c in zone["clusters"] if c["pod"] == pod["name"]]
        pods.append(dict(pod, clusters=clusters))
    return [{
        "name": zone["name"], "dns1": zone["dns1"], "network_type": "Advanced",
        "physical_networks": [{"name": "bench-physnet", "isolation_methods": ["VXLAN"],
                               "traffic_types": [{"type": "Management", "kvm_network_label": "cloudbr0"},
                                                 {"type": "Guest", "kvm_network_label": "cloudbr0"},
                                                 {"type": "Public", "kvm_network_label": "cloudbr0"}]}],
        "pods": pods,
        "secondary_storage": [zone["store"]],
    }]


# --- running things --------------------------------------------------------------------------


def ansible_env(work):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_HOME=str(work / "ansible-home"),
               ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"), ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0", PATH="%s:%s" % (Path(sys.executable).parent, os.environ["PATH"]))
    for name in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "CLOUDSTACK_CONFIG"):
        env.pop(name, None)
    return env


def run_playbook(name, playbook, extra_vars, work):
    """Run one playbook on localhost; returns (wall seconds, recap dict). Fails loudly."""
    vars_file = work / ("%s.vars.json" % name)
    vars_file.write_text(json.dumps(extra_vars))
    log = work / ("%s.log" % name)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-e", "@%s" % vars_file, str(playbook)],
                                cwd=str(work), env=ansible_env(work), stdout=out, stderr=subprocess.STDOUT)
        try:
            status = proc.wait(PLAYBOOK_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Ansible's workers run in sessions of their own: stop the whole tree, by PID.
            for pid in [proc.pid] + descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)
            raise RuntimeError("%s: ansible-playbook did not finish within %d s (log %s)"
                               % (name, PLAYBOOK_TIMEOUT, log)) from None
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    match = RECAP.search(text)
    if status != 0 or match is None:
        raise RuntimeError("%s: ansible-playbook exited %d (log %s):\n%s" % (name, status, log, text[-4000:]))
    keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    recap = dict(zip(keys, (int(g) for g in match.groups()), strict=True))
    print("%-34s %6.1f s  %s" % (name, seconds, " ".join("%s=%d" % kv for kv in recap.items())), flush=True)
    return seconds, recap


def children_cpu():
    """CPU seconds of this process's finished children: ansible-playbook and every module it ran."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid):
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid):
    """PIDs of every process below `pid`, from /proc."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def new_engine(work, name):
    engine = EngineProcess(work / name, "sqlite:///%s" % (work / name / "cloud.db"))
    engine.start()
    return engine


def connection(engine):
    return {"api_url": engine.endpoint, "api_key": engine.api_key, "api_secret": engine.api_secret}


def log_times(engine, pattern, after=None):
    """{uuid: first time (epoch s)} of the engine log lines matching `pattern`, after `after`."""
    seen = {}
    for line in engine.log_file.read_text(errors="replace").splitlines():
        found = pattern.search(line)
        stamp = LOG_TIME.match(line)
        if not (found and stamp):
            continue
        when = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if after is not None and when < after:
            continue
        seen.setdefault(found.group(1), when)
    return seen


def registration_lags(engine):
    """Seconds from each Simulator host's addHost to its agent's registration."""
    added = log_times(engine, HOST_UP)
    registered = log_times(engine, AGENT_UP)
    return sorted(registered[uuid] - added[uuid] for uuid in registered if uuid in added)


def wait_registered(engine, count, since, timeout):
    """Seconds after `since` (epoch) until `count` agents registered, per the engine log; None past timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        registered = log_times(engine, AGENT_UP, after=since)
        if len(registered) >= count:
            return max(registered.values()) - since
        time.sleep(0.5)
    return None


def up_hosts(api, zone_name):
    zone = api.listZones(name=zone_name)["zone"][0]
    return api.listHosts(zoneid=zone["id"], type="Routing", state="Up", page=1, pagesize=1).get("count", 0)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))] if ordered else None


# --- the benchmark -------------------------------------------------------------------------------


def run(args, work):
    results = {"pods": args.pods, "clusters": args.pods * args.clusters_per_pod}
    zone = layout(args.pods, args.clusters_per_pod, args.hosts_per_cluster)
    results["hosts"] = len(zone["hosts"])
    engine = new_engine(work, "engine-role")
    try:
        api = engine.client()
        variables = {"cloud_api_url": engine.endpoint, "cloud_api_key": engine.api_key,
                     "cloud_api_secret": engine.api_secret, "cloud_zones": cloud_zones(zone, args.hosts_per_cluster)}
        results["first"] = run_playbook("cloud-first", PLAYBOOKS / "cloud.yml", variables, work)
        results["hosts_up"] = up_hosts(api, zone["name"])
        lags = registration_lags(engine)
        results["lag"] = {"count": len(lags), "p50": percentile(lags, 50), "max": max(lags) if lags else None}
        results["again"] = run_playbook("cloud-second", PLAYBOOKS / "cloud.yml", variables, work)
        # The engine starts every Simulator host's agent again when it starts.
        stopped = time.time()
        engine.stop()
        engine.start()
        answered = time.time()
        took = wait_registered(engine, results["hosts"], stopped, 60)
        results["restart"] = {"answered_after": answered - stopped,
                              "registered_after": None if took is None else took - (answered - stopped)}
    finally:
        engine.stop()

    small = layout(args.pods, args.clusters_per_pod, 0, prefix="cmp")
    per_cluster = -(-args.compare_hosts // len(small["clusters"]))
    small["hosts"] = layout(args.pods, args.clusters_per_pod, per_cluster, prefix="cmp")["hosts"][:args.compare_hosts]
    results["compare"] = {"pods": len(small["pods"]), "clusters": len(small["clusters"]),
                          "pools": len(small["pools"]), "hosts": len(small["hosts"]), "rounds": args.compare_rounds}
    # Alternated rounds, each on a fresh engine, so that other load on the machine falls on both sides.
    for round_ in range(args.compare_rounds):
        for name, playbook in (("uri", "hierarchy_uri.yml"), ("modules", "hierarchy_modules.yml")):
            engine = new_engine(work, "engine-%s-%d" % (name, round_))
            try:
                variables = {"bench_api_url": engine.endpoint, "bench_api_key": engine.api_key,
                             "bench_api_secret": engine.api_secret, "bench_zone": small}
                cpu_before, engine_before = children_cpu(), process_cpu(engine.pid)
                seconds, recap = run_playbook("hierarchy-%s-%d" % (name, round_), PLAYBOOKS / playbook, variables, work)
                results.setdefault(name, []).append({"wall": seconds, "cpu": children_cpu() - cpu_before,
                                                     "engine_cpu": process_cpu(engine.pid) - engine_before, "recap": recap})
                listed = engine.client().listHosts(type="Routing", page=1, pagesize=1).get("count", 0)
                if listed != len(small["hosts"]):
                    raise RuntimeError("%s: %d hosts listed after the run, expected %d"
                                       % (name, listed, len(small["hosts"])))
            finally:
                engine.stop()
    return results


def report(r):
    first, first_recap = r["first"]
    again, again_recap = r["again"]
    idempotent = again_recap["changed"] == 0
    fast = again <= first / 3
    lag, restart, cmp = r["lag"], r["restart"], r["compare"]
    calls = 1 + cmp["pods"] + cmp["clusters"] + cmp["pools"] + 1 + cmp["hosts"]
    rows = [
        ["first run: 1 zone, %d pods, %d clusters, %d Simulator hosts, %d primary pools, 1 image store"
         % (r["pods"], r["clusters"], r["hosts"], r["clusters"]),
         "%.1f s" % first, "ok=%d changed=%d" % (first_recap["ok"], first_recap["changed"])],
        ["second run (idempotent)", "%.1f s" % again,
         "ok=%d changed=%d" % (again_recap["ok"], again_recap["changed"])],
        ["second run / first run", "%.2f" % (again / first), "target ≤ 0.33: %s" % verdict(fast)],
        ["Simulator hosts Up after the first run", "%d of %d" % (r["hosts_up"], r["hosts"]), ""],
        ["addHost → the host's agent registered (engine log)",
         "p50 %.3f s, max %.3f s" % (lag["p50"], lag["max"]) if lag["count"] else "no registrations seen",
         "%d agents" % lag["count"]],
        ["engine restart (SIGTERM, start): API answering after", "%.1f s" % restart["answered_after"], ""],
        ["… then all %d agents registered again within" % r["hosts"],
         "%.2f s" % restart["registered_after"] if restart["registered_after"] is not None else "not within 60 s", ""],
    ]
    best = {}
    compare_rows = []
    for name, label in (("uri", "ansible.builtin.uri, signed GETs (baseline)"), ("modules", "cs_* modules")):
        runs = r[name]
        best[name] = (min(x["wall"] for x in runs), min(x["cpu"] for x in runs))
        compare_rows.append([
            label, " / ".join("%.1f s" % x["wall"] for x in runs),
            " / ".join("%.1f s" % x["cpu"] for x in runs), " / ".join("%.1f s" % x["engine_cpu"] for x in runs),
            "ok=%d changed=%d" % (runs[0]["recap"]["ok"], runs[0]["recap"]["changed"])])
    compare_rows.append(["modules / uri (best of each)", "%.2f" % (best["modules"][0] / best["uri"][0]),
                         "%.2f" % (best["modules"][1] / best["uri"][1]), "", ""])
    text = "\n".join([
        table(["measurement", "value", "result"], rows), "",
        "Idempotence: %s (changed=%d on the second run)." % (verdict(idempotent), again_recap["changed"]),
        "", "Module overhead, %d create calls (1 zone, %d pods, %d clusters, %d pools, 1 image store, "
        "%d hosts), each run on a fresh engine, %d alternated rounds (figures per round):"
        % (calls, cmp["pods"], cmp["clusters"], cmp["pools"], cmp["hosts"], cmp["rounds"]), "",
        table(["playbook", "wall time", "ansible CPU", "engine CPU", "recap"],
              compare_rows), "",
        "Per create call (best round): %.0f ms with uri, %.0f ms with the modules; the engine's CPU per call: "
        "%.0f ms and %.0f ms. The time goes to running one module per call on the controller, not to the API."
        % (1000 * best["uri"][0] / calls, 1000 * best["modules"][0] / calls,
           1000 * min(x["engine_cpu"] for x in r["uri"]) / calls,
           1000 * min(x["engine_cpu"] for x in r["modules"]) / calls), "",
        "The whole benchmark took %.0f s." % r["wall"],
    ])
    return text, idempotent


DOC_INTRO = """`bench/playbook_bench.py` runs the `cloud` role against a real engine (SQLite, loopback;
`stackwright-management` started by the benchmark, so the management_server, kvm_host and
nfs_server roles, which install things, are not part of it). `bench/playbooks/cloud.yml` is
the role alone with the engine's endpoint and keys, as `playbooks/site.yml` passes them.
The hierarchy: one Advanced zone with a physical network (Management, Guest and Public traffic),
4 pods of 4 Simulator clusters, a cluster-scoped primary pool per cluster, 16 Simulator
hosts per cluster and an image store; the role enables the zone at the end. Pools of
Simulator clusters are Up at creation without being mounted, and the image store is only
checked by KVM hosts, so their `nfs://127.0.0.1/...` URLs are never contacted.

The second run is the same playbook again; it must change nothing. Each addHost of a
Simulator host also starts that host's agent inside the engine; the lag to its
registration and the time to register all of them after an engine restart come from the
engine's log.

The module overhead compares the same create calls made by the `cs_*` modules
(`bench/playbooks/hierarchy_modules.yml`) and by `ansible.builtin.uri`
(`bench/playbooks/hierarchy_uri.yml`), each on a fresh engine. The uri requests are signed
with the API key exactly like the modules' (HMAC-SHA1, signature version 3 with `expires`),
by a filter plugin next to the playbook, so both sides pay for authentication alike. The
uri playbook only creates: it looks nothing up first and cannot be run twice, while every
module first lists what it may create (that lookup is what makes it idempotent) and
`cs_host` waits for its host to be Up. Both run each loop item as one module execution on
the controller (`ansible-playbook` defaults, no pipelining). The engine, the playbook and
the modules share the machine's CPUs."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=4)
    ap.add_argument("--clusters-per-pod", type=int, default=4)
    ap.add_argument("--hosts-per-cluster", type=int, default=16)
    ap.add_argument("--compare-hosts", type=int, default=16, help="hosts in the module/uri comparison")
    ap.add_argument("--compare-rounds", type=int, default=2, help="alternated runs of each side of the comparison")
    ap.add_argument("--workdir", help="keep the engines' and playbooks' files here (default: temporary, removed)")
    ap.add_argument("--write-docs", action="store_true", help="record the figures in docs/benchmarks.md")
    args = ap.parse_args()
    if not (1 <= args.pods <= 16 and 1 <= args.clusters_per_pod <= 16 and 0 <= args.hosts_per_cluster <= 64
            and 0 <= args.compare_hosts <= 512 and 1 <= args.compare_rounds <= 5):
        ap.error("sizes out of range (pods 1-16, clusters per pod 1-16, hosts per cluster 0-64, "
                 "compare hosts 0-512, compare rounds 1-5)")
    if not (COLLECTIONS / "ansible_collections" / "stackwright" / "cloudstack").exists():
        ap.error("the collection is not linked at %s; run `make collection`" % COLLECTIONS)
    results = run_in_workdir(args.workdir, "sw-playbook-bench-", lambda work: run(args, work))
    text, idempotent = report(results)
    print(text)
    if args.write_docs:
        write_section(BENCHMARKS, "Playbooks at scale: the cloud role and module overhead", DOC_INTRO + "\n\n" + text,
                      "python bench/playbook_bench.py " + " ".join(sys.argv[1:]))
    return 0 if idempotent else 1


if __name__ == "__main__":
    sys.exit(main())
