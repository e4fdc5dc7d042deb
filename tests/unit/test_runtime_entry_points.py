"""Entry points of the runtime role that other roles use to keep a no-change run short.

`packages`: apt runs only for packages dpkg reports missing. The play runs on this machine,
in check mode, through the real role: dpkg-query answers for real; apt is only ever asked
to predict, so nothing is installed or removed.
`directories`: one command creates what is missing and puts modes back, under tmp_path.
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

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian host (dpkg-query)")


def run_entry_point(tmp_path, entry_point, variables, check=True):
    """(finished process, status of each task of the entry point by name: ok, changed, skipping or fatal)."""
    collections = tmp_path / "collections"
    if not collections.exists():
        (collections / "ansible_collections" / "stackwright").mkdir(parents=True)
        (collections / "ansible_collections" / "stackwright" / "cloudstack").symlink_to(REPO, target_is_directory=True)
    playbook = tmp_path / "entry_point.yml"
    playbook.write_text(json.dumps([{
        "name": "Entry point", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Run the entry point", "ansible.builtin.include_role": {
            "name": "stackwright.cloudstack.runtime", "tasks_from": entry_point}, "vars": variables}],
    }]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default")
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", *(["--check"] if check else []),
                           "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    # Each task header, then (after any error report) the line with the task's status.
    statuses = dict(re.findall(r"^TASK \[stackwright\.cloudstack\.runtime : (.+?)\] \**\n"
                               r"(?:(?!TASK ).*\n)*?(ok|changed|skipping|fatal): \[", done.stdout, re.M))
    return done, statuses


@needs_dpkg
def test_installed_packages_leave_apt_alone(tmp_path):
    done, statuses = run_entry_point(tmp_path, "packages", {"runtime_packages": INSTALLED})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert statuses["Look for %s" % ", ".join(INSTALLED)] == "ok"
    assert statuses["Install %s" % ", ".join(INSTALLED)] == "skipping"


@needs_dpkg
def test_a_missing_package_goes_to_apt(tmp_path):
    # A name no Debian archive has: dpkg reports it missing, so apt is asked (and, in check
    # mode, says it cannot find it), which fails the play.
    packages = INSTALLED + ["stackwright-no-such-package"]
    done, statuses = run_entry_point(tmp_path, "packages", {"runtime_packages": packages})
    assert done.returncode != 0
    assert statuses["Look for %s" % ", ".join(packages)] == "ok"
    assert statuses["Install %s" % ", ".join(packages)] == "fatal"
    assert "No package matching 'stackwright-no-such-package'" in done.stdout


def test_directories_are_created_given_their_modes_and_then_left_alone(tmp_path):
    made, private, kept = tmp_path / "a" / "b", tmp_path / "private", tmp_path / "kept"
    kept.mkdir(mode=0o700)
    kept.chmod(0o700)
    wanted = [{"path": str(made)}, {"path": str(private), "mode": "0700"},
              {"path": str(kept), "mode": "0755", "state": "present"}]
    task = "Create the directories %s" % ", ".join(item["path"] for item in wanted)

    done, statuses = run_entry_point(tmp_path, "directories", {"runtime_directories": wanted})
    assert done.returncode == 0 and statuses[task] == "changed", done.stdout[-3000:]
    assert not made.exists() and not private.exists() and oct(kept.stat().st_mode & 0o777) == "0o700"

    for expected in ("changed", "ok"):
        done, statuses = run_entry_point(tmp_path, "directories", {"runtime_directories": wanted}, check=False)
        assert done.returncode == 0 and statuses[task] == expected, done.stdout[-3000:]
        modes = [oct(path.stat().st_mode & 0o777) for path in (made, private, kept)]
        assert modes == ["0o755", "0o700", "0o755"]
