"""infra/k8s: the PyTorchJob, the objects it reads and the image it runs, checked without a cluster.

The PyTorchJob goes through the Training Operator's own models (kubeflow-training's OpenAPI classes) and rules
(its admission webhook's checks); its pod templates, the generated ConfigMap, the Namespace and the Secret
template through the Kubernetes JSON schemas in strict mode (an unknown field fails); the S3 sync scripts run
against a stand-in `aws` that records its arguments.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubeflow.training import ApiClient, KubeflowOrgV1PyTorchJob
from kubeflow.training.utils.utils import FakeResponse

from ..conftest import REPO

K8S = REPO / "infra" / "k8s"
KUBERNETES = "1.29"  # the oldest version the manifests support: native sidecars (restartPolicy: Always) are on
# What the Training Operator (v1.7+, non-elastic) puts into every `pytorch` container (pytorch/envvar.go, master.go).
OPERATOR_ENV = {"MASTER_ADDR", "MASTER_PORT", "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE"}
PLACEHOLDER = "CHANGE_ME"


def load(name: str) -> Any:
    return yaml.load((K8S / name).read_text(), Loader=yaml.CSafeLoader)


def job() -> dict[str, Any]:
    return load("pytorchjob.yaml")


def secrets() -> dict[str, dict[str, Any]]:
    """secrets.example.yaml's Secrets by name."""
    documents = yaml.load_all((K8S / "secrets.example.yaml").read_text(), Loader=yaml.CSafeLoader)
    return {document["metadata"]["name"]: document for document in documents}


def roles(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return manifest["spec"]["pytorchReplicaSpecs"]


def container(role: dict[str, Any], name: str, kind: str = "containers") -> dict[str, Any]:
    return next(c for c in role["template"]["spec"].get(kind, []) if c["name"] == name)


def all_containers(role: dict[str, Any]) -> list[dict[str, Any]]:
    spec = role["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def train_config() -> dict[str, str]:
    """The ConfigMap kustomize's configMapGenerator makes of `genbench-train` (literals KEY=VALUE; no hash suffix)."""
    generator = next(g for g in load("kustomization.yaml")["configMapGenerator"] if g["name"] == "genbench-train")
    return dict(literal.split("=", 1) for literal in generator["literals"])


def round_trip(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the Training Operator SDK reads and writes it: a field its models lack is dropped."""
    client = ApiClient()
    return client.sanitize_for_serialization(client.deserialize(FakeResponse(manifest), KubeflowOrgV1PyTorchJob))


def test_pytorchjob_is_what_the_training_operator_models_describe() -> None:
    manifest = job()
    parsed = ApiClient().deserialize(FakeResponse(manifest), KubeflowOrgV1PyTorchJob)
    assert (parsed.api_version, parsed.kind) == ("kubeflow.org/v1", "PyTorchJob")
    assert set(parsed.spec.pytorch_replica_specs) == {"Master", "Worker"}
    assert round_trip(manifest) == manifest  # nothing unknown, misspelled or mistyped was dropped or coerced


def test_round_trip_catches_a_misspelled_field() -> None:
    manifest = job()
    roles(manifest)["Worker"]["restartPolicyy"] = "OnFailure"
    assert round_trip(manifest) != manifest


def test_pytorchjob_passes_the_operator_webhook_rules() -> None:
    """pkg/webhooks/pytorch/pytorchjob_webhook.go (v1.9): a DNS-1035 name, only Master and Worker, exactly one
    Master, at least one Worker, and in every role a container named `pytorch`, every container with an image."""
    manifest = job()
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", manifest["metadata"]["name"])
    assert roles(manifest)["Master"]["replicas"] == 1 and roles(manifest)["Worker"]["replicas"] >= 1
    for role in roles(manifest).values():
        assert all(c["image"] for c in all_containers(role))
        assert "pytorch" in [c["name"] for c in role["template"]["spec"]["containers"]]
        assert "restartPolicy" not in role["template"]["spec"]  # the operator overrides it from the replica spec


@pytest.mark.parametrize("role", ["Master", "Worker"])
def test_pod_templates_are_valid_core_pod_templates(role: str) -> None:
    template = roles(job())[role]["template"]
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"genbench-{role.lower()}"},
                    "template": template}
    kubernetes_validate.validate(pod_template, KUBERNETES, strict=True)


def test_every_pod_runs_the_same_torchrun_of_the_configured_entry() -> None:
    from typer.main import get_command

    from genbench.cli import app

    master, worker = (container(roles(job())[name], "pytorch") for name in ("Master", "Worker"))
    assert master == worker
    assert master["command"] == ["torchrun"]
    args = master["args"]
    module = args.index("-m")
    assert args[module:module + 4] == ["-m", "genbench.cli", "train", "$(FAMILY)"]
    launcher = dict(arg.split("=", 1) for arg in args[:module])
    assert launcher == {"--nnodes": "$(PET_NNODES)", "--nproc_per_node": "$(PET_NPROC_PER_NODE)",
                        "--node_rank": "$(PET_NODE_RANK)", "--master_addr": "$(MASTER_ADDR)",
                        "--master_port": "$(MASTER_PORT)"}
    # Kubernetes leaves an unknown $(VAR) as it is, so each must be the operator's or the ConfigMap's.
    assert set(re.findall(r"\$\((\w+)\)", " ".join(args))) <= OPERATOR_ENV | train_config().keys()
    options = {opt for param in get_command(app).commands["train"].params for opt in param.opts}
    assert {arg.split("=", 1)[0] for arg in args[module + 4:]} <= options


def test_each_pod_gets_as_many_gpus_as_processes() -> None:
    manifest = job()
    for role in roles(manifest).values():
        resources = container(role, "pytorch")["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == manifest["spec"]["nprocPerNode"]


def test_the_job_parameters_are_valid_for_the_images_params() -> None:
    """What `genbench train` checks first, on the params.yaml the image carries."""
    from genbench.config import load_config

    values = train_config()
    assert values.keys() == {"FAMILY", "SEED", "PROFILE", "S3_URI", "SYNC_SECONDS"}
    config = load_config(REPO / "params.yaml", values["PROFILE"])
    config.entry(values["FAMILY"])
    assert config.check_seed(int(values["SEED"])) == int(values["SEED"])
    assert values["S3_URI"].startswith("s3://") and not values["S3_URI"].endswith("/")
    assert int(values["SYNC_SECONDS"]) > 0
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "genbench-train", "namespace": "genbench"}, "data": values}
    kubernetes_validate.validate(config_map, KUBERNETES, strict=True)


def test_kustomization_names_the_image_and_leaves_the_secret_out() -> None:
    from genbench.config import load_config

    kustomization = load("kustomization.yaml")
    assert [image["name"] for image in kustomization["images"]] == ["genbench"]
    # the image of the repository's params (the one setting, kubeflow.image), as `genbench image ref` prints it
    [image] = kustomization["images"]
    assert f"{image['newName']}:{image['newTag']}" == load_config(REPO / "params.yaml").kubeflow.image_ref("cuda")
    for role in roles(job()).values():
        assert container(role, "pytorch")["image"] == "genbench"  # what `images:` rewrites
    assert all((K8S / resource).is_file() for resource in kustomization["resources"])
    assert not any("secret" in resource for resource in kustomization["resources"])  # never applies placeholders
    # The PyTorchJob refers to the generated ConfigMap by its plain name, which a hash suffix would break.
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    namespace = load("namespace.yaml")
    kubernetes_validate.validate(namespace, KUBERNETES, strict=True)
    assert {kustomization["namespace"], namespace["metadata"]["name"]} == {
        secret["metadata"]["namespace"] for secret in secrets().values()}


def test_secret_templates_are_the_contract_with_placeholders_only() -> None:
    """One Secret per entry of kubeflow.secrets, holding exactly SECRET_KEYS' keys, every value a placeholder."""
    from genbench.kubeflow_config import SECRET_KEYS, Secrets

    found = secrets()
    assert found.keys() == set(Secrets().model_dump().values())
    for role, name in Secrets().model_dump().items():
        secret = found[name]
        kubernetes_validate.validate(secret, KUBERNETES, strict=True)
        assert tuple(secret["stringData"]) == SECRET_KEYS[role] and "data" not in secret
        assert set(secret["stringData"].values()) == {PLACEHOLDER}


def test_only_the_s3_containers_read_the_s3_secret() -> None:
    """fetch and upload talk to S3; the trainer talks to no server, so it gets no credential."""
    s3 = {"secretRef": {"name": "genbench-s3", "optional": True}}
    for role in roles(job()).values():
        for each in all_containers(role):
            wanted = [s3] if each["name"] in ("fetch", "upload") else []
            assert [ref for ref in each["envFrom"] if "secretRef" in ref] == wanted, each["name"]


def test_the_image_runs_as_the_pods_user_and_holds_the_params_they_name() -> None:
    dockerfile = (REPO / "infra" / "genbench.Dockerfile").read_text()
    uid = re.search(r"^USER (\d+)", dockerfile, re.M).group(1)
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M).group(1)
    assert re.search(r"^COPY params\.yaml\b", dockerfile, re.M)
    assert "--locked --no-dev --extra fid" in dockerfile
    for role in roles(job()).values():
        assert role["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
        assert f"--params={workdir}/params.yaml" in container(role, "pytorch")["args"]


def stand_in_aws(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `aws` appends its arguments to a log, with the job's ConfigMap values."""
    bin_dir, log = tmp_path / "bin", tmp_path / "aws.log"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text('#!/bin/sh\necho "$*" >> "$AWS_LOG"\n')
    (bin_dir / "aws").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AWS_LOG": str(log), **train_config()}
    return env, log


def script(each: dict[str, Any], workspace: Path) -> list[str]:
    """The container's command line, its /workspace mount moved to `workspace`."""
    return [*each["command"], each["args"][0].replace("/workspace", str(workspace))]


def test_fetch_restores_the_inputs_and_every_run_folder(tmp_path: Path) -> None:
    env, log = stand_in_aws(tmp_path)
    workspace, values = tmp_path / "workspace", train_config()
    for role in roles(job()).values():
        log.unlink(missing_ok=True)
        subprocess.run(script(container(role, "fetch", "initContainers"), workspace), env=env, check=True, timeout=30)
        assert log.read_text().splitlines() == [
            f"s3 sync {values['S3_URI']}/data/prepared {workspace}/data/prepared --only-show-errors",
            f"s3 sync {values['S3_URI']}/runs {workspace}/runs --only-show-errors --exclude *.tmp",
        ]


@pytest.mark.parametrize("period", ["1000", "0.05"])
def test_upload_pushes_the_run_folder_periodically_and_when_stopped(tmp_path: Path, period: str) -> None:
    """With a long period only SIGTERM (the pod stopping) pushes; with a short one the loop pushes too."""
    upload = container(roles(job())["Master"], "upload", "initContainers")
    assert upload["restartPolicy"] == "Always"  # a native sidecar, stopped after `pytorch` exits
    env, log = stand_in_aws(tmp_path)
    env["SYNC_SECONDS"] = period
    workspace, values = tmp_path / "workspace", train_config()
    run = f"runs/{values['FAMILY']}/seed-{values['SEED']}"
    (workspace / run).mkdir(parents=True)
    push = f"s3 sync {workspace}/{run} {values['S3_URI']}/{run} --only-show-errors --exclude *.tmp"
    sidecar = subprocess.Popen(script(upload, workspace), env=env, start_new_session=True)
    try:
        children = Path(f"/proc/{sidecar.pid}/task/{sidecar.pid}/children")
        deadline = time.monotonic() + 20
        # The loop's first sleep means the TERM trap is set; with a short period, wait for two periodic pushes.
        while not children.read_text().strip() or (period != "1000" and len(_lines(log)) < 2):
            assert time.monotonic() < deadline, "the upload loop never started"
            time.sleep(0.02)
        before = len(_lines(log))
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sidecar.pid, signal.SIGKILL)  # the loop's orphaned sleep
    lines = _lines(log)
    assert set(lines) == {push}
    if period == "1000":
        assert (before, len(lines)) == (0, 1)  # the push came from the TERM trap alone


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []
