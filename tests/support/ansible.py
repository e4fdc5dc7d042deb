"""Running Ansible against this collection in tests: the collection tree and the environment."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def collection_tree(root: Path) -> Path:
    """`root` laid out as Ansible looks for the collection (ansible_collections/stackwright/cloudstack)."""
    namespace = root / "ansible_collections" / "stackwright"
    namespace.mkdir(parents=True)
    (namespace / "cloudstack").symlink_to(REPO, target_is_directory=True)
    return root


def ansible_env(collections_path: Path, tmp_path: Path, engine=None, secret: str | None = None,
                **extra: str) -> dict[str, str]:
    """The environment of an ansible command run by a test: this collection, private temporary
    directories, no colour or retry files, none of the caller's CloudStack settings; with
    `engine`, the API endpoint and keys (`secret` instead of the engine's)."""
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    for name in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "CLOUDSTACK_CONFIG"):
        env.pop(name, None)
    if engine is not None:
        env.update(CLOUDSTACK_ENDPOINT=engine.endpoint, CLOUDSTACK_KEY=engine.api_key,
                   CLOUDSTACK_SECRET=secret or engine.api_secret)
    env.update(extra)
    return env


class RolePlaybook:
    """A playbook of one play applying one role of this collection (its `tasks_from` entry point,
    main by default), in its own work directory (the collection tree and Ansible's temporary
    directories live there)."""

    def __init__(self, work: Path, role: str, play_vars: dict | None = None, hosts: str = "localhost",
                 inventory: dict | None = None, timeout: float = 300, tasks_from: str | None = None):
        self.work = Path(work)
        self.collections = collection_tree(self.work / "collections")
        self.timeout = timeout
        play = {"name": "Apply %s" % role, "hosts": hosts, "gather_facts": False}
        if tasks_from:
            play["tasks"] = [{"name": "Apply %s (%s)" % (role, tasks_from), "ansible.builtin.include_role": {
                "name": "stackwright.cloudstack.%s" % role, "tasks_from": tasks_from}}]
        else:
            play["roles"] = ["stackwright.cloudstack.%s" % role]
        if play_vars:
            play["vars"] = play_vars
        if inventory is None:
            play["connection"] = "local"
            self.inventory = "%s," % hosts
        else:
            path = self.work / "inventory.json"
            path.write_text(json.dumps(inventory, indent=2))
            self.inventory = str(path)
        self.playbook = self.work / ("%s.yml" % role)
        self.playbook.write_text(json.dumps([play]))

    def run(self, *extra: str, **env: str) -> subprocess.CompletedProcess:
        """ansible-playbook with `extra` arguments; the completed process, whatever its status."""
        return subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", self.inventory, str(self.playbook), *extra],
            cwd=str(self.work), env=ansible_env(self.collections, self.work, **env), capture_output=True, text=True,
            timeout=self.timeout, check=False)

    def converge(self, *extra: str) -> dict[str, int]:
        """A run that must succeed: changed tasks per host, from the recap."""
        run = self.run(*extra)
        assert run.returncode == 0, run.stdout[-10000:] + run.stderr[-3000:]
        return changed_per_host(run.stdout)


def changed_per_host(output: str) -> dict[str, int]:
    """Host -> changed count, from an ansible-playbook recap."""
    return {host: int(count) for host, count in re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", output, re.MULTILINE)}


def role_playbook(role: str, play_vars: dict | None = None, *, work: Path, **options) -> RolePlaybook:
    """The one-play playbook applying `role` with `play_vars` (see RolePlaybook for `options`)."""
    return RolePlaybook(work, role, play_vars, **options)


def private_supervisor(root: Path) -> dict[str, str]:
    """Role variables that run a role's daemons under a supervisord of their own below `root`."""
    return {"runtime_supervisor_dir": str(root / "supervisor"),
            "runtime_supervisor_run_dir": str(root / "supervisor-run"),
            "runtime_log_dir": str(root / "supervisor-log")}


def shutdown_supervisor(root: Path, timeout: float = 30.0) -> None:
    """End the supervisord of `private_supervisor(root)` and its daemons (SIGKILL if it lingers)."""
    conf = root / "supervisor" / "supervisord.conf"
    if conf.exists():
        subprocess.run(["supervisorctl", "-c", str(conf), "shutdown"], capture_output=True, timeout=60, check=False)
    pid_file = root / "supervisor-run" / "supervisord.pid"
    deadline = time.monotonic() + timeout
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
