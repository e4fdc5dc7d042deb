"""Imports run one way, checked on the source of every module of the `stackwright` package.

Every import counts, at module level or inside a function (a function-level import is a
run-time edge like any other), except those under ``if TYPE_CHECKING:``, which never run.
Imports by name through `importlib` are not seen.

The checks:
- the top-level packages depend on each other only as `ALLOWED` says: the engine
  (`stackwright.management`) and the host agent (`stackwright.agent`) never import each
  other and share `stackwright.protocol`; Simulator hosts, which are made of agent parts,
  sit in `stackwright.simulation` between the two;
- inside the engine a module imports only its own layer or a lower one (`LAYERS`);
- no two modules reach each other through imports (a run-time import cycle).
"""

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

import stackwright

PACKAGE_DIR = Path(stackwright.__file__).parent
ROOT = PACKAGE_DIR.parent.parent

# Which top-level packages each one may import (besides itself).
ALLOWED = {
    "stackwright": set(),
    "stackwright.properties": set(),
    "stackwright.protocol": set(),
    "stackwright.agent": {"stackwright.protocol", "stackwright.properties"},
    "stackwright.simulation": {"stackwright.agent", "stackwright.protocol"},
    "stackwright.management": {"stackwright.simulation", "stackwright.protocol", "stackwright.properties"},
}

# The engine's layers, highest first: a module may import its own layer or a lower one. A
# module belongs to the layer of the longest prefix of its name listed here.
M = "stackwright.management"
LAYERS = [
    # Builds and starts everything; may import any layer.
    ("composition root", [f"{M}.daemon", f"{M}.engine", f"{M}.options", f"{M}.setup_databases"]),
    # The HTTP front: parse, authenticate, throttle, run a command, render the envelope;
    # also starts the commands of async jobs (the engine hands `ApiJobs` to the job workers).
    ("api", [f"{M}.api"]),
    # The agent channel's engine side: the gateway jobs call through, and the glue that turns
    # the channel's events into the registration service's work. An entry layer like the API.
    # `peers` forwards calls to the management server holding a host's agent.
    ("agent channel", [f"{M}.agentlink.channel", f"{M}.agentlink.registrar", f"{M}.agentlink.gateway",
                       f"{M}.agentlink.peers"]),
    # The command families (zones, hosts, vms, ...): parameters in, response objects out.
    ("commands", [f"{M}.commands"]),
    # What commands declare themselves with: the registry, parameter types, list paging.
    # The front reads the same declarations.
    ("command declarations", [f"{M}.api.registry", f"{M}.api.params", f"{M}.api.listing"]),
    # Domain rules. `context` is their unit of work (one transaction, the caller, the
    # services by name): the front and the agent manager make one per request or event.
    ("services", [f"{M}.services", f"{M}.context"]),
    # Storage, and the agent channel's server side (transport only: it knows sessions and
    # messages, not hosts or rows; agentlink/registrar.py connects it to the services).
    ("persistence and agent channel", [f"{M}.persistence", f"{M}.agentlink"]),
    # Leaves every layer may use (and the engine package's own empty `__init__`).
    ("neutral", [f"{M}.errors", f"{M}.formatting", f"{M}.values", f"{M}.redaction", M]),
]
# Names in LAYERS that stand for that module alone, not for the modules under it.
EXACT = {M}


@dataclass(frozen=True)
class Edge:
    source: str     # importing module
    target: str     # imported module
    path: str       # file of the importing module, from the repository root
    line: int

    def where(self):
        return "%s:%d" % (self.path, self.line)


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    text: str
    is_package: bool


def package_modules():
    """Every module of the stackwright package, by dotted name."""
    modules = {}
    for file in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = file.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(name, str(file.relative_to(ROOT)), file.read_text(), is_package)
    return modules


@functools.lru_cache(maxsize=None)
def _parse(text, path):
    return ast.parse(text, path)


def _type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node):
    """Import statements that run: everywhere but in the body of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def edges_of(modules):
    """The imports between modules of the package, each with its file and line."""
    edges = []
    for module in modules.values():
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        for node in _import_nodes(_parse(module.text, module.path)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module
                # `from package import submodule` imports the submodule.
                targets = [
                    "%s.%s" % (base, alias.name) if "%s.%s" % (base, alias.name) in modules else base
                    for alias in node.names
                ]
            for target in dict.fromkeys(targets):
                if (target == "stackwright" or target.startswith("stackwright.")) and target != module.name:
                    edges.append(Edge(module.name, target, module.path, node.lineno))
    return edges


def _longest_prefix(name, prefixes, exact=()):
    matches = [p for p in prefixes if name == p or (p not in exact and name.startswith(p + "."))]
    return max(matches, key=len) if matches else None


def component_problems(modules, edges):
    problems = []
    for name, module in modules.items():
        if _longest_prefix(name, ALLOWED) is None:
            problems.append("%s: %s belongs to no top-level package of ALLOWED in %s" % (module.path, name, __name__))
    for edge in edges:
        source, target = _longest_prefix(edge.source, ALLOWED), _longest_prefix(edge.target, ALLOWED)
        if source is None or target is None or source == target or target in ALLOWED[source]:
            continue
        if {source, target} == {"stackwright.management", "stackwright.agent"}:
            why = ("the engine and the host agent never import each other; they share stackwright.protocol, "
                   "and the engine runs Simulator hosts through stackwright.simulation")
        else:
            why = "%s may import only %s" % (source, ", ".join(sorted(ALLOWED[source])) or "itself")
        problems.append("%s: %s imports %s: %s" % (edge.where(), edge.source, edge.target, why))
    return problems


def layer_of(name):
    prefix = _longest_prefix(name, [p for _layer, prefixes in LAYERS for p in prefixes], EXACT)
    if prefix is None:
        return None
    return next(i for i, (_layer, prefixes) in enumerate(LAYERS) if prefix in prefixes)


def layer_problems(modules, edges):
    problems = []
    for name, module in modules.items():
        if _longest_prefix(name, [M]) and layer_of(name) is None:
            problems.append("%s: %s has no layer in LAYERS of %s" % (module.path, name, __name__))
    for edge in edges:
        if not (_longest_prefix(edge.source, [M]) and _longest_prefix(edge.target, [M])):
            continue
        source, target = layer_of(edge.source), layer_of(edge.target)
        if source is not None and target is not None and target < source:
            problems.append("%s: %s (%s) imports %s (%s): imports run from higher layers to lower ones only" % (
                edge.where(), edge.source, LAYERS[source][0], edge.target, LAYERS[target][0]))
    return problems


def cycles(edges):
    """Each import cycle once, as the chain of imports that closes it."""
    graph = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    found, seen = [], set()
    for start in sorted(graph):
        # Shortest way back to `start`, breadth first.
        paths, queue = {start: []}, [start]
        while queue:
            node = queue.pop(0)
            for target, edge in sorted(graph.get(node, {}).items()):
                if target == start:
                    cycle = paths[node] + [edge]
                    key = frozenset(e.source for e in cycle)
                    if key not in seen:
                        seen.add(key)
                        found.append(" -> ".join(
                            "%s (%s)" % (e.source, e.where()) for e in cycle) + " -> " + start)
                    queue = []
                    break
                if target not in paths:
                    paths[target] = paths[node] + [edge]
                    queue.append(target)
    return found


def all_problems(modules):
    edges = edges_of(modules)
    return component_problems(modules, edges) + layer_problems(modules, edges) + [
        "import cycle: " + cycle for cycle in cycles(edges)]


# -- the package as it is ---------------------------------------------------------------


@pytest.fixture(scope="module")
def modules():
    found = package_modules()
    assert "stackwright.management.services.jobs" in found and "stackwright.agent.link" in found
    return found


def test_top_level_packages_import_only_what_they_may(modules):
    problems = component_problems(modules, edges_of(modules))
    assert not problems, "\n".join(problems)


def test_engine_imports_run_from_higher_layers_to_lower_ones(modules):
    problems = layer_problems(modules, edges_of(modules))
    assert not problems, "\n".join(problems)


def test_no_import_cycles(modules):
    found = cycles(edges_of(modules))
    assert not found, "\n".join(found)


# -- the checks catch what they are for ---------------------------------------------------


def _module(name, text, is_package=False):
    path = "src/%s%s" % (name.replace(".", "/"), "/__init__.py" if is_package else ".py")
    return Module(name, path, text, is_package)


def test_the_old_job_runner_import_is_a_reversed_edge_and_a_cycle(modules):
    """Put back the import the job workers had of the API's job runner: both checks fail."""
    jobs = "stackwright.management.services.jobs"
    text = modules[jobs].text + "\n\ndef _runner():\n    from ..api.execute import ApiJobs\n\n    return ApiJobs\n"
    line = text.count("\n", 0, text.index("from ..api.execute")) + 1
    problems = all_problems(dict(modules, **{jobs: Module(jobs, modules[jobs].path, text, False)}))
    where = "%s:%d" % (modules[jobs].path, line)
    assert any(p.startswith(where + ": %s (services) imports stackwright.management.api.execute (api)" % jobs)
               for p in problems), problems
    assert any(p.startswith("import cycle: ") and where in p and "stackwright.management.context" in p
               for p in problems), problems


BAD = {
    "a service imports the API in a function": (
        {"stackwright.management.services.x": "def f():\n    from ..api import render\n"},
        "src/stackwright/management/services/x.py:2: stackwright.management.services.x (services) imports "
        "stackwright.management.api.render (api)",
    ),
    "persistence imports a service": (
        {"stackwright.management.persistence.x": "from stackwright.management.services import y\n",
         "stackwright.management.services.y": ""},
        "src/stackwright/management/persistence/x.py:1: stackwright.management.persistence.x "
        "(persistence and agent channel) imports stackwright.management.services.y (services)",
    ),
    "the engine imports the agent": (
        {"stackwright.management.services.x": "import stackwright.agent.link\n"},
        "src/stackwright/management/services/x.py:1: stackwright.management.services.x imports "
        "stackwright.agent.link: the engine and the host agent never import each other",
    ),
    "the agent imports the engine": (
        {"stackwright.agent.x": "from stackwright.management.errors import ApiError\n"},
        "src/stackwright/agent/x.py:1: stackwright.agent.x imports stackwright.management.errors: "
        "the engine and the host agent never import each other",
    ),
    "the agent imports the simulation": (
        {"stackwright.agent.x": "x = 1\nfrom stackwright.simulation import host\n"},
        "src/stackwright/agent/x.py:2: stackwright.agent.x imports stackwright.simulation.host: "
        "stackwright.agent may import only stackwright.properties, stackwright.protocol",
    ),
    "two modules import each other at run time": (
        {"stackwright.protocol.a": "from stackwright.protocol import b\n",
         "stackwright.protocol.b": "def f():\n    import stackwright.protocol.a\n"},
        "import cycle: stackwright.protocol.a (src/stackwright/protocol/a.py:1) -> "
        "stackwright.protocol.b (src/stackwright/protocol/b.py:2) -> stackwright.protocol.a",
    ),
    "an engine module outside every layer": (
        {"stackwright.management.newthing": ""},
        "src/stackwright/management/newthing.py: stackwright.management.newthing has no layer",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_edge_is_reported_with_its_file_and_line(modules, case):
    added, expected = BAD[case]
    problems = all_problems(dict(modules, **{name: _module(name, text) for name, text in added.items()}))
    assert any(p.startswith(expected) for p in problems), "\n".join(problems)
    # The rest of the package is clean, so this is the only problem.
    assert len(problems) == 1, "\n".join(problems)


def test_imports_for_type_checking_only_are_not_edges(modules):
    text = ("from typing import TYPE_CHECKING\nimport typing\n\nif TYPE_CHECKING:\n"
            "    from ..api.execute import run_job\nif typing.TYPE_CHECKING:\n    import stackwright.agent.link\n"
            "else:\n    from .. import errors\n")
    name = "stackwright.management.services.x"
    edges = edges_of(dict(modules, **{name: _module(name, text)}))
    assert [(e.target, e.line) for e in edges if e.source == name] == [("stackwright.management.errors", 9)]
