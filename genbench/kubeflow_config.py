"""`kubeflow:` in params.yaml: what a cluster needs to run genbench, in one place for every manifest and driver.

The image every pipeline task, TrainJob, PyTorchJob and Prefect flow-run pod pulls; the namespace they run in;
the names of the two Kubernetes secrets that carry credentials (docs/kubeflow.md, "Secrets"); and the resources
each stage's pod requests. Nothing here is read outside a cluster: `genbench run`, `dvc repro` and kfp.local
ignore it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .models.config import NonNegativeInt, Strict

__all__ = ["ImageVariant", "KubeflowConfig", "Resources", "SECRET_KEYS", "Secrets", "Toleration"]

ImageVariant = Literal["cuda", "cpu"]  # the image's two builds (build-arg VARIANT of infra/genbench.Dockerfile)
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")  # a Kubernetes resource quantity
# Stages that run a network over many images; they request what train requests unless given their own GPUs.
NETWORK_STAGES = ("evaluate-real", "fid-curve", "sample", "evaluate", "sweep")


class Toleration(Strict):
    """One entry of a pod's `tolerations` (core/v1 Toleration), e.g. for a tainted GPU node pool."""

    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Resources(Strict):
    """What one stage's pod requests: CPU and memory as Kubernetes quantities (requests; memory is also the
    limit, so a pod that outgrows it is stopped rather than starving its node), accelerators, and where it may be
    placed."""

    cpu: str = "2"
    memory: str = "8Gi"
    gpu: NonNegativeInt | None = None  # accelerators (`accelerator`) per pod; None: as `train` for a network stage
    accelerator: str = "nvidia.com/gpu"  # the extended resource name the device plugin advertises
    tolerations: tuple[Toleration, ...] = ()
    node_selector: dict[str, str] = {}

    @model_validator(mode="after")
    def _quantities(self) -> Resources:
        for field in ("cpu", "memory"):
            value = getattr(self, field)
            if not QUANTITY.match(value):
                raise ValueError(f"{field}: {value!r} is not a Kubernetes quantity; write e.g. cpu: \"4\" or "
                                 "\"500m\", memory: \"16Gi\"")
        return self


def _default_resources() -> dict[str, Resources]:
    """Sizes that fit each stage of genbench/stages.py (named here, since config must not import the components; a
    unit test holds the two lists equal): training and the network stages on one accelerator each, the rest on
    CPU."""
    small = Resources(cpu="1", memory="4Gi", gpu=0)
    return {
        "prepare": Resources(cpu="2", memory="8Gi", gpu=0),
        "evaluate-real": Resources(cpu="4", memory="16Gi"),
        "train": Resources(cpu="8", memory="32Gi", gpu=1),
        "fid-curve": Resources(cpu="4", memory="16Gi"),
        "sample": Resources(cpu="4", memory="16Gi"),
        "evaluate": Resources(cpu="4", memory="16Gi"),
        "register": small,
        "sweep": Resources(cpu="4", memory="16Gi"),
        "report": Resources(cpu="2", memory="8Gi", gpu=0),
    }


# The secret contract: the keys each secret may hold, named as the environment variables they become, so that a
# pod can take a whole secret (`envFrom`) and a KFP task the same keys one by one (`use_secret_as_env`). Every key
# is optional: an MLflow server without auth needs no credentials, AWS S3 no endpoint.
SECRET_KEYS: dict[str, tuple[str, ...]] = {
    "mlflow": ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"),
}


class Secrets(Strict):
    """Names of the Kubernetes secrets every task, job and pod reads credentials from (their keys: SECRET_KEYS).
    No credential is ever a parameter."""

    mlflow: str = "genbench-mlflow"
    s3: str = "genbench-s3"


class KubeflowConfig(Strict):
    image: str = "ghcr.io/genbench/genbench"  # the repository the image is pushed to and pulled from, registry included
    tag: str | None = None  # None: the genbench version (the build script also tags the git commit); a variant
    # suffix (-cuda, -cpu) follows it
    namespace: str = "genbench"  # the Kubernetes namespace, and the KFP profile namespace runs are created in
    secrets: Secrets = Secrets()
    storage: str = "s3://genbench-artifacts/k8s"  # S3 prefix a TrainJob restores data/prepared/ and runs/ from and
    # pushes its run folder to (docs/kubeflow.md, "Training with a TrainJob")
    resources: dict[str, Resources] = Field(default_factory=_default_resources)  # per stage of genbench/stages.py

    @field_validator("storage")
    @classmethod
    def _s3_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/]+)*", value):
            raise ValueError(f"storage: {value!r} is not an S3 prefix; write s3://BUCKET/PREFIX, without a trailing /")
        return value

    @model_validator(mode="before")
    @classmethod
    def _merge_resources(cls, raw: object) -> object:
        """A stage written under `resources` replaces only the fields written for it; the others keep the
        stage's defaults."""
        if not isinstance(raw, dict) or not isinstance(raw.get("resources"), dict):
            return raw
        defaults = {name: value.model_dump() for name, value in _default_resources().items()}
        merged = dict(defaults)
        for stage, fields in raw["resources"].items():
            if stage not in defaults:
                raise ValueError(f"resources.{stage}: not a stage; the stages are {', '.join(defaults)}")
            merged[stage] = defaults[stage] | fields if isinstance(fields, dict) else fields
        return {**raw, "resources": merged}

    @model_validator(mode="after")
    def _network_stages_follow_train(self) -> KubeflowConfig:
        """Evaluate, sample and the other network stages get a GPU when training does, unless given their own."""
        train = self.resources["train"]
        for stage in NETWORK_STAGES:
            if self.resources[stage].gpu is None:
                self.resources[stage] = self.resources[stage].model_copy(
                    update={"gpu": train.gpu, "accelerator": train.accelerator})
        return self

    def image_ref(self, variant: ImageVariant = "cuda") -> str:
        """The full image reference, `image:TAG-VARIANT`, TAG defaulting to the installed genbench version."""
        from importlib.metadata import version

        return f"{self.image}:{self.tag or version('genbench')}-{variant}"

    def image_for(self, stage: str) -> str:
        """The image a pod of `stage` runs: CUDA's build when it requests accelerators, else the smaller CPU one."""
        return self.image_ref("cuda" if self.resources[stage].gpu else "cpu")
