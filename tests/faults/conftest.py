"""Fault tests: the engine, its database and its agents under failure, bounded and on
loopback or in namespaces the tests create.

With STACKWRIGHT_RECORD=1 (`make faults` sets it) each test records what it measured
in its own section of docs/reliability.md through the `record_reliability` fixture.
"""

from __future__ import annotations

import os
import sys

import pytest

from bench import report


@pytest.fixture
def record_reliability(request):
    """record_reliability(heading, body): write `body` as the `## heading` section of
    docs/reliability.md when STACKWRIGHT_RECORD=1; otherwise only print it."""

    def record(heading: str, body: str) -> None:
        print("\n## %s\n\n%s" % (heading, body))
        if os.environ.get("STACKWRIGHT_RECORD") == "1":
            command = "%s -m pytest %s" % (os.path.basename(sys.executable), request.node.nodeid)
            report.write_section(report.RELIABILITY, heading, body, command, title="# Reliability")

    return record
