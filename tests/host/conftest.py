"""Run the collection's host-level modules for real with ansible-playbook.

The collection is made visible to Ansible as ansible_collections/stackwright/cloudstack
(a symlink to this checkout in a temp directory); each call writes a one-task playbook,
runs it (optionally wrapped, e.g. inside a network namespace) and returns the task's
registered result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.netns import namespaces_supported

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: module under test
      stackwright.cloudstack.{module}: "{{{{ module_args }}}}"
      register: outcome
      ignore_errors: true
    - name: hand the result to the test
      ansible.builtin.copy:
        content: "{{{{ outcome | to_json }}}}"
        dest: {out}
      check_mode: false
      diff: false
"""

RunModule = Callable[..., dict]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if namespaces_supported():
        return
    skip = pytest.mark.skip(reason="host tests need root and iproute2 to make network namespaces")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def collections_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("collections")
    namespace = root / "ansible_collections" / "stackwright"
    namespace.mkdir(parents=True)
    (namespace / "cloudstack").symlink_to(REPO)
    return root


@pytest.fixture
def run_module(collections_root: Path, tmp_path: Path) -> RunModule:
    """run_module("kvm_bridge", {...}, wrap=[...], check=False) -> the task's result dict."""
    calls = iter(range(1, 1000))

    def run(module: str, args: dict, wrap: list[str] | None = None, check: bool = False) -> dict:
        call = next(calls)
        out = tmp_path / ("result-%d.json" % call)
        playbook = tmp_path / ("play-%d.yml" % call)
        playbook.write_text(PLAYBOOK.format(module=module, out=out))
        variables = tmp_path / ("vars-%d.json" % call)
        variables.write_text(json.dumps({"module_args": args, "ansible_python_interpreter": sys.executable}))
        argv = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "--diff", "-e", "@%s" % variables, str(playbook)]
        if check:
            argv.insert(1, "--check")
        env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(collections_root),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "LANG": "C.UTF-8",
        }
        completed = subprocess.run([*(wrap or []), *argv], capture_output=True, text=True, env=env,
                                   timeout=240, cwd=str(tmp_path), check=False)
        if not out.exists():
            raise AssertionError("ansible-playbook gave no result (exit %d):\n%s\n%s"
                                 % (completed.returncode, completed.stdout[-4000:], completed.stderr[-4000:]))
        return json.loads(out.read_text())

    return run
