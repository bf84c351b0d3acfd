"""A real MLflow tracking server for a test, on 127.0.0.1 with basic auth on, as `genbench stack up` runs it.

The backend store is an argument: today a SQLite file in the test's folder, tomorrow the stack's PostgreSQL, with
no change to the tests that use it. Artifacts go to a folder beside it through the server (`--serve-artifacts`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ADMIN = "admin"
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class MlflowServer:
    url: str
    admin_password: str
    log: Path

    def login(self) -> dict[str, str]:
        """The variables that make an MLflow client in this process talk to the server as its admin."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": ADMIN,
                "MLFLOW_TRACKING_PASSWORD": self.admin_password}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_store_uri: str | None = None, workers: int = 2) -> Iterator[MlflowServer]:
    """Start the server (its backend store `backend_store_uri`, by default SQLite in `folder`), wait until it
    answers its health check, yield it, stop its process group."""
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    auth = folder / "auth.ini"
    auth.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                    f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = {ADMIN}\n"
                    f"admin_password = {password}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                    "auth_cache_ttl_seconds = 60\n")  # else every request re-hashes the password (scrypt, slow)
    auth.chmod(0o600)
    port, log = free_port(), folder / "mlflow.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_AUTH_"))}
    env |= {"MLFLOW_AUTH_CONFIG_PATH": str(auth), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--app-name", "basic-auth",
               "--backend-store-uri", backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", (folder / "artifacts").as_uri()]
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the MLflow server did not start; its log {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield MlflowServer(url, password, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
