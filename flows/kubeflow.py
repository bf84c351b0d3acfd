"""The Kubeflow Pipelines (v2) driver: prepare → the real-data floor → (train → fid-curve → sample → evaluate →
register) per entry and seed → sampling sweeps → report, the component calls of flows/pipeline.py as KFP tasks.

Files travel as KFP artifacts (`dsl.Dataset` for data, samples and sweep sets, `dsl.Model` for run folders,
`dsl.Metrics` for metrics files, `dsl.HTML` for the report's index.html), each a folder laid out like a project
(flows/kubeflow_tasks.py), holding what later tasks read and no more: a run without its resume checkpoint, its EMA
snapshots in an artifact of their own for fid-curve alone. Params travel as pipeline parameters: params.yaml (as one
line of YAML), the profile and the MLflow tracking URI. Each task is a lightweight Python component run in the
genbench image (which has genbench and kfp installed, so `install_kfp_package=False`); its body imports genbench and
makes the same component call as the Prefect task of the same name.

The plan (entries, seeds, sweeps) is fixed when the pipeline is compiled, as dvc.yaml iterates it as written: a
`dsl.ParallelFor` over the (entry, seed) pairs, fanned in with `dsl.Collected` into one project artifact that the
sweeps and the report read. Entries trained on other entries' runs (the ldm on runs/vae) run in a later loop
that gets that project. The loops run one iteration at a time, in the Prefect flow's order: `register` reads and
moves the `champion` alias, which two concurrent registrations of one entry would race on, and so each entry's
versions get the numbers and champion the other drivers give them.

Kubernetes, from `kubeflow:` in params (genbench/kubeflow_config.py), also fixed at compile time: each task's pod
requests its stage's resources (CPU, memory, accelerators, tolerations, node selector) and runs the image variant
that fits them (`cuda` when it requests accelerators, else `cpu`). The secret contract (SECRET_KEYS) reaches tasks
as optional environment variables (`use_secret_as_env`), by secret name, never as a parameter: the S3 keys reach
every task, since with a pipeline root on S3 whose launcher config reads credentials from the environment
(`fromEnv`) every task's launcher moves its artifacts with them, and MLflow's reach register, the one task that
talks to MLflow. Both are optional: an MLflow server without auth needs no secret, one that proxies artifacts
(infra/'s does) no S3 keys. The compiled pipeline needs a KFP backend of at least MIN_BACKEND (flows/kfp_client.py).
kfp.local (`run_local`) ignores images, resources and secrets and runs every task as a subprocess of this Python.
"""

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

import yaml
from kfp import compiler, dsl, kubernetes

from genbench.components.common.environment import environment
from genbench.components.common.io import atomic_path
from genbench.config import Config, load_config
from genbench.kubeflow_config import SECRET_KEYS, KubeflowConfig, Resources
from genbench.models import REGISTRY

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
          run: dsl.Output[dsl.Model], snapshots: dsl.Output[dsl.Artifact], trained: dsl.Input[dsl.Artifact] = None):
    """runs/ENTRY/seed-SEED: its weights, config, summary and history in `run`, its EMA snapshots in `snapshots`
    (`split_run`); `trained` holds the runs an entry is built on (the ldm's vae)."""
    from genbench.flows.kubeflow_tasks import run_stage, split_run

    run_stage("train", params_yaml, profile, data, trained, outputs={"out": run}, entry=entry, seed=seed)
    split_run(run, snapshots, entry, seed)


def fid_curve(params_yaml: str, profile: str, entry: str, seed: str, run: dsl.Input[dsl.Model],
              snapshots: dsl.Input[dsl.Artifact], data: dsl.Input[dsl.Dataset], cache: dsl.Input[dsl.Artifact],
              curve: dsl.Output[dsl.Metrics]):
    """metrics/ENTRY/seed-SEED.curve.json: FID of the run's snapshots."""
    from genbench.flows.kubeflow_tasks import run_stage

    run_stage("fid-curve", params_yaml, profile, run, snapshots, data, cache, outputs={"out": curve}, entry=entry,
              seed=seed)


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
    """One project of what the report and the sweeps read of a loop's runs, samples, metrics, FID curves and
    registry records (and the `previous` loops')."""
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
# Whose `kubeflow.resources` entry each task runs with: its stage's; collect, no stage of its own, gathers the
# report's inputs and runs with the report's.
RESOURCES_OF = {task.__name__: "report" if task is collect else task.__name__.replace("_", "-") for task in TASKS}


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


def place(task: dsl.PipelineTask, resources: Resources) -> None:
    """What the task's pod requests and where it may run. Memory is also the limit, so a pod that outgrows it is
    stopped rather than starving its node; CPU has no limit, so a pod may use a node's idle cores."""
    task.set_cpu_request(resources.cpu).set_memory_request(resources.memory).set_memory_limit(resources.memory)
    if resources.gpu:
        task.set_accelerator_type(resources.accelerator).set_accelerator_limit(resources.gpu)
    for toleration in resources.tolerations:
        kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator, value=toleration.value,
                                  effect=toleration.effect)
    for key, value in resources.node_selector.items():
        kubernetes.add_node_selector(task, key, value)


def use_secrets(task: dsl.PipelineTask, cluster: KubeflowConfig, kinds: tuple[str, ...]) -> None:
    """The secret contract's keys of the secrets `kinds` as the task's environment variables of the same names,
    each optional (a key or secret a deployment does not need may be absent)."""
    for kind in kinds:
        kubernetes.use_secret_as_env(task, secret_name=getattr(cluster.secrets, kind),
                                     secret_key_to_env={key: key for key in SECRET_KEYS[kind]}, optional=True)


def build(params: Path, profile: str | None) -> Any:
    """The pipeline for the plan in `params`, whose text (`params_text`) and active profile (`profile`, else
    plan.yaml's) are the defaults of the pipeline's parameters `params_yaml` and `profile`: a task's scratch project
    holds params.yaml alone. Images, resources and secret names come from its `kubeflow:` section."""
    config = load_config(params, profile)
    plan, text, cluster = Plan.of(config), params_text(params), config.kubeflow
    ops = {task.__name__: dsl.component(task, base_image=cluster.image_for(RESOURCES_OF[task.__name__]),
                                        install_kfp_package=False) for task in TASKS}

    def step(name: str, /, **arguments: Any) -> dsl.PipelineTask:
        """Task `name` with its stage's resources and the secrets it needs."""
        task = ops[name](**arguments)
        place(task, cluster.resources[RESOURCES_OF[name]])
        use_secrets(task, cluster, ("s3", "mlflow") if name == "register" else ("s3",))
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description="genbench: train, sample, evaluate and register each entry and "
                                                  "seed of the plan, then the report.")
    def pipeline(mlflow_tracking_uri: str, params_yaml: str = text, profile: str = config.profile) -> dsl.HTML:
        params = {"params_yaml": params_yaml, "profile": profile}
        data = step("prepare", **params, entries=list(plan.entries), seeds=list(plan.seeds),
                   sweeps=list(plan.sweeps)).outputs["data"]
        floor = step("evaluate_real", **params, data=data)
        real, cache = floor.outputs["metrics"], floor.outputs["cache"]
        trained = None
        for pairs in plan.loops:
            with dsl.ParallelFor([{"entry": name, "seed": str(seed)} for name, seed in pairs], parallelism=1) as item:
                built_on = {"trained": trained} if trained is not None else {}
                instance = {**params, "entry": item.entry, "seed": item.seed}
                train_task = step("train", **instance, data=data, **built_on)
                trained_run = train_task.outputs["run"]
                curve_task = step("fid_curve", **instance, run=trained_run, snapshots=train_task.outputs["snapshots"],
                                 data=data, cache=cache)
                sample_task = step("sample", **instance, run=trained_run)
                evaluate_task = step("evaluate", **instance, samples=sample_task.outputs["samples"], data=data,
                                    cache=cache)
                register_task = step("register", **instance, mlflow_tracking_uri=mlflow_tracking_uri,
                                    kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, run=trained_run,
                                    samples=sample_task.outputs["samples"], metrics=evaluate_task.outputs["metrics"],
                                    curve=curve_task.outputs["curve"], data=data)
                register_task.set_caching_options(False)  # it writes to MLflow: never skip it as done
            previous = {"previous": trained} if trained is not None else {}
            trained = step("collect", runs=dsl.Collected(trained_run),
                          samples=dsl.Collected(sample_task.outputs["samples"]),
                          metrics=dsl.Collected(evaluate_task.outputs["metrics"]),
                          curves=dsl.Collected(curve_task.outputs["curve"]),
                          records=dsl.Collected(register_task.outputs["record"]), **previous).outputs["project"]
        swept = {}
        if plan.sweeps:
            with dsl.ParallelFor(list(plan.sweeps)) as name:
                sweep_task = step("sweep", **params, name=name, data=data, cache=cache, trained=trained)
            swept = {"sweeps": dsl.Collected(sweep_task.outputs["summary"])}
        return step("report", **params, data=data, real=real, trained=trained, **swept).outputs["index"]

    return pipeline


def compile_pipeline(params: Path, profile: str | None, out: Path) -> None:
    """The pipeline of `params` as KFP's IR YAML at `out` (no cluster needed)."""
    pipeline = build(params, profile)
    with tempfile.TemporaryDirectory() as scratch, atomic_path(out) as tmp:
        compiled = Path(scratch) / "pipeline.yaml"  # the compiler picks the format by the suffix
        compiler.Compiler().compile(pipeline, str(compiled))
        tmp.write_bytes(compiled.read_bytes())


def submit(host: str, params: Path, profile: str | None, mlflow_tracking_uri: str, token: str, namespace: str,
           experiment: str = "genbench") -> tuple[str, str]:
    """Start a run of the pipeline of `params` in KFP profile namespace `namespace` on the KFP endpoint `host`,
    authenticated by `token` (flows/kfp_client.py), after checking the backend's version; returns (run id, backend
    version)."""
    from genbench.flows.kfp_client import connect, refused_token

    pipeline = build(params, profile)  # bad params stop here, before any request
    with refused_token(host):
        client, version = connect(host, token, namespace)
        result = client.create_run_from_pipeline_func(
            pipeline, arguments={"mlflow_tracking_uri": mlflow_tracking_uri}, experiment_name=experiment,
            namespace=namespace)
    return result.run_id, version


def run_local(root: Path, params: Path, profile: str | None, mlflow_tracking_uri: str) -> Path:
    """Run the pipeline of `params` here with kfp.local: every task a subprocess of this Python (the same
    environment, no container), artifacts under `root`/.genbench/kfp. Returns the report's index.html."""
    from kfp import local

    pipeline = build(params, profile)
    outputs = root / ".genbench" / "kfp"
    # With use_venv=False a task runs on this Python, whatever its image and resources; kfp warns about both for
    # every task.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom or non-Python",
                            category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="Task '.*': settings .* have no effect in the current local runner",
                            category=UserWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(outputs),
               workspace_root=str(outputs / "workspace"))
    # A Python component writes its source to a `mktemp -d` folder it never removes (a pod's disk goes with the pod;
    # here they would pile up in /tmp): the tasks get a temporary folder of their own, removed after the run.
    with tempfile.TemporaryDirectory(prefix="genbench-kfp-local-") as scratch, environment("TMPDIR", scratch):
        return Path(pipeline(mlflow_tracking_uri=mlflow_tracking_uri).output.path)
