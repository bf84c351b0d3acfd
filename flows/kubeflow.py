"""The Kubeflow Pipelines (v2) driver: prepare → the real-data floor → (train → fid-curve → sample → evaluate →
register) per entry and seed → sampling sweeps → report, the component calls of flows/pipeline.py as KFP tasks.

Files travel as KFP artifacts (`dsl.Dataset` for data, samples and sweep sets, `dsl.Model` for run folders,
`dsl.Metrics` for metrics files, `dsl.HTML` for the report's index.html), each a folder laid out like a project
(flows/kubeflow_tasks.py); params travel as pipeline parameters: params.yaml (as one line of YAML), the profile,
the MLflow tracking URI and the names of the Kubernetes secrets. Each task is a lightweight Python component run in the
genbench image (`IMAGE`, which has genbench and kfp installed, so `install_kfp_package=False`); its body imports
genbench and makes the same component call as the Prefect task of the same name.

The plan (entries, seeds, sweeps) is fixed when the pipeline is compiled, as dvc.yaml iterates it as written: a
`dsl.ParallelFor` over the (entry, seed) pairs, fanned in with `dsl.Collected` into one project artifact that the
sweeps and the report read. Entries trained on other entries' runs (the ldm on runs/vae) run in a later loop
that gets that project. The loops run one iteration at a time, in the Prefect flow's order: `register` reads and
moves the `champion` alias, which two concurrent registrations of one entry would race on, and so each entry's
versions get the numbers and champion the other drivers give them.

Kubernetes: train, sample and sweep request `gpus` accelerators of type `GPU`; register gets the MLflow and S3
credentials from the secrets named by the `mlflow_secret` and `s3_secret` parameters (`use_secret_as_env`; keys
in `SECRET_KEYS`). Both are optional: an MLflow server without auth needs no secret, and one that proxies
artifacts (infra/'s does) no S3 keys. No credential is a parameter. kfp.local (`run_local`) ignores both and runs every task as a
subprocess of this Python.
"""

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

import yaml
from kfp import compiler, dsl, kubernetes

from genbench.components.common.io import atomic_path
from genbench.config import Config, load_config
from genbench.models import REGISTRY

IMAGE = "ghcr.io/genbench/genbench:latest"  # built by infra/genbench.Dockerfile; `--image` overrides it
GPU = "nvidia.com/gpu"
MLFLOW_SECRET = "genbench-mlflow"  # default of the `mlflow_secret` parameter
S3_SECRET = "genbench-s3"  # default of the `s3_secret` parameter
# secret → {key in the secret: environment variable register sees}; the S3 keys reach MLflow's artifact store
SECRET_KEYS = {
    "mlflow": {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
    "s3": {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"},
}
PIPELINE_NAME = "genbench-pipeline"


# The tasks. KFP ships each function's source to the task, so each imports what it uses inside its body. Each runs
# one stage declaration (genbench/stages.py) through `run_stage`; its signature only says which artifacts the stage
# reads, and which of the stage's places (`outputs`) go to which output artifact.

def prepare(params_yaml: str, profile: str, entries: List[str], seeds: List[int], sweeps: List[str],
            data: dsl.Output[dsl.Dataset]):
    """data/prepared: train, validation, reference and holdout images with their manifest."""
    from genbench.flows.kubeflow_tasks import run_stage

    run_stage("prepare", params_yaml, profile, outputs={"out": data}, plan=(entries, seeds, sweeps))


def evaluate_real(params_yaml: str, profile: str, data: dsl.Input[dsl.Dataset], metrics: dsl.Output[dsl.Metrics],
                  cache: dsl.Output[dsl.Artifact]):
    """metrics/real.json: the held-out real images scored like samples, the report's floor; and the reference
    set's features (.genbench/cache), which every later evaluation reads instead of computing them again."""
    from genbench.flows.kubeflow_tasks import log_metrics, run_stage

    log_metrics(metrics, run_stage("evaluate-real", params_yaml, profile, data, outputs={"out": metrics,
                                                                                          "cache": cache}))


def train(params_yaml: str, profile: str, entry: str, seed: str, data: dsl.Input[dsl.Dataset],
          run: dsl.Output[dsl.Model], trained: dsl.Input[dsl.Artifact] = None):
    """runs/ENTRY/seed-SEED; `trained` holds the runs an entry is built on (the ldm's vae)."""
    from genbench.flows.kubeflow_tasks import run_stage

    run_stage("train", params_yaml, profile, data, trained, outputs={"out": run}, entry=entry, seed=seed)


def fid_curve(params_yaml: str, profile: str, entry: str, seed: str, run: dsl.Input[dsl.Model],
              data: dsl.Input[dsl.Dataset], cache: dsl.Input[dsl.Artifact], curve: dsl.Output[dsl.Metrics]):
    """metrics/ENTRY/seed-SEED.curve.json: FID of the run's snapshots."""
    from genbench.flows.kubeflow_tasks import run_stage

    run_stage("fid-curve", params_yaml, profile, run, data, cache, outputs={"out": curve}, entry=entry, seed=seed)


def sample(params_yaml: str, profile: str, entry: str, seed: str, run: dsl.Input[dsl.Model],
           samples: dsl.Output[dsl.Dataset]):
    """samples/ENTRY/seed-SEED.npy and its record."""
    from genbench.flows.kubeflow_tasks import run_stage

    run_stage("sample", params_yaml, profile, run, outputs={"out": samples}, entry=entry, seed=seed)


def evaluate(params_yaml: str, profile: str, entry: str, seed: str, samples: dsl.Input[dsl.Dataset],
             data: dsl.Input[dsl.Dataset], cache: dsl.Input[dsl.Artifact], metrics: dsl.Output[dsl.Metrics]):
    """metrics/ENTRY/seed-SEED.json."""
    from genbench.flows.kubeflow_tasks import log_metrics, run_stage

    log_metrics(metrics, run_stage("evaluate", params_yaml, profile, samples, data, cache, outputs={"out": metrics},
                                   entry=entry, seed=seed))


def register(params_yaml: str, profile: str, entry: str, seed: str, mlflow_tracking_uri: str, kfp_run_id: str,
             run: dsl.Input[dsl.Model], samples: dsl.Input[dsl.Dataset], metrics: dsl.Input[dsl.Metrics],
             curve: dsl.Input[dsl.Metrics], data: dsl.Input[dsl.Dataset], record: dsl.Output[dsl.Artifact]):
    """An MLflow run and version of genbench-ENTRY (champion if its FID is lower), registry/ENTRY/seed-SEED.json."""
    from genbench.flows.kubeflow_tasks import run_stage, use_tracking

    use_tracking(mlflow_tracking_uri)
    run_stage("register", params_yaml, profile, run, samples, metrics, curve, data, outputs={"out": record},
              entry=entry, seed=seed, tags={"kfp.run_id": kfp_run_id})


def collect(runs: dsl.Input[List[dsl.Model]], samples: dsl.Input[List[dsl.Dataset]],
            metrics: dsl.Input[List[dsl.Metrics]], curves: dsl.Input[List[dsl.Metrics]],
            records: dsl.Input[List[dsl.Artifact]], project: dsl.Output[dsl.Artifact],
            previous: dsl.Input[dsl.Artifact] = None):
    """One project of a loop's runs, samples, metrics, FID curves and registry records (and the `previous`
    loops')."""
    from genbench.flows.kubeflow_tasks import collect as run_collect

    run_collect([previous, *runs, *samples, *metrics, *curves, *records], project)


def sweep(params_yaml: str, profile: str, name: str, data: dsl.Input[dsl.Dataset], cache: dsl.Input[dsl.Artifact],
          trained: dsl.Input[dsl.Artifact], sets: dsl.Output[dsl.Dataset], summary: dsl.Output[dsl.Metrics]):
    """sweeps/NAME (a sample set and metrics per value) and metrics/sweeps/NAME.json, from the first seed's run."""
    from genbench.flows.kubeflow_tasks import log_metrics, run_stage

    record = run_stage("sweep", params_yaml, profile, data, cache, trained, outputs={"sets": sets, "out": summary},
                       sweep=name)
    for row in record.rows:
        log_metrics(summary, row.model_dump(), prefix=f"{record.vary}={row.value}/")


def report(params_yaml: str, profile: str, data: dsl.Input[dsl.Dataset], real: dsl.Input[dsl.Metrics],
           trained: dsl.Input[dsl.Artifact], results: dsl.Output[dsl.Artifact], index: dsl.Output[dsl.HTML],
           sweeps: dsl.Input[List[dsl.Metrics]] = None):
    """results/ (tables, figures) and its index.html as the pipeline's HTML output."""
    import shutil

    from genbench.flows.kubeflow_tasks import run_stage

    page = run_stage("report", params_yaml, profile, data, real, trained, *(sweeps or []), outputs={"out": results})
    shutil.copyfile(page, index.path)


TASKS = (prepare, evaluate_real, train, fid_curve, sample, evaluate, register, collect, sweep, report)


@dataclass(frozen=True)
class Plan:
    """What the compiled pipeline runs: (entry, seed) pairs in the flow's order, split into loops so that an
    entry built on other entries' runs comes after them, and the sweeps."""

    entries: tuple[str, ...]
    seeds: tuple[int, ...]
    loops: tuple[tuple[tuple[str, int], ...], ...]
    sweeps: tuple[str, ...]

    @classmethod
    def of(cls, config: Config) -> "Plan":
        depth: dict[str, int] = {}
        for name in config.entries:
            settings = config.entry(name)
            runs = [Path(getattr(settings.arch, f"{argument}_run")) for argument in REGISTRY[settings.family].frozen]
            built_on = [entry for entry in depth if any(run.parts[:2] == ("runs", entry) for run in runs)]
            depth[name] = 1 + max((depth[entry] for entry in built_on), default=-1)
        loops = tuple(tuple((name, seed) for name in config.entries if depth[name] == level for seed in config.seeds)
                      for level in range(max(depth.values()) + 1))
        return cls(tuple(config.entries), tuple(config.seeds), loops, tuple(config.sweeps))


def params_text(params: Path) -> str:
    """params.yaml as one line of flow-style YAML, the same mapping without the comments: the KFP compiler copies
    every default into the IR file's header comment, where a line break would end the comment and break the YAML."""
    raw = yaml.load(Path(params).read_text(), Loader=yaml.CSafeLoader)
    text = yaml.safe_dump(raw, default_flow_style=True, sort_keys=False, width=float("inf")).strip()
    if "\n" in text or yaml.load(text, Loader=yaml.CSafeLoader) != raw:
        raise ValueError(f"{params}: a value spans several lines; the pipeline's params_yaml parameter must fit one")
    return text


def build(params: Path, profile: str | None, image: str = IMAGE, gpus: int = 1) -> Any:
    """The pipeline for the plan in `params`, whose text (`params_text`) and active profile (`profile`, else
    plan.yaml's) are the defaults of the pipeline's parameters `params_yaml` and `profile`: a task's scratch project
    holds params.yaml alone."""
    config = load_config(params, profile)
    plan, text = Plan.of(config), params_text(params)
    ops = {task.__name__: dsl.component(task, base_image=image, install_kfp_package=False) for task in TASKS}

    def on_gpu(task: dsl.PipelineTask) -> None:
        if gpus:
            task.set_accelerator_type(GPU).set_accelerator_limit(gpus)

    @dsl.pipeline(name=PIPELINE_NAME, description="genbench: train, sample, evaluate and register each entry and "
                                                  "seed of the plan, then the report.")
    def pipeline(mlflow_tracking_uri: str, params_yaml: str = text, profile: str = config.profile,
                 mlflow_secret: str = MLFLOW_SECRET, s3_secret: str = S3_SECRET) -> dsl.HTML:
        params = {"params_yaml": params_yaml, "profile": profile}
        data = ops["prepare"](**params, entries=list(plan.entries), seeds=list(plan.seeds),
                              sweeps=list(plan.sweeps)).outputs["data"]
        floor = ops["evaluate_real"](**params, data=data)
        real, cache = floor.outputs["metrics"], floor.outputs["cache"]
        trained = None
        for pairs in plan.loops:
            with dsl.ParallelFor([{"entry": name, "seed": str(seed)} for name, seed in pairs], parallelism=1) as item:
                built_on = {"trained": trained} if trained is not None else {}
                train_task = ops["train"](**params, entry=item.entry, seed=item.seed, data=data, **built_on)
                run = train_task.outputs["run"]
                curve_task = ops["fid_curve"](**params, entry=item.entry, seed=item.seed, run=run, data=data,
                                              cache=cache)
                sample_task = ops["sample"](**params, entry=item.entry, seed=item.seed, run=run)
                evaluate_task = ops["evaluate"](**params, entry=item.entry, seed=item.seed,
                                                samples=sample_task.outputs["samples"], data=data, cache=cache)
                register_task = ops["register"](**params, entry=item.entry, seed=item.seed,
                                                mlflow_tracking_uri=mlflow_tracking_uri,
                                                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, run=run,
                                                samples=sample_task.outputs["samples"],
                                                metrics=evaluate_task.outputs["metrics"],
                                                curve=curve_task.outputs["curve"], data=data)
                on_gpu(train_task)
                on_gpu(sample_task)
                register_task.set_caching_options(False)  # it writes to MLflow: never skip it as done
                for kind, secret_name in (("mlflow", mlflow_secret), ("s3", s3_secret)):
                    kubernetes.use_secret_as_env(register_task, secret_name=secret_name,
                                                 secret_key_to_env=SECRET_KEYS[kind], optional=True)
            previous = {"previous": trained} if trained is not None else {}
            trained = ops["collect"](runs=dsl.Collected(run), samples=dsl.Collected(sample_task.outputs["samples"]),
                                     metrics=dsl.Collected(evaluate_task.outputs["metrics"]),
                                     curves=dsl.Collected(curve_task.outputs["curve"]),
                                     records=dsl.Collected(register_task.outputs["record"]),
                                     **previous).outputs["project"]
        swept = {}
        if plan.sweeps:
            with dsl.ParallelFor(list(plan.sweeps)) as name:
                sweep_task = ops["sweep"](**params, name=name, data=data, cache=cache, trained=trained)
                on_gpu(sweep_task)
            swept = {"sweeps": dsl.Collected(sweep_task.outputs["summary"])}
        return ops["report"](**params, data=data, real=real, trained=trained, **swept).outputs["index"]

    return pipeline


def compile_pipeline(params: Path, profile: str | None, out: Path, image: str = IMAGE, gpus: int = 1) -> None:
    """The pipeline of `params` as KFP's IR YAML at `out` (no cluster needed)."""
    pipeline = build(params, profile, image, gpus)
    with tempfile.TemporaryDirectory() as scratch, atomic_path(out) as tmp:
        compiled = Path(scratch) / "pipeline.yaml"  # the compiler picks the format by the suffix
        compiler.Compiler().compile(pipeline, str(compiled))
        tmp.write_bytes(compiled.read_bytes())


def submit(host: str, params: Path, profile: str | None, mlflow_tracking_uri: str, image: str = IMAGE,
           gpus: int = 1, experiment: str = "genbench") -> str:
    """Start a run of the pipeline of `params` on the KFP endpoint `host`; returns the run id."""
    from kfp import Client

    pipeline = build(params, profile, image, gpus)
    result = Client(host=host).create_run_from_pipeline_func(
        pipeline, arguments={"mlflow_tracking_uri": mlflow_tracking_uri}, experiment_name=experiment)
    return result.run_id


def run_local(root: Path, params: Path, profile: str | None, mlflow_tracking_uri: str) -> Path:
    """Run the pipeline of `params` here with kfp.local: every task a subprocess of this Python (the same
    environment, no container), artifacts under `root`/.genbench/kfp. Returns the report's index.html."""
    from kfp import local

    pipeline = build(params, profile)
    outputs = root / ".genbench" / "kfp"
    # With use_venv=False a task runs on this Python, whatever its image; kfp warns about the image every task.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom or non-Python",
                            category=RuntimeWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(outputs),
               workspace_root=str(outputs / "workspace"))
    return Path(pipeline(mlflow_tracking_uri=mlflow_tracking_uri).output.path)
