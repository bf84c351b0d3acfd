"""A local service stack without docker: S3-compatible storage, an MLflow server and a Prefect server.

`genbench stack up` starts them on 127.0.0.1, waits until each answers its health check and writes the
endpoints to `.genbench/stack/stack.json` (mode 0600: it holds the generated S3 keys). Every later
`genbench` command in that folder reads the file and talks to those servers instead of the embedded
defaults, unless the standard variables (`MLFLOW_TRACKING_URI`, `PREFECT_API_URL`, ...) are already set.
`genbench stack down` stops exactly the processes it started, by pid.
"""

from __future__ import annotations

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

ARTIFACT_BUCKET = "genbench-artifacts"
DVC_BUCKET = "genbench-dvc"
REGION = "us-east-1"
HEALTH_TIMEOUT_S = 240.0


class StackError(RuntimeError):
    """A service did not start, or the stack file is stale."""


def stack_dir(root: Path) -> Path:
    return Path(root) / ".genbench" / "stack"


def stack_file(root: Path) -> Path:
    return stack_dir(root) / "stack.json"


def read_stack(root: Path) -> dict[str, Any] | None:
    path = stack_file(root)
    return json.loads(path.read_text()) if path.exists() else None


def stack_env(root: Path) -> dict[str, str]:
    """Variables that point clients at the running stack; empty when no stack is up here."""
    stack = read_stack(root)
    return dict(stack["env"]) if stack else {}


def apply_stack_env(root: Path) -> None:
    """Export the stack's endpoints for this process, never overriding what the user set explicitly."""
    for key, value in stack_env(root).items():
        os.environ.setdefault(key, value)


def up(root: Path, host: str = "127.0.0.1") -> dict[str, Any]:
    """Start S3, MLflow and Prefect servers, wait for health, create the buckets, write stack.json."""
    root = Path(root).resolve()
    if (existing := read_stack(root)) and all(_alive(s["pid"]) for s in existing["services"].values()):
        return existing
    if existing:
        down(root)
    folder = stack_dir(root)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    access_key, secret_key = f"genbench{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    s3_env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_DEFAULT_REGION": REGION}
    services: dict[str, dict[str, Any]] = {}
    try:
        s3_port = _free_port(host)
        s3_url = f"http://{host}:{s3_port}"
        services["s3"] = _start_s3(host, s3_port, folder, s3_env)
        _wait_healthy("s3", services["s3"], _s3_health_url(services["s3"]))
        _create_buckets(s3_url, s3_env)

        mlflow_port = _free_port(host)
        services["mlflow"] = _start(
            "mlflow",
            [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(mlflow_port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/mlflow"],
            folder, s3_env | {"MLFLOW_S3_ENDPOINT_URL": s3_url},
            url=f"http://{host}:{mlflow_port}",
        )
        prefect_port = _free_port(host)
        services["prefect"] = _start(
            "prefect",
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(prefect_port)],
            folder,
            # The UI's API address defaults to port 4200: point it at this server's port.
            {"PREFECT_HOME": str(folder / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_UI_API_URL": f"http://{host}:{prefect_port}/api"},
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
            "PREFECT_API_URL": f"{services['prefect']['url']}/api",
        },
    }
    path = stack_file(root)
    path.write_text(json.dumps(stack, indent=2))
    path.chmod(0o600)
    return stack


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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API"))}
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
    """SIGTERM the process group started for a service, SIGKILL after a grace period."""
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True
