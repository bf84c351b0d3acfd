"""A DVC stage's deps cover every project module it runs: the import closure of its declaration (every import,
lazy ones included, walked with `ast` as the import-graph test walks them) must lie under the code deps dvc.yaml
lists for it. Otherwise editing that module would leave the stage "up to date" and `dvc repro` would serve a
result the new code never produced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from genbench.stages import STAGES

from ..conftest import REPO
from .test_import_graph import PACKAGES, imports, modules


def closure(root: Path, start: str) -> set[str]:
    """Every project module `start` imports, directly or not (itself included)."""
    known = modules(root)
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in known:
            continue
        seen.add(name)
        todo += [target for target in imports(name, known[name], known) if target in known]
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a module runs its packages
    return seen


def uncovered(root: Path) -> list[str]:
    """`stage: module (path)` for every module a stage of `root`'s dvc.yaml runs outside its deps."""
    stages = yaml.load((root / "dvc.yaml").read_text(), Loader=yaml.CSafeLoader)["stages"]
    known = modules(root)
    found = []
    for name, stage in STAGES.items():
        body = stages[name].get("do", stages[name])
        deps = [Path(dep) for dep in body["deps"]]
        for module in sorted(closure(root, stage.call.__module__)):
            path = known[module].relative_to(root)
            if not any(path == dep or dep in path.parents for dep in deps):
                found.append(f"{name}: {module} ({path})")
    return found


def test_every_stage_depends_on_the_code_it_runs() -> None:
    assert uncovered(REPO) == []


def test_a_removed_dep_is_named(tmp_path: Path) -> None:
    for folder in PACKAGES:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO / "dvc.yaml").read_text()
    stage = text.index("  fid-curve:\n")
    evaluate_dep = text.index("    - components/evaluate\n", stage)
    (tmp_path / "dvc.yaml").write_text(text[:evaluate_dep] + text[evaluate_dep + len("    - components/evaluate\n"):])
    found = uncovered(tmp_path)
    assert "fid-curve: genbench.components.evaluate.inception_net (components/evaluate/inception_net.py)" in found
    assert all(line.startswith("fid-curve: genbench.components.evaluate") for line in found), found


@pytest.mark.parametrize("name", list(STAGES))
def test_the_closure_reaches_the_component(name: str) -> None:
    """The walk starts at the declaration and follows its lazy import into the component it calls."""
    package = STAGES[name].call.__module__.rsplit(".", 1)[0]
    assert any(module.startswith(package + ".") and not module.endswith(".stage")
               for module in closure(REPO, STAGES[name].call.__module__)), name
