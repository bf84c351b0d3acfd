"""`genbench kfp compile` / `submit`: the IR YAML holds one component per stage, passes files as typed artifacts,
parses into KFP's own protos, gives every task its image, resources and secrets from params, and compiling needs
neither a cluster nor the network; submitting sends a token and a namespace to a multi-user KFP API (a stub on
127.0.0.1 here) and refuses a backend too old for the pipeline."""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from google.protobuf import json_format
from typer.testing import CliRunner

from genbench.cli import app
from genbench.config import load_config

from ..conftest import use_tiny
from ..json_stub import JsonHandler, serve

# What the compiled pipeline must hold, written here rather than read from flows/kubeflow.py
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}
MLFLOW_KEYS = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
PARAMETERS = {"mlflow_tracking_uri", "params_yaml", "profile"}  # no secret name, no credential
# the `kubeflow.resources` entry each component runs with: its stage's; collect gathers the report's inputs
RESOURCES_OF = {"prepare": "prepare", "evaluate-real": "evaluate-real", "train": "train", "fid-curve": "fid-curve",
                "sample": "sample", "evaluate": "evaluate", "register": "register", "collect": "report",
                "sweep": "sweep", "report": "report"}
STAGES = ("prepare", "evaluate-real", "train", "fid-curve", "sample", "evaluate", "register", "collect", "sweep",
          "report")
# component → {input or output artifact: its schema title}
ARTIFACTS = {
    "prepare": {"outputs": {"data": "system.Dataset"}},
    "evaluate-real": {"inputs": {"data": "system.Dataset"},
                      "outputs": {"metrics": "system.Metrics", "cache": "system.Artifact"}},
    "train": {"inputs": {"data": "system.Dataset", "trained": "system.Artifact"},
              "outputs": {"run": "system.Model", "snapshots": "system.Artifact"}},
    "fid-curve": {"inputs": {"run": "system.Model", "snapshots": "system.Artifact", "data": "system.Dataset",
                             "cache": "system.Artifact"},
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


def _component(executor: str) -> str:
    """The component an executor runs: exec-evaluate-2 → evaluate, exec-evaluate-real → evaluate-real."""
    return re.sub(r"-\d+$", "", executor.removeprefix("exec-"))


def _set_kubeflow(project: Path, section: dict[str, Any]) -> None:
    """params.yaml with `kubeflow:` replaced by `section`, as a person would edit it."""
    raw = yaml.load((project / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    raw["kubeflow"] = section
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


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
    assert set(parameters) == PARAMETERS
    # the snapshots reach fid-curve alone; the run (without them) every task that reads a run
    assert body["fid-curve"]["inputs"]["artifacts"]["snapshots"]["taskOutputArtifact"] == \
        {"outputArtifactKey": "snapshots", "producerTask": "train"}
    readers = {name for name, task in body.items() for source in task["inputs"].get("artifacts", {}).values()
               if source.get("taskOutputArtifact", {}).get("producerTask") == "train"}
    assert readers == {"fid-curve", "sample", "register"}


def test_compile_trains_an_entry_after_the_runs_it_is_built_on(project: Path) -> None:
    """ldm diffuses in runs/vae: it gets a loop of its own, whose train reads the first loop's collected runs."""
    use_tiny(project, entries=["vae", "ldm"], sweeps={})
    spec, _ = _compile(project)
    loops = _loops(spec)
    entries = [[item["entry"] for item in yaml.load(task["parameterIterator"]["items"]["raw"], Loader=yaml.CSafeLoader)]
               for task in loops]
    assert entries == [["vae"], ["ldm"]]
    second = spec["components"][loops[1]["componentRef"]["name"]]["dag"]["tasks"]
    train = next(task for name, task in second.items() if name.startswith("train"))
    source = train["inputs"]["artifacts"]["trained"]["componentInputArtifact"]
    assert source.startswith("pipelinechannel--collect")
    assert {_component(name) for name in spec["deploymentSpec"]["executors"]} == \
        {"prepare", "evaluate-real", "train", "fid-curve", "sample", "evaluate", "register", "collect", "report"}


def test_submit_without_kfp_host_exits_2(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    before = sorted(project.rglob("*"))
    result = CliRunner().invoke(app, ["kfp", "submit", "--mlflow-uri", "http://mlflow:5000"])
    assert result.exit_code == 2
    assert "KFP_HOST is not set" in result.output
    assert sorted(project.rglob("*")) == before


def test_every_task_runs_its_stage_image_and_resources_from_params(project: Path) -> None:
    """Each task's image variant, CPU, memory, accelerators, tolerations and node selector are its stage's
    `kubeflow.resources` entry; an edit to params changes the compiled pipeline accordingly."""

    def expected(spec: dict[str, Any], platform: dict[str, Any]) -> None:
        cluster = load_config(project / "params.yaml").kubeflow
        kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for name, executor in spec["deploymentSpec"]["executors"].items():
            wanted = cluster.resources[RESOURCES_OF[_component(name)]]
            container = executor["container"]
            assert container["image"] == cluster.image_ref("cuda" if wanted.gpu else "cpu"), name
            resources = container["resources"]
            assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"],
                    resources["resourceMemoryLimit"]) == (wanted.cpu, wanted.memory, wanted.memory), name
            accelerator = resources.get("accelerator", {})
            assert (accelerator.get("resourceType"), accelerator.get("resourceCount")) == \
                ((wanted.accelerator, str(wanted.gpu)) if wanted.gpu else (None, None)), name
            placed = kubernetes[name]
            assert placed.get("tolerations", []) == [
                {key: value for key, value in toleration.model_dump().items() if value is not None}
                for toleration in wanted.tolerations], name
            assert placed.get("nodeSelector", {}).get("labels", {}) == wanted.node_selector, name

    spec, platform = _compile(project)
    expected(spec, platform)
    images = {_component(name): executor["container"]["image"]
              for name, executor in spec["deploymentSpec"]["executors"].items()}
    # the defaults: the network stages follow train onto one GPU and the CUDA image, the rest on CPU
    assert {name for name, ref in images.items() if ref.endswith("-cuda")} == \
        {"evaluate-real", "train", "fid-curve", "sample", "evaluate", "sweep"}

    _set_kubeflow(project, {
        "image": "registry.example.com/ml/genbench", "tag": "t1",
        "resources": {
            "train": {"cpu": "16", "memory": "64Gi", "gpu": 2, "accelerator": "amd.com/gpu",
                      "tolerations": [{"key": "amd.com/gpu", "effect": "NoSchedule"}],
                      "node_selector": {"pool": "mi300"}},
            "sample": {"gpu": 0},
        }})
    changed, changed_platform = _compile(project)
    expected(changed, changed_platform)
    executors = changed["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"] == "registry.example.com/ml/genbench:t1-cuda"
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceType"] == "amd.com/gpu"
    assert executors["exec-evaluate"]["container"]["resources"]["accelerator"]["resourceCount"] == "2"
    assert executors["exec-sample"]["container"]["image"] == "registry.example.com/ml/genbench:t1-cpu"
    assert "accelerator" not in executors["exec-sample"]["container"]["resources"]
    placed = changed_platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert placed["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert placed["nodeSelector"] == {"labels": {"pool": "mi300"}}


def test_secrets_reach_every_task_that_needs_them_by_name_from_params(project: Path) -> None:
    """The S3 keys (with AWS_ENDPOINT_URL) reach every task, whose launcher moves its artifacts with them when the
    pipeline root is on S3 and reads credentials from the environment; the MLflow credentials reach register, the
    one task that talks to MLflow. Every key is optional; the secret names come from params, never a parameter."""

    def secrets(platform: dict[str, Any]) -> dict[str, dict[str, set[str]]]:
        found: dict[str, dict[str, set[str]]] = {}
        for name, config in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
            for secret in config.get("secretAsEnv", []):
                assert secret["optional"] is True, name
                assert secret["secretNameParameter"] == {"runtimeValue": {"constant": secret["secretName"]}}, name
                keys = {item["secretKey"] for item in secret["keyToEnv"]}
                assert keys == {item["envVar"] for item in secret["keyToEnv"]}  # keys named as the variables
                found.setdefault(_component(name), {})[secret["secretName"]] = keys
        return found

    spec, platform = _compile(project)
    components = {_component(name) for name in spec["deploymentSpec"]["executors"]}
    found = secrets(platform)
    assert set(found) == components
    assert found["register"] == {"genbench-s3": S3_KEYS, "genbench-mlflow": MLFLOW_KEYS}
    assert all(found[name] == {"genbench-s3": S3_KEYS} for name in components - {"register"})

    _set_kubeflow(project, {"secrets": {"s3": "team-a-minio", "mlflow": "team-a-mlflow"}})
    _, platform = _compile(project)
    assert secrets(platform)["register"] == {"team-a-minio": S3_KEYS, "team-a-mlflow": MLFLOW_KEYS}


def _parse(spec: dict[str, Any], platform: dict[str, Any]) -> None:
    """The compiled documents as KFP's own protos: PipelineSpec with its deployment spec as a
    PipelineDeploymentConfig, PlatformSpec and, for each task, kfp-kubernetes' KubernetesExecutorConfig (both specs
    hold those as free-form structs, which take any field). An unknown field fails."""
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    json_format.ParseDict(spec["deploymentSpec"], pipeline_spec_pb2.PipelineDeploymentConfig(),
                          ignore_unknown_fields=False)
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    for config in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig(),
                              ignore_unknown_fields=False)


def test_compiled_pipeline_parses_into_kfp_protos_and_a_misspelled_field_fails(project: Path) -> None:
    spec, platform = _compile(project)
    _parse(spec, platform)
    planted = copy.deepcopy(spec)
    planted["deploymentSpec"]["executors"]["exec-train"]["container"]["resourcs"] = {"cpuLimit": 1.0}
    with pytest.raises(json_format.ParseError, match="resourcs"):
        _parse(planted, platform)
    planted = copy.deepcopy(spec)
    planted["root"]["dag"]["tasks"]["prepare"]["cachingOptionz"] = {}
    with pytest.raises(json_format.ParseError, match="cachingOptionz"):
        _parse(planted, platform)
    planted = copy.deepcopy(platform)
    planted["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]["tolerationz"] = []
    with pytest.raises(json_format.ParseError, match="tolerationz"):
        _parse(spec, planted)
    planted = copy.deepcopy(platform)
    planted["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-register"]["secretAsEnv"][0][
        "optionel"] = True
    with pytest.raises(json_format.ParseError, match="optionel"):
        _parse(spec, planted)


GOOD_TOKEN = "good-token"  # what the stub accepts; never a real credential


@dataclass
class KfpStub:
    """A multi-user KFP API on 127.0.0.1: every request needs `Authorization: Bearer GOOD_TOKEN` (else 401, as
    the API server's authenticator or the ingress answers); healthz reports `tag`; experiments and runs are
    recorded with the namespace they were asked for."""

    tag: str = "2.15.0"
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Authorization
    experiments: list[dict[str, Any]] = field(default_factory=list)  # bodies of the creations
    listed: list[dict[str, list[str]]] = field(default_factory=list)  # query strings of the experiment lists
    runs: list[dict[str, Any]] = field(default_factory=list)  # bodies of the run creations

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        if (method, path) == ("GET", "/apis/v2beta1/healthz"):
            return {"commit_sha": "0" * 7, "tag_name": self.tag, "multi_user": True}
        if (method, path) == ("GET", "/apis/v2beta1/experiments"):
            self.listed.append(query)
            return {}  # none yet: the client creates it
        if (method, path) == ("POST", "/apis/v2beta1/experiments"):
            self.experiments.append(body)
            return {**body, "experiment_id": f"exp-{len(self.experiments)}"}
        if (method, path) == ("POST", "/apis/v2beta1/runs"):
            self.runs.append(body)
            return {**body, "run_id": f"run-{len(self.runs)}", "state": "PENDING"}
        raise AssertionError(f"the stub does not serve {method} {path}")


@pytest.fixture()
def kfp_stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KfpStub]:
    """The stub serving on a free port, KFP_HOST pointing at it, and no token or kfp context from this machine."""
    from kfp.client.client import Client

    stub = KfpStub()

    class Handler(JsonHandler):
        def _serve(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            stub.requests.append((self.command, parsed.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
                status, reply = 401, {"error": "Unauthenticated", "code": 16}
            else:
                status, reply = 200, stub.answer(self.command, parsed.path, parse_qs(parsed.query), body)
            self.send_json(status, reply)

        do_GET = do_POST = _serve

    server = serve(Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("KFP_HOST", stub.url)
    for name in ("KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-sa-token"))  # not in a pod here
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    try:
        yield stub
    finally:
        server.shutdown()  # returns once serve_forever has
        server.server_close()


def _submit(*args: str) -> Any:
    return CliRunner().invoke(app, ["kfp", "submit", "--mlflow-uri", "http://mlflow:5000", *args])


def _error_line(output: str) -> str:
    """The one line an error prints."""
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize("tag", ["2.15.0", "2.17.3", "unknown"])
def test_submit_sends_the_token_and_namespace_to_a_multi_user_kfp(project: Path, kfp_stub: KfpStub,
                                                                   monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    """Every request carries the bearer token; the experiment is listed and created in the namespace and the run
    joins it, carrying the compiled pipeline (its platform spec with the secrets) and the MLflow URI. A current
    backend, or one built without a release tag, is let through and named."""
    kfp_stub.tag = tag
    monkeypatch.setenv("KFP_TOKEN", GOOD_TOKEN)
    result = _submit("--namespace", "team-a")
    assert result.exit_code == 0, result.output
    assert {auth for _, _, auth in kfp_stub.requests} == {f"Bearer {GOOD_TOKEN}"}
    assert kfp_stub.requests[0][:2] == ("GET", "/apis/v2beta1/healthz")  # the version is checked first
    assert [query["namespace"] for query in kfp_stub.listed] == [["team-a"]]
    (experiment,) = kfp_stub.experiments
    assert (experiment["display_name"], experiment["namespace"]) == ("genbench", "team-a")
    (run,) = kfp_stub.runs
    assert run["experiment_id"] == "exp-1"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "genbench-pipeline"
    assert "exec-register" in run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"]
    assert run["runtime_config"]["parameters"]["mlflow_tracking_uri"] == "http://mlflow:5000"
    assert f"started run run-1 in namespace team-a on {kfp_stub.url} (KFP backend {tag}; needs 2.15.0" in \
        result.output
    assert GOOD_TOKEN not in result.output


def test_submit_takes_the_token_from_a_file_or_the_service_account_and_the_namespace_from_params(
        project: Path, kfp_stub: KfpStub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(GOOD_TOKEN + "\n")
    monkeypatch.setenv("KFP_TOKEN", "a-stale-token")  # --token-file wins over the variable
    result = _submit("--token-file", str(token))
    assert result.exit_code == 0, result.output
    assert [experiment["namespace"] for experiment in kfp_stub.experiments] == ["genbench"]  # kubeflow.namespace
    monkeypatch.delenv("KFP_TOKEN")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))  # a pod's projected service-account token
    _set_kubeflow(project, {"namespace": "team-b"})
    result = _submit()
    assert result.exit_code == 0, result.output
    assert [experiment["namespace"] for experiment in kfp_stub.experiments] == ["genbench", "team-b"]
    assert {auth for _, _, auth in kfp_stub.requests} == {f"Bearer {GOOD_TOKEN}"}


def test_submit_without_a_token_stops_with_one_line_naming_the_three_ways(project: Path, kfp_stub: KfpStub) -> None:
    result = _submit()
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert all(way in line for way in ("--token-file", "KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH")), line
    assert kfp_stub.requests == []


def test_submit_with_a_refused_token_stops_with_one_line(project: Path, kfp_stub: KfpStub,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFP_TOKEN", "a-wrong-token")
    result = _submit()
    assert result.exit_code == 2, result.output
    assert "refused the token (401" in _error_line(result.output)
    assert "a-wrong-token" not in result.output
    assert kfp_stub.experiments == [] and kfp_stub.runs == []


def test_submit_refuses_a_kfp_backend_too_old_for_the_pipeline(project: Path, kfp_stub: KfpStub,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    kfp_stub.tag = "2.14.3"  # fans in artifacts, but its driver stops at the secrets' `optional` field
    monkeypatch.setenv("KFP_TOKEN", GOOD_TOKEN)
    result = _submit("--namespace", "team-a")
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert "is 2.14.3" in line and "needs KFP 2.15.0 or newer" in line, line
    assert kfp_stub.experiments == [] and kfp_stub.runs == []


@pytest.mark.parametrize("command", [["kfp", "compile", "pipeline.yaml"], ["kfp", "local"]])
def test_kfp_commands_exit_2_on_bad_params_and_write_nothing(project: Path, command: list[str]) -> None:
    use_tiny(project, seeds=[0, 0])
    before = sorted(project.rglob("*"))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "seeds: needs one or more distinct seeds" in result.output
    assert sorted(project.rglob("*")) == before
