"""The layers hold: no import cycles anywhere, and no arrow pointing up.

models/ imports only models/; components/ imports neither the drivers (flows/, genbench/cli.py) nor an
orchestration library; flows/ never imports the CLI. Every import counts, including those inside functions,
since a lazy import is still a dependency. `violations` reads source files with `ast`, so the second test can
show it failing on a deliberately broken copy of the tree.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from ..conftest import REPO

# Source folder → the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"genbench": "genbench", "components": "genbench.components", "models": "genbench.models",
            "flows": "genbench.flows"}
ORCHESTRATION = ("prefect", "typer", "kfp", "dvc")
STAGE_PACKAGES = ("prepare", "train", "sample", "evaluate", "register", "sweep", "report", "bench")
# (importer prefix, forbidden target prefixes, why)
RULES = [
    ("genbench.models", ("genbench.",), "models/ holds nn.Modules, configs and samplers; it imports only models/"),
    ("genbench.components", ("genbench.flows", "genbench.cli", *ORCHESTRATION),
     "components are plain functions: no drivers, no orchestration library"),
    ("genbench.flows", ("genbench.cli",), "a driver calls components, never another driver"),
    ("genbench.components.common", tuple(f"genbench.components.{stage}." for stage in STAGE_PACKAGES),
     "components/common/ holds what several stages share; it imports no stage's package"),
]


def modules(root: Path) -> dict[str, Path]:
    """Every module of the installed packages, by dotted name."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            found[".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules `name` imports (absolute names; a `from package import submodule` counts as the submodule)."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return targets


def violations(root: Path) -> list[str]:
    """Back arrows and cycles in the tree at `root`, each named; [] when the layers hold."""
    known = modules(root)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    found = []
    for name, targets in graph.items():
        for prefix, forbidden, why in RULES:
            if name == prefix or name.startswith(prefix + "."):
                for target in sorted(targets):
                    if any(target == f.rstrip(".") or target.startswith(f) for f in forbidden) and not (
                            target == prefix or target.startswith(prefix + ".")):
                        found.append(f"back arrow {name} -> {target}: {why}")
    internal = {name: {t for t in targets if t in known and t != name} for name, targets in graph.items()}
    found += [f"cycle {' -> '.join(cycle)}" for cycle in _cycles(internal)]
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                components.append(members)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(sorted(members), graph) for members in components]


def _path_through(members: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A closed import path inside one strongly connected component, starting at its first member."""
    start, inside = members[0], set(members)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in sorted(graph[node] & inside):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                frontier.append(target)
    raise AssertionError(f"no cycle through {start}")


def test_the_tree_has_no_cycle_and_no_back_arrow() -> None:
    assert modules(REPO), "no modules found: PACKAGES no longer matches the tree"
    assert violations(REPO) == []


def test_a_deliberate_cycle_and_back_arrow_are_named(tmp_path: Path) -> None:
    for folder in PACKAGES:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(tmp_path) == []
    with open(tmp_path / "components" / "common" / "io.py", "a") as handle:  # io ← artifacts ← train, now io → train
        handle.write("\n\ndef _late() -> None:\n    from ..train.train import train  # noqa: F401\n")
    with open(tmp_path / "models" / "base.py", "a") as handle:
        handle.write("\nfrom ..components.common import io  # noqa: E402,F401\n")
    found = violations(tmp_path)
    assert "back arrow genbench.models.base -> genbench.components.common.io: models/ holds nn.Modules, configs and " \
           "samplers; it imports only models/" in found
    cycles = [line for line in found if line.startswith("cycle ")]
    assert cycles and all("genbench.components.common.io" in line and "genbench.components.train.train" in line
                          for line in cycles[:1]), found
