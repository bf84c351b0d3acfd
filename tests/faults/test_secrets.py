"""A whole run (train, sample, evaluate, register, report) with credentials in its environment writes none of them
anywhere: not into a file of the project, its home or its temporary folder, not into an MLflow param or tag, not
into its output. MLFLOW_TRACKING_USERNAME is left out: a name, not a secret, which MLflow records on purpose as the
run's `mlflow.user`."""

from __future__ import annotations

import base64
import secrets
import shutil
from pathlib import Path

from genbench.components.register.tracking import embedded_tracking_uri
from genbench.layout import Layout

from .conftest import project_copy
from .launcher import Launcher
from .records import FaultRecord

HERE = Layout()
SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD",
                    "MLFLOW_TRACKING_TOKEN", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "HF_TOKEN", "GITHUB_TOKEN",
                    "DATABRICKS_TOKEN")
STAGES = (["train", "vae"], ["sample", "vae"], ["evaluate", "real"], ["evaluate", "vae"], ["register", "vae"],
          ["report"])


def test_credentials_in_the_environment_reach_no_file_param_tag_or_log(
    launcher: Launcher, faults_project: Path, fault: FaultRecord, tmp_path: Path
) -> None:
    import mlflow

    planted = {name: f"{name.lower()}-{secrets.token_urlsafe(18)}" for name in SECRET_VARIABLES}
    fault.fault, fault.kind = "credentials in the environment of a whole run", "secret"
    fault.tried = len(planted)
    project = project_copy(faults_project, tmp_path / "project")
    for output in ("runs", "samples", "metrics"):
        shutil.rmtree(project / output)
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    env = {**planted, "HOME": str(home), "TMPDIR": str(scratch)}
    logs = []
    for i, args in enumerate(STAGES):
        code, output = launcher.run(project, args, tmp_path / f"stage-{i}.log", env=env, stand_in_network=True)
        assert code == 0, f"{args}: {output[-3000:]}"
        logs.append(output)

    client = mlflow.MlflowClient(tracking_uri=embedded_tracking_uri(project))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and (project / HERE.results / "index.html").is_file()  # the run happened
    recorded = [(run.data.params, run.data.tags) for run in runs]
    recorded += [version.tags for version in client.search_model_versions()]
    places = {"MLflow params and tags": repr(recorded).encode()}
    places |= {f"output of genbench {' '.join(args)}": log.encode() for args, log in zip(STAGES, logs, strict=True)}
    files = [path for root in (project, home, scratch) for path in root.rglob("*") if path.is_file()]
    places |= {str(path.relative_to(tmp_path)): path.read_bytes() for path in files}
    found = {name: [where for where, data in places.items() if value.encode() in data
                    or base64.b64encode(value.encode()) in data]
             for name, value in planted.items()}
    leaked = {name: where for name, where in found.items() if where}
    fault.survived = len(planted) - len(leaked)
    fault.lost = "nothing" if not leaked else f"leaked: {sorted(leaked)}"
    fault.made_by = f"{len(planted)} credential variables with random values in the environment of every command"
    fault.verified = ("no value, nor its base64, in any file of the project, home or temp folder, in MLflow's params "
                      "and tags, or in any command's output")
    fault.detail = (f"{len(planted)} variables with random values through {len(STAGES)} commands; searched (also "
                    f"base64) {len(files)} files, the params and tags of {len(runs)} MLflow run(s) and every "
                    "command's output")
    assert not leaked, leaked
