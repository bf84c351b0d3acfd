"""The Prefect driver: prepare → evaluate real → (train → fid-curve → sample → evaluate → register) per entry and seed →
sweeps → report.

Each task runs one stage declaration (genbench/stages.py), exactly what the CLI command of the same name (and so
`dvc repro`) runs, and adds a name and retries, nothing else. Tasks retry only transient I/O failures
(flows/retries.py): a config or input error fails the flow at once with its message. With no PREFECT_API_URL set,
Prefect runs it on an ephemeral local server; set PREFECT_API_URL to run against a real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, runtime, task
from prefect.cache_policies import NO_CACHE

from genbench.config import Config, load_config
from genbench.layout import Layout
from genbench.stages import PER_ENTRY, STAGES, At

from .dvc_data import in_dvc_project, reproduce_prepare
from .retries import retry_transient

HERE = Layout()


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def stage(name: str, config: Config, at: At = At()) -> Any:
    """Stage `name` for instance `at` in this folder; register's MLflow run is tagged with the flow run."""
    tags = {"tags": {"prefect.flow_run_id": str(runtime.flow_run.id)}} if name == "register" else {}
    return STAGES[name].run(config, HERE, at, **tags)


def _run(name: str, config: Config, at: At = At()) -> Any:
    return stage.with_options(task_run_name=f"{name}-{at.label}" if at.label else name)(name, config, at)


@flow(name="genbench-pipeline", log_prints=True)
def pipeline(params: str = "params.yaml", profile: str | None = None) -> None:
    """prepare → the real-data floor → (train → fid-curve → sample → evaluate → register) per entry and seed → sampling
    sweeps → report, in the current folder. In a DVC project, prepare runs as DVC's stage (cached, recorded in
    dvc.lock)."""
    config = load_config(Path(params), profile)
    if in_dvc_project(HERE.root):
        reproduce_prepare(HERE.root, data=config.data, seed=config.seed)
    else:
        _run("prepare", config)
    _run("evaluate-real", config)
    for at in STAGES["train"].instances(config):
        for name in PER_ENTRY:
            _run(name, config, at)
    for at in STAGES["sweep"].instances(config):
        _run("sweep", config, at)
    _run("report", config)
