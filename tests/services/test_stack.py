"""`genbench stack` against real servers on 127.0.0.1: S3 (moto's server, or MinIO), MLflow, Prefect.

The pipeline runs through the Prefect *server* (not the ephemeral one) and logs to the MLflow *server*,
whose artifacts must land in the S3 bucket. Both servers demand the credentials `stack up` generated, which
the genbench commands here take from the stack file alone (their environment has none). Everything the
test starts, it stops.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from genbench import stack

from ..conftest import use_tiny
from ..faults.records import FaultRecord, append_record
from . import screenshots

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stack")
    use_tiny(root)
    started = stack.up(root)
    try:
        with pytest.MonkeyPatch.context() as patch:  # this process's MLflow clients log in as genbench's do
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                patch.setenv(key, started["env"][key])
            yield root, started
    finally:
        stack.down(root)
    assert not any(stack._alive(service["pid"]) for service in started["services"].values())


def _client_env(services: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any service endpoints or keys, the venv first on PATH, then `services`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env | (services or {})


OUTPUTS: list[str] = []  # what every genbench command here printed, searched for secrets at the end


def _genbench(root: Path, *args: str) -> str:
    env = _client_env()
    done = subprocess.run([sys.executable, "-m", "genbench.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    OUTPUTS.append(done.stdout + done.stderr)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_servers_bind_loopback_and_report_healthy(running_stack) -> None:
    root, started = running_stack
    assert all(service["url"].startswith("http://127.0.0.1:") for service in started["services"].values())
    for private in stack.stack_file(root), stack.mlflow_auth_config(root):  # they hold the generated secrets
        assert oct(private.stat().st_mode & 0o777) == "0o600", private
    output = _genbench(root, "stack", "status")
    assert output.count("healthy") == 3, output


class Pipeline(NamedTuple):
    root: Path
    started: dict[str, Any]  # what `stack.up` returned: services, env
    deployment: dict[str, Any]  # the Prefect API's deployment
    flow_run_id: str


@pytest.fixture(scope="module")
def pipeline_ran(running_stack) -> Pipeline:
    """The tiny pipeline, once, as a scheduled deployment's run: `genbench deploy` with a cron schedule, one run
    created through the Prefect server's API, and a process worker (`prefect worker start` inside `genbench stack
    exec`) that picks it up and logs to the MLflow server. The same flow `genbench run` starts; its ephemeral form
    runs in tests/drivers."""
    import signal
    import time

    root, started = running_stack
    env = started["env"]
    output = _genbench(root, "deploy", "--name", "nightly", "--cron", "0 3 * * *", "--profile", "tiny")
    assert "genbench-pipeline/nightly" in output
    deployment = _api(env, "/deployments/name/genbench-pipeline/nightly")
    flow_run = _api(env, f"/deployments/{deployment['id']}/create_flow_run", {})

    log_path = root / "worker.log"  # a file, not a pipe: a full pipe or a child holding it open cannot stall us
    # `stack exec` hands the worker the stack's endpoints and credentials (it becomes the worker: same pid)
    worker_cmd = [sys.executable, "-m", "genbench.cli", "stack", "exec", "--",
                  sys.executable, "-m", "prefect", "worker", "start", "--pool", "genbench"]
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(worker_cmd, cwd=root, env=_client_env(), stdout=log_file,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        state = None
        while time.monotonic() < deadline:
            state = _api(env, f"/flow_runs/{flow_run['id']}")["state_type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(3)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:  # still shutting down after a minute: it is our test client, stop it
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
    assert state == "COMPLETED", log_path.read_text(errors="replace")[-4000:]
    return Pipeline(root, started, deployment, flow_run["id"])


def test_pipeline_logs_to_servers_and_stores_weights_in_s3(pipeline_ran: Pipeline) -> None:
    import boto3
    from mlflow import MlflowClient

    root, env = pipeline_ran.root, pipeline_ran.started["env"]

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.ARTIFACT_BUCKET).get("Contents", [])]
    families = ("vae", "dcgan", "ddpm")
    for family in families:
        registry = json.loads((root / "registry" / family / "seed-0.json").read_text())
        assert registry["tracking_uri"] == env["MLFLOW_TRACKING_URI"]
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        champion = client.get_model_version_by_alias(f"genbench-{family}", "champion")
        assert champion.run_id == registry["run_id"]
        model_id = champion.source.removeprefix("models:/")  # the pyfunc model the run logged, with the weights
        assert any(k.endswith(f"models/{model_id}/artifacts/artifacts/model.safetensors") for k in keys), keys
    assert not (root / "mlflow.db").exists()  # nothing fell back to the embedded store

    runs = _api(env, "/flow_runs/filter", {})
    assert [run["state_type"] for run in runs] == ["COMPLETED"], runs


def test_champion_moves_only_for_a_lower_fid_and_samples_from_the_registry(pipeline_ran: Pipeline) -> None:
    """A second, differently trained ddpm becomes v2; the alias follows the lower FID; re-registering the loser
    (v3) leaves it; `sample --model models:/…@champion` reproduces the winner's local samples bit for bit."""
    from mlflow import MlflowClient

    root, started = pipeline_ran.root, pipeline_ran.started
    params = (root / "params.yaml").read_text()
    ddpm_tiny = "dropout: 0.0, attention_resolutions: []}, train: {fid_every: 0, steps: 4,"  # params.yaml's ddpm line
    longer = params.replace(ddpm_tiny, ddpm_tiny.replace("steps: 4,", "steps: 12,"), 1)
    assert longer != params
    (root / "params-b.yaml").write_text(longer)
    _genbench(root, "train", "ddpm", "--params", "params-b.yaml", "--out", "runs/ddpm-b")
    _genbench(root, "sample", "ddpm", "--run", "runs/ddpm-b", "--out", "samples/ddpm-b.npy")
    _genbench(root, "evaluate", "ddpm", "--samples", "samples/ddpm-b.npy", "--out", "metrics/ddpm-b.json")
    _genbench(root, "register", "ddpm", "--run", "runs/ddpm-b", "--metrics", "metrics/ddpm-b.json",
              "--sample-record", "samples/ddpm-b.json", "--out", "registry/ddpm-b.json")
    first, second = (json.loads((root / "registry" / name).read_text()) for name in ("ddpm/seed-0.json", "ddpm-b.json"))
    assert (first["version"], second["version"]) == (1, 2) and first["fid"] != second["fid"]
    winner, loser = (first, second) if first["fid"] < second["fid"] else (second, first)
    client = MlflowClient(tracking_uri=started["env"]["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("genbench-ddpm", "champion").version == str(winner["version"])

    loser_run, loser_metrics, loser_samples = (
        ("runs/ddpm/seed-0", "metrics/ddpm/seed-0.json", "samples/ddpm/seed-0.json") if loser is first
        else ("runs/ddpm-b", "metrics/ddpm-b.json", "samples/ddpm-b.json"))
    _genbench(root, "register", "ddpm", "--run", loser_run, "--metrics", loser_metrics, "--sample-record", loser_samples,
              "--out", "registry/ddpm-c.json")
    third = json.loads((root / "registry" / "ddpm-c.json").read_text())
    assert third["version"] == 3 and not third["promoted"]
    assert client.get_model_version_by_alias("genbench-ddpm", "champion").version == str(winner["version"])

    output = _genbench(root, "sample", "ddpm", "--model", "models:/genbench-ddpm@champion")
    assert f"from genbench-ddpm v{winner['version']}" in output
    winner_samples = root / "samples" / ("ddpm/seed-0.npy" if winner is first else "ddpm-b.npy")
    assert np.array_equal(np.load(root / "samples" / f"ddpm-v{winner['version']}.npy"), np.load(winner_samples))


def test_dvc_push_and_pull_through_the_s3_endpoint(running_stack, tmp_path: Path) -> None:
    """The committed remote (`.dvc/config`: s3://genbench-dvc, named, not the default) takes its endpoint and keys
    from the stack env."""
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
    run("dvc", "push", "-q", "-r", "storage")
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    assert s3.list_objects_v2(Bucket=stack.DVC_BUCKET).get("KeyCount", 0) >= 1
    (tmp_path / "blob.bin").unlink()
    shutil.rmtree(tmp_path / ".dvc" / "cache")
    run("dvc", "pull", "-q", "-r", "storage")
    assert (tmp_path / "blob.bin").read_bytes() == payload


_api = screenshots.api


def _status(url: str, body: dict | None = None, login: str | None = None) -> int:
    """HTTP status of a GET (or, with a body, a POST) to url, as HTTP basic `login` ("user:password") or anonymous."""
    headers = {"Content-Type": "application/json"}
    if login is not None:
        headers["Authorization"] = f"Basic {base64.b64encode(login.encode()).decode()}"
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_servers_refuse_requests_without_the_generated_credentials(running_stack, faults_record_dir: Path) -> None:
    """Also a fault record (tests/faults/records.py): each refused request is a try that survived."""
    _, started = running_stack
    env = started["env"]
    admin = f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}"
    calls = {  # name: (url, body, the login that works)
        "mlflow": (f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search", {"max_results": 5}, admin),
        "prefect": (f"{env['PREFECT_API_URL']}/flows/filter", {}, env["PREFECT_API_AUTH_STRING"]),
    }
    refused, admitted = {}, {}
    for name, (url, body, login) in calls.items():
        wrong = f"{login[:-1]}{'A' if login[-1] != 'A' else 'B'}"
        refused[name] = {"anonymous": _status(url, body), "wrong password": _status(url, body, wrong),
                         "MLflow's old default": _status(url, body, "admin:password1234")}
        admitted[name] = _status(url, body, login)
    answers = [(name, how, code) for name, codes in refused.items() for how, code in codes.items()]
    append_record(faults_record_dir, FaultRecord(
        fault="requests to the stack's MLflow and Prefect APIs without the generated credentials", kind="auth",
        tried=len(answers), survived=sum(code in (401, 403) for *_, code in answers), lost="nothing",
        detail="; ".join(f"{name} {how}: HTTP {code}" for name, how, code in answers)))
    for name, codes in refused.items():
        assert set(codes.values()) <= {401, 403}, (name, codes)
        assert admitted[name] == 200, name


def test_scheduled_deployment_runs_on_a_worker_and_logs_to_mlflow(pipeline_ran: Pipeline) -> None:
    from mlflow import MlflowClient

    env = pipeline_ran.started["env"]
    deployment = pipeline_ran.deployment
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
    assert deployment["work_pool_name"] == "genbench" and deployment["parameters"]["profile"] == "tiny"
    assert _api(env, f"/flow_runs/{pipeline_ran.flow_run_id}")["deployment_id"] == deployment["id"]

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("genbench")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`prefect.flow_run_id` = '{pipeline_ran.flow_run_id}'")
    assert sorted(r.info.run_name for r in runs) == ["dcgan", "ddpm", "vae"]


@pytest.mark.browser
def test_browser_shows_the_deployment_schedule_and_the_champion(pipeline_ran: Pipeline, tmp_path: Path) -> None:
    """The two pages people click: the Prefect deployment with its schedule, the MLflow model with its alias.
    Pictures go to tmp_path; `python -m tests.services.screenshots` refreshes the README's from a quick run."""
    from mlflow import MlflowClient
    from PIL import Image

    executable = screenshots.chromium()
    if executable is None:
        message = "chromium not installed: `apt-get install chromium` (the README's test command does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    started = pipeline_ran.started
    champion = MlflowClient(tracking_uri=started["env"]["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
        "genbench-ddpm", "champion")
    shots = screenshots.capture(started, pipeline_ran.deployment, champion.version, tmp_path, executable)
    assert all(Image.open(shot).size == (1600, 1000) for shot in shots)


def test_generated_secrets_stay_in_the_stack_files(pipeline_ran: Pipeline) -> None:
    """No generated secret (nor the Basic header made of it) in a file of the project other than the two 0600
    stack files, in what any genbench command here printed, or in MLflow's params and tags or Prefect's
    flow-run parameters. Last in the module, so it searches what the other tests left too."""
    from mlflow import MlflowClient

    root, env = pipeline_ran.root, pipeline_ran.started["env"]
    up_output = _genbench(root, "stack", "up")  # already running: prints the URLs and where the credentials are
    assert "stack.json" in up_output
    _genbench(root, "stack", "status")
    prefect_password = env["PREFECT_API_AUTH_STRING"].split(":", 1)[1]
    mlflow_login = f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}"
    secrets = {
        "MLflow password": env["MLFLOW_TRACKING_PASSWORD"], "Prefect auth string": prefect_password,
        "S3 secret key": env["AWS_SECRET_ACCESS_KEY"],
        "MLflow Basic header": base64.b64encode(mlflow_login.encode()).decode(),
        "Prefect Basic header": base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode(),
    }

    def holding(data: bytes | str) -> list[str]:
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        return [name for name, secret in secrets.items() if secret in text]

    files = {path: holding(path.read_bytes()) for path in root.rglob("*") if path.is_file()}
    assert len(files) > 20  # the run's folders, the stack's databases and logs, the worker's log
    holders = {path.relative_to(root): names for path, names in files.items() if names}
    private = {path.relative_to(root) for path in (stack.stack_file(root), stack.mlflow_auth_config(root))}
    assert set(holders) == private, holders
    assert all(stat.S_IMODE((root / path).stat().st_mode) == 0o600 for path in private)

    assert len(OUTPUTS) >= 3  # at least `deploy`, `stack up`, `stack status`
    assert {i: holding(output) for i, output in enumerate(OUTPUTS) if holding(output)} == {}

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) >= 3
    recorded = [(run.info.run_name, run.data.params, run.data.tags) for run in runs]
    recorded += [(f"{v.name} v{v.version}", v.tags) for v in client.search_model_versions()]
    recorded += [(flow_run["name"], flow_run["parameters"]) for flow_run in _api(env, "/flow_runs/filter", {})]
    assert not holding(json.dumps(recorded)), holding(json.dumps(recorded))
