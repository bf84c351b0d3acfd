"""DVC's remote on a real S3 server on 127.0.0.1 (the run's shared SeaweedFS, started as `genbench stack up` starts
it: backing.py), in tiny git + DVC projects of one entry (vae) and one seed.

- A fresh clone rebuilds without retraining: `dvc pull` brings every cached output back, and `dvc repro` then
  runs only `report`, whose `results/` is not cached (`cache: false`), into the same tables.
- The Prefect flow's data step reproduces DVC's `prepare` stage: dvc.lock records it and the remote holds it
  (tests/drivers checks that the flow takes this step and tags its MLflow runs with the md5).

The endpoint goes to `.dvc/config.local` (`dvc remote modify --local`) and the keys only to the environment:
nothing the test writes to a tracked file names the server or its keys.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from genbench import stack
from genbench.components.register.dvc_lock import data_lock_hash
from genbench.config import load_config
from genbench.flows.dvc_data import DataPushWarning, reproduce_prepare
from genbench.stack.processes import free_port
from genbench.stack.seaweedfs import s3_client
from tests.conftest import use_tiny
from tests.drivers.conftest import REPO, copy_ignore, driver_env

from .backing import Backing, object_keys

# DVC 3.67 calls pygtrie's deprecated `_NoneStep.value` internally; nothing here can change it
pytestmark = [pytest.mark.server, pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")]
HOST = "127.0.0.1"
REMOTE = "storage"  # .dvc/config's remote s3://genbench-dvc, made the default of each test's clone
PLAN = {"entries": ["vae"], "seeds": [0], "sweeps": {}}  # one entry, one seed, no sweep: the smallest pipeline
RAN = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


@pytest.fixture(scope="module")
def s3(backing: Backing) -> dict[str, str]:
    """The shared SeaweedFS, with the stack's buckets (genbench-dvc among them): its URL and keys."""
    return {"url": backing.s3_url, **backing.s3_env}


def _env(root: Path, s3: dict[str, str]) -> dict[str, str]:
    """The drivers' environment (embedded MLflow and Prefect, one torch thread) with the S3 keys, and no other
    AWS setting: the endpoint must come from `.dvc/config.local`."""
    env = {k: v for k, v in driver_env(root).items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}
    return env | {k: v for k, v in s3.items() if k.startswith("AWS_")}


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{output[-6000:]}"
    return output


def _project(path: Path, s3: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A git + DVC copy of the repository on the tiny profile and PLAN, committed, its remote's endpoint set in
    `.dvc/config.local`; returns it and the environment to run in it."""
    shutil.copytree(REPO, path, ignore=copy_ignore)
    params = use_tiny(path, **PLAN) / "params.yaml"
    config = load_config(params)
    plan = (config.profile, list(config.entries), list(config.seeds), dict(config.sweeps))
    assert plan == ("tiny", ["vae"], [0], {}), plan
    env = _env(path, s3)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        _run(cmd, path, env)
    _set_endpoint(path, s3["url"], env)
    return path, env


def _set_endpoint(root: Path, url: str, env: dict[str, str]) -> None:
    _run(["dvc", "remote", "modify", "--local", REMOTE, "endpointurl", url], root, env)
    _run(["dvc", "remote", "default", "--local", REMOTE], root, env)
    tracked = _run(["git", "status", "--porcelain", "--untracked-files=no"], root, env)
    assert not tracked.strip(), f"a tracked file changed:\n{tracked}"


def _bucket_keys(s3: dict[str, str]) -> set[str]:
    return set(object_keys(s3_client(s3["url"], s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"]), stack.DVC_BUCKET))


def _remote_key(md5: str) -> str:
    """Where DVC 3 stores an object of that md5 in an S3 remote (a folder's listing keeps its `.dir`)."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def test_a_fresh_clone_pulls_everything_and_reruns_only_the_report(s3: dict[str, str], tmp_path: Path) -> None:
    first, env = _project(tmp_path / "first", s3)
    _run(["dvc", "repro"], first, env)
    reported_at = _run(["git", "rev-parse", "HEAD"], first, env).strip()  # the commit the report records
    _run(["git", "add", "dvc.lock"], first, env)
    _run(["git", "commit", "-qm", "dvc repro"], first, env)
    _run(["dvc", "push"], first, env)
    lock = yaml.load((first / "dvc.lock").read_text(), Loader=yaml.CSafeLoader)["stages"]
    assert _remote_key(data_lock_hash(first) or "?") in _bucket_keys(s3)

    second = tmp_path / "second"
    _run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    env = _env(second, s3)
    _set_endpoint(second, s3["url"], env)
    _run(["dvc", "pull"], second, env)
    output = _run(["dvc", "repro"], second, env)

    assert RAN.findall(output) == ["report"], output
    assert sorted(SKIPPED.findall(output)) == sorted(set(lock) - {"report"}), output
    assert {"train@vae-0", "sample@vae-0", "evaluate@vae-0", "register@vae-0", "prepare"} <= set(lock)
    assert "Data and pipelines are up to date." in _run(["dvc", "status"], second, env)
    # The same bytes, but for the git commit each report records: the first ran before dvc.lock was committed.
    rebuilt_at = _run(["git", "rev-parse", "HEAD"], second, env).strip()
    for name in ("results.csv", "results.md"):
        before, after = ((root / "results" / name).read_bytes() for root in (first, second))
        assert reported_at.encode() in before and rebuilt_at.encode() in after, name
        assert after.replace(rebuilt_at.encode(), reported_at.encode()) == before, name


def test_the_flow_data_step_reproduces_dvc_prepare_and_pushes_it(s3: dict[str, str], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The Prefect flow's data step (`reproduce_prepare`; the drivers tier checks that the flow takes it and tags
    its MLflow runs with the hash) records DVC's `prepare` stage in dvc.lock and pushes the data to the remote;
    an unreachable remote warns, naming it; data settings unlike params.yaml's stop it before DVC runs."""
    root, env = _project(tmp_path / "flow", s3)
    for key in [key for key in os.environ if key.startswith("AWS_") and key != "AWS_CA_BUNDLE"]:
        monkeypatch.delenv(key)
    for key, value in s3.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(root)
    md5 = reproduce_prepare(root)
    lock = yaml.load((root / "dvc.lock").read_text(), Loader=yaml.CSafeLoader)["stages"]
    assert list(lock) == ["prepare"] and md5 == data_lock_hash(root) and md5.endswith(".dir")
    assert [out["md5"] for out in lock["prepare"]["outs"] if out["path"] == "data/prepared"] == [md5]
    assert "Data and pipelines are up to date." in _run(["dvc", "status", "prepare"], root, env)
    assert _remote_key(md5) in _bucket_keys(s3)  # pushed to the default remote

    _set_endpoint(root, f"http://{HOST}:{free_port(HOST)}", env)
    with pytest.warns(DataPushWarning, match=f"remote '{REMOTE}'"):
        assert reproduce_prepare(root) == md5
    data = load_config(root / "params.yaml").data
    with pytest.raises(ValueError, match="data differ"):
        reproduce_prepare(root, data=data.model_copy(update={"train_size": data.train_size + 1}), seed=0)
