"""A scheduled Prefect deployment of the pipeline, on a process or a Kubernetes work pool.

The deployment names the installed flow by module path (`genbench.flows.pipeline`), so a run started by the
schedule, the UI or `prefect deployment run` executes the same flow, components and params as `genbench run`,
against whatever MLflow / S3 endpoints the run's environment names. Where it runs depends on the pool's type:

- `process`: a worker on this machine runs the flow with the project folder as working directory;
- `kubernetes`: a Kubernetes worker runs each flow run as a Job from the pool's base job template
  (infra/k8s/prefect-work-pool.json) in the genbench image (infra/genbench.Dockerfile), whose /opt/genbench holds
  the code and params.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.types.entrypoint import EntrypointType

from .pipeline import pipeline

PoolType = Literal["process", "kubernetes"]


def read_pool_template(path: Path) -> dict[str, Any]:
    """A Kubernetes work pool's base job template in Prefect's format: `{"job_configuration", "variables"}`."""
    try:
        template = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= template.keys():
        raise ValueError(f"{path}: a base job template is a JSON object with the keys `job_configuration` and "
                         "`variables` (see infra/k8s/prefect-work-pool.json)")
    return template


def pool_request(name: str, pool_type: PoolType, template: dict[str, Any] | None = None) -> WorkPoolCreate:
    """The work pool to create: a process pool takes the server's default template, a kubernetes pool `template`."""
    if pool_type == "process":
        return WorkPoolCreate(name=name, type="process")
    if template is None:
        raise ValueError("a kubernetes work pool needs a base job template")
    return WorkPoolCreate(name=name, type="kubernetes", base_job_template=template)


def ensure_pool(request: WorkPoolCreate) -> None:
    """Create the pool unless it exists. An existing pool must have the requested type; a kubernetes pool's base
    job template is set to the requested one, so the repository's file stays the pool's definition."""
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(request.name)
        except ObjectNotFound:
            client.create_work_pool(request)
            return
        if existing.type != request.type:
            raise ValueError(f"work pool {request.name!r} exists with type {existing.type!r}, not {request.type!r}: "
                             f"pick another --pool, or delete it first (`prefect work-pool delete {request.name}`)")
        if request.base_job_template and existing.base_job_template != request.base_job_template:
            client.update_work_pool(request.name, WorkPoolUpdate(base_job_template=request.base_job_template))


def job_variables(pool_type: PoolType, project_dir: Path, image: str | None) -> dict[str, str]:
    """What the deployment sets in the pool's template: the folder a process runs in, or the image a Job runs."""
    if pool_type == "process":
        return {"working_dir": str(Path(project_dir).resolve())}
    if not image:
        raise ValueError("a kubernetes work pool runs the flow in an image: give the genbench image's reference")
    return {"image": image}


def deploy(project_dir: Path, name: str, cron: str, pool: str, parameters: dict[str, Any],
           pool_type: PoolType = "process", image: str | None = None,
           template: dict[str, Any] | None = None) -> str:
    """Create or update deployment `genbench-pipeline/<name>` with a cron schedule on `pool`; return its id.

    `image` and `template` are for a kubernetes pool: the image its Jobs run and the pool's base job template.
    """
    variables = job_variables(pool_type, project_dir, image)
    ensure_pool(pool_request(pool, pool_type, template))
    deployment_id = pipeline.deploy(
        name=name,
        work_pool_name=pool,
        cron=cron,
        parameters=parameters,
        job_variables=variables,
        entrypoint_type=EntrypointType.MODULE_PATH,
        build=False,
        push=False,
        print_next_steps=False,
    )
    return str(deployment_id)
