"""The Kubeflow Trainer v2 path without a cluster: `genbench trainjob render` and `submit`, the runtime they use.

The TrainJob is rendered from params and checked against what the Trainer's webhook (v2.3) enforces; `submit`
goes through the Kubeflow SDK to a stand-in Kubernetes API on 127.0.0.1 that serves the runtime and records what
is created; the runtime's S3 scripts run against a stand-in `aws`. (The schemas: test_k8s_schemas.py. The
trainer's own command runs under torchrun in tests/stages/test_trainjob_command.py: the SDK's local process
backend cannot run it offline, docs/kubeflow.md says why.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from genbench.cli import app

from ..conftest import REPO
from ..json_stub import JsonHandler, serve

K8S = REPO / "infra" / "k8s"
PARAMS = REPO / "params.yaml"


def load(name: str) -> dict[str, Any]:
    return yaml.load((K8S / name).read_text(), Loader=yaml.CSafeLoader)


def render_cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["trainjob", "render", *args, "--params", str(PARAMS)])


def runtime_pod(runtime: dict[str, Any]) -> dict[str, Any]:
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return node["template"]["spec"]["template"]["spec"]


def patched_pod(job: dict[str, Any]) -> dict[str, Any]:
    (patch,) = job["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return node["template"]["spec"]["template"]["spec"]


def test_the_example_is_what_render_writes_today(tmp_path: Path) -> None:
    """infra/k8s/trainjob.yaml is `genbench trainjob render ddpm --profile full --nodes 2` (its header says how to
    regenerate it)."""
    out = tmp_path / "job.yaml"
    result = render_cli("ddpm", "--profile", "full", "--nodes", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text()) == load("trainjob.yaml")
    printed = render_cli("ddpm", "--profile", "full", "--nodes", "2")
    assert yaml.safe_load(printed.output) == load("trainjob.yaml")


def test_image_resources_placement_and_secrets_come_from_params() -> None:
    from genbench.config import load_config
    from genbench.flows.trainjob import render
    from genbench.kubeflow_config import KubeflowConfig

    config = load_config(PARAMS, "full")
    kubeflow = KubeflowConfig.model_validate({
        "image": "registry.example.com/ml/genbench", "tag": "abc123", "namespace": "team-a",
        "secrets": {"mlflow": "m", "s3": "team-a-s3"}, "storage": "s3://bucket/genbench",
        "resources": {"train": {"gpu": 4, "cpu": "30", "memory": "200Gi", "accelerator": "amd.com/gpu",
                                "tolerations": [{"key": "gpu", "effect": "NoSchedule"}],
                                "node_selector": {"pool": "mi300"}}}})
    job = render(config.model_copy(update={"kubeflow": kubeflow}), "ddpm_cfg", 0, 4)
    trainer = job["spec"]["trainer"]
    assert (job["metadata"]["name"], job["metadata"]["namespace"]) == ("genbench-ddpm-cfg-seed-0", "team-a")
    assert trainer["image"] == "registry.example.com/ml/genbench:abc123-cuda"
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 4)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "30", "memory": "200Gi", "amd.com/gpu": "4"},
                                           "limits": {"memory": "200Gi", "amd.com/gpu": "4"}}
    assert trainer["args"] == ["-m", "genbench.cli", "train", "ddpm_cfg", "--seed=0", "--profile=full",
                               "--params=/opt/genbench/params.yaml"]
    pod = patched_pod(job)
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"pool": "mi300"}
    for container in pod["initContainers"]:
        env = {var["name"]: var.get("value", var.get("valueFrom")) for var in container["env"]}
        assert env["S3_URI"] == "s3://bucket/genbench"
        assert env["AWS_ENDPOINT_URL"] == {"secretKeyRef": {"name": "team-a-s3", "key": "AWS_ENDPOINT_URL",
                                                            "optional": True}}
    cpu = render(config.model_copy(update={"kubeflow": KubeflowConfig.model_validate(
        {"resources": {"train": {"gpu": 0}}})}), "vae", 0, 1)
    assert cpu["spec"]["trainer"]["image"].endswith("-cpu") and cpu["spec"]["trainer"]["numProcPerNode"] == 1
    assert cpu["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"memory": "32Gi"}  # no accelerator at all
    assert "tolerations" not in patched_pod(cpu) and "nodeSelector" not in patched_pod(cpu)


def test_the_s3_containers_get_every_key_of_the_s3_secret_and_the_trainer_none() -> None:
    from genbench.kubeflow_config import SECRET_KEYS

    job = load("trainjob.yaml")
    assert "env" not in job["spec"]["trainer"]
    for container in patched_pod(job)["initContainers"]:
        refs = [var["valueFrom"]["secretKeyRef"] for var in container["env"] if "valueFrom" in var]
        assert refs == [{"name": "genbench-s3", "key": key, "optional": True} for key in SECRET_KEYS["s3"]]
    assert "genbench-credentials" not in (K8S / "runtime.yaml").read_text() + (K8S / "trainjob.yaml").read_text()


def test_the_trainjob_meets_the_trainer_webhook_rules() -> None:
    """pkg/runtime/framework/plugins/jobset/jobset.go and torch/torch.go (v2.3.0): the patch's manager is a
    domain-prefixed path; it patches only replicated jobs and containers the runtime has, and no env of `node`;
    the trainer's env holds no PET_* (the torch plugin's); the runtime is the namespaced one beside the job."""
    job, runtime = load("trainjob.yaml"), load("runtime.yaml")
    (patch,) = job["spec"]["runtimePatches"]
    host, _, path = patch["manager"].partition("/")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", host) and path
    jobs = {j["name"]: j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]}
    for replicated in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
        pod = runtime_pod(runtime) if replicated["name"] in jobs else pytest.fail(replicated["name"])
        names = {c["name"] for c in pod["containers"] + pod["initContainers"]}
        patched = replicated["template"]["spec"]["template"]["spec"]
        assert {c["name"] for c in patched.get("containers", []) + patched["initContainers"]} <= names
        assert all("env" not in c for c in patched.get("containers", []) if c["name"] == "node")
    assert not any(var["name"].startswith("PET_") for var in job["spec"]["trainer"].get("env", []))
    ref = job["spec"]["runtimeRef"]
    assert (ref["kind"], ref["name"]) == (runtime["kind"], runtime["metadata"]["name"])
    assert job["metadata"]["namespace"] == load("namespace.yaml")["metadata"]["name"]
    assert "node" in jobs and [c["name"] for c in runtime_pod(runtime)["containers"]] == ["node"]
    labels = jobs["node"]["template"]["metadata"]["labels"]
    assert labels["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"  # where the torch plugin looks


def test_the_trainer_command_is_genbench_train_with_its_real_options() -> None:
    from typer.main import get_command

    trainer = load("trainjob.yaml")["spec"]["trainer"]
    assert trainer["command"] == ["torchrun"]  # its flags come from the PET_* variables the torch plugin sets
    args = trainer["args"]
    assert args[:4] == ["-m", "genbench.cli", "train", "ddpm"]
    options = {opt for param in get_command(app).commands["train"].params for opt in param.opts}
    assert {arg.split("=", 1)[0] for arg in args[4:]} <= options


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "unknown entry 'nope'"),
    (["ddpm", "--nodes", "0"], "--nodes 0"),
    (["ddpm", "--seed", "7"], "seed"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = render_cli(*args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_submit_without_a_cluster_config_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(app, ["trainjob", "submit", "ddpm", "--params", str(PARAMS)])
    assert result.exit_code == 2 and "no Kubernetes cluster configured" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


class StandInAPI(JsonHandler):
    """The few Kubernetes API calls `submit` makes: the runtime (when `runtime` is set), the Trainer's version
    ConfigMap (absent), and the TrainJob create, whose body it records (409 once one exists)."""

    runtime: dict[str, Any] | None = None
    created: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        if self.runtime and self.path.endswith("/namespaces/genbench/trainingruntimes/genbench-torch"):
            self.send_json(200, self.runtime)
        else:
            self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.path.endswith("/apis/trainer.kubeflow.org/v1alpha1/namespaces/genbench/trainjobs"):
            self.send_json(404, {"kind": "Status", "code": 404})
        elif self.created:
            self.send_json(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
        else:
            self.created.append(body)
            self.send_json(201, body)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[StandInAPI]]:
    handler = type("API", (StandInAPI,), {"runtime": None, "created": []})
    server = serve(handler)
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
                  "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                  "users": [{"name": "u", "user": {"token": "t"}}],
                  "contexts": [{"name": "stand-in", "context": {"cluster": "c", "user": "u"}}]}
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def submit_cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["trainjob", "submit", *args, "--params", str(PARAMS)])


def test_submit_creates_exactly_what_render_writes(api: type[StandInAPI]) -> None:
    """The SDK reads our runtime (its models parse runtime.yaml) and creates the rendered object unchanged."""
    api.runtime = load("runtime.yaml") | {"metadata": {**load("runtime.yaml")["metadata"], "namespace": "genbench"}}
    result = submit_cli("ddpm", "--profile", "full", "--nodes", "2")
    assert result.exit_code == 0, result.output
    assert "created TrainJob genbench/genbench-ddpm-seed-0" in result.output
    assert api.created == [load("trainjob.yaml")]
    again = submit_cli("ddpm", "--profile", "full", "--nodes", "2")
    assert again.exit_code == 2 and "kubectl -n genbench delete trainjob genbench-ddpm-seed-0" in again.output


def test_submit_without_the_runtime_names_its_manifest(api: type[StandInAPI]) -> None:
    result = submit_cli("ddpm")
    assert result.exit_code == 2 and "kubectl -n genbench apply -f infra/k8s/runtime.yaml" in result.output
    assert api.created == []


def test_the_sdk_local_process_backend_takes_no_container() -> None:
    """Why the TrainJob's command is not run under the SDK's LocalProcessBackend here: it runs only a
    CustomTrainer (a Python function, through the torchrun of a fresh venv that gets torch by pip install from an
    index), never a prebuilt image's command."""
    from kubeflow.trainer import CustomTrainerContainer, LocalProcessBackendConfig, TrainerClient

    client = TrainerClient(LocalProcessBackendConfig())
    with pytest.raises(ValueError, match="CustomTrainer must be set"):
        client.train(runtime="torch-distributed", trainer=CustomTrainerContainer(image="genbench"))


def stand_in_aws(tmp_path: Path, **env: str) -> tuple[dict[str, str], Path]:
    """An environment whose `aws` appends its arguments to a log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "aws.log"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "aws").write_text('#!/bin/sh\necho "$*" >> "$AWS_LOG"\n')
    (bin_dir / "aws").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AWS_LOG": str(log), **env}, log


def runtime_container(name: str) -> dict[str, Any]:
    return next(c for c in runtime_pod(load("runtime.yaml"))["initContainers"] if c["name"] == name)


def script(container: dict[str, Any], workspace: Path) -> list[str]:
    return [*container["command"], container["args"][0].replace("/workspace", str(workspace))]


def job_env(name: str) -> dict[str, str]:
    """The plain values trainjob.yaml and the runtime give the container `name`."""
    patched = next(c for c in patched_pod(load("trainjob.yaml"))["initContainers"] if c["name"] == name)
    return {var["name"]: var["value"] for var in runtime_container(name)["env"] + patched["env"] if "value" in var}


def test_fetch_restores_the_inputs_and_every_run_folder(tmp_path: Path) -> None:
    values = job_env("fetch")
    env, log = stand_in_aws(tmp_path, **values)
    subprocess.run(script(runtime_container("fetch"), tmp_path / "w"), env=env, check=True, timeout=30)
    assert log.read_text().splitlines() == [
        f"s3 sync {values['S3_URI']}/data/prepared {tmp_path}/w/data/prepared --only-show-errors",
        f"s3 sync {values['S3_URI']}/runs {tmp_path}/w/runs --only-show-errors --exclude *.tmp",
    ]


@pytest.mark.parametrize("node", ["0", "1"])
def test_upload_pushes_from_node_0_only_periodically_and_when_stopped(tmp_path: Path, node: str) -> None:
    """Node 0 holds global rank 0, the writer; another node's copy is stale and must never overwrite S3."""
    upload = runtime_container("upload")
    assert upload["restartPolicy"] == "Always"  # a native sidecar, stopped after `node` exits
    values = job_env("upload") | {"SYNC_SECONDS": "0.05", "JOB_COMPLETION_INDEX": node}
    env, log = stand_in_aws(tmp_path, **values)
    workspace = tmp_path / "w"
    (workspace / values["RUN_FOLDER"]).mkdir(parents=True)
    sidecar = subprocess.Popen(script(upload, workspace), env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while node == "0" and len(_lines(log)) < 2:  # two periodic pushes
            assert time.monotonic() < deadline, "the upload loop never pushed"
            time.sleep(0.02)
        if node != "0":
            time.sleep(0.5)  # ten periods, in which node 0 pushes ten times
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sidecar.pid, signal.SIGKILL)  # the loop's orphaned sleep
    push = (f"s3 sync {workspace}/{values['RUN_FOLDER']} {values['S3_URI']}/{values['RUN_FOLDER']} "
            "--only-show-errors --exclude *.tmp")
    assert set(_lines(log)) == ({push} if node == "0" else set())


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []
