"""A registered generator through plain MLflow, outside genbench: `mlflow.pyfunc.load_model` in a fresh Python
process and `mlflow models serve` over REST give the bytes `genbench sample --model` writes.

One tiny project on the embedded SQLite store (no tracking server): ddpm prepared, trained, sampled and registered
through the CLI, its metrics file written by hand (the FID is not what is tested). The child processes get this
process's torch thread count, so every side computes with the same float reduction order. Everything the tests
start, they stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genbench.cli import app

from ..conftest import use_tiny
from ..stages.test_stages import STAND_IN_METRICS

pytestmark = pytest.mark.server
CHAMPION = "models:/genbench-ddpm@champion"
N = 12  # the tiny profile's sample.n: `genbench sample --model` draws that many
REQUEST = {"dataframe_split": {"columns": ["n", "seed"], "data": [[N, 0]]}}  # the README's curl body


def _genbench(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], np.ndarray]]:
    """The environment a plain MLflow client needs (the store's URI, the venv on PATH) and the images
    `genbench sample ddpm --model models:/genbench-ddpm@champion` wrote."""
    import torch

    root = tmp_path_factory.mktemp("pyfunc")
    use_tiny(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
            patch.delenv(name, raising=False)
        for command in (["prepare"], ["train", "ddpm"], ["sample", "ddpm"]):
            _genbench(*command)
        (root / "metrics" / "ddpm").mkdir(parents=True)
        samples_md5 = hashlib.md5((root / "samples" / "ddpm" / "seed-0.npy").read_bytes()).hexdigest()
        (root / "metrics" / "ddpm" / "seed-0.json").write_text(
            json.dumps(STAND_IN_METRICS | {"fid": 321.0, "samples_md5": samples_md5}))
        _genbench("register", "ddpm")
        _genbench("sample", "ddpm", "--model", CHAMPION)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "OMP_NUM_THREADS": str(torch.get_num_threads()),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `mlflow serve` execs uvicorn
    expected = np.load(root / "samples" / "ddpm-v1.npy")
    assert expected.shape == (N, 28, 28, 1)
    yield env, expected


def test_a_fresh_python_process_loads_the_champion_with_plain_mlflow(champion, tmp_path: Path) -> None:
    env, expected = champion
    script = ("import sys, mlflow, numpy, pandas\n"
              f"model = mlflow.pyfunc.load_model({CHAMPION!r})\n"
              f"numpy.save(sys.argv[1], model.predict(pandas.DataFrame({{'n': [{N}], 'seed': [0]}})))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images.npy")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    images = np.load(tmp_path / "images.npy")
    assert images.dtype == np.uint8 and images.shape == expected.shape and images.tobytes() == expected.tobytes()


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mlflow_models_serve_answers_with_the_same_images(champion, tmp_path: Path) -> None:
    env, expected = champion
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "serve.log"  # a file, not a pipe: a full pipe could stall the server
    with open(log, "wb") as handle:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager",
                                   "local", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env,
                                  stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "no answer on /ping in 600 s:\n" + log.read_text(errors="replace")[-4000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        status, answer = _post(f"{url}/invocations", REQUEST)
        assert status == 200, answer
        images = np.asarray(answer["predictions"], dtype=np.uint8)
        assert images.shape == expected.shape and images.tobytes() == expected.tobytes()
        status, answer = _post(f"{url}/invocations", {"dataframe_split": {"columns": ["n", "seed"], "data": [[0, 0]]}})
        assert status == 400 and "n: the number of images must be at least 1 (got 0)" in answer["message"], answer
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's session: mlflow and the uvicorn it started
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
