"""The Kubeflow tasks' plumbing: artifact folders become one scratch project, loops fan in, a foreign plan stops."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from genbench.config import load_config
from genbench.flows.kubeflow_tasks import check_plan, collect, use_tracking, workspace

from ..conftest import use_tiny


@dataclass
class Artifact:
    path: str


def _fragment(root: Path, files: dict[str, str]) -> Artifact:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return Artifact(str(root))


def test_workspace_links_artifacts_at_their_project_paths(tmp_path: Path) -> None:
    data = _fragment(tmp_path / "data", {"data/prepared/manifest.json": "{}"})
    run = _fragment(tmp_path / "run", {"runs/vae/seed-0/config.json": "{\"name\": \"vae\"}"})
    before = Path.cwd()
    with workspace("seed: 3\n", data, None, run) as here:
        scratch = Path.cwd()
        assert scratch != before and here.root == Path(".")
        assert here.params.read_text() == "seed: 3\n"
        assert here.manifest.resolve() == (tmp_path / "data/data/prepared/manifest.json").resolve()
        assert here.run("vae", 0).joinpath("config.json").read_text() == "{\"name\": \"vae\"}"
        here.cache.mkdir(parents=True)  # what a component writes stays in the scratch project
        (here.cache / "stats.npz").write_text("x")
    assert Path.cwd() == before and not scratch.exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "data/data/prepared/manifest.json", "run/runs/vae/seed-0/config.json"]


def test_workspace_restores_the_folder_when_the_component_fails(tmp_path: Path) -> None:
    before = Path.cwd()
    with pytest.raises(ValueError, match="bad"), workspace(None):
        raise ValueError("bad")
    assert Path.cwd() == before


def test_workspace_refuses_a_file_artifact(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>")
    page = Artifact(str(tmp_path / "index.html"))
    with pytest.raises(ValueError, match="laid out like a project"), workspace(None, page):
        pass


def test_collect_unites_project_folders(tmp_path: Path) -> None:
    parts = [_fragment(tmp_path / "a", {"runs/vae/seed-0/model.safetensors": "w"}),
             _fragment(tmp_path / "b", {"metrics/vae/seed-0.json": "{}"}), None]
    into = Artifact(str(tmp_path / "project"))
    collect(parts, into)
    files = sorted(p.relative_to(into.path).as_posix() for p in Path(into.path).rglob("*") if p.is_file())
    assert files == ["metrics/vae/seed-0.json", "runs/vae/seed-0/model.safetensors"]
    assert not any(p.is_symlink() for p in Path(into.path).rglob("*"))  # copies: an artifact must stand alone


def test_check_plan_names_what_differs(tmp_path: Path) -> None:
    use_tiny(tmp_path)
    config = load_config(tmp_path / "params.yaml")
    check_plan(config, config.entries, config.seeds, list(config.sweeps))
    with pytest.raises(ValueError, match=r"seeds: \[0\] \(compiled for \[0, 1\]\)") as error:
        check_plan(config, config.entries, [0, 1], list(config.sweeps))
    assert "entries" not in str(error.value) and "genbench kfp compile" in str(error.value)


def test_use_tracking_needs_a_store_that_outlives_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")  # recorded, so the test's own value is undone afterwards
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ValueError, match="mlflow_tracking_uri is empty"):
        use_tracking(" ")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    use_tracking("http://mlflow:5000")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
