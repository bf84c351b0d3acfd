"""`genbench stack` against real servers on 127.0.0.1: S3 (moto's server, or MinIO), MLflow, Prefect.

The pipeline runs through the Prefect *server* (not the ephemeral one) and logs to the MLflow *server*,
whose artifacts must land in the S3 bucket. Everything the test starts, it stops.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from genbench import stack

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stack")
    text = (REPO / "params.yaml").read_text().replace("profile: quick ", "profile: tiny ", 1)
    (root / "params.yaml").write_text(text)
    started = stack.up(root)
    try:
        yield root, started
    finally:
        stack.down(root)
    assert not any(stack._alive(service["pid"]) for service in started["services"].values())


def _client_env(services: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any service endpoints or keys, the venv first on PATH, then `services`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env | (services or {})


def _genbench(root: Path, *args: str) -> str:
    env = _client_env()
    done = subprocess.run([sys.executable, "-m", "genbench.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_servers_bind_loopback_and_report_healthy(running_stack) -> None:
    root, started = running_stack
    assert all(service["url"].startswith("http://127.0.0.1:") for service in started["services"].values())
    assert oct(stack.stack_file(root).stat().st_mode & 0o777) == "0o600"  # it holds the S3 keys
    output = _genbench(root, "stack", "status")
    assert output.count("healthy") == 3, output


def test_pipeline_logs_to_servers_and_stores_weights_in_s3(running_stack) -> None:
    import boto3
    from mlflow import MlflowClient

    root, started = running_stack
    _genbench(root, "run")
    env = started["env"]

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.ARTIFACT_BUCKET).get("Contents", [])]
    families = ("vae", "dcgan", "ddpm")
    for family in families:
        registry = json.loads((root / "registry" / f"{family}.json").read_text())
        assert registry["tracking_uri"] == env["MLFLOW_TRACKING_URI"]
        assert any(k.endswith(f"{registry['run_id']}/artifacts/model/model.safetensors") for k in keys), keys
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        champion = client.get_model_version_by_alias(f"genbench-{family}", "champion")
        assert champion.run_id == registry["run_id"]
    assert not (root / "mlflow.db").exists()  # nothing fell back to the embedded store

    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read())
    assert [run["state_type"] for run in runs] == ["COMPLETED"], runs



def test_dvc_push_and_pull_through_the_s3_endpoint(running_stack, tmp_path: Path) -> None:
    """The committed remote (`.dvc/config`: s3://genbench-dvc) takes its endpoint and keys from the stack env."""
    import boto3

    _, started = running_stack
    env = _client_env(started["env"])
    shutil.copytree(REPO / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))

    def run(*cmd: str) -> None:
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"

    payload = os.urandom(4096)
    (tmp_path / "blob.bin").write_bytes(payload)
    run("git", "init", "-q")
    run("dvc", "add", "-q", "blob.bin")
    run("dvc", "push", "-q")
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    assert s3.list_objects_v2(Bucket=stack.DVC_BUCKET).get("KeyCount", 0) >= 1
    (tmp_path / "blob.bin").unlink()
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    run("dvc", "pull", "-q")
    assert (tmp_path / "blob.bin").read_bytes() == payload


def _api(base: str, path: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_scheduled_deployment_runs_on_a_worker_and_logs_to_mlflow(running_stack) -> None:
    import signal
    import time

    from mlflow import MlflowClient

    root, started = running_stack
    env = started["env"]
    api = env["PREFECT_API_URL"]
    output = _genbench(root, "deploy", "--name", "nightly", "--cron", "0 3 * * *", "--profile", "tiny")
    assert "genbench-pipeline/nightly" in output

    deployment = _api(api, "/deployments/name/genbench-pipeline/nightly")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
    assert deployment["work_pool_name"] == "genbench" and deployment["parameters"]["profile"] == "tiny"
    flow_run = _api(api, f"/deployments/{deployment['id']}/create_flow_run", {})

    worker_env = _client_env(env)
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "genbench"], cwd=root,
                              env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        state = None
        while time.monotonic() < deadline:
            state = _api(api, f"/flow_runs/{flow_run['id']}")["state_type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(3)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        log = worker.communicate(timeout=60)[0].decode(errors="replace")
    assert state == "COMPLETED", log[-4000:]

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("genbench")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`prefect.flow_run_id` = '{flow_run['id']}'")
    assert sorted(r.info.run_name for r in runs) == ["dcgan", "ddpm", "vae"]
