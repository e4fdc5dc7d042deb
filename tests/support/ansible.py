"""Running Ansible against this collection in tests: the collection tree and the environment."""

from __future__ import annotations

import os
import sys
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
