"""infra/k8s/prefect-work-pool.json and `genbench deploy --pool-type kubernetes`, without a Prefect server.

The template goes through what the server checks when the pool is created (every placeholder declared, the
variables a valid JSON schema) and what it checks when a flow run starts (its job variables against that schema);
then prefect-kubernetes renders it for a flow run exactly as the worker does, and the Job it would submit is
validated against the Kubernetes schema.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from ..conftest import REPO

TEMPLATE = REPO / "infra" / "k8s" / "prefect-work-pool.json"
IMAGE = "registry.example.com/genbench:0.1.0"
KUBERNETES = "1.29"


def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


class NoAPI:
    """Stands in for the Prefect client: the template must render without blocks or variables from a server."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering the template called the Prefect API ({name})")


def render(base_job_template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The Job manifest the Kubernetes worker would submit for a flow run of a deployment with `job_variables`."""
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    configuration = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        base_job_template, job_variables, client=NoAPI()))
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="gentle-otter"))
    return configuration.job_manifest


def check_job_variables(job_variables: dict[str, Any], variables: dict[str, Any]) -> None:
    """The server's check when a flow run of the deployment starts (server/api/validation.py): the variables'
    defaults, overlaid with the deployment's values, against the schema, required keys included."""
    from prefect.utilities.schema_tools import validate

    defaults = {key: spec["default"] for key, spec in variables["properties"].items() if "default" in spec}
    validate(defaults | job_variables, variables, raise_on_error=True, preprocess=True, ignore_required=False,
             allow_none_with_default=True)


def test_the_server_accepts_the_template() -> None:
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.schema_tools import is_valid_schema

    base_job_template = template()
    WorkPoolCreate(name="gpu", type="kubernetes", base_job_template=base_job_template)
    is_valid_schema(base_job_template["variables"], preprocess=False)
    broken = copy.deepcopy(base_job_template)
    broken["job_configuration"]["job_manifest"]["spec"]["activeDeadlineSeconds"] = "{{ deadline }}"
    with pytest.raises(ValueError, match="deadline"):  # an undeclared placeholder is refused
        WorkPoolCreate(name="gpu", type="kubernetes", base_job_template=broken)


def test_a_flow_run_needs_the_image_and_sane_resources() -> None:
    from prefect.utilities.schema_tools import ValidationError

    variables = template()["variables"]
    check_job_variables({"image": IMAGE}, variables)
    check_job_variables({"image": IMAGE, "gpus": 0, "namespace": "ml"}, variables)
    for bad in ({}, {"image": IMAGE, "gpus": -1}, {"image": IMAGE, "image_pull_policy": "Sometimes"}):
        with pytest.raises(ValidationError):
            check_job_variables(bad, variables)


@pytest.mark.parametrize("gpus", [1, 0])
def test_the_worker_renders_a_valid_batch_job(gpus: int) -> None:
    manifest = render(template(), {"image": IMAGE, "gpus": gpus})
    pod = manifest["spec"]["template"]["spec"]
    (job_container,) = pod["containers"]
    assert job_container["image"] == IMAGE and job_container["args"] == ["prefect", "flow-run", "execute"]
    assert job_container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    secrets = list(yaml.load_all((REPO / "infra" / "k8s" / "secrets.example.yaml").read_text(),
                                 Loader=yaml.CSafeLoader))
    assert job_container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"], "optional": True}}
                                        for secret in secrets]  # the MLflow secret, then the S3 one
    assert {manifest["metadata"]["namespace"]} == {secret["metadata"]["namespace"] for secret in secrets}
    assert "serviceAccountName" not in pod  # unset: the namespace's default account
    assert any(var["name"] == "PREFECT__FLOW_RUN_ID" for var in job_container["env"])
    # The worker insists on these two inside the pod spec (prefect_kubernetes.worker._get_base_job_manifest);
    # they are not pod fields and the API server drops them, so only they are set aside before the strict check.
    assert (pod.pop("completions"), pod.pop("parallelism")) == (1, 1)
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_the_pool_request_carries_the_template() -> None:
    from genbench.flows.deployment import pool_request, read_pool_template

    base_job_template = read_pool_template(TEMPLATE)
    payload = pool_request("gpu", "kubernetes", base_job_template).model_dump(mode="json", exclude_unset=True)
    assert payload == {"name": "gpu", "type": "kubernetes", "base_job_template": template()}
    assert pool_request("here", "process").model_dump(mode="json", exclude_unset=True) == {
        "name": "here", "type": "process"}
    with pytest.raises(ValueError, match="base job template"):
        pool_request("gpu", "kubernetes")


def test_job_variables_name_the_folder_or_the_image(tmp_path: Path) -> None:
    from genbench.flows.deployment import job_variables

    assert job_variables("process", tmp_path, None) == {"working_dir": str(tmp_path.resolve())}
    assert job_variables("kubernetes", tmp_path, IMAGE) == {"image": IMAGE}
    with pytest.raises(ValueError, match="image"):
        job_variables("kubernetes", tmp_path, None)


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ('{"variables": {}}', "job_configuration")])
def test_a_bad_template_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    from genbench.flows.deployment import read_pool_template

    path = tmp_path / "pool.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        read_pool_template(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("args, message", [
    (["--pool-type", "kubernetes", "--image", IMAGE, "--pool-template", str(TEMPLATE)], "no Prefect server"),
    (["--pool-type", "kubernetes", "--image", IMAGE, "--pool-template", "missing.json"], "missing.json not found"),
    (["--image", IMAGE], "--image is for --pool-type kubernetes"),
])
def test_deploy_stops_on_bad_input_before_any_server(project: Path, args: list[str], message: str) -> None:
    from genbench.cli import app

    result = CliRunner().invoke(app, ["deploy", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
