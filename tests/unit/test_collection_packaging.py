"""The collection as a release ships it: the archive `ansible-galaxy collection build`
makes, and the execution-environment build context `ansible-builder create` makes from it.

The archive is built from a copy of the tracked files to which the clutter of a working
tree is added (a virtualenv, caches, egg-info, the tree `make collection` links, benchmark
work files), so what build_ignore keeps out is checked whether or not this checkout has
those files. Nothing is fetched: both tools run offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())
RUN_TIMEOUT = 180

# What a working tree holds besides the collection; none of it may reach the archive.
CLUTTER = [
    ".venv/bin/python",
    "src/stackwright.egg-info/PKG-INFO",
    "src/stackwright/__pycache__/properties.cpython-311.pyc",
    "plugins/modules/__pycache__/cs_zone.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/CACHEDIR.TAG",
    ".hypothesis/examples/0/1",
    "build/lib/stackwright/__init__.py",
    "dist/stackwright-0.1.0.tar.gz",
    "tmp/bench/cloud.db",
    "tests/output/junit/sanity.xml",
    "stackwright-cloudstack-0.0.1.tar.gz",
]


def run(argv, **kwargs):
    env = dict(os.environ, PATH="%s:%s" % (BIN, os.environ.get("PATH", "")), ANSIBLE_NOCOLOR="1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env, check=False,
                          **kwargs)
    assert done.returncode == 0, "%s failed:\n%s\n%s" % (argv[0], done.stdout, done.stderr)
    return done


def tracked_files():
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    return [p for p in listed.split("\0") if p and (REPO / p).is_file()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(archive path, member names) of the collection built from a cluttered copy of the tree."""
    tree = tmp_path_factory.mktemp("tree")
    for rel in tracked_files():
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / rel).read_bytes())
    for rel in CLUTTER:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("clutter\n")
    # What `make collection` makes: a link back to the root, a loop for a careless walker.
    link = tree / ".ansible/collections/ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    link.parent.mkdir(parents=True)
    link.symlink_to("../../../..")
    out = tmp_path_factory.mktemp("dist")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(tree)])
    archive = out / ("%s-%s-%s.tar.gz" % (GALAXY["namespace"], GALAXY["name"], GALAXY["version"]))
    with tarfile.open(archive) as tar:
        names = {m.name.rstrip("/") for m in tar.getmembers()}
    return archive, names


def test_the_archive_carries_the_collection_and_what_the_roles_install(built):
    _archive, names = built
    expected = [
        "MANIFEST.json", "FILES.json", "LICENSE", "README.md", "CHANGELOG.rst", "changelogs/changelog.yaml",
        "meta/runtime.yml", "meta/execution-environment.yml", "bindep.txt", "requirements.txt",
        "plugins/modules/cs_zone.py", "plugins/module_utils/cs_client.py",
        "playbooks/site.yml", "roles/runtime/tasks/install.yml", "roles/cloud/meta/argument_specs.yml",
        # roles/runtime packs these on the controller and installs them on the hosts
        "pyproject.toml", "src/stackwright/__init__.py", "src/stackwright/properties.py",
        "src/stackwright/management/daemon.py", "src/stackwright/agent/daemon.py",
    ]
    assert [name for name in expected if name not in names] == []


def test_the_archive_leaves_out_caches_build_outputs_and_work_files(built):
    _archive, names = built
    leaked = sorted(
        name for name in names
        if any(part in {".venv", ".ansible", ".hypothesis", ".pytest_cache", ".ruff_cache", "__pycache__",
                        "build", "dist", "tmp", ".git", ".ci"}
               or part.endswith((".egg-info", ".pyc")) for part in name.split("/"))
        or name.startswith("tests/output") or name.endswith(".tar.gz")
    )
    assert leaked == []
    # Every tracked file outside the ignored places is there, so the ignores are not too wide.
    missing = [rel for rel in tracked_files() if not rel.startswith(".ci/") and rel != "galaxy.yml"
               and rel not in names]
    assert missing == []


def test_the_manifest_states_license_and_no_placeholder_address(built):
    archive, _names = built
    with tarfile.open(archive) as tar:
        info = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
        license_text = tar.extractfile("LICENSE").read().decode()
    assert info["license"] == ["Apache-2.0"]
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    addresses = [info[key] for key in ("repository", "documentation", "homepage", "issues") if info.get(key)]
    assert [url for url in addresses if "example" in url or "invalid" in url] == []


def test_ansible_builder_makes_a_build_context_that_installs_the_collection(built, tmp_path):
    archive, _names = built
    # ansible-builder reads meta/execution-environment.yml from the installed collection.
    collections = tmp_path / "collections"
    # --force: a copy installed elsewhere (ansible-lint puts one in ~/.ansible) is no reason to skip.
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p", str(collections),
         str(archive)])
    introspected = yaml.safe_load(run([str(BIN / "ansible-builder"), "introspect", "--sanitize",
                                       str(collections)]).stdout)
    system = introspected["system"]
    for package in ("bash", "tar", "gzip"):
        assert "%s [platform:rpm platform:dpkg]  # from collection stackwright.cloudstack" % package in system
    assert introspected.get("python", []) == []

    (tmp_path / "collections.yml").write_text(yaml.safe_dump(
        {"collections": [{"name": "collections/%s" % archive.name, "type": "file"}]}))
    definition = {
        "version": 3,
        "dependencies": {
            "galaxy": "collections.yml",
            "ansible_core": {"package_pip": "ansible-core>=2.19,<2.20"},
            "ansible_runner": {"package_pip": "ansible-runner"},
        },
        "additional_build_files": [{"src": str(archive), "dest": "collections"}],
        "additional_build_steps": {"prepend_galaxy": ["COPY _build/collections/ /build/collections/"]},
    }
    (tmp_path / "execution-environment.yml").write_text(yaml.safe_dump(definition))
    context = tmp_path / "context"
    run([str(BIN / "ansible-builder"), "create", "--file", "execution-environment.yml",
         "--context", str(context), "--output-filename", "Containerfile"], cwd=tmp_path)
    containerfile = (context / "Containerfile").read_text()
    assert "COPY _build/collections/ /build/collections/" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert (context / "_build/collections" / archive.name).read_bytes() == archive.read_bytes()
    assert yaml.safe_load((context / "_build/requirements.yml").read_text())["collections"][0]["type"] == "file"
    assert (context / "_build/scripts/introspect.py").is_file()


def test_every_role_entry_point_is_described():
    """Each entry point has a description, and each one the playbooks and roles use has a spec."""
    specs = {role.parent.parent.name: yaml.safe_load(role.read_text())["argument_specs"]
             for role in (REPO / "roles").glob("*/meta/argument_specs.yml")}
    undescribed = ["%s.%s" % (role, entry) for role, entries in specs.items() for entry, spec in entries.items()
                   if not spec.get("short_description") or not spec.get("description")]
    assert undescribed == []
    used = set()
    for path in [*(REPO / "roles").rglob("tasks/*.yml"), *(REPO / "playbooks").glob("*.yml")]:
        for role, entry in re.findall(r"name: stackwright\.cloudstack\.(\w+)\n\s+tasks_from: (\w+)", path.read_text()):
            used.add((role, entry))
    assert used and sorted("%s.%s" % pair for pair in used if pair[1] not in specs[pair[0]]) == []
