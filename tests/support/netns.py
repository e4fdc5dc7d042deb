"""Network namespaces and veth pairs that tests make for themselves.

Every namespace gets a unique name (prefix, process id, counter) so parallel runs and
leftovers from a killed run never collide.  `NamespaceSet` deletes what it created when
its ``with`` block ends, and an ``atexit`` hook catches whatever a crashed test left
behind in this process.  Deleting a namespace deletes the devices inside it.
"""

from __future__ import annotations

import atexit
import json
import itertools
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

NAME_PREFIX = "swt"
_counter = itertools.count(1)
_live: set[str] = set()


class NamespaceError(RuntimeError):
    """A namespace or device could not be made or used."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, env={**os.environ, "LANG": "C"}, check=False)
    if check and result.returncode != 0:
        raise NamespaceError("ip %s failed: %s" % (" ".join(args), result.stderr.strip()))
    return result


def namespaces_supported() -> bool:
    """True when this process may create network namespaces (root with iproute2)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


@dataclass(frozen=True)
class Namespace:
    name: str

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        result = subprocess.run(self.exec_argv(argv), timeout=timeout, check=False, **kwargs)
        if check and result.returncode != 0:
            raise NamespaceError("%s in %s failed (%s): %s" % (" ".join(argv), self.name, result.returncode,
                                                               (result.stderr or result.stdout or "").strip()))
        return result

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _ip("-n", self.name, *args, check=check)

    def ip_json(self, *args: str) -> list:
        out = self.ip("-json", *args).stdout
        return json.loads(out) if out.strip() else []

    def ping(self, address: str, count: int = 2, deadline: int = 5) -> bool:
        """True when `address` answers from inside this namespace (bounded: count and deadline)."""
        tool = ["ping", "-6"] if ":" in address else ["ping"]
        result = self.run([*tool, "-c", str(count), "-w", str(deadline), "-i", "0.2", address], check=False,
                          timeout=deadline + 5)
        return result.returncode == 0


def create_namespace(prefix: str = NAME_PREFIX) -> Namespace:
    """A new namespace with its loopback up."""
    name = "%s-%d-%d" % (prefix, os.getpid(), next(_counter))
    _ip("netns", "add", name)
    _live.add(name)
    namespace = Namespace(name)
    namespace.ip("link", "set", "lo", "up")
    return namespace


def delete_namespace(namespace: Namespace) -> None:
    result = _ip("netns", "delete", namespace.name, check=False)
    if result.returncode != 0 and "No such file" not in result.stderr:
        log.warning("could not delete namespace %s: %s", namespace.name, result.stderr.strip())
    _live.discard(namespace.name)


def veth_pair(first: Namespace, first_name: str, second: Namespace, second_name: str) -> None:
    """A veth pair with one end in each namespace, both ends up."""
    first.ip("link", "add", first_name, "type", "veth", "peer", "name", second_name, "netns", second.name)
    first.ip("link", "set", first_name, "up")
    second.ip("link", "set", second_name, "up")


class NamespaceSet:
    """Namespaces made inside a ``with`` block and deleted when it ends, even on failure."""

    def __init__(self, prefix: str = NAME_PREFIX):
        self.prefix = prefix
        self.namespaces: list[Namespace] = []

    def create(self) -> Namespace:
        namespace = create_namespace(self.prefix)
        self.namespaces.append(namespace)
        return namespace

    def close(self) -> None:
        while self.namespaces:
            delete_namespace(self.namespaces.pop())

    def __enter__(self) -> NamespaceSet:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@atexit.register
def _delete_leftovers() -> None:
    for name in sorted(_live):
        delete_namespace(Namespace(name))
