"""The inventories the collection ships, as Ansible reads them.

Each is loaded with ansible-inventory, the variables it gives every role (with what the
playbooks add) are validated against that role's meta/argument_specs.yml by
ansible.builtin.validate_argument_spec on the hosts the playbooks run the role on, and
every playbook passes --syntax-check with it. inventories/example is used the way
docs/roles.md says to: copied, with its vault file made from the example next to it.
Nothing connects anywhere: the validation runs on the controller.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORIES = sorted(p.name for p in (REPO / "inventories").iterdir() if (p / "hosts.yml").is_file())
PLAYBOOKS = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))
RUN_TIMEOUT = 180
# Hosts per group the playbooks target, as each inventory documents its layout.
LAYOUT = {
    "local": {"management": 1, "nfs_servers": 1, "kvm_hosts": 1},
    "example": {"management": 2, "nfs_servers": 1, "kvm_hosts": 3, "galera": 3, "balancers": 1},
}
# Facts the roles set themselves; they share a role's prefix without being its options.
ROLE_FACTS = {"management_server_api"}
# What the credentials play would read from the engine; the playbooks pass it on to roles.
FAKE_API = {"url": "http://127.0.0.1:9/client/api", "key": "key", "secret": "secret"}


@pytest.fixture(scope="module")
def collections_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("collections")
    namespace = root / "ansible_collections" / "stackwright"
    namespace.mkdir(parents=True)
    (namespace / "cloudstack").symlink_to(REPO, target_is_directory=True)
    return root


@pytest.fixture(params=INVENTORIES)
def inventory(request, tmp_path):
    """A copy of the inventory, with each vault.yml.example turned into the vault.yml it stands for."""
    copy = tmp_path / request.param
    shutil.copytree(REPO / "inventories" / request.param, copy)
    for example in copy.rglob("vault.yml.example"):
        shutil.copy(example, example.with_name("vault.yml"))
    return copy


def ansible(tool, *args, collections, cwd):
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_HOME=str(cwd / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(cwd / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        # A variable or group file Ansible cannot parse is an error here, not a warning.
        ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1",
    )
    run = subprocess.run([str(BIN / tool), *args], cwd=str(cwd), env=env, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT, check=False)
    assert run.returncode == 0, "%s %s failed (rc=%d):\n%s\n%s" % (
        tool, " ".join(args), run.returncode, run.stdout[-8000:], run.stderr[-4000:])
    return run


def role_plays(playbook, seen=None):
    """(hosts pattern, play vars, role name, role vars) for every role a playbook (and what it imports) runs."""
    found = []
    for play in yaml.safe_load(playbook.read_text()):
        if "ansible.builtin.import_playbook" in play:
            found += role_plays(playbook.parent / play["ansible.builtin.import_playbook"])
            continue
        for role in play.get("roles", []):
            found.append((play["hosts"], play.get("vars", {}), role["role"].rsplit(".", 1)[-1], role.get("vars", {})))
    return found


def module_options(module):
    """The options of a module as its DOCUMENTATION states them (the same as its argument spec)."""
    tree = ast.parse((REPO / "plugins" / "modules" / ("%s.py" % module)).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["DOCUMENTATION"]:
            return yaml.safe_load(node.value.value)["options"]
    raise AssertionError("%s has no DOCUMENTATION" % module)


def validation_playbook(path):
    """One play per role of site.yml: its variables as the role would get them, against its spec."""
    plays = []
    for hosts, play_vars, role, role_vars in role_plays(REPO / "playbooks" / "site.yml"):
        spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
        options = spec["argument_specs"]["main"]["options"]
        prefix = role + "_"
        tasks = [{
            "name": "%s variables against its argument spec" % role,
            "ansible.builtin.validate_argument_spec": {
                "argument_spec": options,
                "provided_arguments": "{{ dict(sw_names | zip(query('ansible.builtin.vars', *sw_names))) }}",
            },
            "vars": {"sw_names": "{{ query('ansible.builtin.varnames', '^%s') | reject('in', %s) | list }}"
                                 % (re.escape(prefix), sorted(ROLE_FACTS))},
        }]
        if role == "kvm_host":
            # Bridge items are kvm_bridge's options plus the role's own `address`.
            tasks.append({
                "name": "kvm_host_bridges items against kvm_bridge's options",
                "ansible.builtin.validate_argument_spec": {
                    "argument_spec": module_options("kvm_bridge"),
                    "provided_arguments": "{{ item | dict2items | rejectattr('key', 'eq', 'address') | items2dict }}",
                },
                "loop": "{{ kvm_host_bridges }}",
            })
            tasks.append({
                "name": "The host's zone, pod and cluster are a KVM cluster of cloud_zones",
                "ansible.builtin.assert": {
                    "that": "kvm_host_cluster in (hostvars[groups['management'][0]].cloud_zones"
                            " | selectattr('name', 'eq', kvm_host_zone) | map(attribute='pods') | flatten"
                            " | selectattr('name', 'eq', kvm_host_pod) | map(attribute='clusters') | flatten"
                            " | selectattr('hypervisor', 'eq', 'KVM') | map(attribute='name'))",
                    "fail_msg": "{{ kvm_host_zone }}/{{ kvm_host_pod }}/{{ kvm_host_cluster }} is no KVM cluster "
                                "of cloud_zones",
                },
            })
        plays.append({"name": "%s on %s" % (role, hosts), "hosts": hosts, "gather_facts": False,
                      "vars": dict(play_vars, **role_vars), "tasks": tasks})
    path.write_text(json.dumps(plays, indent=1))


def test_inventory_has_the_documented_groups(inventory, collections_path, tmp_path):
    listed = json.loads(ansible("ansible-inventory", "-i", str(inventory), "--list",
                                collections=collections_path, cwd=tmp_path).stdout)
    counts = {group: len(listed.get(group, {}).get("hosts", [])) for group in LAYOUT[inventory.name]}
    assert counts == LAYOUT[inventory.name]


def test_role_variables_match_the_argument_specs(inventory, collections_path, tmp_path):
    playbook = tmp_path / "validate.json"
    validation_playbook(playbook)
    run = ansible("ansible-playbook", "-i", str(inventory), "-e", json.dumps({
        "management_server_api": FAKE_API,
        # The validation runs on the controller whatever the inventory says.
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
    }), str(playbook), collections=collections_path, cwd=tmp_path)
    checked = re.findall(r"^(\S+)\s*:\s*ok=[1-9]\d*\s+changed=0\s+unreachable=0\s+failed=0", run.stdout, re.M)
    # Every host of the inventory got checked (local runs every role on one host).
    assert len(checked) == (1 if inventory.name == "local" else sum(LAYOUT[inventory.name].values())), \
        run.stdout[-4000:]
    # A skipped task is a failure; a play for a group the inventory lacks (galera, balancers in local) is not.
    assert not re.search(r"^skipping: \[", run.stdout, re.M), run.stdout[-4000:]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(inventory, playbook, collections_path, tmp_path):
    ansible("ansible-playbook", "-i", str(inventory), "--syntax-check", str(REPO / "playbooks" / playbook),
            collections=collections_path, cwd=tmp_path)
