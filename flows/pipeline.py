"""The Prefect driver: one task per stage and family over the same entry points `dvc.yaml` calls.

Tasks add retries and names, nothing else: every stage runs `genbench.cli`'s command function, exactly
what `dvc repro` runs through the shell. With no PREFECT_API_URL set, Prefect runs it on an ephemeral
local server; set PREFECT_API_URL to run against a real one.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, runtime, task
from prefect.cache_policies import NO_CACHE

from genbench import cli
from genbench.config import load_config

# I/O stages retry (downloads, tracking server, disk); compute stages resume from checkpoints on retry.
io_task = task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
compute_task = task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)


@io_task
def prepare(params: str, profile: str | None) -> None:
    cli.prepare(params=Path(params), profile=profile)


@compute_task(task_run_name="train-{family}")
def train(family: str, params: str, profile: str | None) -> None:
    cli.train(family, params=Path(params), profile=profile)


@compute_task(task_run_name="sample-{family}")
def sample(family: str, params: str, profile: str | None) -> None:
    cli.sample(family, params=Path(params), profile=profile)


@compute_task(task_run_name="evaluate-{family}")
def evaluate(family: str, params: str, profile: str | None) -> None:
    cli.evaluate(family, params=Path(params), profile=profile)


@io_task(task_run_name="register-{family}")
def register(family: str) -> None:
    cli.register(family, tag=[f"prefect.flow_run_id={runtime.flow_run.id}"])


@io_task
def report(params: str, profile: str | None) -> None:
    cli.report(params=Path(params), profile=profile)


@flow(name="genbench-pipeline", log_prints=True)
def pipeline(params: str = "params.yaml", profile: str | None = None) -> None:
    """prepare → (train → sample → evaluate → register) per family → report, in the current folder."""
    families = load_config(params, profile).families
    prepare(params, profile)
    for family in families:
        train(family, params, profile)
        sample(family, params, profile)
        evaluate(family, params, profile)
        register(family)
    report(params, profile)
