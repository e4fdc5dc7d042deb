"""The generated module reference in docs/modules matches the modules' documentation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_module_reference_is_current():
    run = subprocess.run([sys.executable, str(REPO / "docs" / "generate_module_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
