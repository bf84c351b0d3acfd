"""Register stage on the embedded SQLite store (no server): run, metrics, the pyfunc model, registry, champion."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save

from genbench.components.register.register import register
from genbench.models import build_model

FAMILY = "vae"
LONG = "x" * 700  # longer than MLflow's portable 500-char param limit

CONFIG = {  # a run record (components/common/artifacts.py RunRecord): a small VAE on 8×8 images
    "name": FAMILY,  # the entry as records called it before `entry`: this run, summary and sample record are old ones
    "family": FAMILY,
    "seed": 0,
    "image": {"channels": 1, "size": 8},
    "arch": {"latent_dim": 2, "base_channels": 4},
    "train": {"steps": 30, "lr": 0.0002, "note": LONG},
    "train_data_md5": "a" * 32,
}
# written out by hand, not computed by the code under test
EXPECTED_PARAMS = {
    "name": FAMILY,
    "family": FAMILY,
    "seed": "0",
    "image.channels": "1",
    "image.size": "8",
    "arch.latent_dim": "2",
    "arch.base_channels": "4",
    "train.steps": "30",
    "train.lr": "0.0002",
    "train_data_md5": "a" * 32,
    # the pyfunc model's load-time config, which mlflow.pyfunc.log_model logs as params of the run
    "batch_size": "4",
    "device": "auto",
    "ema": "True",
}
LOSSES = {10: 0.9, 20: 0.55, 30: 0.25}
REF_MD5 = "0123456789abcdef0123456789abcdef"
EXTRACTOR_SHA = "f" * 64
METRICS = {  # a metrics record (components/common/records.py MetricsRecord) less its fid and samples_md5
    "k": 3, "density_k": 5, "precision": 0.5, "recall": 0.25, "density": 0.75, "coverage": 0.5,
    "kid_mean": 0.01, "kid_std": 0.002, "kid_subsets": 10, "kid_subset_size": 12, "seed": 0, "bootstrap_resamples": 0,
    "inception_score": None, "inception_score_std": None, "inception_score_splits": 10,
    "inception_score_unavailable": "not requested", "n_samples": 64, "n_reference": 64, "reference_md5": REF_MD5,
    "feature_extractor": {"name": "tiny-cnn", "sha256": EXTRACTOR_SHA}, "preprocessing": {"resize": 8},
    "inception_dtype": "fp32", "reference_stats_key": "toy-ref", "warnings": [],
    "protocol": {"name": "holdout", "dataset": "toy", "n_generated": 64, "reference_split": "test",
                 "reference_size": 64, "feature_reference_size": 64, "resize": "legacy-tf", "network": "tiny-cnn@000",
                 "precision": "fp32"},
}
MANIFEST = {"dataset": "toy", "image_shape": [8, 8, 1], "counts": {"train.npy": 64, "reference.npy": 64},
            "files": {"train.npy": "a" * 32, "reference.npy": REF_MD5}}


def vae_weights(seed: int) -> bytes:
    """safetensors bytes of a VAE shaped as CONFIG says, its weights drawn under `seed`."""
    torch.manual_seed(seed)
    model = build_model(FAMILY, 1, 8, CONFIG["arch"])
    return save({key: value.contiguous() for key, value in model.state_dict().items()})


def fabricate(project: Path, fid: float, weights: bytes, summary: dict | None = None) -> dict[str, Path]:
    """A run folder (its summary signing its files), samples with their record, metrics of those samples and a
    manifest; the summary as written before `processes` and `images_per_second` existed, unless `summary` adds
    fields."""
    run_dir = project / "runs" / FAMILY
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "model.safetensors").write_bytes(weights)
    (run_dir / "config.json").write_text(json.dumps(CONFIG, indent=2))
    lines = ["step,name,value"]
    for step, loss in LOSSES.items():
        lines += [
            f"{step},model/loss,{loss}",
            f"{step},d/loss,{loss * 2}",
            f"{step},g/loss,{loss / 2}",
        ]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")
    signed = {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
              for name in ("model.safetensors", "config.json", "history.csv")}
    (run_dir / "summary.json").write_text(
        json.dumps(
            {"name": FAMILY, "family": FAMILY, "steps": 30, "seconds": 1.5, "num_parameters": 1234, "device": "cpu",
             "config_sha256": "c" * 64, "sha256": signed} | (summary or {})
        )
    )
    sample_record = project / "samples" / FAMILY / "seed-0.json"
    sample_record.parent.mkdir(parents=True, exist_ok=True)
    images = sample_record.with_suffix(".npy")
    np.save(images, np.full((12, 8, 8, 1), 7, dtype=np.uint8))
    samples_md5 = hashlib.md5(images.read_bytes()).hexdigest()
    metrics = project / "metrics" / f"{FAMILY}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(METRICS | {"fid": fid, "samples_md5": samples_md5}))
    manifest = project / "data" / "prepared" / "manifest.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(MANIFEST))
    sample_record.write_text(json.dumps({
        "name": FAMILY, "family": FAMILY, "n": 12, "seed": 0, "batch_size": 4, "shape": [12, 8, 8, 1], "device": "cpu",
        "weights_sha256": hashlib.sha256(weights).hexdigest(), "weights": "ema", "num_classes": 0,
        "network_evaluations": 1, "seconds": 0.5, "sampling": {"ema": True, "family": FAMILY},
        "out": str(images), "samples_md5": samples_md5,
    }))
    return {"run_dir": run_dir, "metrics_path": metrics, "manifest_path": manifest, "sample_record": sample_record}


def do_register(project: Path, fid: float, weights: bytes, summary: dict | None = None) -> dict:
    paths = fabricate(project, fid, weights, summary)
    return dict(register(
        FAMILY,
        paths["run_dir"],
        paths["metrics_path"],
        paths["manifest_path"],
        project / "registry" / f"{FAMILY}.json",
        sample_record=paths["sample_record"],
        project_dir=project,
    ))


def resign(run_dir: Path) -> None:
    """Rewrite summary.json's sha256 for the files now in `run_dir`, as a finished retraining would."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["sha256"] = {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest() for name in summary["sha256"]}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_broken_chain_names_the_stage_to_rerun(tmp_path, monkeypatch):
    """Each link from the metrics back to the weights, checked before MLflow is touched; the first broken one (from
    the weights down) names its stage."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def refused(paths: dict[str, Path], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            register(FAMILY, **paths, out_path=tmp_path / "o.json", project_dir=tmp_path)

    paths = fabricate(tmp_path, 10.0, vae_weights(0))
    metrics = json.loads(paths["metrics_path"].read_text())
    paths["metrics_path"].write_text(json.dumps(metrics | {"samples_md5": "0" * 32}))  # measured on other samples
    refused(paths, r"seed-0\.npy \(samples_md5 0{32} ≠ [0-9a-f]{32}\); re-run `genbench evaluate vae`")
    np.save(paths["sample_record"].with_suffix(".npy"), np.zeros((12, 8, 8, 1), dtype=np.uint8))
    refused(paths, r"seed-0\.npy is not the file .*seed-0\.json was written with .*; re-run `genbench sample vae`")
    (paths["run_dir"] / "model.safetensors").write_bytes(vae_weights(1))  # a training stopped before its summary
    refused(paths, r"model\.safetensors is not the file summary\.json was written with .*; re-run `genbench train vae`")
    resign(paths["run_dir"])  # the retraining finished: its weights are not those the samples came from
    refused(paths, r"drawn from other weights than .*model\.safetensors; give the record of this run's samples, or "
                   r"re-run `genbench sample vae`")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "o.json").exists()


def test_missing_inputs_name_the_stage(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = fabricate(tmp_path, 10.0, vae_weights(0))
    paths["sample_record"].with_suffix(".npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"samples/vae/seed-0\.npy not found; run `genbench sample vae`"):
        register(FAMILY, **paths, out_path=tmp_path / "o.json", project_dir=tmp_path)
    paths["sample_record"].unlink()
    with pytest.raises(FileNotFoundError, match=r"samples/vae/seed-0\.json.*genbench sample"):
        register(FAMILY, **paths, out_path=tmp_path / "o.json", project_dir=tmp_path)
    paths["metrics_path"].unlink()
    with pytest.raises(FileNotFoundError, match=r"genbench evaluate"):
        register(FAMILY, **paths, out_path=tmp_path / "o.json", project_dir=tmp_path)
    (paths["run_dir"] / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*genbench train"):
        register(FAMILY, **paths, out_path=tmp_path / "o.json", project_dir=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_register_and_champion(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the caller's cwd

    import mlflow
    from mlflow import MlflowClient

    weights1 = vae_weights(1)
    r1 = do_register(tmp_path, fid=12.5, weights=weights1)

    db = tmp_path / "mlflow.db"
    assert db.is_file()
    assert r1["tracking_uri"] == f"sqlite:///{db.resolve()}"
    assert json.loads((tmp_path / "registry" / f"{FAMILY}.json").read_text()) == r1
    assert (r1["model_name"], r1["version"], r1["champion_version"], r1["promoted"]) == (
        f"genbench-{FAMILY}", 1, 1, True
    )
    assert r1["fid"] == 12.5

    client = MlflowClient(tracking_uri=r1["tracking_uri"], registry_uri=r1["tracking_uri"])
    exp = client.get_experiment_by_name("genbench")
    assert exp is not None
    assert exp.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()

    run = client.get_run(r1["run_id"])
    assert run.info.run_name == FAMILY
    assert run.data.tags["genbench.entry"] == FAMILY and "genbench.name" not in run.data.tags
    # the protocol its FID was measured under, field by field, and whole on the version (promotion compares on it)
    assert {key: run.data.tags[f"protocol.{key}"] for key in METRICS["protocol"]} == {
        key: str(value) for key, value in METRICS["protocol"].items()}
    assert run.info.experiment_id == exp.experiment_id
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())

    params = run.data.params
    for key, value in EXPECTED_PARAMS.items():
        assert params[key] == value, key
    assert len(params["train.note"]) <= 500 and params["train.note"].startswith("x" * 400)
    assert set(params) == set(EXPECTED_PARAMS) | {"train.note"}

    hist = client.get_metric_history(r1["run_id"], "model/loss")
    assert sorted((m.step, m.value) for m in hist) == sorted(LOSSES.items())
    d_hist = client.get_metric_history(r1["run_id"], "d/loss")
    expected_d = [(s, v * 2) for s, v in sorted(LOSSES.items())]
    assert sorted((m.step, m.value) for m in d_hist) == expected_d
    assert run.data.metrics["fid"] == 12.5
    assert run.data.metrics["precision"] == 0.5
    assert run.data.metrics["recall"] == 0.25
    assert run.data.metrics["train_seconds"] == 1.5
    assert run.data.metrics["train_device_seconds"] == 1.5  # an older summary: one process
    assert "train_images_per_second" not in run.data.metrics  # not recorded then
    assert run.data.metrics["num_parameters"] == 1234

    # the run keeps its records; the weights are in the pyfunc model it logged, which the version is made from
    assert [a.path for a in client.list_artifacts(r1["run_id"])] == ["meta"]
    mv = client.get_model_version(f"genbench-{FAMILY}", "1")
    assert mv.run_id == r1["run_id"]
    assert mv.status == "READY"
    assert mv.source.startswith("models:/m-")  # the logged model, by id
    assert client.get_logged_model(mv.source.removeprefix("models:/")).source_run_id == r1["run_id"]
    assert float(mv.tags["fid"]) == 12.5
    assert mv.tags["data_md5"] == REF_MD5
    assert mv.tags["feature_extractor_sha256"] == EXTRACTOR_SHA
    assert mv.tags["evaluation_protocol"] == "holdout|toy|64|test|64|64|legacy-tf|tiny-cnn@000|fp32"
    canonical = json.dumps(CONFIG, sort_keys=True)
    assert mv.tags["params_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert mv.tags["git_commit"] == "unknown"  # tmp_path is not a git checkout

    # worse FID: new version 2, champion stays on 1
    r2 = do_register(tmp_path, fid=20.0, weights=vae_weights(2), summary={"processes": 2, "images_per_second": 640.5})
    assert (r2["version"], r2["promoted"], r2["champion_version"]) == (2, False, 1)
    throughput = client.get_run(r2["run_id"]).data.metrics  # a torchrun run of 2 processes for 1.5 s
    assert (throughput["train_device_seconds"], throughput["train_images_per_second"]) == (3.0, 640.5)
    assert int(client.get_model_version_by_alias(f"genbench-{FAMILY}", "champion").version) == 1

    # better FID: version 3 becomes champion
    weights3 = vae_weights(3)
    r3 = do_register(tmp_path, fid=7.25, weights=weights3)
    assert (r3["version"], r3["promoted"], r3["champion_version"]) == (3, True, 3)
    assert int(client.get_model_version_by_alias(f"genbench-{FAMILY}", "champion").version) == 3
    assert len({r1["run_id"], r2["run_id"], r3["run_id"]}) == 3

    # the champion's files come back through the registry URI: an MLflow model with the run folder as artifacts
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/genbench-{FAMILY}@champion", dst_path=str(tmp_path / "dl")
        )
    )
    assert (local / "MLmodel").is_file() and not list(local.rglob("*.pkl"))
    assert (local / "artifacts" / "model.safetensors").read_bytes() == weights3
    assert json.loads((local / "artifacts" / "config.json").read_text()) == CONFIG
    # version 1's files are still its own
    local1 = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/genbench-{FAMILY}/1", dst_path=str(tmp_path / "dl1")
        )
    )
    assert (local1 / "artifacts" / "model.safetensors").read_bytes() == weights1


def test_promote_compares_only_on_the_same_reference_and_records_force(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from genbench.components.register.registry import promote

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    first = do_register(tmp_path, 20.0, vae_weights(1))
    assert first["promoted"]
    # a better FID, but measured against other reference images: not comparable, champion stays
    paths = fabricate(tmp_path, 5.0, vae_weights(2))
    paths["manifest_path"].write_text(json.dumps(MANIFEST | {"files": {"reference.npy": "e" * 32}}))
    second = dict(register(FAMILY, **paths, out_path=tmp_path / "r.json", project_dir=tmp_path))
    assert not second["promoted"] and second["champion_version"] == first["version"]

    kept = dict(promote(FAMILY, project_dir=tmp_path))
    assert not kept["promoted"] and "not comparable" in kept["reason"]
    forced = dict(promote(FAMILY, project_dir=tmp_path, force=True))
    assert forced["promoted"] and forced["champion_version"] == second["version"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(f"genbench-{FAMILY}", "champion")
    assert int(champion.version) == second["version"]
    assert champion.tags["promoted_by_force"].startswith("true")


def test_a_version_without_the_pyfunc_model_is_refused(tmp_path, monkeypatch):
    """A version as genbench registered them before the pyfunc model (a run's model/ folder holding the two files)
    is not sampled: the error names the fix."""
    import mlflow

    from genbench.components.register.registry import fetch_registered
    from genbench.components.register.tracking import configure_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    paths = fabricate(tmp_path, 10.0, vae_weights(0))
    client = mlflow.MlflowClient(tracking_uri=configure_tracking(tmp_path))
    with mlflow.start_run() as run:
        for name in ("model.safetensors", "config.json"):
            mlflow.log_artifact(str(paths["run_dir"] / name), "model")
    client.create_registered_model(f"genbench-{FAMILY}")
    client.create_model_version(f"genbench-{FAMILY}", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    with pytest.raises(ValueError, match=r"version 1\) is no genbench pyfunc model with model\.safetensors and "
                                         r"config\.json; .* \(register its run again\)"):
        fetch_registered(f"models:/genbench-{FAMILY}/1", tmp_path / "download", project_dir=tmp_path)


def test_an_unreachable_tracking_server_fails_clearly_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    """The server is down past the retries: one line and exit 75 (try again), and the run folder, the weights
    included, is exactly as train left it."""
    import socket

    import typer

    from genbench.cli import TRY_AGAIN, _call

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the retries themselves are MLflow's
    paths = fabricate(tmp_path, 10.0, vae_weights(0))
    before = {path.name: path.read_bytes() for path in paths["run_dir"].iterdir()}
    with pytest.raises(typer.Exit) as info:
        _call(register, FAMILY, **paths, out_path=tmp_path / "o.json", project_dir=tmp_path)
    assert info.value.exit_code == TRY_AGAIN
    message = capsys.readouterr().err
    assert message.startswith("error: a server did not answer") and "Traceback" not in message, message
    assert {path.name: path.read_bytes() for path in paths["run_dir"].iterdir()} == before
    assert not (tmp_path / "o.json").exists()
