"""The API benchmark's cases for two source trees of the engine, in alternating rounds.

One client process and, for each tree, a database of its own schema set up and loaded by the
tree's own code; in each round the engine of each tree is started in
turn (its code chosen by PYTHONPATH) and measured right after the bare aiohttp handler, so
a change is judged against its base under the same load of a shared machine:

- `listZones` (answer cache on, as the engine runs by default) as a ratio of the bare
  handler's throughput, at 1, 8 and 64 clients;
- `createPod` + `deletePod` pairs per second, at the same concurrencies;
- `listHosts zoneid=<zone> page=<k> pagesize=500` over every page of a zone of `--hosts`
  Simulator hosts, answer cache off (`--api-cache-size 0`), 1 client: p50 and p99.

Bounded: about 40 s to load 25,000 hosts, then about 40 s per tree and round.

    PYTHONPATH=src .venv/bin/python bench/api_compare.py --base-src /tmp/base/src
    PYTHONPATH=src .venv/bin/python bench/api_compare.py --base-src /tmp/base/src --write-docs
"""

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_bench import (  # noqa: E402
    Api,
    Baseline,
    pod_pair,
    run_case,
)
from tests.support.engine import EngineProcess  # noqa: E402


# Loads the hosts with the code of the tree on PYTHONPATH (each tree's schema is its own).
LOADER = """
import json, sys
from bench.api_bench import detach_simulated_agents, load_hosts
db_url, zone_hosts, hosts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
zones_zone, _took = load_hosts(db_url, "bench-zones", zone_hosts)
hosts_zone, _took = load_hosts(db_url, "bench-hosts", hosts)
detach_simulated_agents(db_url)
print(json.dumps([zones_zone, hosts_zone]))
"""


def key_file_of(src):
    """Where an engine of tree `src` keeps its key for secrets at rest: next to its database
    (workdir/<tree>/key), or nowhere for a tree older than encryption at rest."""
    return (src / "stackwright" / "management" / "persistence" / "crypto.py").exists()


def prepare_tree(label, src, workdir, args):
    """A database of the tree's own schema, set up by its own code, with the benchmark's zones:
    (db url, key file, api key, secret, zones zone, hosts zone)."""
    import os
    import subprocess

    home = workdir / label
    db_url = "sqlite:///%s" % (home / "cloud.db")
    key_file = home / "key" if key_file_of(src) else False
    setup = EngineProcess(home, db_url, env={"PYTHONPATH": str(src)}, key_file=key_file)
    setup.setup_database()
    out = subprocess.run(
        [sys.executable, "-c", LOADER, db_url, str(args.zone_hosts), str(args.hosts)],
        env=dict(os.environ, PYTHONPATH="%s:%s" % (src, ROOT)), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError("loading the hosts of %s failed:\n%s" % (label, out.stderr[-2000:]))
    zones_zone, hosts_zone = json.loads(out.stdout.splitlines()[-1])
    return db_url, key_file, setup.api_key, setup.api_secret, zones_zone, hosts_zone


def measure_tree(results, label, src, workdir, prepared, pages, args, run):
    """One round of every case for the engine of source tree `src`."""
    db_url, key_file, key, secret, zones_zone, hosts_zone = prepared
    env = {"PYTHONPATH": str(src)}
    quiet = ["--log-level", "WARNING"]
    cached = EngineProcess(workdir / ("engine-" + label), db_url, extra_args=quiet, env=env, key_file=key_file)
    uncached = EngineProcess(workdir / ("engine-" + label), db_url, extra_args=quiet + ["--api-cache-size", "0"],
                             env=env, key_file=key_file)
    for engine in (cached, uncached):
        engine.api_key, engine.api_secret = key, secret
    round_ = {"tree": label, "round": run, "cases": []}
    list_zones = {"command": "listZones"}
    with Baseline() as baseline:
        cached.start()
        try:
            for c in args.clients:
                base = run_case(round_, "%s baseline" % label, Api(baseline.endpoint, key, secret).get(
                    lambda i: list_zones), args.requests, c)
                zones = run_case(round_, "%s listZones" % label, Api(cached.endpoint, key, secret).get(
                    lambda i: list_zones), args.requests, c)
                round_.setdefault("zones_ratio", {})[c] = zones["rps"] / base["rps"]
            api = Api(cached.endpoint, key, secret)
            for k, c in enumerate(args.clients):
                pairs = run_case(round_, "%s createPod + deletePod" % label,
                                 pod_pair(api, zones_zone, run * len(args.clients) + k), args.pairs, c)
                round_.setdefault("pairs_rps", {})[c] = pairs["rps"]
        finally:
            cached.stop()
    uncached.start()
    try:
        hosts = run_case(round_, "%s listHosts page of 500 of %s, cache off" % (label, "{:,}".format(args.hosts)),
                         Api(uncached.endpoint, key, secret).get(lambda i: {
                             "command": "listHosts", "zoneid": hosts_zone, "page": str(i % pages + 1),
                             "pagesize": "500"}),
                         args.page_requests, 1)
        round_["hosts_p50"], round_["hosts_p99"] = hosts["p50_ms"], hosts["p99_ms"]
    finally:
        uncached.stop()
    results["rounds"].append(round_)


def summary(results, clients):
    """Per figure: the median over rounds for each tree and head / base."""
    rows = []

    def median(label, get):
        return statistics.median(get(r) for r in results["rounds"] if r["tree"] == label)

    for c in clients:
        for name, get, better in (
                ("`listZones` / bare handler throughput, %d clients" % c, lambda r, c=c: r["zones_ratio"][c], "higher"),
                ("`createPod` + `deletePod` pairs/s, %d clients" % c, lambda r, c=c: r["pairs_rps"][c], "higher")):
            base, head = median("base", get), median("head", get)
            rows.append((name, base, head, head / base, better))
    for name, field in (("`listHosts` p50 ms", "hosts_p50"), ("`listHosts` p99 ms", "hosts_p99")):
        base, head = median("base", lambda r, f=field: r[f]), median("head", lambda r, f=field: r[f])
        rows.append((name + " (%s hosts, page of 500, cache off, 1 client)" % "{:,}".format(results["hosts"]),
                     base, head, head / base, "lower"))
    return rows


def document(results, clients, base_commit):
    from bench import report

    rows = summary(results, clients)
    table = report.table(
        ["figure (median of %d rounds)" % results["rounds_per_tree"], "base %s" % base_commit, "head", "head / base",
         "within 10 % or better"],
        [[name, "%.2f" % base, "%.2f" % head, "%.2f" % ratio,
          report.verdict(ratio >= 0.9 if better == "higher" else ratio <= 1.1)]
         for name, base, head, ratio, better in rows])
    return "\n".join([
        "`bench/api_compare.py` (method in its docstring) runs the API benchmark's cases for this",
        "commit (head) and for base %s in alternating rounds, one client process and a database per" % base_commit,
        "tree (each of its own schema, set up by its own code, with the same zones and hosts)",
        "(the base checked out beside it with `git worktree add /tmp/base %s`)." % base_commit,
        "The machine is shared with other work and noisy: absolute figures move from run to run",
        "by tens of percent, so what counts are the ratios measured side by side in each round.",
        "",
        table,
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-src", required=True, help="the `src` directory of the tree to compare with")
    ap.add_argument("--base-name", default="", help="how the document names the base (default: its commit)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per tree")
    ap.add_argument("--hosts", type=int, default=25000, help="hosts in the zone listHosts pages through")
    ap.add_argument("--zone-hosts", type=int, default=1000, help="hosts in the database for listZones")
    ap.add_argument("--requests", type=int, default=2000, help="requests per listZones/baseline case")
    ap.add_argument("--page-requests", type=int, default=200, help="requests per listHosts case")
    ap.add_argument("--pairs", type=int, default=200, help="createPod/deletePod pairs per case")
    ap.add_argument("--clients", default="1,8,64", help="concurrent clients, comma-separated")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--write-docs", action="store_true", help="rewrite its section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    base_src = pathlib.Path(args.base_src).resolve()
    head_src = ROOT / "src"
    base_commit = args.base_name or _commit_of(base_src)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="stackwright-compare-"))
    results = {"hosts": args.hosts, "rounds_per_tree": args.rounds, "rounds": []}
    try:
        # Each tree gets a database of its own schema (same zones and hosts), set up by its own code.
        prepared = {label: prepare_tree(label, src, workdir, args)
                    for label, src in (("base", base_src), ("head", head_src))}
        print("loaded %d + %d Simulator hosts for each tree" % (args.zone_hosts, args.hosts), flush=True)
        pages = max(1, (args.hosts + 499) // 500)
        for run in range(args.rounds):
            # Alternate which tree goes first, so neither always runs on a machine just warmed up.
            trees = [("base", base_src), ("head", head_src)]
            for label, src in (trees if run % 2 == 0 else trees[::-1]):
                measure_tree(results, label, src, workdir, prepared[label], pages, args, run)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    for name, base, head, ratio, better in summary(results, args.clients):
        ok = ratio >= 0.9 if better == "higher" else ratio <= 1.1
        print("%-80s base %9.2f  head %9.2f  head/base %5.2f  %s" % (name, base, head, ratio,
                                                                     "ok" if ok else "WORSE"))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    if args.write_docs:
        from bench import report

        report.write_section(report.BENCHMARKS, "API against the previous commit", document(
            results, args.clients, base_commit),
            "python bench/api_compare.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


def _commit_of(src):
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True, text=True, check=False)
    return out.stdout.strip() or str(src)


if __name__ == "__main__":
    sys.exit(main())
