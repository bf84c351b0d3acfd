"""The local stack's credentials without starting a server: they sit in owner-only files, the MLflow admin
password survives a restart (MLflow reads it only when it creates the admin), and a client gets a server's
credentials only with that server's endpoint."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genbench import stack
from genbench.cli import app

STACK_ENV = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5001", "MLFLOW_TRACKING_USERNAME": "admin",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-secret-0123456789", "PREFECT_API_URL": "http://127.0.0.1:4201/api",
    "PREFECT_API_AUTH_STRING": "admin:prefect-secret-0123456789",
}


def _fake_stack(root: Path) -> None:
    stack.stack_dir(root).mkdir(parents=True)
    stack.stack_file(root).write_text(json.dumps({"services": {}, "env": STACK_ENV}))


def test_credentials_go_only_with_their_own_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_stack(tmp_path)
    environ = {"MLFLOW_TRACKING_URI": "https://mlflow.example.org"}  # the user's own MLflow server
    monkeypatch.setattr(os, "environ", environ)
    stack.apply_stack_env(tmp_path)
    assert environ == {"MLFLOW_TRACKING_URI": "https://mlflow.example.org",
                       "PREFECT_API_URL": STACK_ENV["PREFECT_API_URL"],
                       "PREFECT_API_AUTH_STRING": STACK_ENV["PREFECT_API_AUTH_STRING"]}

    environ.clear()
    environ["MLFLOW_TRACKING_PASSWORD"] = "the-users-own"  # explicit variables still win
    stack.apply_stack_env(tmp_path)
    assert environ == STACK_ENV | {"MLFLOW_TRACKING_PASSWORD": "the-users-own"}


def test_mlflow_auth_config_is_private_and_keeps_the_admin_password_of_an_existing_database(tmp_path: Path) -> None:
    stack.stack_dir(tmp_path).mkdir(parents=True)
    config = stack.mlflow_auth_config(tmp_path)
    first = stack.write_mlflow_auth_config(tmp_path)
    config.chmod(0o644)
    second = stack.write_mlflow_auth_config(tmp_path)  # no auth database yet: nothing to keep
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert first != second and len(second) >= 32 and "password1234" not in (first, second)
    parsed = configparser.ConfigParser()
    parsed.read(config)
    assert dict(parsed["mlflow"]) == {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": f"sqlite:///{stack.mlflow_auth_database(tmp_path)}",
        "admin_username": "admin", "admin_password": second,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": str(stack.MLFLOW_AUTH_CACHE_S),
    }

    stack.mlflow_auth_database(tmp_path).touch()  # MLflow created its admin with `second`
    assert stack.write_mlflow_auth_config(tmp_path) == second
    config.unlink()
    with pytest.raises(stack.StackError, match=r"mlflow-auth\.ini .*missing; delete .*mlflow-auth\.db"):
        stack.write_mlflow_auth_config(tmp_path)


def test_stack_exec_needs_a_stack_and_an_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", {"PATH": os.environ["PATH"]})  # the stack's variables land here
    result = CliRunner().invoke(app, ["stack", "exec", "--", "true"])
    assert result.exit_code == 2 and "no stack here" in result.output

    _fake_stack(tmp_path)
    result = CliRunner().invoke(app, ["stack", "exec", "--", "genbench-no-such-command", "--flag"])
    assert result.exit_code == 2 and "command not found: genbench-no-such-command" in result.output
    assert not any(secret in result.output for secret in STACK_ENV.values() if "secret" in secret)
