"""The runtime role's `packages` entry point: apt runs only for packages dpkg reports missing.

The play runs on this machine, in check mode, through the real role: dpkg-query answers for
real; apt is only ever asked to predict. Nothing is installed or removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Present on every Debian system: dpkg itself and the shell.
INSTALLED = ["dpkg", "bash"]

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian host (dpkg-query)")


def run_entry_point(tmp_path, packages):
    """Status (ok, changed, skipping, failed, fatal) of each task of the entry point, by task name."""
    collections = tmp_path / "collections"
    (collections / "ansible_collections" / "stackwright").mkdir(parents=True)
    (collections / "ansible_collections" / "stackwright" / "cloudstack").symlink_to(REPO, target_is_directory=True)
    playbook = tmp_path / "packages.yml"
    playbook.write_text(json.dumps([{
        "name": "Packages", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Ensure the packages", "ansible.builtin.include_role": {
            "name": "stackwright.cloudstack.runtime", "tasks_from": "packages"},
            "vars": {"runtime_packages": packages}}],
    }]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default")
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check",
                           "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    # Each task header, then (after any error report) the line with the task's status.
    statuses = dict(re.findall(r"^TASK \[stackwright\.cloudstack\.runtime : (.+?)\] \**\n"
                               r"(?:(?!TASK ).*\n)*?(ok|changed|skipping|fatal): \[", done.stdout, re.M))
    return done, statuses


def test_installed_packages_leave_apt_alone(tmp_path):
    done, statuses = run_entry_point(tmp_path, INSTALLED)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert statuses["Look for %s" % ", ".join(INSTALLED)] == "ok"
    assert statuses["Install %s" % ", ".join(INSTALLED)] == "skipping"


def test_a_missing_package_goes_to_apt(tmp_path):
    # A name no Debian archive has: dpkg reports it missing, so apt is asked (and, in check
    # mode, says it cannot find it), which fails the play.
    packages = INSTALLED + ["stackwright-no-such-package"]
    done, statuses = run_entry_point(tmp_path, packages)
    assert done.returncode != 0
    assert statuses["Look for %s" % ", ".join(packages)] == "ok"
    assert statuses["Install %s" % ", ".join(packages)] == "fatal"
    assert "No package matching 'stackwright-no-such-package'" in done.stdout
