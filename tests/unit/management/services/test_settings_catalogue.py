"""The settings catalogue (settings.json): its content, what the engine reads from it, and docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stackwright.management.errors import InvalidParameterValue
from stackwright.management.services.configuration import CATALOGUE, HONOURED, KEYS, SCOPES, key

REPO = Path(__file__).resolve().parents[4]
TYPES = {"String", "Integer", "Long", "Float", "Double", "Boolean"}


def test_catalogue_has_hundreds_of_settings_each_well_formed():
    entries = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    assert len(entries) >= 400
    names = [e["name"] for e in entries]
    # Unique even without case: MySQL compares the stored names without it.
    assert len({n.lower() for n in names}) == len(names)
    for e in entries:
        assert e["type"] in TYPES, e
        assert set(e["scopes"]) <= set(SCOPES), e
        assert isinstance(e["dynamic"], bool) and e["category"] and e["component"], e
        assert 10 <= len(e["description"]) <= 200, e
        # Every default is a value the setting's own validation accepts.
        KEYS[e["name"]].validate(e["default"])
    every_scope = {s for e in entries for s in e["scopes"]}
    assert {"zone", "cluster", "storagepool", "account", "domain"} <= every_scope


def test_settings_the_engine_reads_are_marked_honoured():
    """Every setting named in the engine's code where it reads one is marked honoured."""
    read = set()
    for path in (REPO / "src" / "stackwright" / "management").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        read |= set(re.findall(r"\.(?:typed|get|global_value|scoped_value|cluster_ratio)\(\s*\"([A-Za-z0-9._]+)\"", text))
        read |= set(re.findall(r"s\.typed\(\"([A-Za-z0-9._]+)\"\)", text))
    read &= set(KEYS)
    assert {"ping.interval", "incorrect.login.attempts.allowed", "api.throttling.max"} <= read
    assert not [name for name in read if not KEYS[name].honoured]
    # And the other way round: a setting marked honoured is named where the engine reads it
    # (the max.* defaults of resource limits are read by their type's name).
    sources = "".join(path.read_text(encoding="utf-8") for path in (REPO / "src" / "stackwright").rglob("*.py")
                      if path.name != "configuration.py")
    claimed = [k.name for k in KEYS.values() if k.honoured and not k.name.startswith(("max.account.", "max.domain."))]
    assert [name for name in claimed if '"%s"' % name not in sources] == []
    assert key("ping.interval").text.endswith(HONOURED)
    assert not key("expunge.delay").honoured and HONOURED not in key("expunge.delay").text


@pytest.mark.parametrize("name, value, text", [
    ("expunge.delay", "soon", "Please enter a valid integer value for parameter expunge.delay"),
    ("expunge.delay", "99999999999", "Please enter a valid integer value for parameter expunge.delay"),
    ("consoleproxy.sslEnabled", "yes", "Please enter either 'true' or 'false'."),
    ("router.health.checks.max.cpu.usage.threshold", "high",
     "Please enter a valid decimal number value for parameter router.health.checks.max.cpu.usage.threshold"),
    ("vm.job.timeout", "1e3", "Please enter a valid integer value for parameter vm.job.timeout"),
])
def test_catalogue_values_are_validated_by_type(name, value, text):
    with pytest.raises(InvalidParameterValue) as info:
        key(name).validate(value)
    assert info.value.text == text


def test_catalogue_settings_are_stored_at_their_scopes(ctx, zone_pod):
    zone, _pod = zone_pod
    service = ctx.settings
    service.set_global("expunge.delay", "120")
    assert service.global_value("expunge.delay") == "120"
    assert key("consoleproxy.sslEnabled").default == "false"
    assert service.global_value("consoleproxy.sslEnabled") == "false"
    service.set_scoped("guest.domain.suffix", "zone.example", "zone", zone)
    assert service.scoped_value("guest.domain.suffix", "zone", zone) == "zone.example"
    listed = dict((k.name, v) for k, v in service.listing("zone", zone))
    assert listed["guest.domain.suffix"] == "zone.example" and "expunge.delay" not in listed
    assert service.reset("expunge.delay") == "86400"


def test_settings_page_is_up_to_date():
    run = subprocess.run([sys.executable, str(REPO / "docs" / "generate_settings_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
