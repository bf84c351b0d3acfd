"""A local service stack without docker: S3-compatible storage, an MLflow server and a Prefect server.

`genbench stack up` starts them on 127.0.0.1 with authentication on (MLflow's basic-auth app, Prefect's API
auth string), waits until each answers its health check and writes the endpoints and the generated
credentials to `.genbench/stack/stack.json` (mode 0600; the MLflow auth config beside it is 0600 too). Every
later `genbench` command in that folder reads the file and talks to those servers, logged in, instead of the
embedded defaults, unless the standard variables (`MLFLOW_TRACKING_URI`, `PREFECT_API_URL`, ...) are already
set. `genbench stack down` stops exactly the processes it started, by pid.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .components.register.tracking import TRANSIENT_RETRIES

ARTIFACT_BUCKET = "genbench-artifacts"
DVC_BUCKET = "genbench-dvc"
REGION = "us-east-1"
HEALTH_TIMEOUT_S = 240.0
MLFLOW_ADMIN = "admin"  # a name, not a secret: MLflow's log prints it when it creates the user
# What an MLflow user other than the admin may do with runs and models nobody granted them. genbench logs in
# as the admin, so nothing here needs more; a user an admin adds later sees nothing until granted access
# (MLflow's own default, READ, would show every account every run and model).
MLFLOW_DEFAULT_PERMISSION = "NO_PERMISSIONS"
MLFLOW_AUTH_CACHE_S = 60  # how long MLflow's auth app remembers a successful login (its default 0: never)
# Each endpoint's credentials: they follow the endpoint, so a client the user points elsewhere never gets them.
CREDENTIALS = {
    "MLFLOW_TRACKING_URI": ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
    "PREFECT_API_URL": ("PREFECT_API_AUTH_STRING",),
}


class StackError(RuntimeError):
    """A service did not start, or the stack file is stale."""


def stack_dir(root: Path) -> Path:
    return Path(root) / ".genbench" / "stack"


def stack_file(root: Path) -> Path:
    return stack_dir(root) / "stack.json"


def mlflow_auth_config(root: Path) -> Path:
    return stack_dir(root) / "mlflow-auth.ini"


def mlflow_auth_database(root: Path) -> Path:
    return stack_dir(root) / "mlflow-auth.db"


def read_stack(root: Path) -> dict[str, Any] | None:
    path = stack_file(root)
    return json.loads(path.read_text()) if path.exists() else None


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
    """Start S3, MLflow and Prefect servers with generated credentials, wait for health, create the buckets,
    write stack.json."""
    root = Path(root).resolve()
    if (existing := read_stack(root)) and all(_alive(s["pid"]) for s in existing["services"].values()):
        return existing
    if existing:
        down(root)
    folder = stack_dir(root)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # its databases and logs are this user's business alone
    access_key, secret_key = f"genbench{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    mlflow_password = _write_mlflow_auth_config(root)
    prefect_auth = f"admin:{secrets.token_urlsafe(24)}"  # the UI's login placeholder reads "admin:pass"
    s3_env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_DEFAULT_REGION": REGION}
    services: dict[str, dict[str, Any]] = {}
    try:
        s3_port = _free_port(host)
        s3_url = f"http://{host}:{s3_port}"
        services["s3"] = _start_s3(host, s3_port, folder, s3_env)
        _wait_healthy("s3", services["s3"], _s3_health_url(services["s3"]))
        _create_buckets(s3_url, s3_env)

        services["mlflow"] = start_mlflow(root, host, s3_url, s3_env)
        prefect_port = _free_port(host)
        services["prefect"] = _start(
            "prefect",
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(prefect_port)],
            folder,
            # The UI's API address defaults to port 4200: point it at this server's port.
            {"PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_UI_API_URL": f"http://{host}:{prefect_port}/api", "PREFECT_SERVER_API_AUTH_STRING": prefect_auth},
            url=f"http://{host}:{prefect_port}",
        )
        _wait_healthy("mlflow", services["mlflow"], f"{services['mlflow']['url']}/health")
        _wait_healthy("prefect", services["prefect"], f"{services['prefect']['url']}/api/health")
    except BaseException:
        for service in services.values():
            _stop(service["pid"])
        raise
    stack = {
        "services": services,
        "buckets": {"artifacts": ARTIFACT_BUCKET, "dvc": DVC_BUCKET},
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
    _write_private(stack_file(root), json.dumps(stack, indent=2))
    return stack


def start_mlflow(root: Path, host: str, s3_url: str, s3_env: dict[str, str]) -> dict[str, Any]:
    """The MLflow server of `up` (basic auth, `_write_mlflow_auth_config`'s admin), proxying artifacts to the bucket
    at `s3_url`; its uploads to S3 retry transient failures as genbench's clients do (components/register/tracking.py)."""
    port = _free_port(host)
    retries = {k: v for k, v in TRANSIENT_RETRIES.items() if k.startswith("AWS_") and k not in os.environ}
    return _start(
        "mlflow",
        [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
         "--app-name", "basic-auth",
         "--backend-store-uri", f"sqlite:///{stack_dir(root) / 'mlflow.db'}",
         "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/mlflow"],
        stack_dir(root),
        # The Flask key only signs the auth app's forms (CSRF): a new one each start costs nothing. MLflow's job
        # execution (GenAI judges, trace roll-ups) starts four huey consumer processes beside the server that
        # genbench never gives work: off, unless the user's environment turns it on.
        retries | s3_env | {
            "MLFLOW_S3_ENDPOINT_URL": s3_url, "MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config(root)),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")},
        url=f"http://{host}:{port}",
    )


def down(root: Path) -> list[str]:
    """Stop every process stack.json names; return the names of those that were running."""
    stack = read_stack(root)
    if stack is None:
        return []
    stopped = [name for name, service in stack["services"].items() if _stop(service["pid"])]
    stack_file(root).unlink()
    return stopped


def status(root: Path) -> dict[str, dict[str, Any]]:
    """Per service: pid, url, whether the process lives and whether its health check answers."""
    stack = read_stack(root)
    if stack is None:
        return {}
    report = {}
    for name, service in stack["services"].items():
        health = {"s3": _s3_health_url(service), "mlflow": f"{service['url']}/health",
                  "prefect": f"{service['url']}/api/health"}[name]
        report[name] = {"pid": service["pid"], "url": service["url"], "alive": _alive(service["pid"]),
                        "healthy": _answers(health)}
    return report


def _write_mlflow_auth_config(root: Path) -> str:
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
    _write_private(config, (
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


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, from the first byte (chmod after writing leaves a gap)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _start_s3(host: str, port: int, folder: Path, s3_env: dict[str, str]) -> dict[str, Any]:
    """MinIO where it is installed (a real S3 server), else moto's server (S3 API in Python)."""
    url = f"http://{host}:{port}"
    if minio := shutil.which("minio"):
        env = {"MINIO_ROOT_USER": s3_env["AWS_ACCESS_KEY_ID"], "MINIO_ROOT_PASSWORD": s3_env["AWS_SECRET_ACCESS_KEY"]}
        return _start("s3", [minio, "server", str(folder / "minio"), "--address", f"{host}:{port}", "--quiet"],
                      folder, env, url=url, engine="minio")
    moto = shutil.which("moto_server", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if moto is None:
        raise StackError("no S3 server found: install MinIO, or moto's server (`uv sync` installs moto[server])")
    return _start("s3", [moto, "-H", host, "-p", str(port)], folder, {}, url=url, engine="moto")


def _s3_health_url(service: dict[str, Any]) -> str:
    return f"{service['url']}/minio/health/live" if service.get("engine") == "minio" else f"{service['url']}/"


def _start(name: str, cmd: list[str], folder: Path, extra_env: dict[str, str], **info: Any) -> dict[str, Any]:
    log = folder / "logs" / f"{name}.log"
    # MLFLOW_AUTH_ADMIN_* in the caller's environment would override the auth config's admin
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API", "MLFLOW_AUTH_"))}
    with open(log, "ab") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env | extra_env,
                                   start_new_session=True)
    return {"pid": process.pid, "log": str(log), **info}


def _wait_healthy(name: str, service: dict[str, Any], url: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(service["pid"]):
            raise StackError(f"{name} exited during start-up; see {service['log']}")
        if _answers(url):
            return
        time.sleep(1.0)
    raise StackError(f"{name} did not answer {url} within {HEALTH_TIMEOUT_S:.0f} s; see {service['log']}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _create_buckets(url: str, s3_env: dict[str, str]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=url, region_name=REGION,
                          aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"])
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for bucket in {ARTIFACT_BUCKET, DVC_BUCKET} - existing:
        client.create_bucket(Bucket=bucket)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) still answers kill(0); /proc tells them apart on Linux
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _stop(pid: int, grace_s: float = 15.0) -> bool:
    """SIGTERM the process group started for a service, SIGKILL after a grace period; return once it is gone."""
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not _gone_within(pid, grace_s):
        with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
            os.killpg(pid, signal.SIGKILL)
        _gone_within(pid, 10.0)  # even a killed process takes a moment to exit on a loaded machine
    return True


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True
