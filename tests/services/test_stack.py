"""`genbench stack` against real servers on 127.0.0.1: SeaweedFS (S3), PostgreSQL, MLflow, Prefect.

The pipeline runs through the Prefect *server* (not the ephemeral one) and logs to the MLflow *server*, both
keeping their state in the stack's PostgreSQL, MLflow's artifacts in the SeaweedFS bucket. Every server demands
the credentials `stack up` generated, which the genbench commands here take from the stack file alone (their
environment has none). The module's stack is the only one in the run that `stack up` starts whole (the other
files share backing.py's store); its last test stops it, checks that no process of it is left, and starts it
again on the same data and keys. Everything the test starts, it stops.
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
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import psutil
import pytest

from genbench import stack

from ..conftest import use_tiny
from ..faults.records import FaultRecord, append_record
from . import screenshots
from .backing import object_keys, outside_pytest, postgres_rows, s3_of

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[2]
PLAN = {"entries": ["vae", "ddpm"], "seeds": [0], "sweeps": {}}  # two families show the servers keep them apart


@pytest.fixture(scope="module")
def running_stack():
    root = outside_pytest("genbench-stack-")
    use_tiny(root, **PLAN)
    started = stack.up(root)
    try:
        with pytest.MonkeyPatch.context() as patch:  # this process's MLflow clients log in as genbench's do
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                patch.setenv(key, started["env"][key])
            yield root, started
    finally:
        last = stack.read_stack(root) or started
        stack.down(root)
        left = _left_over(root, last)
        shutil.rmtree(root)
    assert left == []


def _left_over(root: Path, started: dict[str, Any]) -> list[str]:
    """Processes of the stack still running: in a service's process group (MLflow's and Prefect's workers
    included) or naming the stack folder on their command line (weed, postgres and PostgreSQL's backends)."""
    groups = {service["pid"] for service in started["services"].values()}
    folder = str(stack.stack_dir(root))
    left = []
    for process in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        try:
            in_group = os.getpgid(process.pid) in groups
        except ProcessLookupError:
            continue
        named = any(folder in part for part in process.info["cmdline"] or [])
        if (in_group or named) and process.info["status"] != psutil.STATUS_ZOMBIE:
            left.append(f"{process.pid} {process.info['name']}")
    return left


def _left_in_tmp(s3: dict[str, Any]) -> list[str]:
    """What a stopped SeaweedFS left in the temporary folders: a unix socket named by one of its ports, or a log
    file of its pid (weed names them seaweedfs-<part>[-grpc]-<port>.sock and weed.<host>.<user>.log.<...>.<pid>)."""
    ports = {str(port) for port in s3["ports"].values()}
    left = []
    for folder in {Path("/tmp"), Path(os.environ.get("TMPDIR", "/tmp"))}:
        for entry in folder.iterdir():
            if ((entry.name.startswith("seaweedfs-") and entry.name.removesuffix(".sock").rsplit("-", 1)[-1] in ports)
                    or (entry.name.startswith("weed.") and entry.name.endswith(f".{s3['pid']}"))):
                left.append(str(entry))
    return sorted(left)


def _keys(root: Path) -> dict[str, str]:
    return json.loads(stack.keys_file(stack.stack_dir(root)).read_text())


def _postgres_rows(root: Path, started: dict[str, Any], database: str, query: str) -> list[tuple]:
    """`query`'s rows in one of the stack's databases, logged in as its owner with the generated password."""
    address = urllib.parse.urlsplit(started["services"]["postgres"]["url"])
    return postgres_rows(query, host=address.hostname, port=address.port, user=database, dbname=database,
                         password=_keys(root)[f"{database}_db_password"])


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
    services = started["services"]
    assert list(services) == ["s3", "postgres", "mlflow", "prefect"]
    assert all(service["url"].split("://")[1].startswith("127.0.0.1:") for service in services.values())
    for private in _private_files(root):  # they hold the generated secrets
        assert oct(private.stat().st_mode & 0o777) == "0o600", private
    # every port SeaweedFS and PostgreSQL listen on (weed alone opens eight: master, volume, filer and S3, HTTP and
    # gRPC each) is on loopback
    for name in ("s3", "postgres"):
        listening = [c.laddr for c in psutil.Process(services[name]["pid"]).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and {address.ip for address in listening} == {"127.0.0.1"}, (name, listening)
    assert len([1 for c in psutil.Process(services["s3"]["pid"]).net_connections("inet")
                if c.status == psutil.CONN_LISTEN]) == 8
    output = _genbench(root, "stack", "status")
    assert output.count("healthy") == 4, output


def _private_files(root: Path) -> list[Path]:
    folder = stack.stack_dir(root)
    return [stack.stack_file(root), stack.mlflow_auth_config(root), stack.keys_file(folder),
            folder / "seaweedfs" / "s3-identities.json", folder / "seaweedfs" / "security.toml"]


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
    from mlflow import MlflowClient

    root, env = pipeline_ran.root, pipeline_ran.started["env"]

    s3 = s3_of(env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.ARTIFACT_BUCKET).get("Contents", [])]
    families = tuple(PLAN["entries"])
    for family in families:
        registry = json.loads((root / "registry" / family / "seed-0.json").read_text())
        assert registry["tracking_uri"] == env["MLFLOW_TRACKING_URI"]
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        champion = client.get_model_version_by_alias(f"genbench-{family}", "champion")
        assert champion.run_id == registry["run_id"]
        model_id = champion.source.removeprefix("models:/")  # the pyfunc model the run logged, with the weights
        assert any(k.endswith(f"models/{model_id}/artifacts/artifacts/model.safetensors") for k in keys), keys
    assert not (root / "mlflow.db").exists()  # nothing fell back to the embedded store
    assert not (stack.stack_dir(root) / "mlflow.db").exists()  # nor to the stack's SQLite
    assert _postgres_rows(root, pipeline_ran.started, "mlflow", "SELECT name FROM runs ORDER BY name") == [
        (family,) for family in sorted(families)]
    assert _postgres_rows(root, pipeline_ran.started, "mlflow", "SELECT name FROM registered_models ORDER BY name") \
        == [(f"genbench-{family}",) for family in sorted(families)]

    runs = _api(env, "/flow_runs/filter", {})
    assert [run["state_type"] for run in runs] == ["COMPLETED"], runs
    assert _postgres_rows(root, pipeline_ran.started, "prefect", "SELECT id::text, state_type FROM flow_run") == [
        (runs[0]["id"], "COMPLETED")]


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
    _genbench(root, "register", "ddpm", "--run", loser_run, "--metrics", loser_metrics,
              "--sample-record", loser_samples, "--out", "registry/ddpm-c.json")
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
    s3 = s3_of(env)
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
    root, started = running_stack
    env = started["env"]
    admin = f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}"
    calls = {  # name: (url, body, the login that works)
        "mlflow": (f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search", {"max_results": 5}, admin),
        "prefect": (f"{env['PREFECT_API_URL']}/flows/filter", {}, env["PREFECT_API_AUTH_STRING"]),
    }
    refused: dict[str, dict[str, str]] = {}
    admitted: dict[str, str] = {}
    for name, (url, body, login) in calls.items():
        refused[name] = {how: f"HTTP {_status(url, body, wrong)}" for how, wrong in (
            ("anonymous", None), ("wrong password", _wrong(login)), ("MLflow's old default", "admin:password1234"))}
        admitted[name] = f"HTTP {_status(url, body, login)}"
    keys = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    refused["s3"] = {"anonymous": f"HTTP {_status(env['AWS_ENDPOINT_URL'] + '/' + stack.DVC_BUCKET)}",
                     "wrong secret key": _s3_list(env["AWS_ENDPOINT_URL"], keys[0], _wrong(keys[1])),
                     "unknown access key": _s3_list(env["AWS_ENDPOINT_URL"], _wrong(keys[0]), keys[1])}
    admitted["s3"] = _s3_list(env["AWS_ENDPOINT_URL"], *keys)
    passwords = _keys(root)
    refused["postgres"] = {
        "no password": _postgres_login(started, "postgres", ""),
        "wrong superuser password": _postgres_login(started, "postgres", _wrong(passwords["postgres_password"])),
        "MLflow's password for Prefect's": _postgres_login(started, "prefect", passwords["mlflow_db_password"]),
    }
    admitted["postgres"] = _postgres_login(started, "postgres", passwords["postgres_password"])
    answers = [(name, how, outcome) for name, outcomes in refused.items() for how, outcome in outcomes.items()]
    append_record(faults_record_dir, FaultRecord(
        fault="requests to the stack's S3, PostgreSQL, MLflow and Prefect without the generated credentials",
        kind="auth", tried=len(answers), survived=sum(outcome in REFUSED for *_, outcome in answers), lost="nothing",
        made_by="requests to each running server anonymous, with a wrong password or key, with another role's password",
        verified="each refused (HTTP 401/403, PostgreSQL's login refused); the generated credentials admitted",
        detail="; ".join(f"{name} {how}: {outcome}" for name, how, outcome in answers)))
    for name, outcomes in refused.items():
        assert set(outcomes.values()) <= REFUSED, (name, outcomes)
    assert admitted == {"mlflow": "HTTP 200", "prefect": "HTTP 200", "s3": "HTTP 200", "postgres": "logged in"}


REFUSED = {"HTTP 401", "HTTP 403", "password authentication failed", "no password supplied"}


def _wrong(secret: str) -> str:
    return f"{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"


def _s3_list(url: str, access_key: str, secret_key: str) -> str:
    """ListBuckets signed with these keys: its HTTP status."""
    from botocore.exceptions import ClientError

    from genbench.stack.seaweedfs import s3_client

    try:
        return f"HTTP {s3_client(url, access_key, secret_key).list_buckets()['ResponseMetadata']['HTTPStatusCode']}"
    except ClientError as error:
        return f"HTTP {error.response['ResponseMetadata']['HTTPStatusCode']}"


def _postgres_login(started: dict[str, Any], user: str, password: str) -> str:
    import psycopg2

    address = urllib.parse.urlsplit(started["services"]["postgres"]["url"])
    try:
        psycopg2.connect(host=address.hostname, port=address.port, user=user, password=password, dbname=user,
                         connect_timeout=10).close()
    except psycopg2.OperationalError as error:
        return next((why for why in REFUSED if why in str(error)), str(error))
    return "logged in"


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
    assert sorted(r.info.run_name for r in runs) == sorted(PLAN["entries"])


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


def test_load_benchmark_drives_the_stack_and_removes_what_it_made(pipeline_ran: Pipeline) -> None:
    """`genbench stack load` (the benchmark of docs/benchmarks.md, here two short levels): every operation ran at
    each level with no error, and the runs and model it made are gone from the registry afterwards."""
    from mlflow import MlflowClient

    from genbench.stack.load import EXPERIMENT, MODEL, OPERATIONS

    root, env = pipeline_ran.root, pipeline_ran.started["env"]
    output = _genbench(root, "stack", "load", "--clients", "1,2", "--seconds", "2", "--out", "load.json")
    assert "| clients | requests/s |" in output and "errors of" in output, output
    levels = json.loads((root / "load.json").read_text())["levels"]
    assert [level["clients"] for level in levels] == [1, 2]
    for level in levels:
        assert all(level["requests"][op] > 0 for op in OPERATIONS) and not any(level["errors"].values()), level
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert not client.search_registered_models(f"name = '{MODEL}'")
    assert client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id]) == []


def test_generated_secrets_stay_in_the_stack_files(pipeline_ran: Pipeline) -> None:
    """No generated secret (nor the Basic header made of it) in a file of the project other than the 0600 stack
    files (`_private_files`), in what any genbench command here printed, or in MLflow's params and tags or
    Prefect's flow-run parameters. After the tests that use the stack, so it searches what they left too."""
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
        **{f"PostgreSQL {name}": password for name, password in _keys(root).items() if name.endswith("password")},
        "MLflow Basic header": base64.b64encode(mlflow_login.encode()).decode(),
        "Prefect Basic header": base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode(),
    }

    def holding(data: bytes | str) -> list[str]:
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        return [name for name, secret in secrets.items() if secret in text]

    files = {path: holding(path.read_bytes()) for path in root.rglob("*") if path.is_file()}
    assert len(files) > 20  # the run's folders, the stack's databases and logs, the worker's log
    holders = {path.relative_to(root): names for path, names in files.items() if names}
    private = {path.relative_to(root) for path in _private_files(root)}
    assert set(holders) == private - {Path(".genbench/stack/seaweedfs/security.toml")}, holders
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


def test_down_stops_every_process_and_up_again_keeps_data_and_keys(pipeline_ran: Pipeline) -> None:
    """`stack down` leaves no process of the stack (weed, postgres and its backends, MLflow's and Prefect's
    workers); a second `stack up` serves the same registry and the same stored weights with the same keys. Last in
    the module: the stack it leaves running has new ports."""
    from mlflow import MlflowClient

    root, before = pipeline_ran.root, pipeline_ran.started
    keys = _keys(root)
    champion, weights = _champion_weights(before["env"])
    output = _genbench(root, "stack", "down")
    assert output.strip() == "stopped: s3, postgres, mlflow, prefect", output
    assert _left_over(root, before) == []
    assert _left_in_tmp(before["services"]["s3"]) == []

    output = _genbench(root, "stack", "up")
    assert "all answering" in output, output
    after = stack.read_stack(root)
    assert after is not None and _keys(root) == keys
    kept = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD")
    assert {k: after["env"][k] for k in kept} == {k: before["env"][k] for k in kept}
    assert after["env"]["MLFLOW_TRACKING_URI"] != before["env"]["MLFLOW_TRACKING_URI"]  # a new server, new port
    again, weights_again = _champion_weights(after["env"])
    assert (again.version, again.source) == (champion.version, champion.source)
    assert weights_again == weights and len(weights) > 1000
    assert MlflowClient(tracking_uri=after["env"]["MLFLOW_TRACKING_URI"]).search_model_versions(
        "name = 'genbench-ddpm'")


def _champion_weights(env: dict[str, str]) -> tuple[Any, bytes]:
    """genbench-ddpm's champion and its weights as the stack's S3 stores them."""
    from mlflow import MlflowClient

    champion = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
        "genbench-ddpm", "champion")
    s3 = s3_of(env)
    suffix = f"models/{champion.source.removeprefix('models:/')}/artifacts/artifacts/model.safetensors"
    key = next(key for key in object_keys(s3, stack.ARTIFACT_BUCKET) if key.endswith(suffix))
    return champion, s3.get_object(Bucket=stack.ARTIFACT_BUCKET, Key=key)["Body"].read()
