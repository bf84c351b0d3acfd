"""The S3 store behind MLflow goes down in the middle of the model upload of `genbench register` and comes back: the
registration retries and ends registered with its files stored, or fails with no version made and `champion`
where it was. A second outage outlasts every retry, so that the failing branch runs too: exit 75, nothing
registered, and the same command registers once S3 is back.

The servers are those of `genbench stack up` (the S3 server, MLflow's basic-auth server proxying artifacts to it, with
the stack's transient-only retries), the outage a relay in front of S3 (tests/faults/outage.py) that resets every
connection when the upload of model.safetensors starts and stays down for OUTAGE_S seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.common.artifacts import WEIGHTS
from genbench.components.register.promotion import tag_fid
from genbench.components.register.registry import CHAMPION_ALIAS, logged_model_id
from genbench.flows.retries import is_transient
from genbench.layout import Layout

from .conftest import project_copy
from .outage import OutageStack
from .records import FaultRecord

pytestmark = pytest.mark.server
OUTAGE_S = 4.0
# Past the retries: MLflow's server retries its S3 upload (the stack's AWS_MAX_ATTEMPTS 6, standard mode: at most
# 1 + 2 + 4 + 8 + 16 s of backoff) and the client, its retries set to 0 for this case, gives up at its first 5xx.
LONG_OUTAGE_S = 60.0  # failed after 29 s here
HERE = Layout()


def _register(out: str) -> tuple[int, BaseException | None, str]:
    result = CliRunner().invoke(app, ["register", "vae", "--out", out])
    return result.exit_code, result.exception, result.output


def _better_than(project: Path, fid: float) -> None:
    """Make the project's vae metrics a better model than one of FID `fid`: its next version would be champion."""
    metrics = project / HERE.metrics("vae", 0)
    metrics.write_text(json.dumps(json.loads(metrics.read_text()) | {"fid": fid - 1.0}))


def test_s3_down_during_the_model_upload_registers_whole_or_not_at_all(
    outage_stack: OutageStack, faults_project: Path, fault: FaultRecord, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    env, relay = outage_stack.ready(), outage_stack.relay
    fault.fault, fault.kind = f"S3 store down {OUTAGE_S:.0f} s from the start of the model upload", "outage"
    project = project_copy(faults_project, tmp_path / "project")
    monkeypatch.chdir(project)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, error, output = _register("registry/first.json")
    assert code == 0, f"{error!r}\n{output}"
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("genbench-vae", CHAMPION_ALIAS).version == "1"

    _better_than(project, json.loads((project / HERE.metrics("vae", 0)).read_text())["fid"])
    relay.cut_on(WEIGHTS.encode(), OUTAGE_S)
    started = time.monotonic()
    code, error, output = _register("registry/second.json")
    seconds = time.monotonic() - started

    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'genbench-vae'"))
    champion = client.get_model_version_by_alias("genbench-vae", CHAMPION_ALIAS)
    assert relay.cut, "the upload never reached S3 through the relay"
    if code == 0:
        assert versions == [1, 2] and champion.version == "2"
        stored = Path(mlflow.artifacts.download_artifacts(f"models:/{logged_model_id(champion.source)}",
                                                          dst_path=str(tmp_path / "stored")))
        weights = next(stored.rglob(WEIGHTS)).read_bytes()
        assert weights == (project / HERE.run("vae", 0) / WEIGHTS).read_bytes()
        assert relay.seen >= 2, "registered without uploading the weights again"
        fault.detail = (f"the weights' upload was cut and retried ({relay.seen} uploads through the relay); "
                        f"registered v2 as champion in {seconds:.0f} s, its stored weights equal to the run's")
        fault.lost = "the cut upload's time (retried)"
    else:
        assert versions == [1] and champion.version == "1", (versions, champion.version)
        fault.detail = (f"failed after {seconds:.0f} s ({'transient' if is_transient(error) else 'not transient'}: "
                        f"{str(error).splitlines()[0][:120]}); no version made, champion still v1")
        fault.lost = "the registration (nothing half-registered)"


def test_s3_down_past_every_retry_registers_nothing_and_the_same_command_registers_later(
    outage_stack: OutageStack, faults_project: Path, fault: FaultRecord, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    env, relay = outage_stack.ready(), outage_stack.relay
    fault.fault = f"S3 store down {LONG_OUTAGE_S:.0f} s from the start of the model upload, past every retry"
    fault.kind = "outage"
    project = project_copy(faults_project, tmp_path / "project")
    monkeypatch.chdir(project)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    if not client.search_model_versions("name = 'genbench-vae'"):  # run alone: a champion to keep first
        assert _register("registry/first.json")[0] == 0
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'genbench-vae'"))
    champion = client.get_model_version_by_alias("genbench-vae", CHAMPION_ALIAS)
    _better_than(project, tag_fid(champion.tags))

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    relay.cut_on(WEIGHTS.encode(), LONG_OUTAGE_S)
    started = time.monotonic()
    code, error, output = _register("registry/second.json")
    seconds = time.monotonic() - started
    assert relay.cut, "the upload never reached S3 through the relay"
    assert not relay.up and seconds < LONG_OUTAGE_S, f"S3 came back after {seconds:.0f} s, before the retries ended"
    assert code == 75, f"exit {code} ({error!r}):\n{output}"
    assert "run the same command again" in output and "Traceback" not in output, output
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'genbench-vae'")) == versions
    assert client.get_model_version_by_alias("genbench-vae", CHAMPION_ALIAS).version == champion.version
    assert not (project / "registry" / "second.json").exists()

    while not relay.up:
        time.sleep(0.5)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    code, error, output = _register("registry/second.json")
    assert code == 0, f"{error!r}\n{output}"
    after = sorted(int(v.version) for v in client.search_model_versions("name = 'genbench-vae'"))
    assert after == versions + [versions[-1] + 1]
    assert client.get_model_version_by_alias("genbench-vae", CHAMPION_ALIAS).version == str(after[-1])
    fault.detail = (f"failed after {seconds:.0f} s with exit 75 and one line, no version made, champion still "
                    f"v{champion.version}; the same command after the outage registered v{after[-1]} as champion")
    fault.lost = "the registration while S3 was down (nothing half-registered)"
