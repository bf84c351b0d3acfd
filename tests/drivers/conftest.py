"""The drivers run in the background from the moment collection ends, and their tests run last.

`dvc repro` and the Prefect flow each cost about two minutes on 2 cores, nearly all of it process start-up
(every DVC stage imports torch anew; the flow starts Prefect's ephemeral server); the third driver, `torchrun` on
`genbench prepare` and `genbench train`, starts four interpreters. Started as soon as pytest
knows which tests it will run, they overlap the unit and stage tests instead of following them. Each runs in
its own copy of the project on the tiny profile, with embedded defaults only, as a subprocess with one torch
thread so that it does not fight the test process for the two cores. The flow starts a real (ephemeral)
Prefect server, so its tests are marked `server` and stay out of the fast loop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import yaml

from ..conftest import use_tiny

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("vae", "ddpm")  # two are enough to show that one family's change leaves the other alone
SECOND_REPRO = "=== second dvc repro ==="
THIRD_REPRO = "=== dvc repro after a ddpm edit ==="
NETWORK = "components/evaluate/inception_net.py"  # the FID network, edited after the third repro
NETWORK_STATUS = "status-after-network-edit.json"  # what `dvc status --json` says then
# One ddpm training setting changed (tiny: 4 → 5 steps), as a person would edit params.yaml.
EDIT_DDPM = ("import pathlib; p = pathlib.Path('params.yaml'); lines = p.read_text().split(chr(10)); "
             "i = next(i for i, line in enumerate(lines) if 'tiny: {arch: {base_channels: 6, timesteps: 4' in line); "
             "lines[i] = lines[i].replace('{fid_every: 0, steps: 4,', '{fid_every: 0, steps: 5,', 1); "
             "p.write_text(chr(10).join(lines))")
OUTPUTS = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "data", "runs",
                                 "samples", "metrics", "sweeps", "registry", "results", "mlflow.db", "mlartifacts",
                                 ".genbench", "dvc.lock")
# Machine-local state, by path from the repository root, also left out: DVC's cache (whose run-cache would let a
# copy's `dvc repro` restore a stage instead of running it, as this machine's history decides), DVC's tmp and local
# config, the stages' provenance records, credentials and tool caches.
LOCAL_STATE = frozenset({".dvc/cache", ".dvc/tmp", ".dvc/config.local", "provenance", "infra/.env",
                         "infra/k8s/secret.yaml", ".ruff_cache", ".mypy_cache"})
TORCHRUN_TIMES = "=== torchrun started, ended (date +%s.%N):"
WAIT = 900  # seconds a test waits for its driver, or for one command in a driver's project


def driver_env(home: Path) -> dict[str, str]:
    """The caller's environment without tracking or Prefect settings (embedded defaults), rooted at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PREFECT_HOME"] = str(home / ".prefect")  # ephemeral Prefect state stays in the test folder
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    env["OMP_NUM_THREADS"] = "1"  # both drivers get the same setting, so their outputs still compare bit for bit
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "genbench-test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@localhost"
    return env


def run_checked(cmd: list[str], cwd: Path, timeout: int = WAIT) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=driver_env(cwd), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def copy_ignore(folder: str, names: list[str]) -> set[str]:
    """`shutil.copytree`'s ignore for a copy of REPO: OUTPUTS' names anywhere, LOCAL_STATE's paths."""
    here = Path(folder).relative_to(REPO)
    return set(OUTPUTS(folder, names)) | {name for name in names if (here / name).as_posix() in LOCAL_STATE}


def tiny_project(path: Path) -> Path:
    """A copy of the repository's own files (no venv, no outputs, no machine-local state) on the tiny profile."""
    shutil.copytree(REPO, path, ignore=copy_ignore, dirs_exist_ok=True)
    use_tiny(path, entries=list(FAMILIES))
    assert yaml.safe_load((path / "plan.yaml").read_text())["entries"] == list(FAMILIES)
    return path


def _dvc_command(root: Path) -> list[str]:
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        run_checked(cmd, root)
    # The outputs compared with the Prefect flow's are copied to before/ ahead of the edit (restoring them with a
    # fourth repro would retrain: DVC's run cache skips stages with persistent outputs such as checkpoint.pt).
    return ["sh", "-c", f"dvc repro && echo '{SECOND_REPRO}' && dvc repro && mkdir before "
                        f"&& cp -r samples sweeps provenance before/ && cp results/results.csv results-before.csv "
                        f"&& {sys.executable} -c \"{EDIT_DDPM}\" "
                        f"&& echo '{THIRD_REPRO}' && dvc repro && cp results/results.csv results-after.csv "
                        f"&& echo '# an edit' >> {NETWORK} && dvc status --json > {NETWORK_STATUS} "
                        f"&& git checkout -- {NETWORK}"]


def _flow_command(root: Path) -> list[str]:
    """The flow in a git + DVC checkout, as a scheduled run meets it: its data step goes through DVC's prepare
    (the push to the unconfigured remote only warns)."""
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        run_checked(cmd, root)
    return [sys.executable, "-m", "genbench.cli", "run"]


def _torchrun_command(root: Path) -> list[str]:
    """README's `torchrun --nproc_per_node 2 genbench train ddpm` after `genbench prepare`, from the project root (where
    Python runs genbench/__main__.py), on 127.0.0.1 and the CPU (gloo) even where a GPU is visible; the shell prints
    when torchrun started and ended, a measure of its processes' time taken outside them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return ["sh", "-c", f"genbench prepare && started=$(date +%s.%N) && CUDA_VISIBLE_DEVICES= {sys.executable} "
                        f"-m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port {port} "
                        f"genbench train ddpm && echo \"{TORCHRUN_TIMES} $started $(date +%s.%N)\""]


def _kfp_command(root: Path) -> list[str]:
    """The Kubeflow pipeline under kfp.local: each task a subprocess of this environment, artifacts in
    .genbench/kfp, MLflow embedded in the project (no git: its tasks run in scratch folders anyway)."""
    return [sys.executable, "-m", "genbench.cli", "kfp", "local"]


# fixture name → how to start its driver
COMMANDS = {"dvc_project": _dvc_command, "flow_project": _flow_command, "torchrun_project": _torchrun_command,
            "kfp_project": _kfp_command}


@dataclass
class Driver:
    root: Path
    command: list[str]
    process: subprocess.Popen
    log: IO[str]  # a file, not a pipe: a full pipe would stall the run

    def wait(self) -> str:
        """The driver's output once it has finished; fails the test with its tail if it exited non-zero."""
        code = self.process.wait(timeout=WAIT)
        self.log.seek(0)
        output = self.log.read()
        assert code == 0, f"{self.command} failed ({code}):\n{output[-6000:]}"
        return output


_running: dict[str, Driver] = {}
_scratch: list[Path] = []
_threads: list[int] = []  # the test process's torch threads before the drivers started


def restore_threads() -> None:
    """Once every driver has exited, give the test process its threads back (tests/conftest.py calls this
    before each test: a runtest hook here would see only this folder's tests)."""
    if _threads and all(driver.process.poll() is not None for driver in _running.values()):
        import torch

        torch.set_num_threads(_threads.pop())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Driver tests last, so the tests before them run while the drivers work."""
    here = Path(__file__).parent
    items.sort(key=lambda item: Path(str(item.fspath)).is_relative_to(here))


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = [name for name in COMMANDS if any(name in getattr(i, "fixturenames", ()) for i in session.items)]
    if not wanted or session.config.option.collectonly:
        return
    import torch  # the stage and unit tests have loaded it by now; collection alone need not

    # One thread here and one in each driver: with more threads than cores, torch's OpenMP workers spin
    # waiting for the one that was descheduled, and both sides slow down several-fold.
    _threads.append(torch.get_num_threads())
    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp(prefix="genbench-drivers-"))
    _scratch.append(scratch)
    for name in wanted:
        root = tiny_project(scratch / name)
        command = COMMANDS[name](root)
        log = open(root / "driver.log", "w+")
        process = subprocess.Popen(command, cwd=root, env=driver_env(root), stdout=log, stderr=subprocess.STDOUT)
        _running[name] = Driver(root, command, process, log)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop drivers whose tests never ran (a -x stop, ^C); keep their folders when something failed."""
    for driver in _running.values():
        if driver.process.poll() is None:
            driver.process.kill()
            driver.process.wait()
        driver.log.close()
    for scratch in _scratch:
        if exitstatus == 0:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"\ndriver projects kept in {scratch}")


def _finished(name: str) -> tuple[Path, str]:
    if name not in _running:
        pytest.fail(f"the {name} driver was not started at collection (tests/drivers/conftest.py)")
    driver = _running[name]
    return driver.root, driver.wait()


@pytest.fixture(scope="session")
def flow_project() -> Path:
    """A tiny project after `genbench run` (the Prefect flow, ephemeral server)."""
    return _finished("flow_project")[0]


@pytest.fixture(scope="session")
def torchrun_project() -> tuple[Path, str]:
    """A tiny project after `genbench prepare` and a two-process `torchrun ... genbench train ddpm`: (root, output)."""
    return _finished("torchrun_project")


@pytest.fixture(scope="session")
def kfp_project() -> tuple[Path, str]:
    """A tiny project after `genbench kfp local` (the Kubeflow pipeline under kfp.local): (root, its output)."""
    return _finished("kfp_project")


@pytest.fixture(scope="session")
def dvc_project() -> tuple[Path, str, str, str]:
    """A tiny project after `dvc repro` twice, then once more after one ddpm training setting changed (samples
    and sweeps from before it in before/, results.csv in results-before.csv and results-after.csv):
    (root, first output, second, third)."""
    root, output = _finished("dvc_project")
    first, rest = output.split(SECOND_REPRO)
    second, third = rest.split(THIRD_REPRO)
    return root, first, second, third
