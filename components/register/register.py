"""Stage 5: log an entry's training run to MLflow, register a new model version, maybe promote it.

Inputs (made by earlier stages): the run folder (`genbench train`), its sample record (`genbench sample`: the
sampling settings the version serves with, those its FID was measured on), the metrics file (`genbench evaluate`)
and the data manifest (`genbench prepare`). Every input is checked before anything is logged, and so is the chain
that ties the FID to the weights registered (`check_chain`): a metrics file left from earlier samples, or samples
from earlier weights, never reach the registry. The version is created (and `champion` moved) only after the
artifact store lists the logged model's files at their sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genbench.components.common.artifacts import (
    CONFIG,
    HISTORY,
    SUMMARY,
    WEIGHTS,
    TrainSummary,
    check_complete,
    read_config,
    read_history,
    read_run_record,
    require,
)  # fmt: skip
from genbench.components.common.io import config_hash, write_json
from genbench.components.common.manifest import read_manifest
from genbench.components.common.records import (
    MetricsRecord,
    RegisterRecord,
    SampleRecord,
    check_samples,
    curve_rows,
    read_metrics,
    read_provenance,
    read_sample_record,
)
from genbench.components.common.run_logging import git_commit, log_run, numeric_items
from genbench.components.register.dvc_lock import data_lock_hash
from genbench.components.register.generator_contract import served_model
from genbench.components.register.promotion import TAG_DATA_MD5, TAG_EXTRACTOR_SHA, TAG_FID, TAG_PROTOCOL
from genbench.components.register.registry import logged_models, model_name, register_version, verify_logged_model
from genbench.components.register.tracking import configure_tracking, get_experiment_id

TAG_ENTRY = "genbench.entry"  # the run's params entry (`genbench.name` in runs logged before the rename)
TAG_PARAMS_HASH = "params_hash"
TAG_GIT_COMMIT = "git_commit"
TAG_DVC_DATA_MD5 = "dvc.data_md5"  # the dvc.lock md5 of data/prepared, where DVC prepared it
TAG_STAGE_PREFIX = "genbench.stage."  # + train / sample / evaluate: that stage's provenance hash


def check_chain(entry: str, run_dir: Path, sample_record: Path, metrics: MetricsRecord, metrics_path: Path
                ) -> tuple[TrainSummary, SampleRecord]:
    """The run's summary and its samples' record once the links from the metrics back to the weights hold. They are
    checked from the weights down, so the error names the earliest stage whose output is stale: the run is complete
    (train), the samples were drawn from its weights and are the bytes their record names (sample), and the metrics
    were measured on those bytes (evaluate)."""
    summary = check_complete(run_dir)
    drawn = read_sample_record(sample_record)
    if drawn.entry != entry:
        raise ValueError(f"{sample_record}: it holds samples of {drawn.entry!r}, not of {entry!r}")
    if drawn.weights_sha256 != summary.sha256[WEIGHTS]:
        raise ValueError(f"{sample_record}: the samples {drawn.out} were drawn from other weights than "
                         f"{run_dir / WEIGHTS}; give the record of this run's samples, or re-run "
                         f"`genbench sample {entry}`")
    images = sample_record.with_suffix(".npy")
    check_samples(images)
    if metrics.samples_md5 != drawn.samples_md5:
        raise ValueError(f"{metrics_path} was measured on other samples than {images} (samples_md5 "
                         f"{metrics.samples_md5} ≠ {drawn.samples_md5}); re-run `genbench evaluate {entry}`")
    return summary, drawn


def uploaded(pyfunc_model: dict[str, Any]) -> dict[str, int | None]:
    """What the artifact store must list once `pyfunc_model` is logged: MLflow's MLmodel, the model's code and each
    artifact file at its size."""
    files = [Path(pyfunc_model["python_model"]), *map(Path, pyfunc_model["artifacts"].values())]
    return {"MLmodel": None} | {path.name: path.stat().st_size for path in files}


def register(entry: str, run_dir: Path, metrics_path: Path, manifest_path: Path, out_path: Path, *,
             sample_record: Path, project_dir: Path, curve: Path | None = None,
             provenance: Mapping[str, Path] | None = None, tags: dict[str, str] | None = None) -> RegisterRecord:
    """Log `entry`'s run with its MLflow pyfunc model (served with `sample_record`'s sampling settings), create
    version N of `genbench-<entry>` from that model, tagged with its FID and provenance, and move `champion` to it if
    the promotion policy says so. The run's metric history gets the FID curve's points (`curve`, from `fid-curve`)
    beside the training losses. `tags` go on the MLflow run (the Prefect flow passes its flow-run id, so a run
    triggered from the Prefect UI can be found in MLflow); `provenance` names the upstream stages' provenance records,
    whose hashes tag the run as `genbench.stage.<stage>` (a stage whose component was called directly, outside every
    driver, has none, and gets no tag)."""
    run_dir, project_dir = Path(run_dir), Path(project_dir)
    require(run_dir, WEIGHTS, CONFIG, HISTORY, SUMMARY)
    metrics, manifest = read_metrics(metrics_path), read_manifest(manifest_path)
    config, record, history = read_config(run_dir), read_run_record(run_dir), read_history(run_dir)
    if curve is not None:
        history += curve_rows(curve, measured=bool(record.train.get("fid_every")))
    if record.entry != entry:
        raise ValueError(f"{run_dir / CONFIG} is the run of {record.entry!r}, not {entry!r}")
    summary, drawn = check_chain(entry, run_dir, Path(sample_record), metrics, Path(metrics_path))
    fid = metrics.fid
    data_md5 = manifest.files.get("reference.npy")
    if data_md5 is None:
        raise ValueError(f"{manifest_path} has no files['reference.npy'] md5 (re-run `genbench prepare`)")
    stage_tags = {f"{TAG_STAGE_PREFIX}{stage}": read_provenance(path).hash
                  for stage, path in (provenance or {}).items() if Path(path).exists()}
    provenance = {
        TAG_DATA_MD5: data_md5,
        TAG_EXTRACTOR_SHA: metrics.feature_extractor.sha256,
        TAG_PROTOCOL: metrics.protocol.tag(),
        TAG_PARAMS_HASH: config_hash(config),
    }
    if (dvc_md5 := data_lock_hash(project_dir)) is not None:
        provenance[TAG_DVC_DATA_MD5] = dvc_md5
    commit = git_commit(project_dir)
    model = served_model(run_dir, drawn)

    tracking_uri = configure_tracking(project_dir)
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    client = MlflowClient(tracking_uri=tracking_uri)
    run_tags = {TAG_ENTRY: entry, "genbench.family": record.family, "genbench.seed": str(record.seed),
                "genbench.stage": "register", "genbench.dataset": manifest.dataset, **provenance, **stage_tags,
                **{f"protocol.{key}": str(value) for key, value in metrics.protocol.model_dump().items()}}
    if commit != "unknown":
        run_tags[MLFLOW_GIT_COMMIT] = commit
    training = {"train_seconds": summary.seconds, "num_parameters": summary.num_parameters,
                "train_steps": summary.steps, "train_device_seconds": summary.device_seconds,
                "train_images_per_second": summary.images_per_second}  # None (not logged) in older summaries
    # a class-conditional entry's mean over classes (its per-class values are in the metrics file logged beside)
    intra_class = {"intra_class_fid": metrics.intra_class_fid.mean} if metrics.intra_class_fid else {}
    run_id = log_run(
        client, get_experiment_id(tracking_uri), entry, config=config, history=history,
        metrics=numeric_items(metrics.model_dump()) | numeric_items(training) | intra_class, final_step=summary.steps,
        pyfunc_model=model, meta_files=[run_dir / SUMMARY, Path(metrics_path), Path(manifest_path)],
        tags=run_tags | (tags or {}),
    )  # fmt: skip
    try:
        for model_id in logged_models(client, run_id):
            verify_logged_model(client, model_id, uploaded(model))
    except Exception:
        client.set_terminated(run_id, "FAILED")  # a run whose model is not stored is no finished run
        raise
    decision = register_version(client, entry, run_id, {TAG_FID: repr(fid), **provenance, **stage_tags,
                                                         TAG_GIT_COMMIT: commit},
                                description=f"{entry}: FID {fid:.4f} (run {run_id})")
    result = RegisterRecord(entry=entry, family=record.family, run_id=run_id, model_name=model_name(entry),
                            version=decision.version, fid=fid,
                            champion_version=decision.champion_version, promoted=decision.promoted,
                            tracking_uri=tracking_uri)
    write_json(Path(out_path), result.model_dump(mode="json"))
    return result
