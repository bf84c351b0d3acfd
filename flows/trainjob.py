"""The Kubeflow Trainer v2 driver: one entry's training as a TrainJob on the runtime `genbench-torch`.

`render` builds the TrainJob from params (image, resources, placement, namespace, secrets, S3 prefix), so
`genbench trainjob render` and `genbench trainjob submit` send the same object and infra/k8s/trainjob.yaml is one
such rendering. The runtime (infra/k8s/runtime.yaml) holds what every genbench TrainJob shares: the S3 `fetch`
init container, the `upload` sidecar and the volumes; the Trainer's torch plugin gives the trainer container
torchrun's PET_* variables, so the command names no launcher flag.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genbench.config import Config

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "genbench-torch"  # the TrainingRuntime of infra/k8s/runtime.yaml
NODE = "node"  # the runtime's replicated job and its trainer container (the torch plugin looks for this name)
MANAGER = "genbench/trainjob"  # owner of our runtime patch; the Trainer's webhook wants a domain-prefixed path
PARAMS_IN_IMAGE = "/opt/genbench/params.yaml"  # where infra/genbench.Dockerfile puts the params it was built with
LABELS = {"app.kubernetes.io/name": "genbench", "app.kubernetes.io/component": "train"}


def job_name(entry: str, seed: int) -> str:
    """One TrainJob per run folder, so a second submit of a running run is refused by the API server rather than
    racing the first on the same S3 folder. A DNS-1035 label, as the Trainer's JobSet needs."""
    return f"genbench-{re.sub(r'[^a-z0-9]+', '-', entry.lower()).strip('-')}-seed-{seed}"


def trainer_args(entry: str, seed: int, profile: str) -> list[str]:
    """What follows `torchrun` in the trainer container: the same `genbench train` as the PyTorchJob runs."""
    return ["-m", "genbench.cli", "train", entry, f"--seed={seed}", f"--profile={profile}",
            f"--params={PARAMS_IN_IMAGE}"]


def secret_env(secret: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The contract's keys of one secret as environment variables, each optional (an AWS bucket needs no endpoint).
    Key by key rather than `envFrom`: a TrainJob's runtime patch may set a container's env, not its envFrom."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key in keys]


def render(config: Config, entry: str, seed: int, nodes: int) -> dict[str, Any]:
    """The TrainJob that trains `entry` at `seed` with torchrun over `nodes` pods of one process per accelerator
    (one on a CPU pod, where torchrun's `auto` would start one per core). ValueError on bad input."""
    from genbench.kubeflow_config import SECRET_KEYS

    config.entry(entry)
    seed = config.check_seed(seed)
    if nodes < 1:
        raise ValueError(f"--nodes {nodes}: a TrainJob needs at least one node; give --nodes 1 or more")
    kubeflow = config.kubeflow
    train = kubeflow.resources["train"]
    gpus = train.gpu or 0
    accelerators = {train.accelerator: str(gpus)} if gpus else {}
    pod: dict[str, Any] = {}
    if train.tolerations:
        pod["tolerations"] = [toleration.model_dump(exclude_none=True) for toleration in train.tolerations]
    if train.node_selector:
        pod["nodeSelector"] = dict(train.node_selector)
    run_folder = {"name": "RUN_FOLDER", "value": f"runs/{entry}/seed-{seed}"}
    pod["initContainers"] = [  # the S3 containers of the runtime: where to sync, and the S3 secret's keys
        {"name": name, "env": [{"name": "S3_URI", "value": kubeflow.storage}, *extra,
                               *secret_env(kubeflow.secrets.s3, SECRET_KEYS["s3"])]}
        for name, extra in (("fetch", []), ("upload", [run_folder]))
    ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": job_name(entry, seed), "namespace": kubeflow.namespace, "labels": dict(LABELS)},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "TrainingRuntime", "name": RUNTIME},
            "trainer": {
                "image": kubeflow.image_for("train"),
                "command": ["torchrun"],
                "args": trainer_args(entry, seed, config.profile),
                "numNodes": nodes,
                "numProcPerNode": max(gpus, 1),
                "resourcesPerNode": {
                    "requests": {"cpu": train.cpu, "memory": train.memory, **accelerators},
                    "limits": {"memory": train.memory, **accelerators},
                },
            },
            "runtimePatches": [{
                "manager": MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
                    {"name": NODE, "template": {"spec": {"template": {"spec": pod}}}},
                ]}}},
            }],
        },
    }


def submit(manifest: dict[str, Any]) -> str:
    """Create the TrainJob through the Kubeflow SDK's Kubernetes client (kubeconfig, or the pod's service account
    in a cluster) after the SDK has found the runtime; returns its name.

    Not `TrainerClient.train`: its CustomTrainerContainer has no `numProcPerNode` (torchrun's `auto` would start
    one process per core on a CPU pod, and the batch must split evenly across processes), and its
    `resources_per_node` sets CPU limits equal to requests. The rendered object carries both, so the SDK's own
    API client sends that object unchanged: what `render` prints is what runs. ValueError on a missing cluster
    configuration, runtime or a refused request."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient
    from kubernetes.client import ApiException
    from kubernetes.config import ConfigException

    namespace = manifest["metadata"]["namespace"]
    try:
        # KUBECONFIG passed on: the kubernetes client reads it once, when first imported
        client = TrainerClient(KubernetesBackendConfig(namespace=namespace, config_file=os.environ.get("KUBECONFIG")))
    except ConfigException as exc:
        raise ValueError(f"no Kubernetes cluster configured ({str(exc).splitlines()[0]}): set KUBECONFIG or run "
                         "`kubectl config use-context CONTEXT`; `genbench trainjob render` needs no cluster") from None
    try:
        client.get_runtime(RUNTIME)
    except (RuntimeError, TimeoutError) as exc:
        raise ValueError(f"the TrainingRuntime {RUNTIME} is not readable in namespace {namespace} ({exc}): "
                         f"kubectl -n {namespace} apply -f infra/k8s/runtime.yaml") from None
    try:
        client.backend.custom_api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        name = manifest["metadata"]["name"]
        fix = (f"it exists: `kubectl -n {namespace} delete trainjob {name}` first (the new one resumes from S3)"
               if exc.status == 409 else "check your access to trainjobs in this namespace")
        raise ValueError(f"the cluster refused TrainJob {namespace}/{name} ({exc.status} {exc.reason}): "
                         f"{fix}") from None
    return manifest["metadata"]["name"]
