"""The Kubeflow tasks' plumbing: artifact folders become one scratch project, a run splits into what its readers
need, loops fan in what the report reads, a foreign plan stops."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from genbench.config import load_config
from genbench.flows.kubeflow_tasks import check_plan, collect, split_run, use_tracking, workspace

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


def _files(root: Path | str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def test_collect_unites_what_the_report_reads(tmp_path: Path) -> None:
    parts = [_fragment(tmp_path / "a", {"runs/vae/seed-0/model.safetensors": "w",
                                        "provenance/train/vae-seed-0.json": "{}"}),
             _fragment(tmp_path / "b", {"metrics/vae/seed-0.json": "{}", "samples/vae/seed-0.npy": "s",
                                        "registry/vae/seed-0.json": "{}",
                                        # no report input: a cache and a sweep set stay out
                                        ".genbench/cache/features.npz": "f", "sweeps/ddim_steps/a.npy": "x"}),
             None]
    into = Artifact(str(tmp_path / "project"))
    collect(parts, into)
    assert _files(into.path) == ["metrics/vae/seed-0.json", "provenance/train/vae-seed-0.json",
                                 "registry/vae/seed-0.json", "runs/vae/seed-0/model.safetensors",
                                 "samples/vae/seed-0.npy"]
    assert not any(p.is_symlink() for p in Path(into.path).rglob("*"))  # copies: an artifact must stand alone
    empty = Artifact(str(tmp_path / "empty"))
    collect([None], empty)
    assert Path(empty.path).is_dir() and _files(empty.path) == []  # an output artifact exists even when empty


RUN = "runs/vae/seed-0"


def test_split_run_keeps_what_readers_need_and_moves_the_snapshots(tmp_path: Path) -> None:
    """The run artifact keeps weights, config, summary, history and the train provenance; the EMA snapshots move
    to their own artifact at the same project path; the resume checkpoint goes."""
    run = _fragment(tmp_path / "run", {f"{RUN}/{name}": name for name in (
        "model.safetensors", "config.json", "summary.json", "history.csv", "checkpoint.pt",
        "snapshots/step-00000010.safetensors")} | {"provenance/train/vae-seed-0.json": "{}"})
    snapshots = Artifact(str(tmp_path / "snapshots"))
    split_run(run, snapshots, "vae", "0")
    assert _files(run.path) == ["provenance/train/vae-seed-0.json", f"{RUN}/config.json", f"{RUN}/history.csv",
                                f"{RUN}/model.safetensors", f"{RUN}/summary.json"]
    assert _files(snapshots.path) == [f"{RUN}/snapshots/step-00000010.safetensors"]
    with workspace(None, run, snapshots) as here:  # fid-curve's scratch project: one run folder again
        assert sorted(p.name for p in here.run("vae", 0).iterdir()) == [
            "config.json", "history.csv", "model.safetensors", "snapshots", "summary.json"]


def test_split_run_without_snapshots_leaves_an_empty_snapshots_artifact(tmp_path: Path) -> None:
    """Trained without a curve, the snapshots folder train always makes is empty; the artifact still exists."""
    run = _fragment(tmp_path / "run", {f"{RUN}/model.safetensors": "w", f"{RUN}/checkpoint.pt": "c"})
    (tmp_path / "run" / RUN / "snapshots").mkdir()
    snapshots = Artifact(str(tmp_path / "snapshots"))
    split_run(run, snapshots, "vae", "0")
    assert _files(run.path) == [f"{RUN}/model.safetensors"]
    assert (Path(snapshots.path) / RUN / "snapshots").is_dir() and _files(snapshots.path) == []


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


def test_every_stage_has_its_resources_and_an_unknown_one_is_named() -> None:
    """kubeflow_config names the stages itself (config must not import the components): the same, in order."""
    from pydantic import ValidationError

    from genbench.kubeflow_config import KubeflowConfig
    from genbench.stages import STAGES

    assert tuple(KubeflowConfig().resources) == tuple(STAGES)
    with pytest.raises(ValidationError, match=f"resources.trian: not a stage; the stages are {', '.join(STAGES)}"):
        KubeflowConfig.model_validate({"resources": {"trian": {"gpu": 0}}})
