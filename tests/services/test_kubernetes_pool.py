"""`genbench deploy --pool-type kubernetes` against a real Prefect server on 127.0.0.1 (no cluster).

The pool is created as type kubernetes with the repository's base job template and kept equal to it, the
deployment carries the image as its job variable, the server accepts a flow run of it, and prefect-kubernetes
resolves that flow run exactly as a worker would, into a Job the Kubernetes schema accepts. The server is
started as `genbench stack up` starts it, on a database of its own in the run's shared PostgreSQL (backing.py),
and stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from genbench.stack.apps import start_prefect
from genbench.stack.processes import stop, wait_healthy

from ..conftest import REPO, use_tiny
from .backing import Backing
from .screenshots import api

pytestmark = pytest.mark.server
TEMPLATE = REPO / "infra" / "k8s" / "prefect-work-pool.json"
IMAGE = "registry.example.com/genbench:0.1.0"


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory, backing: Backing):
    """A Prefect server with API auth on, as `genbench stack up` runs it; yields its clients' variables."""
    folder = tmp_path_factory.mktemp("prefect-server")
    (folder / "logs").mkdir()
    auth = f"admin:{secrets.token_urlsafe(16)}"
    service = start_prefect(folder, "127.0.0.1", auth, backing.database("asyncpg"))
    try:
        wait_healthy("prefect", service, f"{service['url']}/api/health")
        yield {"PREFECT_API_URL": f"{service['url']}/api", "PREFECT_API_AUTH_STRING": auth}
    finally:
        stop(service["pid"])


def genbench_deploy(project: Path, client_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return subprocess.run([sys.executable, "-m", "genbench.cli", "deploy", "--profile", "tiny", *args], cwd=project,
                          env=env | client_env, capture_output=True, text=True, timeout=300)


def test_kubernetes_pool_deployment_and_the_job_a_worker_would_submit(prefect_api: dict, tmp_path: Path) -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    use_tiny(tmp_path)
    edited = json.loads(TEMPLATE.read_text())
    edited["variables"]["properties"]["gpus"]["default"] = 2
    (tmp_path / "pool.json").write_text(json.dumps(edited))
    for template in ("pool.json", str(TEMPLATE)):  # the second deploy puts the repository's template back
        done = genbench_deploy(tmp_path, prefect_api, "--name", "k8s", "--pool", "gpu", "--pool-type", "kubernetes",
                               "--image", IMAGE, "--pool-template", template)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "--type kubernetes" in done.stdout
    pool = api(prefect_api, "/work_pools/gpu")
    assert pool["type"] == "kubernetes" and pool["base_job_template"] == json.loads(TEMPLATE.read_text())
    deployment = api(prefect_api, "/deployments/name/genbench-pipeline/k8s")
    assert deployment["job_variables"] == {"image": IMAGE} and deployment["work_pool_name"] == "gpu"
    assert deployment["entrypoint"] == "genbench.flows.pipeline.pipeline"

    wrong_type = genbench_deploy(tmp_path, prefect_api, "--name", "here", "--pool", "gpu")
    assert wrong_type.returncode == 2 and "exists with type 'kubernetes'" in wrong_type.stderr

    flow_run_id = api(prefect_api, f"/deployments/{deployment['id']}/create_flow_run", {})["id"]

    async def resolve() -> dict:
        url, auth = prefect_api["PREFECT_API_URL"], prefect_api["PREFECT_API_AUTH_STRING"]
        async with PrefectClient(url, auth_string=auth) as client:
            flow_run = await client.read_flow_run(flow_run_id)
            configuration = await KubernetesWorkerJobConfiguration.resolve_for_flow_run(
                flow_run, client=client, work_pool=await client.read_work_pool("gpu"), worker_name="test")
            return configuration.job_manifest

    manifest = asyncio.run(resolve())
    pod = manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == IMAGE
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "PREFECT__FLOW_RUN_ID", "value": flow_run_id} in pod["containers"][0]["env"]
    # Set aside the two fields the worker requires in the pod spec and the API server drops (see the unit test).
    pod.pop("completions"), pod.pop("parallelism")
    kubernetes_validate.validate(manifest, "1.29", strict=True)
