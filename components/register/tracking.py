"""MLflow configuration for genbench: the one place that decides where runs and models go.

Two modes:

* ``MLFLOW_TRACKING_URI`` is set (a real tracking server, e.g. ``http://127.0.0.1:5000``):
  it is used unchanged, and the server decides where artifacts live.
* otherwise the embedded default: a SQLite database ``<project_dir>/mlflow.db`` (tracking *and*
  model registry) with artifacts under ``<project_dir>/mlartifacts``.

The experiment is ``MLFLOW_EXPERIMENT_NAME`` or ``"genbench"``.

MLflow takes several seconds to import, so it is imported only inside the functions below;
importing this module is free and has no side effects.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

DEFAULT_EXPERIMENT = "genbench"
DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"
# Retries of transient failures only (connection refused or reset, timeouts, 5xx, throttling), with exponential
# backoff and jitter: about a minute per call before it fails. boto3 reads the AWS pair (artifacts in S3, uploaded by
# this process or by the MLflow server: genbench/stack.py gives it the same), MLflow's REST client the MLFLOW pair
# (the tracking server; the wait doubles after each retry). A variable set in the environment wins.
TRANSIENT_RETRIES = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "6",
                     "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}

def experiment_name() -> str:
    """The experiment that genbench logs to (``MLFLOW_EXPERIMENT_NAME`` or ``genbench``)."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def embedded_tracking_uri(project_dir: Path) -> str:
    """``sqlite:///<abs project_dir>/mlflow.db`` (four slashes for an absolute POSIX path)."""
    return f"sqlite:///{(Path(project_dir).resolve() / DB_FILENAME).as_posix()}"


def embedded_artifact_location(project_dir: Path) -> str:
    """File URI of ``<project_dir>/mlartifacts``."""
    return (Path(project_dir).resolve() / ARTIFACTS_DIRNAME).as_uri()


def resolve_tracking_uri(project_dir: Path) -> tuple[str, bool]:
    """Return ``(uri, embedded)`` without importing or configuring MLflow."""
    default = embedded_tracking_uri(project_dir)
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env and env != default:
        return env, False
    return default, True


def require_registry(project_dir: Path, subject: str) -> None:
    """ValueError naming `subject` unless there is a store to read models from: a tracking server, or the embedded
    database on disk. Commands that only read the registry check this first, so that asking an empty folder
    creates no database in it."""
    _, embedded = resolve_tracking_uri(project_dir)
    if embedded and not (Path(project_dir) / DB_FILENAME).is_file():
        raise ValueError(f"{subject}: no MLflow registry here: {Path(project_dir) / DB_FILENAME} does not exist and "
                         "MLFLOW_TRACKING_URI is not set; register a model first (`genbench register`) or point "
                         "MLFLOW_TRACKING_URI at your server")


def quiet_mlflow() -> None:
    """Silence chatter that carries no information for a pipeline log.

    * the one-off "Creating initial MLflow database tables..." / alembic migration INFO lines;
    * GitPython's import-time complaint when no ``git`` executable exists (MLflow imports it to
      tag runs with the commit; genbench records the commit itself);
    * the registry's "Waiting up to N seconds for model version to finish creation" INFO line;
    * SQLAlchemy 2's deprecation of the ``noload`` strategy that MLflow's SQL store still uses
      (emitted on every process's first store access; nothing a genbench user can act on).

    Real warnings (WARNING and above) from MLflow are left alone.
    """
    warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    for name in (
        "mlflow.store.db.utils",
        "alembic",
        "alembic.runtime.migration",
        "mlflow.store.model_registry.abstract_store",  # "Waiting up to N seconds ..." per version
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def retry_transient_failures() -> None:
    """Export `TRANSIENT_RETRIES` where the environment does not set them (read at each call, so this suffices)."""
    for key, value in TRANSIENT_RETRIES.items():
        os.environ.setdefault(key, value)


def configure_tracking(project_dir: Path) -> str:
    """Point MLflow (fluent API and default ``MlflowClient``) at genbench's store, retrying transient failures.

    Creates the experiment if needed (in embedded mode with ``artifact_location`` set to
    ``<project_dir>/mlartifacts``) and makes it the active experiment. Returns the tracking URI.
    """
    quiet_mlflow()
    retry_transient_failures()
    project_dir = Path(project_dir).resolve()
    uri, embedded = resolve_tracking_uri(project_dir)
    if embedded:
        project_dir.mkdir(parents=True, exist_ok=True)
        (project_dir / ARTIFACTS_DIRNAME).mkdir(parents=True, exist_ok=True)

    import mlflow
    from mlflow.exceptions import MlflowException

    # set_tracking_uri also exports MLFLOW_TRACKING_URI (for subprocesses); put the user's value back, or a
    # later call in this process for another project would take our embedded URI for the user's server.
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported

    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
    except UnsupportedModelRegistryStoreURIException:  # a typo in the variable, not a server problem
        raise ValueError(f"MLFLOW_TRACKING_URI={uri!r}: MLflow has no store for this scheme; use http(s)://HOST:PORT "
                         "for a tracking server or sqlite:///PATH, or unset it for the embedded store") from None
    name = experiment_name()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            client.create_experiment(
                name,
                artifact_location=embedded_artifact_location(project_dir) if embedded else None,
            )
        except MlflowException as exc:  # another process created it in between
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        raise RuntimeError(
            f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore`) "
            "or set MLFLOW_EXPERIMENT_NAME to another name"
        )
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return uri


def get_experiment_id(tracking_uri: str) -> str:
    """ID of the genbench experiment in the store at ``tracking_uri`` (call configure first)."""
    import mlflow

    experiment = mlflow.MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(
        experiment_name()
    )
    if experiment is None:
        raise RuntimeError(
            f"experiment {experiment_name()!r} not found at {tracking_uri}; "
            "call configure_tracking() first"
        )
    return experiment.experiment_id
