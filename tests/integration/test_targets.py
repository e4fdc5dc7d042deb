"""Run each cs_* integration target as an Ansible role against a live engine.

The collection is exposed as ansible_collections/stackwright/cloudstack through a
symlink in a temporary directory, and every target gets a generated playbook that
sets the API connection once through the module_defaults action group.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.ansible import ansible_env, collection_tree

TARGETS_DIR = Path(__file__).resolve().parent / "targets"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
TARGETS = sorted(path.name for path in TARGETS_DIR.glob("cs_*") if (path / "tasks" / "main.yml").is_file())
TARGET_TIMEOUT = 600


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory):
    return collection_tree(tmp_path_factory.mktemp("collections"))


def write_playbook(path, target, engine, prefix):
    play = [{
        "name": "integration target %s" % target,
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "module_defaults": {
            "group/stackwright.cloudstack.cloudstack": {
                "api_url": engine.endpoint,
                "api_key": engine.api_key,
                "api_secret": engine.api_secret,
            },
        },
        "vars": {"cs_prefix": prefix, "cs_api_url": engine.endpoint, "cs_api_key": engine.api_key,
                 # Host-side targets (cs_agent) keep their files here and enroll on this port.
                 "cs_work_dir": str(path.parent), "cs_agent_port": engine.agent_port},
        "roles": [target],
    }]
    # JSON is YAML; no quoting surprises in generated names.
    path.write_text(json.dumps(play, indent=2))


@pytest.mark.parametrize("target", TARGETS)
def test_target(target, engine, collections_path, tmp_path):
    playbook = tmp_path / "play.yml"
    prefix = "sw%s" % uuid.uuid4().hex[:6]
    write_playbook(playbook, target, engine, prefix)
    env = ansible_env(collections_path, tmp_path, ANSIBLE_ROLES_PATH=str(TARGETS_DIR))
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=TARGET_TIMEOUT, check=False,
    )
    if run.returncode != 0:
        pytest.fail("target %s failed (rc=%d, engine log %s):\n%s\n%s"
                    % (target, run.returncode, engine.log_file, run.stdout[-20000:], run.stderr[-5000:]),
                    pytrace=False)
    recap = re.search(r"localhost\s*:\s*ok=(\d+).*failed=(\d+)", run.stdout)
    assert recap and int(recap.group(1)) > 0 and recap.group(2) == "0", run.stdout[-5000:]
