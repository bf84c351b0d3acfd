"""Real servers killed -9 mid-work and restarted on the same ports and data (tests/faults/killable.py: a SeaweedFS, a
PostgreSQL and MLflow's server of this module's own, as `genbench stack up` runs them; the run's shared pair is
never touched):

- SeaweedFS at the moment the client's upload of the weights reaches MLflow, back a few seconds later: the
  registration ends registered after retries;
- SeaweedFS at that moment and kept down past every retry: exit 75 with one line, nothing registered, and the same
  command registers once it is back;
- SeaweedFS during `dvc push`, down until the push gives up: it fails naming the remote, and a second push completes;
- PostgreSQL (the postmaster) when the client's "create model version" reaches MLflow, back a few seconds later: the
  registration ends registered after retries, with exactly one new version.

Each test states its one outcome and fails on any other. Afterwards the objects and versions written before the fault
are counted and checksummed against what was read before it, straight from the bucket (boto3) and the database
(psycopg2), and nothing half-written shows as complete: every stored copy of the weights has the run's bytes, every
object of DVC's remote the md5 its key names.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from genbench import stack
from genbench.cli import TRY_AGAIN, app
from genbench.components.common.artifacts import WEIGHTS
from genbench.components.register.promotion import tag_fid
from genbench.components.register.registry import CHAMPION_ALIAS, all_versions, logged_model_id, model_name
from genbench.layout import Layout
from genbench.stack import seaweedfs

from ..services.backing import outside_pytest
from .conftest import project_copy
from .killable import KillableStack
from .records import FaultRecord

pytestmark = pytest.mark.server
RESTART_AFTER_S = 3.0  # how long a killed server stays down when it comes back on its own
NAME = model_name("vae")
HERE = Layout()
AGAIN = "run the same command again"  # genbench/cli.py's one line for a server still down after the retries
DVC_FILES = 24  # the second push's files: enough that the kill lands between its first and its last upload


@pytest.fixture(scope="module")
def servers() -> Iterator[KillableStack]:
    """The module's own servers, started once; MLflow's comes up while the DVC test (which needs only S3) runs."""
    started = KillableStack(outside_pytest("genbench-kills-"))
    yield started
    started.close()


class Outage:
    """The tap's action: kill a server at once (before the request that armed it goes on), and when `restart` is
    given, start it again `RESTART_AFTER_S` later in the background; `join` waits for that restart."""

    def __init__(self, kill: Callable[[], None], restart: Callable[[], None] | None = None) -> None:
        self.kill, self.restart = kill, restart
        self.killed = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def __call__(self) -> None:
        self.kill()
        self.killed = True
        if self.restart is not None:
            self.thread = threading.Thread(target=self._restart, daemon=True)
            self.thread.start()

    def _restart(self) -> None:
        time.sleep(RESTART_AFTER_S)
        try:
            self.restart()  # type: ignore[misc]
        except BaseException as exc:  # noqa: BLE001 - handed to the test by join()
            self.error = exc

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error


def _register(out: str) -> tuple[int, BaseException | None, str]:
    result = CliRunner().invoke(app, ["register", "vae", "--out", out])
    return result.exit_code, result.exception, result.output


def _registry(servers: KillableStack, project_root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    """A copy of the faults project, the current folder, logged in to the module's MLflow through the tap, with a
    champion (registered here when the registry is still empty); the project's metrics then beat it, so the next
    registration is promoted. Returns the project and an MLflow client."""
    import mlflow

    env = servers.ready()
    for key in [key for key in os.environ if key.startswith(("MLFLOW_", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(project_root)
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    if not client.search_model_versions(f"name = '{NAME}'"):
        code, error, output = _register("registry/first.json")
        assert code == 0, f"{error!r}\n{output}"
    champion = client.get_model_version_by_alias(NAME, CHAMPION_ALIAS)
    metrics = project_root / HERE.metrics("vae", 0)
    metrics.write_text(json.dumps(json.loads(metrics.read_text()) | {"fid": tag_fid(champion.tags) - 1.0}))
    return project_root, client


def _state(client: Any) -> tuple[dict[int, dict[str, str]], int]:
    """Every version's tags by number, and the champion's number."""
    versions = {number: dict(version.tags) for number, version in all_versions(client, NAME).items()}
    return versions, int(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version)


def _kept(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The objects read before a fault that are gone or changed after it."""
    return sorted(key for key, md5 in before.items() if after.get(key) != md5)


def _weights_copies(objects: dict[str, str], weights_md5: str) -> tuple[int, list[str]]:
    """How many stored copies of the weights the bucket holds, and those whose bytes are not the run's."""
    copies = {key: md5 for key, md5 in objects.items() if key.endswith(f"/{WEIGHTS}")}
    return len(copies), sorted(key for key, md5 in copies.items() if md5 != weights_md5)


def _one_new_champion(client: Any, versions: dict[int, dict[str, str]]) -> tuple[dict[int, dict[str, str]], int]:
    """The registry after one registration on top of `versions`: exactly one new version, and it is the champion.
    Returns the versions after and the new one's number."""
    after, champion = _state(client)
    new = max(versions) + 1
    assert sorted(after) == [*sorted(versions), new] and champion == new, (sorted(after), champion)
    return after, new


def _objects_intact(servers: KillableStack, before: dict[str, str], weights_md5: str) -> tuple[dict[str, str], int]:
    """The artifact bucket after a fault: every object read before it still there with the same md5, and every
    stored copy of the weights the run's bytes (none half-written). Returns the objects and the copies' count."""
    stored = servers.objects(stack.ARTIFACT_BUCKET)
    assert not _kept(before, stored), f"objects lost or changed: {_kept(before, stored)}"
    copies, wrong = _weights_copies(stored, weights_md5)
    assert not wrong, f"stored weights that are not the run's (half-written): {wrong}"
    return stored, copies


def _stored_weights(client: Any, version: int, into: Path) -> bytes:
    import mlflow

    source = client.get_model_version(NAME, str(version)).source
    stored = Path(mlflow.artifacts.download_artifacts(f"models:/{logged_model_id(source)}", dst_path=str(into)))
    return next(stored.rglob(WEIGHTS)).read_bytes()


def test_dvc_push_with_s3_killed_fails_naming_the_remote_and_a_second_push_completes(
    servers: KillableStack, fault: FaultRecord, tmp_path: Path,
) -> None:
    fault.fault, fault.kind = "S3 server killed during `dvc push`, down until the push gives up", "outage"
    project, env = _dvc_project(tmp_path / "project", servers)
    _write_files(project / "first", 10, b"first")
    _write_files(project / "second", DVC_FILES, b"second")
    _dvc(["add", "first", "second"], project, env)
    _dvc(["push", "first.dvc"], project, env)
    first = servers.objects(stack.DVC_BUCKET)
    assert len(first) == 11, sorted(first)  # ten files and their folder's listing (.dir)

    # One upload at a time, so that the bucket holds some of the new files for a while before it holds them all;
    # botocore's retries off, so that each upload the dead server refuses fails at once instead of after a backoff
    # per file: the push fails the same way, sooner.
    push = subprocess.Popen([sys.executable, "-m", "dvc", "push", "--jobs", "1"], cwd=project,
                            env=env | {"AWS_MAX_ATTEMPTS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    s3 = seaweedfs.s3_client(servers.s3_url, *servers.s3_keys)
    while (held := _count(s3)) == len(first) and push.poll() is None:
        time.sleep(0.02)
    servers.kill_s3()
    output, _ = push.communicate(timeout=300)
    assert len(first) < held < len(first) + DVC_FILES + 1, f"the kill missed the push ({held} objects):\n{output}"
    assert push.returncode != 0, f"dvc push succeeded with its S3 server dead:\n{output}"
    assert "Traceback" not in output, output
    failed_line = next((line for line in output.splitlines() if servers.s3_url in line), "")
    assert failed_line.startswith("ERROR"), f"no error naming the remote's endpoint {servers.s3_url}:\n{output}"

    servers.start_s3()
    during = servers.objects(stack.DVC_BUCKET)
    _dvc(["push"], project, env)
    after = servers.objects(stack.DVC_BUCKET)
    corrupt = sorted(key for key, md5 in after.items()
                     if key.removeprefix("files/md5/").replace("/", "").removesuffix(".dir") != md5)
    assert not corrupt, f"objects whose bytes are not the md5 their key names: {corrupt}"
    assert not _kept(first, after) and not _kept(during, after), (_kept(first, after), _kept(during, after))
    assert len(after) == len(first) + DVC_FILES + 1, sorted(after)
    status = json.loads(_dvc(["status", "--cloud", "--json"], project, env))
    assert status == {}, status
    fault.made_by = (f"kill -9 of weed (SeaweedFS) once the bucket held {held - len(first)} of the second push's "
                     f"{DVC_FILES + 1} objects (one upload at a time, botocore's retries off); restarted on the same "
                     "ports after dvc push exited")
    fault.verified = (f"dvc push exited {push.returncode} naming the remote ({failed_line.strip()[:160]}); "
                      f"{len(first)} objects of the first push before, all there with the same md5 after; "
                      f"{len(during) - len(first)} objects written before the kill kept; the second push completed: "
                      f"{len(after)} objects, each with the md5 its key names; `dvc status --cloud` in sync")
    fault.lost = "the push while S3 was down (pushed again)"


def _count(client: Any) -> int:
    return client.list_objects_v2(Bucket=stack.DVC_BUCKET).get("KeyCount", 0)


def _write_files(folder: Path, count: int, salt: bytes) -> None:
    folder.mkdir()
    for index in range(count):
        (folder / f"{index:02d}.bin").write_bytes(hashlib.sha256(salt + bytes([index])).digest() * 4096)


def _dvc_project(root: Path, servers: KillableStack) -> tuple[Path, dict[str, str]]:
    """A git + DVC project whose default remote is the module's DVC bucket: the endpoint in `.dvc/config.local`, the
    keys only in the environment (as tests/services/test_dvc_remote.py sets them)."""
    root.mkdir()
    # DVC_NO_ANALYTICS: the config below replaces the repository's, which turns DVC's usage reports off
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))} | servers.s3_env | {
        "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
    _dvc(["init", "-q"], root, env)
    # what `dvc remote add --default` and `dvc remote modify --local ... endpointurl` write, without two more
    # starts of dvc
    (root / ".dvc" / "config").write_text(f'[core]\n    remote = storage\n[\'remote "storage"\']\n'
                                          f"    url = s3://{stack.DVC_BUCKET}\n")
    (root / ".dvc" / "config.local").write_text(f'[\'remote "storage"\']\n    endpointurl = {servers.s3_url}\n')
    return root, env


def _dvc(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    return done.stdout


def test_s3_killed_at_the_weights_upload_registers_after_retries(
    servers: KillableStack, faults_project: Path, fault: FaultRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault.fault = f"S3 server killed as the weights' upload reaches MLflow, back {RESTART_AFTER_S:.0f} s later"
    fault.kind = "outage"
    project, client = _registry(servers, project_copy(faults_project, tmp_path / "project"), monkeypatch)
    weights_md5 = hashlib.md5((project / HERE.run("vae", 0) / WEIGHTS).read_bytes()).hexdigest()
    versions, champion = _state(client)
    objects = servers.objects(stack.ARTIFACT_BUCKET)

    outage = Outage(servers.kill_s3, servers.start_s3)
    servers.tap.arm(b"PUT", WEIGHTS.encode(), outage)
    started = time.monotonic()
    code, error, output = _register("registry/second.json")
    seconds = time.monotonic() - started
    outage.join()

    assert outage.killed, "the weights' upload never reached MLflow through the tap"
    assert code == 0, f"exit {code} ({error!r}):\n{output}"
    after, new = _one_new_champion(client, versions)
    assert {number: after[number] for number in versions} == versions, "a version's tags changed"
    assert _stored_weights(client, new, tmp_path / "stored") == (project / HERE.run("vae", 0) / WEIGHTS).read_bytes()
    stored, copies = _objects_intact(servers, objects, weights_md5)
    fault.made_by = (f"kill -9 of weed (SeaweedFS) when the client's PUT of {WEIGHTS} reached MLflow (tap), before "
                     f"MLflow got it; restarted on the same ports and data {RESTART_AFTER_S:.0f} s later")
    # the weights reached MLflow after weed died: sent once, MLflow's server retried its upload to S3 until it was back
    retried = ("sent once by the client, MLflow's server retrying its upload to S3" if servers.tap.seen == 1 else
               f"sent {servers.tap.seen} times by the client")
    fault.verified = (f"exit 0 after {seconds:.0f} s (the weights {retried}); versions "
                      f"{sorted(versions)} before, {sorted(after)} after, v{new} champion (was v{champion}), its "
                      f"stored weights equal to the run's; {len(objects)} objects before, all there with the same "
                      f"md5 after ({len(stored)} in all); {copies} stored copies of the weights, each the run's bytes")
    fault.lost = "the upload's time while S3 was down (retried)"


def test_s3_killed_past_every_retry_registers_nothing_and_the_same_command_registers_later(
    servers: KillableStack, faults_project: Path, fault: FaultRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault.fault = "S3 server killed as the weights' upload reaches MLflow, down past every retry"
    fault.kind = "outage"
    project, client = _registry(servers, project_copy(faults_project, tmp_path / "project"), monkeypatch)
    weights_md5 = hashlib.md5((project / HERE.run("vae", 0) / WEIGHTS).read_bytes()).hexdigest()
    versions, champion = _state(client)
    objects = servers.objects(stack.ARTIFACT_BUCKET)

    # the client gives up at its first 5xx: MLflow's server has retried its uploads to S3 (the stack's AWS retries)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    outage = Outage(servers.kill_s3)
    servers.tap.arm(b"PUT", WEIGHTS.encode(), outage)
    started = time.monotonic()
    code, error, output = _register("registry/second.json")
    seconds = time.monotonic() - started
    assert outage.killed, "the weights' upload never reached MLflow through the tap"
    assert code == TRY_AGAIN, f"exit {code} ({error!r}):\n{output}"
    told = [line for line in output.splitlines() if AGAIN in line]
    assert len(told) == 1 and "Traceback" not in output, output
    assert _state(client) == (versions, champion), "the registry changed while S3 was down"
    assert not (project / "registry" / "second.json").exists()

    servers.start_s3()
    _, copies = _objects_intact(servers, objects, weights_md5)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    code, error, output = _register("registry/second.json")
    assert code == 0, f"{error!r}\n{output}"
    _, new = _one_new_champion(client, versions)
    fault.made_by = (f"kill -9 of weed (SeaweedFS) when the client's PUT of {WEIGHTS} reached MLflow (tap), before "
                     "MLflow got it; the client's own retries off; restarted on the same ports after the command "
                     "exited")
    fault.verified = (f"exit {TRY_AGAIN} after {seconds:.0f} s with one line ({told[0].strip()[:160]}); versions "
                      f"{sorted(versions)} and champion v{champion} unchanged; {len(objects)} objects before, all "
                      f"there with the same md5 after the restart; {copies} stored copies of the weights, each the "
                      f"run's bytes; the same command then registered v{new} as champion")
    fault.lost = "the registration while S3 was down (nothing half-registered; the same command redid it)"


def test_postgres_killed_at_the_version_create_registers_one_version_after_retries(
    servers: KillableStack, faults_project: Path, fault: FaultRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault.fault = (f"PostgreSQL killed as the client's create-model-version reaches MLflow, back "
                   f"{RESTART_AFTER_S:.0f} s later")
    fault.kind = "outage"
    _, client = _registry(servers, project_copy(faults_project, tmp_path / "project"), monkeypatch)
    versions, champion = _state(client)
    rows = _registry_rows(servers)

    outage = Outage(servers.kill_postgres, servers.start_postgres)
    servers.tap.arm(b"POST", b"/model-versions/create", outage)
    started = time.monotonic()
    code, error, output = _register("registry/second.json")
    seconds = time.monotonic() - started
    outage.join()

    assert outage.killed, "the version's create never reached MLflow through the tap"
    assert code == 0, f"exit {code} ({error!r}):\n{output}"
    assert servers.tap.seen >= 2, "registered without the create meeting the dead database"
    after, new = _one_new_champion(client, versions)
    assert {number: after[number] for number in versions} == versions, "a version's tags changed"
    now = _registry_rows(servers)
    assert now["versions"][:len(rows["versions"])] == rows["versions"], "a version's row changed"
    assert len(now["versions"]) == len(rows["versions"]) + 1, now["versions"]
    assert set(rows["tags"]) <= set(now["tags"]), "tags lost"
    fault.made_by = ("kill -9 of PostgreSQL's postmaster when the client's POST of model-versions/create reached "
                     f"MLflow (tap), before MLflow got it; restarted on the same port and data "
                     f"{RESTART_AFTER_S:.0f} s later")
    fault.verified = (f"exit 0 after {seconds:.0f} s, the create sent {servers.tap.seen} times; versions "
                      f"{sorted(versions)} before, {sorted(after)} after (one new, no duplicate), v{new} champion "
                      f"(was v{champion}); in the database {len(rows['versions'])} version rows and "
                      f"{len(rows['tags'])} tag rows before, each unchanged after "
                      f"({len(now['versions'])} and {len(now['tags'])})")
    fault.lost = "the create's time while PostgreSQL was down (retried)"


def _registry_rows(servers: KillableStack) -> dict[str, list[tuple]]:
    """MLflow's registry tables as PostgreSQL holds them: each version and each version's tag."""
    return {"versions": servers.rows(f"SELECT version, source, run_id, status FROM model_versions "
                                     f"WHERE name = '{NAME}' ORDER BY version"),
            "tags": servers.rows(f"SELECT version, key, value FROM model_version_tags WHERE name = '{NAME}' "
                                 "ORDER BY version, key")}
