"""The S3 store behind MLflow goes down in the middle of the model upload of `genbench register` and comes back: the
registration retries and ends registered with its files stored, or fails with no version made and `champion`
where it was.

The servers are those of `genbench stack up` (moto's S3, MLflow's basic-auth server proxying artifacts to it, with
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
from genbench.components.artifacts import WEIGHTS
from genbench.components.registry import CHAMPION_ALIAS, logged_model_id
from genbench.flows.retries import is_transient
from genbench.layout import Layout

from .conftest import project_copy
from .outage import OutageStack
from .records import FaultRecord

pytestmark = pytest.mark.server
OUTAGE_S = 4.0
HERE = Layout()


def _register(out: str) -> tuple[int, BaseException | None, str]:
    result = CliRunner().invoke(app, ["register", "vae", "--out", out])
    return result.exit_code, result.exception, result.output


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

    metrics = project / HERE.metrics("vae", 0)  # a better model arrives: the second version would be champion
    record = json.loads(metrics.read_text())
    metrics.write_text(json.dumps(record | {"fid": record["fid"] - 1.0}))
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
