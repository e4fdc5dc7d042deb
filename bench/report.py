"""Recording measured figures in the project's documents.

Every benchmark and fault test owns one `## ` section of a Markdown document
(`docs/benchmarks.md` or `docs/reliability.md`) and rewrites only that section, so
runs of different scripts never overwrite each other's figures. Each section states
the machine, the date and the commit it was measured on, and the command that
measured it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
RELIABILITY = ROOT / "docs" / "reliability.md"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    # The documents this module rewrites do not count: one run refreshes several sections.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!" + str(BENCHMARKS.relative_to(ROOT)), ":!" + str(RELIABILITY.relative_to(ROOT))],
                           cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    rev = out.stdout.strip() or "unknown"
    return rev + (" (with uncommitted changes)" if dirty else "")


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = "%.1f/%.1f/%.1f" % os.getloadavg()
    return "%s, %d CPUs, %.0f GiB RAM, Linux %s, Python %s, load average %s at the end" % (
        model or platform.machine(), os.cpu_count() or 0, mem_gib, platform.release(),
        platform.python_version(), load)


def provenance(command: str) -> list[str]:
    """The lines that say where, when and how a section's figures were measured."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "Measured %s on commit %s." % (now, commit()),
        "Machine: %s." % machine(),
        "Command: `%s`" % command,
    ]


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def targets(rows: list[tuple[str, str, bool]]) -> str:
    """The table of a benchmark's targets: rows of (target, measured, met)."""
    return table(["target", "measured", "verdict"], [[t, m, verdict(ok)] for t, m, ok in rows])


def print_targets(rows: list[tuple[str, str, bool]]) -> None:
    """A benchmark's targets on the console, one line each."""
    width = max((len(t) for t, _m, _ok in rows), default=0)
    print()
    for target, measured, met in rows:
        print("%-*s  %-40s %s" % (width, target, measured, "met" if met else "NOT MET"))


def finish(script: str, argv: list[str] | None, results: object, rows: list[tuple[str, str, bool]],
           section: str, document: str | None, json_file: str | None = None) -> None:
    """The end of a benchmark run: its targets on the console, its results as JSON to `json_file`
    when asked, and with `document` (its section's text) that section of docs/benchmarks.md
    rewritten, naming the command that measured it."""
    import json
    import sys

    print_targets(rows)
    if json_file:
        Path(json_file).write_text(json.dumps(results, indent=2))
    if document is not None:
        args = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"]
        write_section(BENCHMARKS, section, document, " ".join(["python", "bench/" + script, *args]))


def write_section(document: Path, heading: str, body: str, command: str,
                  title: str = "# Benchmarks") -> None:
    """Replace (or append) the `## heading` section of `document` with `body`.

    The file is written to a temporary name and renamed, so a run that is interrupted
    never leaves half a document behind.
    """
    head = "## " + heading
    text = document.read_text() if document.exists() else title + "\n"
    section = "\n".join([head, ""] + provenance(command) + ["", body.rstrip(), ""])
    if ("\n" + head + "\n") in ("\n" + text):
        before, rest = ("\n" + text).split("\n" + head + "\n", 1)
        after = rest.split("\n## ", 1)
        text = before[1:] + "\n" + section + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    tmp = document.with_suffix(document.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(document)


def run_in_workdir(workdir: str | None, prefix: str, run: Callable[[Path], dict]) -> dict:
    """`run(work)` in `workdir` (kept) or a temporary folder (removed after), its results with
    the whole run's wall time under "wall"."""
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        results = run(work)
        results["wall"] = time.monotonic() - started
    finally:
        if not workdir:
            shutil.rmtree(work, ignore_errors=True)
    return results
