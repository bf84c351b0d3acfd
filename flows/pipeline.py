"""The Prefect driver: prepare → evaluate real → (train → sample → evaluate → register) per entry → sweeps →
report.

Each task calls one component, exactly what the CLI command of the same name (and so `dvc repro`) calls, and
adds a name and retries, nothing else. Tasks retry only transient I/O failures (flows/retries.py): a config or
input error fails the flow at once with its message. With no PREFECT_API_URL set, Prefect runs it on an
ephemeral local server; set PREFECT_API_URL to run against a real one.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, runtime, task
from prefect.cache_policies import NO_CACHE

from genbench.components.evaluate import evaluate as evaluate_component
from genbench.components.evaluate import evaluate_real as evaluate_real_component
from genbench.components.prepare import prepare as prepare_component
from genbench.components.register import register as register_component
from genbench.components.report import report as report_component
from genbench.components.sample import sample as sample_component
from genbench.components.sweep import sweep as sweep_component
from genbench.components.train import train as train_component
from genbench.config import Config, load_config
from genbench.layout import REAL, Layout

from .retries import retry_transient

stage = task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
HERE = Layout()


@stage
def prepare(config: Config) -> None:
    prepare_component(config.data, config.seed, HERE.data, HERE.downloads)


@stage(task_run_name="train-{family}")
def train(family: str, config: Config) -> None:
    train_component(family, config.family(family), config.seed, HERE.data, HERE.run(family), cache_dir=HERE.cache)


@stage(task_run_name="sample-{family}")
def sample(family: str, config: Config) -> None:
    sample_component(HERE.run(family), HERE.samples(family), family, config.sample, config.sampling_for(family),
                     config.seed)


@stage(task_run_name="evaluate-{family}")
def evaluate(family: str, config: Config) -> None:
    evaluate_component(HERE.samples(family), HERE.reference, HERE.metrics(family), cache_dir=HERE.cache,
                       settings=config.evaluate)


@stage(task_run_name=f"evaluate-{REAL}")
def evaluate_real(config: Config) -> None:
    evaluate_real_component(HERE.holdout, HERE.reference, HERE.metrics(REAL), cache_dir=HERE.cache,
                            settings=config.evaluate)


@stage(task_run_name="register-{family}")
def register(family: str) -> None:
    register_component(family, HERE.run(family), HERE.metrics(family), HERE.manifest, HERE.registry(family),
                       project_dir=HERE.root.resolve(), tags={"prefect.flow_run_id": str(runtime.flow_run.id)})


@stage(task_run_name="sweep-{name}")
def sweep(name: str, config: Config) -> None:
    spec = config.sweeps[name]
    sweep_component(name, spec, HERE.run(spec.entry), config.sampling_for(spec.entry), config.sample, config.seed,
                    HERE.reference, HERE.sweep(name), HERE.sweep_summary(name), cache_dir=HERE.cache,
                    evaluate_settings=config.evaluate)


@stage
def report(config: Config) -> None:
    report_component(list(config.families), HERE, HERE.report, list(config.sweeps))


@flow(name="genbench-pipeline", log_prints=True)
def pipeline(params: str = "params.yaml", profile: str | None = None) -> None:
    """prepare → the real-data floor → (train → sample → evaluate → register) per entry → sampling sweeps →
    report, in the current folder."""
    config = load_config(Path(params), profile)
    prepare(config)
    evaluate_real(config)
    for family in config.families:
        train(family, config)
        sample(family, config)
        evaluate(family, config)
        register(family)
    for name in config.sweeps:
        sweep(name, config)
    report(config)
