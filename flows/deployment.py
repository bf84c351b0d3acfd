"""A scheduled Prefect deployment of the pipeline, run by a process worker from a work pool.

The deployment names the installed flow by module path (`genbench.flows.pipeline`) and runs it with the
project folder as working directory, so a run started by the schedule, the UI or `prefect deployment run`
executes the same flow, components and params as `genbench run` there, against whatever MLflow / S3
endpoints the worker's environment names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.types.entrypoint import EntrypointType

from .pipeline import pipeline


def ensure_process_pool(name: str) -> None:
    """Create the work pool (type `process`) unless it exists."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def deploy(project_dir: Path, name: str, cron: str, pool: str, parameters: dict[str, Any]) -> str:
    """Create or update deployment `genbench-pipeline/<name>` with a cron schedule; return its id."""
    ensure_process_pool(pool)
    deployment_id = pipeline.deploy(
        name=name,
        work_pool_name=pool,
        cron=cron,
        parameters=parameters,
        job_variables={"working_dir": str(Path(project_dir).resolve())},
        entrypoint_type=EntrypointType.MODULE_PATH,
        build=False,
        push=False,
        print_next_steps=False,
    )
    return str(deployment_id)
