"""The Kubeflow pipeline run here under kfp.local (`genbench kfp local`) against `dvc repro` from the same params:
the same samples bit for bit, the same metrics, the same registered versions; an ldm trained in a second loop on
the first loop's vae; artifacts holding what their readers read and no more.

conftest.py starts the pipeline in the background at collection, in its own copy of the project, on FAMILIES and
an ldm (KFP_ENTRIES). Its files are KFP artifacts under .genbench/kfp, each laid out like a project
(flows/kubeflow_tasks.py), so a project path such as samples/vae/seed-0.npy is found in the task that wrote it
and again in each project `collect` built (the second loop's holds the first's). The dvc project changed a ddpm
setting after its first rounds: its samples and sweeps from before are in before/, and its ddpm metrics and first
registration live on in MLflow (version 1 and its run).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from genbench.components.register.promotion import TAG_DATA_MD5, TAG_EXTRACTOR_SHA, TAG_FID
from genbench.components.register.register import TAG_PARAMS_HASH
from genbench.components.register.registry import CHAMPION_ALIAS

from .conftest import FAMILIES, KFP_ENTRIES, driver_tmp

ARTIFACTS = Path(".genbench") / "kfp"
SECOND_LOOP = ("train-2", "fid-curve-2", "sample-2", "evaluate-2", "register-2", "collect-2")  # the ldm's
REPORT_INPUTS = {"runs", "samples", "metrics", "registry", "provenance"}  # what a collected project may hold


def _copies(root: Path, relative: str) -> list[Path]:
    """Every copy of project file `relative` among the pipeline's artifacts."""
    found = sorted((root / ARTIFACTS).glob(f"*/**/{relative}"))
    assert found, f"no artifact under {root / ARTIFACTS} holds {relative}"
    return found


def _client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_kfp_pipeline_runs_every_stage_to_the_report(kfp_project: tuple[Path, str]) -> None:
    root, output = kfp_project
    log = re.sub(r"\x1b\[[0-9;]*m", "", output)  # kfp.local colours task names
    for task in ("prepare", "evaluate-real", "train", "fid-curve", "sample", "evaluate", "register", "collect", "sweep",
                 "report", *SECOND_LOOP):
        assert f"Task '{task}' finished with status SUCCESS" in log, task
    # the second loop starts once the first has fanned in
    assert log.index("Task 'collect' finished with status SUCCESS") < log.index("Executing task 'train-2'")
    assert "Pipeline 'genbench-pipeline' finished with status SUCCESS" in log
    (page,) = _copies(root, "index")  # the pipeline's dsl.HTML output: the report's index.html
    (printed,) = re.findall(r"^results: (.+)$", log, re.MULTILINE)
    assert Path(printed).resolve() == page.resolve()
    assert page.read_bytes() == _copies(root, "results/index.html")[0].read_bytes()
    assert page.stat().st_size > 10000
    report = _copies(root, "results/results.md")[0].read_text()
    assert all(f"| {entry} | 0 |" in report for entry in KFP_ENTRIES) and "| real data (held-out images) |" in report
    # kfp's Python components write their source to `mktemp -d` folders and keep them: the run removes them
    assert not list(driver_tmp(root).glob("**/ephemeral_component.py"))


def test_kfp_trains_the_ldm_on_the_first_loops_vae(kfp_project: tuple[Path, str]) -> None:
    """The second loop's train read runs/vae from the first loop's collected project: the ldm's run records the
    frozen vae it was built on and holds that run's very weights, and the ldm went on to be sampled, scored and
    registered."""
    from safetensors.numpy import load_file

    root = kfp_project[0]
    (ldm_run,) = (root / ARTIFACTS).glob("*/for-loop-*/train-2/run/runs/ldm/seed-0")
    frozen = json.loads((ldm_run / "config.json").read_text())["frozen"]["vae"]
    assert (frozen["entry"], frozen["seed"]) == ("vae", 0)
    ldm = load_file(ldm_run / "model.safetensors")
    frozen_weights = {name.removeprefix("vae."): tensor for name, tensor in ldm.items()
                      if name.startswith("vae.")}  # the vae weights the ldm decodes with
    assert frozen_weights
    for path in _copies(root, "runs/vae/seed-0/model.safetensors"):
        vae = load_file(path)
        assert all((vae[name] == tensor).all() for name, tensor in frozen_weights.items()), path
    assert len(_copies(root, "samples/ldm/seed-0.npy")) == 2  # its sample task's and the second collect's
    kfp = _client(root)
    assert [str(version.version) for version in kfp.search_model_versions("name='genbench-ldm'")] == ["1"]
    assert str(kfp.get_model_version_by_alias("genbench-ldm", CHAMPION_ALIAS).version) == "1"


def test_kfp_artifacts_hold_what_their_readers_read(kfp_project: tuple[Path, str]) -> None:
    """No artifact holds a resume checkpoint; the EMA snapshots sit only in train's `snapshots` artifacts (for
    fid-curve); a collected project holds only report inputs."""
    root = kfp_project[0] / ARTIFACTS
    assert not list(root.rglob("checkpoint.pt"))
    # a run folder's snapshots: <task>/<artifact>/runs/ENTRY/seed-S/snapshots
    snapshots = sorted(path.relative_to(root).parts[-6:-4] for path in root.rglob("snapshots")
                       if path.parents[2].name == "runs")
    assert snapshots == [("train", "snapshots"), ("train", "snapshots"), ("train-2", "snapshots")]
    projects = sorted(root.glob("*/collect*/project"))
    assert len(projects) == 2
    for project in projects:
        assert {path.name for path in project.iterdir()} == REPORT_INPUTS, project


def test_kfp_samples_equal_dvc(kfp_project: tuple[Path, str], dvc_project: tuple[Path, str, str, str]) -> None:
    root, dvc_root = kfp_project[0], dvc_project[0]
    train = "data/prepared/train.npy"
    assert [path.read_bytes() for path in _copies(root, train)] == [(dvc_root / train).read_bytes()]
    # a sample set is in its sample task's artifact and in each collected project; a sweep's only in its own
    for name, copies in (("samples/vae/seed-0.npy", 3), ("samples/ddpm/seed-0.npy", 3),
                         ("sweeps/ddim_steps/sample_steps-2.npy", 1)):
        expected = (dvc_root / "before" / name).read_bytes()
        assert [path.read_bytes() for path in _copies(root, name)] == [expected] * copies, name


def test_kfp_metrics_equal_dvc(kfp_project: tuple[Path, str], dvc_project: tuple[Path, str, str, str]) -> None:
    root, dvc_root = kfp_project[0], dvc_project[0]
    for name in ("metrics/real.json", "metrics/vae/seed-0.json"):
        expected = json.loads((dvc_root / name).read_text())
        assert all(json.loads(path.read_text()) == expected for path in _copies(root, name)), name
    sweep = "sweeps/ddim_steps/sample_steps-2.metrics.json"
    assert json.loads(_copies(root, sweep)[0].read_text()) == json.loads((dvc_root / "before" / sweep).read_text())
    # ddpm: dvc's first ddpm run logged these metrics before the edit retrained it
    (ddpm,) = {path.read_text() for path in _copies(root, "metrics/ddpm/seed-0.json")}
    ddpm = json.loads(ddpm)
    first = _client(dvc_root).get_model_version("genbench-ddpm", "1")
    logged = _client(dvc_root).get_run(first.run_id).data.metrics
    numeric = {key: value for key, value in ddpm.items() if type(value) in (int, float)}
    assert numeric and {key: logged[key] for key in numeric} == numeric
    # what the KFP UI shows: the Metrics artifact's metadata holds the same values
    outputs = [json.loads(path.read_text()) for path in _copies(root, "executor_output.json")]
    shown = [artifact["metadata"] for output in outputs for name, listed in output.get("artifacts", {}).items()
             if name == "metrics" for artifact in listed["artifacts"]]
    assert any(metadata.get("fid") == ddpm["fid"] for metadata in shown)


def test_kfp_registers_the_versions_dvc_registers(kfp_project: tuple[Path, str],
                                                  dvc_project: tuple[Path, str, str, str]) -> None:
    root, dvc_root = kfp_project[0], dvc_project[0]
    kfp, dvc = _client(root), _client(dvc_root)
    for family in FAMILIES:
        name = f"genbench-{family}"
        assert [str(version.version) for version in kfp.search_model_versions(f"name='{name}'")] == ["1"]
        assert str(kfp.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == "1"
        ours, theirs = kfp.get_model_version(name, "1"), dvc.get_model_version(name, "1")
        for tag in (TAG_FID, TAG_DATA_MD5, TAG_EXTRACTOR_SHA, TAG_PARAMS_HASH):
            assert ours.tags[tag] == theirs.tags[tag], (family, tag)
        run = kfp.get_run(ours.run_id)
        assert run.data.tags["kfp.run_id"] and run.data.tags["genbench.seed"] == "0"
        # the version is the pyfunc model logged in that run (asked of this store's client: a models:/ URI would
        # resolve through the process's default store)
        assert ours.source.startswith("models:/m-")
        assert kfp.get_logged_model(ours.source.removeprefix("models:/")).source_run_id == ours.run_id
        (record,) = {path.read_text() for path in _copies(root, f"registry/{family}/seed-0.json")}
        record = json.loads(record)
        assert record["tracking_uri"] == f"sqlite:///{root.resolve() / 'mlflow.db'}"
        assert {key: record[key] for key in ("version", "champion_version", "promoted")} == \
            {"version": 1, "champion_version": 1, "promoted": True}
        assert record["fid"] == float(theirs.tags[TAG_FID])
    # vae was registered once by both drivers: the whole record matches but for the MLflow run and store
    dvc_record = json.loads((dvc_root / "registry/vae/seed-0.json").read_text())
    kfp_record = json.loads(_copies(root, "registry/vae/seed-0.json")[0].read_text())
    assert {k: v for k, v in kfp_record.items() if k not in ("run_id", "tracking_uri")} == \
        {k: v for k, v in dvc_record.items() if k not in ("run_id", "tracking_uri")}
