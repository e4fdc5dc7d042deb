"""Generate docs/settings.md from the engine's settings catalogue (settings.json).

The page lists every setting listConfigurations answers for, grouped by category: its type,
default, the scopes it may be set at besides global, whether a change applies at once
(dynamic), and whether the engine acts on it. Run without arguments to write the page, with
--check to fail when the committed page is out of date.

    python docs/generate_settings_docs.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "src" / "stackwright" / "management" / "services" / "settings.json"
OUT = ROOT / "docs" / "settings.md"

HEADER = """# Settings

`listConfigurations` answers for the {count} settings below, the ones of a current Apache
CloudStack release that a caller may look up or set; `updateConfiguration` and
`resetConfiguration` change them. Every value is checked against the setting's type
(`Integer`, `Long`, `Float`/`Double`, `Boolean`, `String`) before it is stored.

**Honoured** settings ({honoured} of them) change what the engine does; their description in
`listConfigurations` ends with "The engine honours this setting.". The others are stored and
returned as given, so tools that read or write them work, but the engine does not act on them.

A setting with scopes may also be set for one zone (`zoneid`), cluster (`clusterid`), primary
storage pool (`storageid`), account (`accountid`), domain (`domainid`) or image store
(`imagestoreuuid`); such a value overrides the global one there, and `listConfigurations` with
the same parameter shows the keys of that scope with their effective value.

This page is generated from `src/stackwright/management/services/settings.json` by
`docs/generate_settings_docs.py`.
"""


def cell(text: str | None) -> str:
    if text is None:
        return "*(none)*"
    if text == "":
        return "*(empty)*"
    return "`%s`" % text.replace("|", "\\|")


def render(entries: list[dict]) -> str:
    by_category: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by_category[e["category"]].append(e)
    honoured = [e for e in entries if e.get("honoured")]
    lines = [HEADER.format(count=len(entries), honoured=len(honoured)), "## Honoured settings", ""]
    lines += ["- `%s`: %s" % (e["name"], e["description"]) for e in honoured]
    for category in sorted(by_category):
        lines += ["", "## %s" % category, "",
                  "| Name | Type | Default | Scopes | Dynamic | Honoured | Description |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for e in sorted(by_category[category], key=lambda e: e["name"]):
            lines.append("| `%s` | %s | %s | %s | %s | %s | %s |" % (
                e["name"], e["type"], cell(e["default"]), ", ".join(e["scopes"]) or "global",
                "yes" if e["dynamic"] else "no", "yes" if e.get("honoured") else "", e["description"].replace("|", "\\|")))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when docs/settings.md is out of date")
    args = ap.parse_args()
    text = render(json.loads(CATALOGUE.read_text(encoding="utf-8")))
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print("docs/settings.md is out of date: run python docs/generate_settings_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
