"""What a Kubeflow task does around its one component call: turn artifact folders into the project layout.

KFP gives each task its inputs as separate artifact folders and each output a folder of its own, while the
components read and write one project folder laid out by genbench/layout.py. So every artifact of the pipeline
is a folder laid out like a project root that holds only what its task wrote (a run at `runs/vae/seed-0/`,
samples at `samples/vae/seed-0.npy`), and each task runs its component in a scratch project made of links to its
input artifacts, with the same `Layout` paths as the Prefect flow, writing under `Layout(<output artifact>)`.
Artifacts hold what later tasks read and no more (`split_run`, `collect`), since a pipeline root keeps every run's.

These functions run inside the tasks (the genbench image, or kfp.local's subprocesses); nothing here imports kfp.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from genbench.components.common.run_logging import numeric_items
from genbench.layout import Layout

if TYPE_CHECKING:
    from genbench.config import Config


class Artifact(Protocol):
    """What a task needs of a KFP artifact: the local path of its file or folder."""

    path: str


@contextmanager
def workspace(params_yaml: str | None, *inputs: Artifact | None) -> Iterator[Layout]:
    """A scratch project as the working folder: `params_yaml` as params.yaml and a link to every file of the
    `inputs` (None: an absent optional input) at its project path. Relative paths in params (an ldm's
    `vae_run: runs/vae`) resolve there, as in a project folder. Removed afterwards, with anything a component
    cached there."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="genbench-task-") as scratch:
        root = Path(scratch)
        if params_yaml is not None:
            (root / "params.yaml").write_text(params_yaml)
        for artifact in inputs:
            if artifact is not None:
                _link_tree(Path(artifact.path), root)
        os.chdir(root)
        try:
            yield Layout()
        finally:
            os.chdir(previous)


def run_stage(name: str, params_yaml: str, profile: str, *inputs: Artifact | None,
              outputs: Mapping[str, Artifact], entry: str | None = None, seed: str | None = None,
              sweep: str | None = None, plan: tuple[Sequence[str], Sequence[int], Sequence[str]] | None = None,
              **extra: Any) -> Any:
    """Stage `name` (genbench/stages.py) for the instance `entry`/`seed` or `sweep` in a scratch project of
    `inputs`, each place named in `outputs` written into that output artifact. `plan` (prepare's) is the plan the
    pipeline was compiled for, checked before anything is written."""
    from genbench.config import load_config
    from genbench.stages import STAGES, At

    stage = STAGES[name]
    with workspace(params_yaml, *inputs) as here:
        config = load_config(here.params, profile or None)
        if plan is not None:
            check_plan(config, *plan)
        at = At(entry, int(seed)) if entry is not None and seed is not None else At()
        if sweep is not None:
            at = next(instance for instance in stage.instances(config) if instance.sweep == sweep)
        return stage.run(config, here, at, write={key: out(artifact) for key, artifact in outputs.items()}, **extra)


def use_tracking(uri: str) -> None:
    """Point MLflow at `uri` (components/register/tracking.py reads MLFLOW_TRACKING_URI). A task's folder is gone
    when it ends, so the embedded default store would lose every run: the pipeline must name a server or a lasting
    store."""
    if not uri.strip():
        raise ValueError("mlflow_tracking_uri is empty: pass the MLflow server the tasks register to "
                         "(genbench kfp submit --mlflow-uri URL)")
    os.environ["MLFLOW_TRACKING_URI"] = uri


def out(artifact: Artifact) -> Layout:
    """The project layout of an output artifact's folder."""
    return Layout(Path(artifact.path))


def split_run(run: Artifact, snapshots: Artifact, entry: str, seed: str) -> None:
    """Leave in the run artifact what sample, register, the sweeps and the report read (weights, config, summary,
    history and the train provenance): move the EMA snapshots, which fid-curve alone reads, to the `snapshots`
    artifact at the same project path (fid-curve's scratch project joins both into one run folder), and drop the
    resume checkpoint (train's persisted files), which no task reads: a retried task trains in a fresh folder."""
    from genbench.components.common.artifacts import SNAPSHOTS
    from genbench.stages import STAGES

    folder = out(run).run(entry, seed)
    for name in STAGES["train"].place("out").persist:
        (folder / name).unlink(missing_ok=True)
    target = out(snapshots).run(entry, seed) / SNAPSHOTS
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder / SNAPSHOTS, target)  # train always makes the folder, empty without a curve


def collect(parts: Iterable[Artifact | None], into: Artifact) -> None:
    """Copy what the report reads (its `in` places: runs, samples, metrics, registry records, provenance) of the
    project folders `parts` into one (`into`): KFP fans a loop's outputs in as lists of artifacts, and the report,
    the sweeps and the entries trained on other entries' runs (all of whose inputs are report inputs) each need one
    project. Anything else a part holds stays out."""
    from genbench.stages import STAGES, At

    places = [place.rule(Layout(), At()) for place in STAGES["report"].places if place.role == "in"]
    Path(into.path).mkdir(parents=True, exist_ok=True)
    for part in parts:
        if part is None:
            continue
        for relative in places:
            source, target = Path(part.path) / relative, Path(into.path) / relative
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)


def log_metrics(artifact: Any, record: Mapping[str, Any], prefix: str = "") -> None:
    """The record's numeric values as the metadata of a `dsl.Metrics` artifact, which the KFP UI shows."""
    for key, value in numeric_items(dict(record)).items():
        artifact.log_metric(f"{prefix}{key}", value)


def check_plan(config: Config, entries: Sequence[str], seeds: Sequence[int], sweeps: Sequence[str]) -> None:
    """The compiled pipeline has one task per entry, seed and sweep of the plan it was compiled from; params with
    another plan would leave the report without inputs, so they stop the run before anything is written."""
    compiled = {"entries": list(entries), "seeds": list(seeds), "sweeps": list(sweeps)}
    given = {"entries": list(config.entries), "seeds": list(config.seeds), "sweeps": list(config.sweeps)}
    differ = [f"{key}: {given[key]} (compiled for {compiled[key]})" for key in compiled if given[key] != compiled[key]]
    if differ:
        raise ValueError(f"params_yaml plans another pipeline: {'; '.join(differ)}. Compile the pipeline from these "
                         "params (`genbench kfp compile` / `genbench kfp submit` with them as params.yaml).")


def _link_tree(source: Path, root: Path) -> None:
    if source.is_file():
        raise ValueError(f"{source}: expected an artifact folder laid out like a project (flows/kubeflow_tasks.py)")
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = root / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
