"""Register stage: one MLflow run per family, a new registered-model version, champion alias.

Inputs (made by earlier stages):

* ``runs/<family>/{model.safetensors,config.json,history.csv,summary.json}`` - ``genbench train``
* ``metrics/<family>.json`` - ``genbench evaluate``
* ``data/prepared/manifest.json`` - ``genbench prepare``

The registered model ``genbench-<family>`` gets a new version whose files are exactly
``model.safetensors`` and ``config.json`` (no pickled ``nn.Module``, no MLmodel flavor): the
files are logged as run artifacts under ``model/`` and the version is created with
``MlflowClient.create_model_version(source=<run artifact URI>/model, run_id=...)``, the same source
``mlflow.register_model("runs:/<id>/model", ...)`` would resolve to if the folder held an MLmodel
file. ``mlflow.artifacts.download_artifacts("models:/genbench-<family>@champion")`` returns them.

MLflow is imported inside :func:`register` only (it takes seconds to import).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

from .io import config_hash, read_json, write_json
from .tracking import configure_tracking, get_experiment_id

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT_PATH = "model"
META_ARTIFACT_PATH = "meta"
MAX_PARAM_VALUE_LENGTH = 500  # MLflow < 2.x servers: 500; 3.x accepts 6000. Stay portable.
MAX_KEY_LENGTH = 250
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100

# version tag keys
TAG_FID = "fid"
TAG_DATA_MD5 = "data_md5"
TAG_EXTRACTOR_SHA = "feature_extractor_sha256"
TAG_PARAMS_HASH = "params_hash"
TAG_GIT_COMMIT = "git_commit"


def model_name(family: str) -> str:
    return f"genbench-{family}"


# --------------------------------------------------------------------------- pure helpers


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b.c": "value"}`` with values stringified for MLflow params.

    Scalars use ``str`` (``0`` -> ``"0"``, ``None`` -> ``"None"``); lists use canonical JSON.
    An empty nested dict becomes ``"{}"`` so that it is still visible. Values longer than
    ``MAX_PARAM_VALUE_LENGTH`` are cut, ending in ``"..."``.
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, prefix=f"{full}."))
            continue
        if isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, sort_keys=True, default=str)
        else:
            text = str(value)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        out[full[:MAX_KEY_LENGTH]] = text
    return out


def read_history(path: Path) -> list[tuple[str, int, float]]:
    """``step,name,value`` rows -> ``[(name, step, value)]``; a repeated (name, step) keeps the
    last value; rows with an empty value are skipped."""
    rows: dict[tuple[str, int], float] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"step", "name", "value"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: header must contain step,name,value (missing {sorted(missing)})"
            )
        for lineno, row in enumerate(reader, start=2):
            value = (row["value"] or "").strip()
            if not value:
                continue
            try:
                rows[(row["name"], int(float(row["step"])))] = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: bad row {row!r}: {exc}") from exc
    return [(name, step, value) for (name, step), value in rows.items()]


def numeric_items(data: dict[str, Any]) -> dict[str, float]:
    """Top-level int/float values (bools excluded)."""
    return {
        k: float(v)
        for k, v in data.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def git_commit(project_dir: Path) -> str:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else "unknown"


def _require(path: Path, what: str, stage: str) -> Path:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path} (made by `{stage}`; run it first)")
    return Path(path)


def same_reference(a, b) -> bool:
    """FIDs are comparable only against the same reference images through the same feature network."""
    return all(a.tags.get(tag) == b.tags.get(tag) for tag in (TAG_DATA_MD5, TAG_EXTRACTOR_SHA))


def promote_if_better(client, name: str, version: int, force: bool = False) -> dict[str, Any]:
    """Point `champion` at `version` if it beats the champion's FID on the same reference statistics.

    `force` moves it regardless and records that (tag `promoted_by_force`) on the version.
    """
    from mlflow.exceptions import MlflowException

    candidate = client.get_model_version(name, str(version))
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        champion = None
    if champion is None:
        promoted, reason = True, "no champion yet"
    elif int(champion.version) == int(version):
        promoted, reason = False, "already champion"
    elif not same_reference(candidate, champion):
        promoted, reason = False, "FIDs not comparable: different reference data or feature extractor"
    elif _tag_fid(candidate) < _tag_fid(champion):
        promoted, reason = True, f"FID {_tag_fid(candidate):.4f} < champion's {_tag_fid(champion):.4f}"
    else:
        promoted, reason = False, f"FID {_tag_fid(candidate):.4f} >= champion's {_tag_fid(champion):.4f}"
    if force and not promoted and reason != "already champion":
        client.set_model_version_tag(name, str(version), "promoted_by_force", f"true ({reason})")
        promoted, reason = True, f"forced ({reason})"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
    current = int(version) if promoted else int(champion.version)
    return {"model_name": name, "version": int(version), "promoted": promoted, "champion_version": current,
            "reason": reason}


def promote(family: str, *, project_dir: Path, version: int | None = None, force: bool = False) -> dict[str, Any]:
    """`genbench promote`: consider the latest (or given) version of `genbench-<family>` for champion."""
    tracking_uri = configure_tracking(project_dir)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    name = model_name(family)
    if version is None:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"no versions of {name} in {tracking_uri}; run `genbench register {family}` first")
        version = max(int(v.version) for v in versions)
    return promote_if_better(client, name, version, force)


def fetch_registered(model_uri: str, dest: Path, *, project_dir: Path) -> dict[str, Any]:
    """Download a registered version's `model.safetensors` and `config.json` into `dest`, a run folder's shape.

    `model_uri` is `models:/<name>@<alias>` or `models:/<name>/<version>`. The alias is resolved once and that
    exact version is downloaded, so a promotion in between cannot mix two versions. Returns where the
    weights came from (name, version, run id, FID tag), for the samples' record.
    """
    if not model_uri.startswith("models:/"):
        raise ValueError(f"model URI {model_uri!r}: expected models:/genbench-<family>@<alias> "
                         "or models:/genbench-<family>/<version>")
    tracking_uri = configure_tracking(project_dir)
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        name, version = get_model_name_and_version(client, model_uri)
        found = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ValueError(f"{model_uri}: not in the registry at {tracking_uri} ({exc.message})") from None
    dest = Path(dest)
    mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest),
                                        tracking_uri=tracking_uri)
    missing = [f for f in ("model.safetensors", "config.json") if not (dest / f).is_file()]
    if missing:
        raise ValueError(f"{model_uri} (version {version}) lacks {', '.join(missing)}; "
                         "it was not registered by `genbench register`")
    fid = _tag_fid(found)
    return {"model_uri": model_uri, "model_name": name, "version": int(version), "run_id": found.run_id,
            "fid": fid if math.isfinite(fid) else None, "tracking_uri": tracking_uri}


def _tag_fid(version) -> float:
    """FID recorded on a model version; +inf when absent/unparsable (never blocks promotion)."""
    try:
        return float(version.tags[TAG_FID])
    except (KeyError, TypeError, ValueError):
        return math.inf


# --------------------------------------------------------------------------- stage


def register(
    family: str,
    run_dir: Path,
    metrics_path: Path,
    manifest_path: Path,
    out_path: Path,
    *,
    project_dir: Path,
    tags: dict[str, str] | None = None,
) -> dict:
    """Log the family's training run to MLflow, register a model version, maybe promote it.

    `tags` are added to the MLflow run (the Prefect flow passes its flow-run id, so a run triggered from
    the Prefect UI can be found in MLflow).

    Returns (and writes to ``out_path``) ``{"family", "run_id", "model_name", "version", "fid",
    "champion_version", "promoted", "tracking_uri"}``.
    """
    run_dir, project_dir = Path(run_dir), Path(project_dir)

    # ---- inputs first: fail fast, before paying for the MLflow import
    weights = _require(run_dir / "model.safetensors", "weights", "genbench train")
    config_path = _require(run_dir / "config.json", "resolved config", "genbench train")
    history_path = _require(run_dir / "history.csv", "training history", "genbench train")
    summary_path = _require(run_dir / "summary.json", "training summary", "genbench train")
    metrics_path = _require(metrics_path, "evaluation metrics", "genbench evaluate")
    manifest_path = _require(manifest_path, "data manifest", "genbench prepare")

    config = read_json(config_path)
    summary = read_json(summary_path)
    metrics = read_json(metrics_path)
    manifest = read_json(manifest_path)
    history = read_history(history_path)

    if "fid" not in metrics:
        raise ValueError(f"{metrics_path} has no 'fid' (re-run `genbench evaluate`)")
    fid = float(metrics["fid"])
    try:
        data_md5 = str(manifest["files"]["reference.npy"])
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{manifest_path} has no files['reference.npy'] md5 (re-run `genbench prepare`)"
        ) from exc
    extractor_sha = str((metrics.get("feature_extractor") or {}).get("sha256", "unknown"))
    p_hash = config_hash(config)
    commit = git_commit(project_dir)
    name = model_name(family)

    # ---- MLflow
    tracking_uri = configure_tracking(project_dir)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NAME

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = get_experiment_id(tracking_uri)

    run_tags = {
        MLFLOW_RUN_NAME: family,
        "genbench.family": family,
        "genbench.stage": "register",
        TAG_PARAMS_HASH: p_hash,
        TAG_DATA_MD5: data_md5,
        TAG_EXTRACTOR_SHA: extractor_sha,
    }
    if "dataset" in manifest:
        run_tags["genbench.dataset"] = str(manifest["dataset"])
    if commit != "unknown":
        run_tags[MLFLOW_GIT_COMMIT] = commit
    run_tags |= tags or {}
    run = client.create_run(experiment_id, run_name=family, tags=resolve_tags(run_tags))
    run_id = run.info.run_id

    try:
        # params: flattened config, ≤100 per batch
        params = [Param(k, v) for k, v in flatten_params(config).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH], synchronous=True)

        # metrics: history (per step) + evaluation + training summary
        now = int(time.time() * 1000)
        final_step = int(summary.get("steps") or 0)
        scalars = [Metric(k, v, now, step) for k, step, v in history]
        scalars += [Metric(k, v, now, final_step) for k, v in numeric_items(metrics).items()]
        summary_metrics = {
            "train_seconds": summary.get("seconds"),
            "num_parameters": summary.get("num_parameters"),
            "train_steps": summary.get("steps"),
        }
        scalars += [
            Metric(k, float(v), now, final_step)
            for k, v in summary_metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for i in range(0, len(scalars), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=scalars[i : i + METRICS_PER_BATCH], synchronous=True)

        # artifacts: model/ = exactly what the registered version holds; meta/ = provenance
        client.log_artifact(run_id, str(weights), MODEL_ARTIFACT_PATH)
        client.log_artifact(run_id, str(config_path), MODEL_ARTIFACT_PATH)
        for path in (summary_path, metrics_path, manifest_path):
            client.log_artifact(run_id, str(path), META_ARTIFACT_PATH)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    # ---- registry: new version from the run's model/ folder
    try:
        client.create_registered_model(
            name, description=f"genbench {family} generator (safetensors weights + config.json)"
        )
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version_tags = {
        TAG_FID: repr(fid),
        TAG_DATA_MD5: data_md5,
        TAG_EXTRACTOR_SHA: extractor_sha,
        TAG_PARAMS_HASH: p_hash,
        TAG_GIT_COMMIT: commit,
    }
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
    mv = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags=version_tags,
        description=f"{family}: FID {fid:.4f} (run {run_id})",
    )
    version = int(mv.version)

    decision = promote_if_better(client, name, version)
    promoted, champion_version = decision["promoted"], decision["champion_version"]

    result = {
        "family": family,
        "run_id": run_id,
        "model_name": name,
        "version": version,
        "fid": fid,
        "champion_version": champion_version,
        "promoted": promoted,
        "tracking_uri": tracking_uri,
    }
    write_json(Path(out_path), result)
    return result
