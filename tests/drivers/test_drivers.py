"""The drivers end to end on the tiny profile: the Prefect flow (`genbench run`), `dvc repro`, and `torchrun` on
`genbench train`.

conftest.py starts them in the background at collection, each in its own copy of the project; these tests run
last and read what they wrote.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from genbench.components.register.dvc_lock import data_lock_hash

from ..conftest import refresh_plan
from .conftest import FAMILIES, NETWORK_STATUS, REPO, TORCHRUN_TIMES, copy_ignore, run_checked

OUTPUT_DIRS = ("data/prepared", "runs", "samples", "metrics", "sweeps", "registry", "results")
FID_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


def _outputs(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for folder in OUTPUT_DIRS
        for p in (root / folder).rglob("*")
        if p.is_file() and p.name != ".gitignore"
    }


@pytest.mark.server  # the flow starts Prefect's ephemeral server
def test_flow_writes_every_artifact(flow_project: Path) -> None:
    root = flow_project
    n = yaml.load((root / "params.yaml").read_text(), Loader=yaml.CSafeLoader)["sample"]["profiles"]["tiny"]["n"]
    for family in FAMILIES:
        images = np.load(root / "samples" / family / "seed-0.npy")
        assert images.dtype == np.uint8 and images.shape == (n, 28, 28, 1) and images.max() > images.min()
        metrics = json.loads((root / "metrics" / family / "seed-0.json").read_text())
        assert {"fid", "precision", "recall", "n_samples", "n_reference", "feature_extractor"} <= metrics.keys()
        assert np.isfinite(metrics["fid"]) and metrics["fid"] > 0 and 0 <= metrics["precision"] <= 1
        assert metrics["n_samples"] == n and metrics["feature_extractor"]["sha256"] == FID_SHA256
    real = json.loads((root / "metrics" / "real.json").read_text())
    assert real["n_samples"] == n and real["feature_extractor"]["sha256"] == FID_SHA256
    report = (root / "results" / "results.md").read_text()
    assert all(f"| {family} | 0 |" in report for family in FAMILIES)
    assert f"| real data (held-out images) | – | {real['fid']:.2f} [" in report
    assert all((root / "results" / "grids" / f"{family}.png").stat().st_size > 0 for family in FAMILIES)
    assert (root / "results" / "index.html").stat().st_size > 10000


@pytest.mark.server
def test_without_a_remote_the_flow_pushes_nothing_and_says_nothing(flow_project: Path) -> None:
    """The repository configures no default DVC remote: the flow prepares through DVC's stage (dvc.lock records
    it) and neither warns about a push nor prints DVC's "git add" hint."""
    log = (flow_project / "driver.log").read_text()
    assert data_lock_hash(flow_project) is not None
    assert "DataPushWarning" not in log and "NoCredentialsError" not in log and "git add dvc.lock" not in log, log


@pytest.mark.server
def test_flow_logs_and_registers_in_mlflow(flow_project: Path) -> None:
    from mlflow import MlflowClient

    root = flow_project
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("genbench")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    # The flow's data step went through DVC's prepare stage: dvc.lock records it, and every run carries its md5.
    assert list(yaml.load((root / "dvc.lock").read_text(), Loader=yaml.CSafeLoader)["stages"]) == ["prepare"]
    data_md5 = data_lock_hash(root)
    assert data_md5 is not None and data_md5.endswith(".dir")
    assert set(runs) == set(FAMILIES)
    for family in FAMILIES:
        run = runs[family]
        config = json.loads((root / "runs" / family / "seed-0" / "config.json").read_text())
        assert run.data.params["train.steps"] == str(config["train"]["steps"])
        metrics = json.loads((root / "metrics" / family / "seed-0.json").read_text())
        assert run.data.metrics["fid"] == pytest.approx(metrics["fid"])
        loss_key = "model/loss" if family != "dcgan" else "g/loss"
        history = client.get_metric_history(run.info.run_id, loss_key)
        assert [m.step for m in history] == list(range(1, config["train"]["steps"] + 1))
        version = client.get_model_version_by_alias(f"genbench-{family}", "champion")
        assert str(version.version) == "1" and version.run_id == run.info.run_id
        model_id = version.source.removeprefix("models:/")  # the version is the pyfunc model the run logged
        assert client.get_logged_model(model_id).source_run_id == run.info.run_id
        artifacts = {a.path for a in client.list_logged_model_artifacts(model_id, "artifacts")}
        assert artifacts == {"artifacts/model.safetensors", "artifacts/config.json"}, artifacts
        assert run.data.tags["dvc.data_md5"] == version.tags["dvc.data_md5"] == data_md5
        registry = json.loads((root / "registry" / family / "seed-0.json").read_text())
        assert registry["promoted"] and registry["version"] == 1


def test_dvc_repro_runs_every_stage_then_nothing(dvc_project: tuple[Path, str, str, str]) -> None:
    root, first, second, _ = dvc_project
    per_family = [f"{s}@{f}-0" for s in ("train", "fid-curve", "sample", "evaluate", "register") for f in FAMILIES]
    for stage in ["prepare", "evaluate-real", "sweep@ddim_steps", "report", *per_family]:
        assert f"Running stage '{stage}'" in first, stage
    assert "Running stage" not in second and "up to date" in second, second
    metrics = json.loads((root / "metrics" / "ddpm" / "seed-0.json").read_text())
    assert np.isfinite(metrics["fid"])


@pytest.mark.server
def test_dvc_and_flow_produce_the_same_outputs(flow_project: Path, dvc_project: tuple[Path, str, str, str]) -> None:
    dvc_root = dvc_project[0]
    assert _outputs(flow_project) == _outputs(dvc_root)
    # same params, same seed: the same data and the same samples, bit for bit, on CPU (the dvc project's from
    # before its ddpm edit, kept in before/)
    train = "data/prepared/train.npy"
    assert (flow_project / train).read_bytes() == (dvc_root / train).read_bytes()
    for name in ("samples/vae/seed-0.npy", "samples/ddpm/seed-0.npy", "sweeps/ddim_steps/sample_steps-2.npy"):
        assert (flow_project / name).read_bytes() == (dvc_root / "before" / name).read_bytes(), name


def _status_after(root: Path, edit) -> str:
    """`dvc status` after editing params.yaml, with the original params put back afterwards."""
    path = root / "params.yaml"
    original = path.read_text()
    plan = (root / "plan.yaml").read_text()
    params = yaml.load(original, Loader=yaml.CSafeLoader)
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    refresh_plan(root)
    try:
        return run_checked(["dvc", "status"], root)
    finally:
        path.write_text(original)
        (root / "plan.yaml").write_text(plan)


def test_dvc_retrains_only_the_family_whose_params_changed(dvc_project: tuple[Path, str, str, str]) -> None:
    """After one ddpm training setting changed, `dvc repro` retrains ddpm alone, and of the results only the
    ddpm row (and the sweep over its weights) changes."""
    root, _, _, third = dvc_project
    assert "Running stage 'train@ddpm-0'" in third and "Running stage 'report'" in third, third
    assert "Running stage 'train@vae-0'" not in third and "Running stage 'sample@vae-0'" not in third, third
    before, after = ({line.split(",")[0]: line for line in (root / name).read_text().splitlines()}
                     for name in ("results-before.csv", "results-after.csv"))
    assert set(before) == set(after) == {"name", *FAMILIES, "real data (held-out images)"}
    assert [name for name in before if before[name] != after[name]] == ["ddpm"]


def test_a_sampler_change_resamples_without_retraining(dvc_project: tuple[Path, str, str, str]) -> None:
    """DDIM steps, eta and guidance live in sampling.<family>: sample@ddpm reruns (and the stages after it,
    whose inputs it rewrites), train@ddpm stays up to date."""
    root = dvc_project[0]

    def ddim_steps(params: dict) -> None:
        params["sampling"]["ddpm"]["sampler"] = "ddim"
        params["sampling"]["ddpm"].setdefault("profiles", {}).setdefault("tiny", {})["sample_steps"] = 3

    status = _status_after(root, ddim_steps)
    assert "sample@ddpm" in status and "sampling.ddpm" in status, status
    assert "train@" not in status and "sample@vae" not in status, status


def test_a_sweep_change_resamples_only_the_sweep(dvc_project: tuple[Path, str, str, str]) -> None:
    """sweeps.<name> re-samples trained weights: changing its values reruns sweep@<name> (and the report),
    never train or the entry's own samples."""
    root = dvc_project[0]
    status = _status_after(root, lambda p: p["profiles"]["tiny"]["sweeps"]["ddim_steps"].update(values=[2, 3]))
    assert "sweep@ddim_steps" in status and "report" in status, status
    assert "train@" not in status and "sample@" not in status, status


def test_torchrun_trains_with_two_gloo_processes(torchrun_project: tuple[Path, str]) -> None:
    """Rank 0 alone reports and writes; the run folder says two processes trained it and keeps both ranks' noise
    streams in its checkpoint."""
    import torch

    from genbench.components.common.artifacts import read_history, read_summary

    root, output = torchrun_project
    assert output.count("trained ddpm: 4 steps") == 1 and "on 2 × cpu" in output
    run = root / "runs" / "ddpm" / "seed-0"
    summary = read_summary(run)
    assert (summary.processes, summary.device, summary.steps) == (2, "cpu", 4)
    # Measured outside the processes: two of them held the CPU no longer than torchrun ran, each. (That the device
    # time is each rank's own time summed is checked against both ranks' measures in tests/stages.)
    started, ended = map(float, output.split(TORCHRUN_TIMES)[1].split()[:2])
    assert 0 < summary.device_seconds <= 2 * (ended - started) and summary.images_per_second > 0
    assert sorted({step for step, name, _ in read_history(run) if name == "model/loss"}) == [1, 2, 3, 4]
    assert len(torch.load(run / "checkpoint.pt", weights_only=True)["rank_rng"]) == 2


def test_an_edit_to_the_fid_network_dirties_the_stages_that_run_it(dvc_project: tuple[Path, str, str, str]) -> None:
    """The stages that score run the network: every evaluate stage, the real-data floor, the FID curves and the
    sweeps. Upstream of them nothing does (train saves snapshots, fid-curve scores them): prepare, train and sample
    stay up to date. (`dvc status` names the stages whose own deps changed; register and report follow them.)"""
    root = dvc_project[0]
    changed = set(json.loads((root / NETWORK_STATUS).read_text()))
    pairs = [f"{entry}-0" for entry in FAMILIES]
    assert changed == {"evaluate-real", *(f"evaluate@{p}" for p in pairs), *(f"fid-curve@{p}" for p in pairs),
                       "sweep@ddim_steps"}, changed


def test_a_stage_hash_moves_with_its_own_params_and_nothing_upstream(
        dvc_project: tuple[Path, str, str, str]) -> None:
    """The ddpm training edit changes train@ddpm's provenance hash (and what reads its run), never prepare's or the
    vae's; each hash is recomputed by the stage, not read from dvc.lock."""
    root = dvc_project[0]

    def hashes(folder: Path) -> dict[str, str]:
        return {str(path.relative_to(folder)): json.loads(path.read_text())["hash"]
                for path in sorted(folder.rglob("*.json"))}

    before, after = hashes(root / "before" / "provenance"), hashes(root / "provenance")
    moved = {name for name in before if before[name] != after.get(name)}
    assert moved == {"train/ddpm-seed-0.json", "fid-curve/ddpm-seed-0.json", "sample/ddpm-seed-0.json",
                     "evaluate/ddpm-seed-0.json",
                     "register/ddpm-seed-0.json", "sweep/ddim_steps.json", "report/report.json"}, moved
    assert before["prepare/prepare.json"] == after["prepare/prepare.json"]


def test_every_driver_fills_the_stage_hashes_of_runs_csv(flow_project: Path, kfp_project: tuple[Path, str]) -> None:
    """runs.csv's stage columns come from the stages' own provenance records, so the Prefect flow and the
    Kubeflow pipeline fill them as dvc repro does."""
    kfp_results = sorted((kfp_project[0] / ".genbench" / "kfp").glob("*/**/results/runs.csv"))
    assert kfp_results, "no Kubeflow artifact holds results/runs.csv"
    for results in (flow_project / "results", kfp_results[0].parent):
        with open(results / "runs.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert rows, results
        for row in rows:
            for column in ("train_stage", "fid_curve_stage", "sample_stage", "evaluate_stage"):
                assert len(row[column]) == 12 and int(row[column], 16) >= 0, (results, row)


def test_the_project_copies_leave_machine_local_state_behind() -> None:
    """DVC's cache (with its run-cache, which would let `dvc repro` restore stages this machine ran before), its tmp
    and local config, outputs and credentials never reach a driver's project; the sources do."""
    assert copy_ignore(str(REPO / ".dvc"), ["cache", "tmp", "config.local", "config", ".gitignore"]) == \
        {"cache", "tmp", "config.local"}
    assert copy_ignore(str(REPO), ["provenance", "runs", "dvc.lock", "components", "dvc.yaml", "params.yaml"]) == \
        {"provenance", "runs", "dvc.lock"}
    assert copy_ignore(str(REPO / "infra"), [".env", ".env.example"]) == {".env"}
    assert copy_ignore(str(REPO / "components" / "evaluate"), ["provenance.py", "cache"]) == set()
