"""A local service stack without docker: SeaweedFS (S3), PostgreSQL, an MLflow server and a Prefect server.

`genbench stack up` starts them on 127.0.0.1 with authentication on (S3 keys, PostgreSQL passwords, MLflow's
basic-auth app, Prefect's API auth string), waits until each answers its health check and writes the endpoints
and credentials to `.genbench/stack/stack.json` (mode 0600). The S3 keys and database passwords are made on the
first start and kept in `keys.json` (0600) beside the data, so a later `up` finds its buckets and databases as it
left them. Every later `genbench` command in that folder reads stack.json and talks to those servers, logged in,
instead of the embedded defaults (SQLite, local files), unless the standard variables (`MLFLOW_TRACKING_URI`,
`PREFECT_API_URL`, ...) are already set. `genbench stack down` stops exactly the processes it started, by pid.

S3 is SeaweedFS unless GENBENCH_S3_ENDPOINT_URL names another S3 server (MinIO, say) at `up`, with its keys in
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: then no SeaweedFS starts and the buckets are made there.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import postgres
from .apps import (
    ARTIFACT_BUCKET,
    MLFLOW_ADMIN,
    MLFLOW_AUTH_CACHE_S,
    MLFLOW_DEFAULT_PERMISSION,
    mlflow_auth_config,
    mlflow_auth_database,
    start_mlflow,
    start_prefect,
    write_mlflow_auth_config,
)
from .files import keys_file, read_stack, stack_dir, stack_file, stack_keys, write_private
from .processes import HEALTH_TIMEOUT_S, StackError, alive, answers, free_port, stop, wait_healthy
from .seaweedfs import REGION, create_buckets, lists_buckets, start_seaweedfs, stop_seaweedfs

__all__ = [
    "ARTIFACT_BUCKET", "CREDENTIALS", "DVC_BUCKET", "HEALTH_TIMEOUT_S", "MLFLOW_ADMIN", "MLFLOW_AUTH_CACHE_S",
    "MLFLOW_DEFAULT_PERMISSION", "REGION", "S3_ENDPOINT_ENV", "StackError", "alive", "apply_stack_env", "down",
    "keys_file", "mlflow_auth_config", "mlflow_auth_database", "read_stack", "stack_dir", "stack_env", "stack_file",
    "status", "up", "write_mlflow_auth_config",
]

DVC_BUCKET = "genbench-dvc"
S3_ENDPOINT_ENV = "GENBENCH_S3_ENDPOINT_URL"  # an S3 server of the user's (MinIO...) instead of SeaweedFS
DATABASES = ("mlflow", "prefect")  # one database and owner each, in the stack's PostgreSQL
# Each endpoint's credentials: they follow the endpoint, so a client the user points elsewhere never gets them.
CREDENTIALS = {
    "MLFLOW_TRACKING_URI": ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
    "PREFECT_API_URL": ("PREFECT_API_AUTH_STRING",),
}


def stack_env(root: Path) -> dict[str, str]:
    """Variables that point clients at the running stack; empty when no stack is up here."""
    stack = read_stack(root)
    return dict(stack["env"]) if stack else {}


def apply_stack_env(root: Path) -> None:
    """Export the stack's endpoints and credentials for this process, never overriding what the user set
    explicitly, and leaving out a server's credentials when the user points its endpoint elsewhere."""
    env = stack_env(root)
    for endpoint, keys in CREDENTIALS.items():
        if os.environ.get(endpoint, env.get(endpoint)) != env.get(endpoint):
            for key in keys:
                env.pop(key, None)
    for key, value in env.items():
        os.environ.setdefault(key, value)


def up(root: Path, host: str = "127.0.0.1") -> dict[str, Any]:
    """Start S3, PostgreSQL, MLflow and Prefect, wait for each to answer, create the buckets and databases, write
    stack.json; `started_in_s` says how long it took. A stack already running here is returned as it is."""
    root = Path(root).resolve()
    if (existing := read_stack(root)) and all(alive(s["pid"]) for s in existing["services"].values()):
        return existing
    if existing:
        down(root)
    began = time.monotonic()
    folder = stack_dir(root)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    for private in folder, folder / "logs":
        private.chmod(0o700)  # its databases, keys and logs are this user's business alone
    keys = stack_keys(folder)
    mlflow_password = write_mlflow_auth_config(root)
    prefect_auth = f"admin:{secrets.token_urlsafe(24)}"  # the UI's login placeholder reads "admin:pass"
    s3_url, s3_keys = _s3_endpoint(keys)
    s3_env = {"AWS_ACCESS_KEY_ID": s3_keys[0], "AWS_SECRET_ACCESS_KEY": s3_keys[1], "AWS_DEFAULT_REGION": REGION}
    services: dict[str, dict[str, Any]] = {}
    try:
        if s3_url is None:
            services["s3"] = start_seaweedfs(folder, host, *s3_keys)
            s3_url = services["s3"]["url"]
        pg_port = free_port(host)
        services["postgres"] = postgres.start_postgres(folder, host, pg_port, keys["postgres_password"])
        if "s3" in services:
            wait_healthy("s3", services["s3"], lambda: lists_buckets(s3_url, *s3_keys))
        elif not lists_buckets(s3_url, *s3_keys):
            raise StackError(f"{S3_ENDPOINT_ENV}={s3_url} does not list its buckets with AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY; check the server and its keys, or unset it to use SeaweedFS")
        create_buckets(s3_url, *s3_keys, {ARTIFACT_BUCKET, DVC_BUCKET})
        wait_healthy("postgres", services["postgres"], lambda: postgres.is_ready(host, pg_port))
        for name in DATABASES:
            postgres.ensure_database(host, pg_port, keys["postgres_password"], name, keys[f"{name}_db_password"])
        database = {name: postgres.url(driver, host, pg_port, name, keys[f"{name}_db_password"])
                    for name, driver in zip(DATABASES, ("psycopg2", "asyncpg"))}
        services["mlflow"] = start_mlflow(root, host, s3_url, s3_env, database["mlflow"])
        services["prefect"] = start_prefect(folder, host, prefect_auth, database["prefect"])
        wait_healthy("mlflow", services["mlflow"], f"{services['mlflow']['url']}/health")
        wait_healthy("prefect", services["prefect"], f"{services['prefect']['url']}/api/health")
    except BaseException:
        _stop_all(services)
        raise
    stack = {
        "services": services,
        "buckets": {"artifacts": ARTIFACT_BUCKET, "dvc": DVC_BUCKET},
        "started_in_s": round(time.monotonic() - began, 1),
        "env": s3_env | {
            "MLFLOW_TRACKING_URI": services["mlflow"]["url"],
            "MLFLOW_S3_ENDPOINT_URL": s3_url,
            "AWS_ENDPOINT_URL": s3_url,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN,
            "MLFLOW_TRACKING_PASSWORD": mlflow_password,
            "PREFECT_API_URL": f"{services['prefect']['url']}/api",
            "PREFECT_API_AUTH_STRING": prefect_auth,
        },
    }
    write_private(stack_file(root), json.dumps(stack, indent=2))
    return stack


def _s3_endpoint(keys: dict[str, str]) -> tuple[str | None, tuple[str, str]]:
    """The user's S3 server and its keys when S3_ENDPOINT_ENV names one, else (None, the generated keys)."""
    external = os.environ.get(S3_ENDPOINT_ENV)
    if not external:
        return None, (keys["s3_access_key"], keys["s3_secret_key"])
    given = tuple(os.environ.get(name, "") for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    if not all(given) or urlsplit(external).scheme not in ("http", "https"):
        raise StackError(f"{S3_ENDPOINT_ENV}={external!r}: give an http(s) URL and set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY to its keys, or unset it to use SeaweedFS")
    return external, (given[0], given[1])


def down(root: Path) -> list[str]:
    """Stop every process stack.json names, the servers before the stores they write to; return the names of those
    that were running."""
    stack = read_stack(root)
    if stack is None:
        return []
    stopped = _stop_all(stack["services"])
    stack_file(root).unlink()
    return stopped


def _stop_all(services: dict[str, dict[str, Any]]) -> list[str]:
    stopped = []
    for name, service in reversed(services.items()):
        # PostgreSQL's SIGTERM waits for every client to leave; SIGINT is its fast shutdown (still clean)
        if (stop_seaweedfs(service) if name == "s3" else
                stop(service["pid"], first=signal.SIGINT if name == "postgres" else signal.SIGTERM)):
            stopped.append(name)
    return stopped[::-1]


def status(root: Path) -> dict[str, dict[str, Any]]:
    """Per service: pid, url, whether the process lives and whether its health check answers."""
    stack = read_stack(root)
    if stack is None:
        return {}
    env = stack["env"]
    checks = {
        "s3": lambda url: lists_buckets(url, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]),
        "postgres": lambda url: postgres.is_ready(urlsplit(url).hostname or "", urlsplit(url).port or 0),
        "mlflow": lambda url: answers(f"{url}/health"),
        "prefect": lambda url: answers(f"{url}/api/health"),
    }
    return {name: {"pid": service["pid"], "url": service["url"], "alive": alive(service["pid"]),
                   "healthy": checks[name](service["url"])} for name, service in stack["services"].items()}
