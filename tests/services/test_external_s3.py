"""`genbench stack up` with GENBENCH_S3_ENDPOINT_URL: the stack uses the user's S3 server (MinIO, say) instead of
starting SeaweedFS, and refuses one it cannot list with the given keys before starting MLflow. The "user's server"
here is the run's shared SeaweedFS (backing.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genbench import stack

from .backing import Backing, outside_pytest

pytestmark = pytest.mark.server


@pytest.mark.parametrize("given", [
    {"GENBENCH_S3_ENDPOINT_URL": "minio.local:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    {"GENBENCH_S3_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k"},
])
def test_an_endpoint_without_scheme_or_keys_stops_up_naming_the_variable(
        given: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(stack.StackError, match="GENBENCH_S3_ENDPOINT_URL=.*AWS_SECRET_ACCESS_KEY"):
        stack.up(tmp_path)
    assert stack.read_stack(tmp_path) is None and not (stack.stack_dir(tmp_path) / "seaweedfs").exists()


def test_a_server_that_refuses_the_keys_stops_up_before_mlflow_and_leaves_nothing_running(
        backing: Backing, monkeypatch: pytest.MonkeyPatch) -> None:
    root = outside_pytest("genbench-external-s3-")
    try:
        _refused_before_mlflow(backing, root, monkeypatch)
    finally:
        shutil.rmtree(root)


def _refused_before_mlflow(backing: Backing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBENCH_S3_ENDPOINT_URL", backing.s3_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", backing.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", f"{backing.secret_key}x")
    started: list[dict] = []
    real_start = stack.postgres.start_postgres

    def recording(*args, **kwargs) -> dict:  # noqa: ANN002, ANN003 - start_postgres's own
        started.append(real_start(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(stack.postgres, "start_postgres", recording)
    with pytest.raises(stack.StackError, match=f"GENBENCH_S3_ENDPOINT_URL={backing.s3_url} does not list"):
        stack.up(tmp_path)
    assert [service["pid"] for service in started if stack.alive(service["pid"])] == []
    assert len(started) == 1 and not (stack.stack_dir(tmp_path) / "seaweedfs").exists()
    assert not stack.mlflow_auth_database(tmp_path).exists()  # MLflow never started
