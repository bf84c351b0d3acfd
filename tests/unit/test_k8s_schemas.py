"""Every manifest in infra/k8s against the schema of the version we claim, strictly: an unknown field fails.

Custom resources go through their CRD's openAPIV3Schema (vendored in infra/k8s/schemas/, README there) with
jsonschema, every object that lists its properties closed to others, as `kubectl apply --validate=strict` (the
API server's strict field validation) refuses an unknown field instead of pruning it; their metadata goes through
the core ObjectMeta schema. Core objects go through kubernetes-validate's Kubernetes 1.29 schemas in strict mode.
The CEL rules in the CRDs (`x-kubernetes-validations`, immutability) are not evaluated here. Each case also
plants a misspelled field and shows that the same check then fails.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ..conftest import REPO

K8S = REPO / "infra" / "k8s"
SCHEMAS = K8S / "schemas"
KUBERNETES = "1.29"  # as tests/unit/test_k8s_training.py: the oldest version the manifests support
CRDS = {  # apiVersion/kind → the vendored CRD that defines it
    "trainer.kubeflow.org/v1alpha1/TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
    "trainer.kubeflow.org/v1alpha1/TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml",
    "kubeflow.org/v1/PyTorchJob": "kubeflow.org_pytorchjobs.yaml",
}


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties refusing others (unless it preserves unknown
    fields, as the API server does for such objects)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) if key != "properties" else {name: closed(sub) for name, sub in value.items()}
              for key, value in schema.items()}
    if ("properties" in result and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")):
        result["additionalProperties"] = False
    return result


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    crd = yaml.load((SCHEMAS / CRDS[f"{api_version}/{kind}"]).read_text(), Loader=yaml.CSafeLoader)
    assert crd["spec"]["names"]["kind"] == kind
    group, version = api_version.rsplit("/", 1)
    assert crd["spec"]["group"] == group
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return jsonschema.Draft4Validator(closed(served["schema"]["openAPIV3Schema"]))


def validate(manifest: dict[str, Any]) -> None:
    """Raise if `manifest` is not what its API accepts under strict field validation."""
    key = f"{manifest['apiVersion']}/{manifest['kind']}"
    if key not in CRDS:
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        return
    error = jsonschema.exceptions.best_match(crd_validator(manifest["apiVersion"], manifest["kind"])
                                             .iter_errors(manifest))
    if error is not None:
        raise error
    # a CRD's schema leaves metadata open; the API server checks it as every object's ObjectMeta
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"]},
                                 KUBERNETES, strict=True)


def documents(name: str) -> list[dict[str, Any]]:
    return list(yaml.load_all((K8S / name).read_text(), Loader=yaml.CSafeLoader))


def generated_config_map() -> dict[str, Any]:
    """What kustomize's configMapGenerator makes of kustomization.yaml (literals KEY=VALUE, no hash suffix)."""
    kustomization = documents("kustomization.yaml")[0]
    (generator,) = kustomization["configMapGenerator"]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": generator["name"], "namespace": kustomization["namespace"]},
            "data": dict(literal.split("=", 1) for literal in generator["literals"])}


def rendered_trainjob(**kubeflow: Any) -> dict[str, Any]:
    """`genbench trainjob render ddpm --nodes 3` under params whose `kubeflow` section is `kubeflow`."""
    from genbench.config import load_config
    from genbench.flows.trainjob import render

    config = load_config(REPO / "params.yaml", "full")
    config = config.model_copy(update={"kubeflow": type(config.kubeflow).model_validate(kubeflow)})
    return render(config, "ddpm", 0, 3)


def work_pool_job() -> dict[str, Any]:
    """The Job the Prefect worker makes of prefect-work-pool.json, less the two fields it insists on that are no
    pod fields (tests/unit/test_k8s_work_pool.py says why)."""
    from .test_k8s_work_pool import IMAGE, render, template

    manifest = render(template(), {"image": IMAGE})
    for field in ("completions", "parallelism"):
        manifest["spec"]["template"]["spec"].pop(field)
    return manifest


PLACED = {"tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}], "node_selector": {"pool": "a100"}}
# name → (the manifest, where a misspelled field is planted: keys and list indexes down to a mapping, the field)
CASES: dict[str, tuple[Callable[[], dict[str, Any]], tuple[Any, ...], str]] = {
    "trainjob.yaml": (lambda: documents("trainjob.yaml")[0], ("spec", "trainer"), "numNode"),
    "trainjob.yaml metadata": (lambda: documents("trainjob.yaml")[0], ("metadata",), "lables"),
    "rendered TrainJob, GPU": (lambda: rendered_trainjob(resources={"train": PLACED}),
                               ("spec", "runtimePatches", 0, "trainingRuntimeSpec", "template", "spec",
                                "replicatedJobs", 0, "template", "spec", "template", "spec"), "nodeSelecter"),
    "rendered TrainJob, CPU": (lambda: rendered_trainjob(resources={"train": {"gpu": 0}}),
                               ("spec", "trainer", "resourcesPerNode"), "request"),
    "runtime.yaml": (lambda: documents("runtime.yaml")[0],
                     ("spec", "template", "spec", "replicatedJobs", 0, "template", "spec", "template", "spec",
                      "initContainers", 1), "restartPolicyy"),
    "pytorchjob.yaml": (lambda: documents("pytorchjob.yaml")[0], ("spec", "runPolicy"), "cleanPodPolicyy"),
    "namespace.yaml": (lambda: documents("namespace.yaml")[0], ("metadata",), "nmae"),
    "secrets.example.yaml mlflow": (lambda: documents("secrets.example.yaml")[0], (), "stringdata"),
    "secrets.example.yaml s3": (lambda: documents("secrets.example.yaml")[1], ("metadata",), "namespce"),
    "kustomization ConfigMap": (generated_config_map, (), "datta"),
    "work-pool Job": (work_pool_job, ("spec", "template", "spec", "containers", 0), "envForm"),
}


@pytest.mark.parametrize("name", CASES)
def test_each_manifest_is_valid_against_its_schema(name: str) -> None:
    validate(CASES[name][0]())


@pytest.mark.parametrize("name", CASES)
def test_a_misspelled_field_fails_the_same_check(name: str) -> None:
    make, path, field = CASES[name]
    manifest = copy.deepcopy(make())
    target = manifest
    for step in path:
        target = target[step]
    assert isinstance(target, dict) and field not in target
    target[field] = copy.deepcopy(next(iter(target.values()), "x"))
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)) as raised:
        validate(manifest)
    assert field in str(raised.value)


def test_a_wrong_type_fails_too() -> None:
    manifest = documents("trainjob.yaml")[0]
    manifest["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        validate(manifest)


def test_every_file_in_infra_k8s_is_covered() -> None:
    """A manifest added to infra/k8s without a case here fails this test."""
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    covered = {name.split(" ")[0] for name in CASES}
    assert manifests <= covered, manifests - covered
    kustomization = documents("kustomization.yaml")[0]
    assert set(kustomization["resources"]) <= covered  # what `kubectl apply -k` applies, besides the ConfigMap


def test_the_vendored_schemas_are_the_versions_we_claim() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    for api, file in CRDS.items():
        assert file in readme
        crd = yaml.load((SCHEMAS / file).read_text(), Loader=yaml.CSafeLoader)
        assert api.rsplit("/", 2)[1] in [version["name"] for version in crd["spec"]["versions"]]
    assert "v2.3.0" in readme and "v1.9.0" in readme


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl (built-in kustomize) is not installed: neither PyPI nor Debian packages "
                           "kustomize; the resources it lists are validated one by one above")
def test_the_kustomize_build_is_valid(tmp_path: Path) -> None:
    """What `kubectl apply -k infra/k8s` would send, when kubectl is at hand (its kustomize builds offline)."""
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    objects = list(yaml.load_all(built.stdout, Loader=yaml.CSafeLoader))
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Namespace", "PyTorchJob"]
    for manifest in objects:
        validate(manifest)
    (job,) = [o for o in objects if o["kind"] == "PyTorchJob"]
    kustomization = documents("kustomization.yaml")[0]
    image = kustomization["images"][0]
    assert {c["image"] for role in job["spec"]["pytorchReplicaSpecs"].values()
            for c in role["template"]["spec"]["containers"]} == {f"{image['newName']}:{image['newTag']}"}
