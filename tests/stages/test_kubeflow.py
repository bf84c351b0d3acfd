"""`genbench kfp compile` / `submit`: the IR YAML holds one component per stage, passes files as typed artifacts,
asks for GPUs and secrets where it should, and compiling needs neither a cluster nor the network."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from genbench.cli import app

from ..conftest import use_tiny

# What the compiled pipeline must hold by default, written here rather than read from flows/kubeflow.py
IMAGE = "ghcr.io/genbench/genbench:latest"
GPU = "nvidia.com/gpu"
MLFLOW_SECRET, S3_SECRET = "genbench-mlflow", "genbench-s3"
STAGES = ("prepare", "evaluate-real", "train", "fid-curve", "sample", "evaluate", "register", "collect", "sweep",
          "report")
# component → {input or output artifact: its schema title}
ARTIFACTS = {
    "prepare": {"outputs": {"data": "system.Dataset"}},
    "evaluate-real": {"inputs": {"data": "system.Dataset"},
                      "outputs": {"metrics": "system.Metrics", "cache": "system.Artifact"}},
    "train": {"inputs": {"data": "system.Dataset", "trained": "system.Artifact"}, "outputs": {"run": "system.Model"}},
    "fid-curve": {"inputs": {"run": "system.Model", "data": "system.Dataset", "cache": "system.Artifact"},
                  "outputs": {"curve": "system.Metrics"}},
    "sample": {"inputs": {"run": "system.Model"}, "outputs": {"samples": "system.Dataset"}},
    "evaluate": {"inputs": {"samples": "system.Dataset", "data": "system.Dataset", "cache": "system.Artifact"},
                 "outputs": {"metrics": "system.Metrics"}},
    "register": {"inputs": {"run": "system.Model", "samples": "system.Dataset", "metrics": "system.Metrics",
                              "curve": "system.Metrics", "data": "system.Dataset"},
                 "outputs": {"record": "system.Artifact"}},
    "collect": {"inputs": {"runs": "system.Model", "samples": "system.Dataset", "metrics": "system.Metrics",
                           "curves": "system.Metrics", "records": "system.Artifact", "previous": "system.Artifact"},
                "outputs": {"project": "system.Artifact"}},
    "sweep": {"inputs": {"data": "system.Dataset", "cache": "system.Artifact", "trained": "system.Artifact"},
              "outputs": {"sets": "system.Dataset", "summary": "system.Metrics"}},
    "report": {"inputs": {"data": "system.Dataset", "real": "system.Metrics", "trained": "system.Artifact",
                          "sweeps": "system.Metrics"},
               "outputs": {"results": "system.Artifact", "index": "system.HTML"}},
}


def _compile(project: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`genbench kfp compile` in `project` with the network refused: (pipeline spec, platform spec)."""
    out = project / "pipeline.yaml"
    with pytest.MonkeyPatch.context() as patch:
        def refuse(*_: object, **__: object) -> None:
            raise AssertionError("compiling the pipeline opened a network socket")

        patch.setattr(socket, "socket", refuse)
        patch.setattr(socket, "create_connection", refuse)
        result = CliRunner().invoke(app, ["kfp", "compile", str(out), *args])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(out.read_text()))
    return documents[0], (documents[1] if len(documents) > 1 else {})


def _loops(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The root DAG's ParallelFor tasks, in pipeline order."""
    tasks = spec["root"]["dag"]["tasks"]
    return [task for name, task in sorted(tasks.items()) if "iteratorPolicy" in task or "parameterIterator" in task]


def test_compile_has_a_component_per_stage_and_typed_artifacts(project: Path) -> None:
    spec, platform = _compile(project)
    components = spec["components"]
    assert {name.removeprefix("comp-") for name in components if not name.startswith("comp-for-loop")} == set(STAGES)
    for stage, sides in ARTIFACTS.items():
        definitions = components[f"comp-{stage}"]
        for side, expected in sides.items():
            declared = definitions[f"{side[:-1]}Definitions"]["artifacts"]
            titles = {name: artifact["artifactType"]["schemaTitle"] for name, artifact in declared.items()}
            assert titles == expected, (stage, side, titles)
    for executor in spec["deploymentSpec"]["executors"].values():
        assert executor["container"]["image"] == IMAGE
        assert "pip install" not in " ".join(executor["container"]["command"])  # install_kfp_package=False
    # the loop runs train → fid-curve → sample → evaluate → register once per (entry, seed) of the plan, one at a time
    (loop,), (sweeps,) = [task for task in _loops(spec) if "collect" not in task.get("dependentTasks", [])], \
        [task for task in _loops(spec) if "collect" in task.get("dependentTasks", [])]
    items = yaml.load(loop["parameterIterator"]["items"]["raw"], Loader=yaml.CSafeLoader)
    assert items == [{"entry": entry, "seed": "0"} for entry in ("vae", "dcgan", "ddpm")]
    assert loop["iteratorPolicy"]["parallelismLimit"] == 1
    body = components[loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"train", "fid-curve", "sample", "evaluate", "register"}
    assert body["register"]["dependentTasks"] == ["evaluate", "fid-curve", "sample", "train"]
    assert yaml.load(sweeps["parameterIterator"]["items"]["raw"], Loader=yaml.CSafeLoader) == ["ddim_steps"]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    # the params as one line (the compiler's header comment would break on a line break), the same mapping
    default = parameters["params_yaml"]["defaultValue"]
    params = yaml.load((project / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    assert "\n" not in default and yaml.load(default, Loader=yaml.CSafeLoader) == params
    assert parameters["profile"]["defaultValue"] == "tiny"  # the active profile: tasks have no plan.yaml
    assert "defaultValue" not in parameters["mlflow_tracking_uri"]  # the cluster's MLflow must be named
    assert spec["root"]["outputDefinitions"]["artifacts"]["Output"]["artifactType"]["schemaTitle"] == "system.HTML"
    # GPUs on the tasks that run the networks; the secrets, by name, on register only
    resources = {name.removeprefix("exec-"): executor["container"].get("resources", {})
                 for name, executor in spec["deploymentSpec"]["executors"].items()}
    for stage in ("train", "sample", "sweep"):
        assert resources[stage]["accelerator"]["resourceType"] == GPU, resources[stage]
        assert resources[stage]["accelerator"]["resourceCount"] == "1"
    assert not resources["evaluate"] and not resources["register"] and not resources["fid-curve"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(kubernetes) == {"exec-register"}
    secrets = kubernetes["exec-register"]["secretAsEnv"]
    envs = {item["envVar"] for secret in secrets for item in secret["keyToEnv"]}
    assert all(secret["optional"] for secret in secrets)  # a server without auth or with proxied artifacts
    assert {secret["secretNameParameter"]["componentInputParameter"] for secret in secrets} == \
        {"pipelinechannel--mlflow_secret", "pipelinechannel--s3_secret"}  # names are pipeline parameters
    assert envs == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert parameters["mlflow_secret"]["defaultValue"] == MLFLOW_SECRET
    assert parameters["s3_secret"]["defaultValue"] == S3_SECRET


def test_compile_trains_an_entry_after_the_runs_it_is_built_on(project: Path) -> None:
    """ldm diffuses in runs/vae: it gets a loop of its own, whose train reads the first loop's collected runs."""
    use_tiny(project, entries=["vae", "ldm"], sweeps={})
    spec, _ = _compile(project, "--gpus", "0", "--image", "registry.local/genbench:test")
    loops = _loops(spec)
    entries = [[item["entry"] for item in yaml.load(task["parameterIterator"]["items"]["raw"], Loader=yaml.CSafeLoader)]
               for task in loops]
    assert entries == [["vae"], ["ldm"]]
    second = spec["components"][loops[1]["componentRef"]["name"]]["dag"]["tasks"]
    train = next(task for name, task in second.items() if name.startswith("train"))
    source = train["inputs"]["artifacts"]["trained"]["componentInputArtifact"]
    assert source.startswith("pipelinechannel--collect")
    executors = spec["deploymentSpec"]["executors"].values()
    assert {executor["container"]["image"] for executor in executors} == {"registry.local/genbench:test"}
    assert not any("resources" in executor["container"] for executor in executors)


def test_submit_without_kfp_host_exits_2(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    before = sorted(project.rglob("*"))
    result = CliRunner().invoke(app, ["kfp", "submit", "--mlflow-uri", "http://mlflow:5000"])
    assert result.exit_code == 2
    assert "KFP_HOST is not set" in result.output
    assert sorted(project.rglob("*")) == before


def test_submit_sends_the_pipeline_to_kfp_host(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What reaches kfp.Client: the host from KFP_HOST, the compiled pipeline, the MLflow URI as its argument."""
    import kfp

    calls = []

    class Client:
        def __init__(self, host: str) -> None:
            self.host = host

        def create_run_from_pipeline_func(self, pipeline: Any, arguments: dict[str, str],
                                          experiment_name: str) -> Any:
            calls.append((self.host, pipeline.name, arguments, experiment_name))
            return type("Run", (), {"run_id": "run-1"})()

    monkeypatch.setattr(kfp, "Client", Client)
    monkeypatch.setenv("KFP_HOST", "http://kfp.example:8080")
    result = CliRunner().invoke(app, ["kfp", "submit"])
    assert result.exit_code == 2 and "--mlflow-uri is required" in result.output
    assert calls == []
    result = CliRunner().invoke(app, ["kfp", "submit", "--mlflow-uri", "http://mlflow:5000"])
    assert result.exit_code == 0, result.output
    assert calls == [("http://kfp.example:8080", "genbench-pipeline", {"mlflow_tracking_uri": "http://mlflow:5000"},
                      "genbench")]
    assert "started run run-1" in result.output


@pytest.mark.parametrize("command", [["kfp", "compile", "pipeline.yaml"], ["kfp", "local"]])
def test_kfp_commands_exit_2_on_bad_params_and_write_nothing(project: Path, command: list[str]) -> None:
    use_tiny(project, seeds=[0, 0])
    before = sorted(project.rglob("*"))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "seeds: needs one or more distinct seeds" in result.output
    assert sorted(project.rglob("*")) == before
