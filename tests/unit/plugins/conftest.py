"""Make the collection importable as ansible_collections.stackwright.cloudstack and run modules in-process."""

from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _collection_root():
    root = tempfile.mkdtemp(prefix="sw-collections-")
    atexit.register(shutil.rmtree, root, True)
    namespace = os.path.join(root, "ansible_collections", "stackwright")
    os.makedirs(namespace)
    os.symlink(REPO, os.path.join(namespace, "cloudstack"))
    return root


if not any(os.path.isdir(os.path.join(path, "ansible_collections", "stackwright", "cloudstack")) for path in sys.path):
    sys.path.insert(0, _collection_root())

# Port 9 on loopback: nothing listens, so a module that really connected would fail loudly.
CONNECTION = {"api_url": "http://127.0.0.1:9/client/api", "api_key": "key", "api_secret": "secret"}


@pytest.fixture
def run_module(capsys, monkeypatch):
    """Run `main` (or a callable) with module args; return the result dict it printed."""
    from ansible.module_utils.testing import patch_module_args

    for name in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "CLOUDSTACK_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    def run(entry, args, connection=True):
        capsys.readouterr()
        if connection:
            args = dict(CONNECTION, **args)
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                entry()
        return json.loads(capsys.readouterr().out)

    return run


# In-memory stand-in for the HTTP client, recording the commands a module sends.
# Unit tests use it to check which calls a module makes (none that change anything in
# check mode); the integration targets run the same modules against the engine.

from ansible_collections.stackwright.cloudstack.plugins.module_utils import cs_resource  # noqa: E402
from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_client import CloudStackError  # noqa: E402


class RecordingClient(object):
    """list() answers from `lists` (command -> items); run() from `answers` (command -> dict or callable)."""

    def __init__(self, lists=None, answers=None):
        self.lists = lists or {}
        self.answers = answers or {}
        self.calls = []

    def list(self, command, item_key, **params):
        self.calls.append((command, params))
        items = self.lists.get(command, [])
        if callable(items):
            items = items(params)
        return copy.deepcopy(items)

    def run(self, command, wait_timeout, **params):
        self.calls.append((command, params))
        answer = self.answers.get(command)
        if isinstance(answer, CloudStackError):
            raise answer
        if answer is None:
            raise AssertionError("unexpected call %s %s" % (command, params))
        return copy.deepcopy(answer(params) if callable(answer) else answer)

    def commands(self):
        return [call[0] for call in self.calls]

    def changes(self):
        """Commands other than list/query ones."""
        return [(command, params) for command, params in self.calls if not command.startswith("list")]


@pytest.fixture
def recorded_api(monkeypatch):
    """Returns a function installing a RecordingClient for the next module run."""

    def install(lists=None, answers=None):
        client = RecordingClient(lists, answers)
        monkeypatch.setattr(cs_resource, "CloudStackClient", lambda *args, **kwargs: client)
        return client

    return install
