"""Logging one finished training run to MLflow: params, per-step metrics, evaluation metrics, files, its model.

Batched through `MlflowClient.log_batch` (≤ 100 params, ≤ 1000 metrics per call) and kept within the limits
every MLflow server accepts (500-character param values, 250-character keys). MLflow is imported inside
`log_run` only.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

MAX_PARAM_VALUE_LENGTH = 500  # MLflow < 2.x servers: 500; 3.x accepts 6000. Stay portable.
MAX_KEY_LENGTH = 250
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
MODEL_ARTIFACT_PATH = "model"
META_ARTIFACT_PATH = "meta"


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


def numeric_items(data: dict[str, Any]) -> dict[str, float]:
    """Top-level int/float values (bools excluded)."""
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def git_commit(project_dir: Path) -> str:
    """HEAD of the project's checkout, or "unknown" outside one."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else "unknown"


def log_run(client: Any, experiment_id: str, name: str, *, config: dict[str, Any],
            history: list[tuple[int, str, float]], metrics: dict[str, float], final_step: int,
            pyfunc_model: dict[str, Any], meta_files: list[Path], tags: dict[str, str]) -> str:
    """One finished MLflow run: `config` flattened into params, `history` as per-step metrics, `metrics` at
    `final_step`, `meta_files` under `meta/`, and its model: `mlflow.pyfunc.log_model(**pyfunc_model)`, logged
    while the run is active so that MLflow 3 links the two (what a registered version is made from). The run is
    marked FAILED if anything fails on the way; returns its id."""
    import mlflow
    from mlflow.entities import Metric, Param

    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:  # FAILED if this raises
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten_params(config).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH], synchronous=True)
        now = int(time.time() * 1000)
        last = {(metric, step): value for step, metric, value in history}  # a repeated (name, step) keeps the last
        scalars = [Metric(k, v, now, step) for (k, step), v in last.items()]
        scalars += [Metric(k, v, now, final_step) for k, v in metrics.items()]
        for i in range(0, len(scalars), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=scalars[i : i + METRICS_PER_BATCH], synchronous=True)
        for path in meta_files:
            client.log_artifact(run_id, str(path), META_ARTIFACT_PATH)
        # step: the evaluation metrics, logged at final_step, are also shown on the logged model
        mlflow.pyfunc.log_model(name=MODEL_ARTIFACT_PATH, step=final_step, **pyfunc_model)
    return run_id
