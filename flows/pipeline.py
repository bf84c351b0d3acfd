"""The Prefect driver: prepare → evaluate real → (train → sample → evaluate → register) per entry and seed →
sweeps → report.

Each task calls one component, exactly what the CLI command of the same name (and so `dvc repro`) calls, and
adds a name and retries, nothing else. Tasks retry only transient I/O failures (flows/retries.py): a config or
input error fails the flow at once with its message. With no PREFECT_API_URL set, Prefect runs it on an
ephemeral local server; set PREFECT_API_URL to run against a real one.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, runtime, task
from prefect.cache_policies import NO_CACHE

from genbench.components.evaluate.evaluate import evaluate as evaluate_component
from genbench.components.evaluate.evaluate import evaluate_real as evaluate_real_component
from genbench.components.prepare.prepare import prepare as prepare_component
from genbench.components.register.register import register as register_component
from genbench.components.report.report import report as report_component
from genbench.components.sample.sample import sample as sample_component
from genbench.components.sweep.sweep import planned_sweep
from genbench.components.train.train import train as train_component
from genbench.config import Config, load_config
from genbench.layout import REAL, Layout

from .dvc_data import in_dvc_project, reproduce_prepare
from .retries import retry_transient

stage = task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
HERE = Layout()


@stage
def prepare(config: Config) -> None:
    """In a DVC project through DVC's `prepare` stage (cached, recorded in dvc.lock, pushed), else directly."""
    if in_dvc_project(HERE.root):
        reproduce_prepare(HERE.root, data=config.data, seed=config.seed)
    else:
        prepare_component(config.data, config.seed, HERE.data, HERE.downloads)


@stage(task_run_name="train-{family}-seed-{seed}")
def train(family: str, seed: int, config: Config) -> None:
    train_component(family, config.family(family), seed, HERE.data, HERE.run(family, seed), cache_dir=HERE.cache)


@stage(task_run_name="sample-{family}-seed-{seed}")
def sample(family: str, seed: int, config: Config) -> None:
    sample_component(HERE.run(family, seed), HERE.samples(family, seed), family, config.sample,
                     config.sampling_for(family), seed)


@stage(task_run_name="evaluate-{family}-seed-{seed}")
def evaluate(family: str, seed: int, config: Config) -> None:
    evaluate_component(HERE.samples(family, seed), HERE.reference, HERE.metrics(family, seed), cache_dir=HERE.cache,
                       settings=config.evaluate, recorded=True)


@stage(task_run_name=f"evaluate-{REAL}")
def evaluate_real(config: Config) -> None:
    evaluate_real_component(HERE.holdout, HERE.reference, HERE.real_metrics, cache_dir=HERE.cache,
                            settings=config.evaluate)


@stage(task_run_name="register-{family}-seed-{seed}")
def register(family: str, seed: int) -> None:
    register_component(family, HERE.run(family, seed), HERE.metrics(family, seed), HERE.manifest,
                       HERE.registry(family, seed), sample_record=HERE.sample_record(family, seed),
                       project_dir=HERE.root.resolve(),
                       tags={"prefect.flow_run_id": str(runtime.flow_run.id)})


@stage(task_run_name="sweep-{name}")
def sweep(name: str, config: Config) -> None:
    planned_sweep(config, name, HERE)


@stage
def report(config: Config) -> None:
    report_component(config, HERE, HERE.results)


@flow(name="genbench-pipeline", log_prints=True)
def pipeline(params: str = "params.yaml", profile: str | None = None) -> None:
    """prepare → the real-data floor → (train → sample → evaluate → register) per entry and seed → sampling
    sweeps → report, in the current folder."""
    config = load_config(Path(params), profile)
    prepare(config)
    evaluate_real(config)
    for family in config.families:
        for seed in config.seeds:
            train(family, seed, config)
            sample(family, seed, config)
            evaluate(family, seed, config)
            register(family, seed)
    for name in config.sweeps:
        sweep(name, config)
    report(config)
