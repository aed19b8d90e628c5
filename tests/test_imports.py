"""The import rules: which package may import which, and no import cycle between modules.

Packages: `shell` (the dispatcher and CliError) imports nothing of ours; `detector` (serving)
imports only `shell`; `convert` (the ONNX tool), `worker` and `train` import `detector` and
`shell`; `demo` imports `detector`, `train` and `shell`; nothing imports `worker`, and `worker`
and `train` never import each other. Inside `train`, `degrade` imports no other part of train,
`data` only `degrade`, and `sources` nothing of the project beyond itself. Inside `worker`, the
pipeline core imports neither its adapters (worker.adapters) nor its edge (the composition roots
and what only they use), adapters import no edge module, and no worker module imports the fakes
of worker.testing: only the edge wires adapters into the pipeline.

Every import counts, wherever it is written: at the top, inside a function, or under
`if TYPE_CHECKING:` (a cycle hidden there is still a cycle in the design, and one refactor away
from an ImportError).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shell", "detector", "convert", "worker", "train", "demo")
# What each package may import of ours, besides itself.
ALLOWED = {
    "shell": set(),
    "detector": {"shell"},
    "convert": {"shell", "detector"},
    "worker": {"shell", "detector"},
    "train": {"shell", "detector"},
    "demo": {"shell", "detector", "train"},
}
# Inside train: what each part may import of train, besides itself (None: any part but train.cli).
TRAIN_PARTS = {
    "train.progress": set(),  # a leaf: the progress bars of the long jobs
    "train.degrade": set(),
    "train.data": {"train.degrade", "train.progress"},
    "train.sources": set(),
    "train.fit": None,
    "train.evaluate": None,
}
# Inside worker: the edge (composition roots, settings, logging, HTTP endpoints); every other
# module outside worker.adapters and worker.testing is the pipeline core.
WORKER_EDGE = {"worker.main", "worker.replay", "worker.settings", "worker.logs", "worker.health"}
# What each layer of worker may import of worker, besides itself.
WORKER_LAYERS = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "edge": {"core", "adapters", "edge"},
    "testing": {"core"},
}


# ----------------------------------------------------------------------------------------------
# The module graph


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its __init__.py)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name an import statement anywhere in the file may load (absolute form)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):  # the whole tree: functions and TYPE_CHECKING blocks too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted name loads: itself, or the nearest module above it."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (`from pkg import x` loads pkg's __init__ too)."""
    modules = project_modules(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {resolve(n, modules) for n in imported_names(path, module)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # recursion depth stays at the longest import chain
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first node, as a closed path."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph.get(node, set()) & component):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def _package_of(module: str) -> str:
    return module.split(".")[0]


def _train_part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _worker_layer(module: str) -> str:
    if module == "worker.adapters" or module.startswith("worker.adapters."):
        return "adapters"
    if module == "worker.testing":
        return "testing"
    return "edge" if module in WORKER_EDGE else "core"


# ----------------------------------------------------------------------------------------------
# The rules on this repository


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_packages_import_only_downwards():
    violations = []
    for module, targets in sorted(import_graph().items()):
        package = _package_of(module)
        bad = {_package_of(t) for t in targets} - ALLOWED[package] - {package}
        if bad:
            violations.append(f"{module} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_nothing_outside_worker_imports_worker():
    # Harnesses (tests/, bench/) drive the worker from outside; library code never does.
    offenders = [m for m, targets in import_graph().items()
                 if _package_of(m) != "worker" and any(_package_of(t) == "worker" for t in targets)]
    assert not offenders


def test_train_parts_import_only_downwards():
    violations = []
    for module, targets in sorted(import_graph().items()):
        part = _train_part(module)
        if _package_of(module) != "train" or part not in TRAIN_PARTS:
            continue
        for target in sorted(t for t in targets if _package_of(t) == "train"):
            allowed = TRAIN_PARTS[part]
            other = _train_part(target)
            ok = other == part or (other != "train.cli" if allowed is None else other in allowed)
            if not ok:
                violations.append(f"{module} imports {target}")
    assert not violations, "\n".join(violations)


def test_worker_core_adapters_and_edge_import_only_inwards():
    graph = import_graph()
    assert WORKER_EDGE <= set(graph), "a module named in WORKER_EDGE no longer exists"
    violations = []
    for module, targets in sorted(graph.items()):
        if _package_of(module) != "worker":
            continue
        layer = _worker_layer(module)
        for target in sorted(t for t in targets if _package_of(t) == "worker"):
            if _worker_layer(target) not in WORKER_LAYERS[layer]:
                violations.append(f"{module} ({layer}) imports {target} ({_worker_layer(target)})")
    assert not violations, "\n".join(violations)


def test_train_sources_need_nothing_else_of_ours():
    # Importing training images is its own job: it neither serves nor trains.
    for module, targets in import_graph().items():
        if module.startswith("train.sources"):
            assert all(t.startswith("train.sources") for t in targets), (module, targets)


def test_detector_reads_no_environment_and_no_services():
    for path in sorted((ROOT / "detector").rglob("*.py")):
        text = path.read_text()
        names = {n.split(".")[0] for n in imported_names(path, module_name(path, ROOT))}
        assert not names & {"kafka", "redis", "pydantic_settings"}, path
        assert "os.environ" not in text and "getenv" not in text, path


def test_shell_imports_no_package_by_name():
    # The dispatcher finds the parts' commands through entry points (pyproject.toml).
    assert all(_package_of(t) == "shell" for m, ts in import_graph().items()
               if _package_of(m) == "shell" for t in ts)


# ----------------------------------------------------------------------------------------------
# The cycle finder itself, on graphs made for the purpose


def test_find_cycles_names_the_old_importer_cycle():
    # train.importers re-exported the sources through a module __getattr__ while the sources
    # imported Importer from it, and fetch/files imported it back under TYPE_CHECKING.
    graph = {
        "train.importers": {"train.importer_fetch", "train.importer_files", "train.importer_sources"},
        "train.importer_sources": {"train.importers"},
        "train.importer_fetch": {"train.importers"},
        "train.importer_files": {"train.importers"},
        "train.importer_strip": set(),
    }
    cycles = find_cycles(graph)
    assert len(cycles) == 1
    cycle = cycles[0]
    assert cycle[0] == cycle[-1] and len(cycle) == 3
    assert set(cycle) <= set(graph) - {"train.importer_strip"}
    assert cycle[0] == "train.importer_fetch"  # the component's first name, then a shortest way back


def test_find_cycles_on_acyclic_graphs_and_self_loops():
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    two = find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}, "e": {"a"}})
    assert sorted(map(tuple, two)) == [("a", "b", "a"), ("c", "d", "c")]


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_graph_sees_type_checking_function_level_and_relative_imports(tmp_path):
    _write(tmp_path, "pkg/__init__.py", "")
    _write(tmp_path, "pkg/model.py",
           "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.pipeline import run\n")
    _write(tmp_path, "pkg/pipeline.py",
           "def run():\n    from . import model\n    import pkg.sub.leaf\n")
    _write(tmp_path, "pkg/sub/__init__.py", "from ..model import *\n")
    _write(tmp_path, "pkg/sub/leaf.py", "import json\nfrom pkg.sub import other\n")
    _write(tmp_path, "pkg/sub/other.py", "")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.model"] == {"pkg.pipeline"}
    assert graph["pkg.pipeline"] == {"pkg", "pkg.model", "pkg.sub.leaf"}
    assert graph["pkg.sub"] == {"pkg.model"}
    assert graph["pkg.sub.leaf"] == {"pkg.sub", "pkg.sub.other"}
    assert find_cycles(graph) == [["pkg.model", "pkg.pipeline", "pkg.model"]]
