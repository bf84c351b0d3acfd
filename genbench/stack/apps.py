"""The stack's application servers: MLflow's tracking server (basic-auth app) and Prefect's server, each with its
store in its own PostgreSQL database (or, without one, SQLite in the stack folder) and MLflow's artifacts in S3."""

from __future__ import annotations

import configparser
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from ..components.register.tracking import TRANSIENT_RETRIES
from .files import stack_dir, write_private
from .processes import StackError, free_port, start

ARTIFACT_BUCKET = "genbench-artifacts"
MLFLOW_ADMIN = "admin"  # a name, not a secret: MLflow's log prints it when it creates the user
# What an MLflow user other than the admin may do with runs and models nobody granted them. genbench logs in
# as the admin, so nothing here needs more; a user an admin adds later sees nothing until granted access
# (MLflow's own default, READ, would show every account every run and model).
MLFLOW_DEFAULT_PERMISSION = "NO_PERMISSIONS"
MLFLOW_AUTH_CACHE_S = 60  # how long MLflow's auth app remembers a successful login (its default 0: never)


def mlflow_auth_config(root: Path) -> Path:
    return stack_dir(root) / "mlflow-auth.ini"


def mlflow_auth_database(root: Path) -> Path:
    return stack_dir(root) / "mlflow-auth.db"


def start_mlflow(root: Path, host: str, s3_url: str, s3_env: dict[str, str],
                 store_uri: str | None = None) -> dict[str, Any]:
    """The MLflow server of `up` (basic auth, `write_mlflow_auth_config`'s admin), its runs and registry in
    `store_uri` (SQLite in the stack folder when None), proxying artifacts to the bucket at `s3_url`; its uploads
    to S3 retry transient failures as genbench's clients do (components/register/tracking.py)."""
    port = free_port(host)
    retries = {k: v for k, v in TRANSIENT_RETRIES.items() if k.startswith("AWS_") and k not in os.environ}
    return start(
        "mlflow",
        [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
         "--app-name", "basic-auth", "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/mlflow"],
        stack_dir(root),
        # The store's URL holds its password: in the environment, not the command line every account can read.
        # The Flask key only signs the auth app's forms (CSRF): a new one each start costs nothing. MLflow's job
        # execution (GenAI judges, trace roll-ups) starts four huey consumer processes beside the server that
        # genbench never gives work: off, unless the user's environment turns it on.
        retries | s3_env | {
            "MLFLOW_BACKEND_STORE_URI": store_uri or f"sqlite:///{stack_dir(root) / 'mlflow.db'}",
            "MLFLOW_S3_ENDPOINT_URL": s3_url, "MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config(root)),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")},
        url=f"http://{host}:{port}",
    )


def start_prefect(folder: Path, host: str, auth_string: str, database_url: str | None) -> dict[str, Any]:
    """Prefect's server with API auth on, its database at `database_url` (SQLite under PREFECT_HOME when None)."""
    port = free_port(host)
    # The UI's API address defaults to port 4200: point it at this server's port.
    env = {"PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"http://{host}:{port}/api", "PREFECT_SERVER_API_AUTH_STRING": auth_string}
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return start("prefect", [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                 folder, env, url=f"http://{host}:{port}")


def write_mlflow_auth_config(root: Path) -> str:
    """Write the MLflow auth app's config (mode 0600) and return the admin password in it.

    MLflow reads `admin_password` only when it creates the admin user, so while the auth database of an
    earlier `up` exists its admin keeps the password that the previous config recorded.
    """
    config, database = mlflow_auth_config(root), mlflow_auth_database(root)
    if database.exists():
        previous = configparser.ConfigParser()
        previous.read(config)
        password = previous.get("mlflow", "admin_password", fallback="")
        if not password:
            raise StackError(f"{database} holds MLflow's users, but {config} with their admin password is "
                             f"missing; delete {database} (MLflow's users and permissions) and run "
                             "`genbench stack up` again")
    else:
        password = secrets.token_urlsafe(24)
    write_private(config, (
        "[mlflow]\n"
        f"default_permission = {MLFLOW_DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{str(database).replace('%', '%%')}\n"  # configparser reads % as a reference
        f"admin_username = {MLFLOW_ADMIN}\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # MLflow re-hashes the password on every request without it, and werkzeug's scrypt is slow by design;
        # a successful login is remembered for MLFLOW_AUTH_CACHE_S, keyed by an HMAC of the password
        f"auth_cache_ttl_seconds = {MLFLOW_AUTH_CACHE_S}\n"
    ))
    return password
