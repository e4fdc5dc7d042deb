"""Run every benchmark in turn and record each one's figures in docs/benchmarks.md.

Each script measures its own baseline in the same run, prints its table and rewrites its
own section of the document (`--write-docs`). One failing script does not stop the others;
the exit status is non-zero if any failed. Loopback only; every script is bounded.

    .venv/bin/python bench/run_all.py              # everything (about 15 minutes on 2 CPUs)
    .venv/bin/python bench/run_all.py api storage  # a selection, by name
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, arguments); the order is the order of docs/benchmarks.md.
BENCHMARKS = {
    "api": ("api_bench.py", []),
    "agents": ("agents_bench.py", []),
    "agents-1s": ("agents_bench.py", ["--counts", "2000", "--intervals", "1", "--section", "Agent channel scale"]),
    "playbooks": ("playbook_bench.py", []),
    "failure": ("failure_bench.py", []),
    "storage": ("storage_bench.py", []),
    "migration": ("migration_bench.py", []),
    "templates": ("templates_bench.py", []),
    "placement": ("placement_bench.py", []),
    "management": ("management_bench.py", []),
    "ha": ("ha_bench.py", []),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help="benchmarks to run (default: all): " + ", ".join(BENCHMARKS))
    args = ap.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        ap.error("unknown benchmark %s; choose from %s" % (", ".join(unknown), ", ".join(BENCHMARKS)))
    names = args.names or list(BENCHMARKS)
    results = []
    for name in names:
        script, extra = BENCHMARKS[name]
        command = [sys.executable, str(HERE / script), "--write-docs", *extra]
        print("==> %s: %s" % (name, " ".join(command[1:])), flush=True)
        started = time.monotonic()
        status = subprocess.run(command, check=False).returncode
        results.append((name, status, time.monotonic() - started))
    print("\n| benchmark | exit status | wall time |\n| --- | --- | --- |")
    for name, status, seconds in results:
        print("| %s | %d | %.0f s |" % (name, status, seconds))
    return 1 if any(status for _name, status, _seconds in results) else 0


if __name__ == "__main__":
    sys.exit(main())
