"""The drivers run in the background from the moment collection ends, and their tests run last.

`dvc repro`, the Prefect flow, the Kubeflow pipeline under kfp.local and `torchrun` on `genbench train` spend most
of their time starting processes (every DVC stage and KFP task imports torch anew; the flow starts Prefect's
ephemeral server). Started as soon as pytest knows which tests it will run, they overlap every other test instead
of following them. Each runs in its own copy of the project on the tiny profile, with embedded defaults only, as a
subprocess with one torch thread. The process that starts them is pytest itself or, under pytest-xdist, its
controller (tests/conftest.py has the hooks, since the controller collects nothing and never loads this file);
each driver's exit code lands in its folder, and the fixtures below wait for it from whichever process runs the
test. The flow starts a real (ephemeral) Prefect server, so its tests are marked `server`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


def driver_tmp(root: Path) -> Path:
    """The temporary folder (TMPDIR) of the background driver run in `root`."""
    return root.parent / f"{root.name}.tmp"


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
    assert yaml.load((path / "plan.yaml").read_text(), Loader=yaml.CSafeLoader)["entries"] == list(FAMILIES)
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


KFP_ENTRIES = (*FAMILIES, "ldm")  # the ldm diffuses in runs/vae: the pipeline's second loop, after the first's fan-in


def _kfp_command(root: Path) -> list[str]:
    """The Kubeflow pipeline under kfp.local, on FAMILIES and an ldm built on their vae: each task a subprocess of
    this environment, artifacts in .genbench/kfp, MLflow embedded in the project (no git: its tasks run in scratch
    folders anyway)."""
    use_tiny(root, entries=list(KFP_ENTRIES))
    return [sys.executable, "-m", "genbench.cli", "kfp", "local"]


# fixture name → how to start its driver
COMMANDS = {"dvc_project": _dvc_command, "flow_project": _flow_command, "torchrun_project": _torchrun_command,
            "kfp_project": _kfp_command}


LOG, EXIT, COMMAND = "driver.log", "driver.exit", "driver.command.json"  # in each driver's project folder
FOLDER_KEY = "genbench_drivers"  # pytest-xdist's workerinput: the folder the controller runs the drivers in
_folder: list[Path] = []  # in the process that starts the drivers: their folder
_processes: dict[str, subprocess.Popen] = {}
_threads: list[int] = []  # the test process's torch threads before the drivers started (single-process runs)


def drivers_folder(config: pytest.Config) -> Path:
    """Where the drivers run: made by the process that starts them (pytest itself, or pytest-xdist's controller,
    which hands it to each worker)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return Path(workerinput[FOLDER_KEY])
    if not _folder:
        _folder.append(Path(tempfile.mkdtemp(prefix="genbench-drivers-")))
    return _folder[0]


def wanted(items: list[pytest.Item]) -> list[str]:
    """The drivers whose fixtures the collected tests use."""
    return [name for name in COMMANDS if any(name in getattr(item, "fixturenames", ()) for item in items)]


def start(folder: Path, names: list[str], one_thread_here: bool) -> None:
    """Start each driver in its own project under `folder`; a thread per driver writes its exit code to EXIT when
    it ends, which is what the tests wait for, in this process or in an xdist worker. `one_thread_here`: this
    process runs tests too, so it keeps one torch thread while the drivers run (restore_threads)."""
    if _processes or not names:
        return
    if one_thread_here:
        import torch

        # With more threads than cores, torch's OpenMP workers spin waiting for the one that was descheduled,
        # and both sides slow down several-fold.
        _threads.append(torch.get_num_threads())
        torch.set_num_threads(1)
    for name in names:
        root = tiny_project(folder / name)
        command = COMMANDS[name](root)
        (root / COMMAND).write_text(json.dumps(command))
        scratch = driver_tmp(root)  # what a driver leaves in its temporary folder stays beside its project
        scratch.mkdir()
        with open(root / LOG, "w") as log:  # a file, not a pipe: a full pipe would stall the run
            process = subprocess.Popen(command, cwd=root, env=driver_env(root) | {"TMPDIR": str(scratch)},
                                       stdout=log, stderr=subprocess.STDOUT)
        _processes[name] = process
        threading.Thread(target=_record_exit, args=(process, root), daemon=True).start()


def _record_exit(process: subprocess.Popen, root: Path) -> None:
    code = process.wait()
    (root / f"{EXIT}.tmp").write_text(str(code))
    (root / f"{EXIT}.tmp").replace(root / EXIT)


def restore_threads() -> None:
    """Once every driver has exited, give the test process its threads back (tests/conftest.py calls this
    before each test)."""
    if _threads and all(process.poll() is not None for process in _processes.values()):
        import torch

        torch.set_num_threads(_threads.pop())


def stop(exitstatus: int) -> None:
    """Stop drivers whose tests never ran (a -x stop, ^C); keep their folders when something failed."""
    for process in _processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()
    for folder in _folder:
        if exitstatus == 0:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"\ndriver projects kept in {folder}")


def _finished(request: pytest.FixtureRequest, name: str) -> tuple[Path, str]:
    """The driver's project and output once it has exited; fails the test with its tail if it exited non-zero."""
    root = drivers_folder(request.config) / name
    begun = time.monotonic()
    while not (root / EXIT).exists():
        waited = time.monotonic() - begun
        if waited > WAIT or (waited > 120 and not (root / COMMAND).exists()):
            pytest.fail(f"the {name} driver {'did not finish' if (root / COMMAND).exists() else 'was not started'} "
                        f"in {root} (tests/drivers/conftest.py, started at collection)")
        time.sleep(1)
    code = int((root / EXIT).read_text())
    output = (root / LOG).read_text(errors="replace")
    assert code == 0, f"{json.loads((root / COMMAND).read_text())} failed ({code}):\n{output[-6000:]}"
    return root, output


@pytest.fixture(scope="session")
def flow_project(request: pytest.FixtureRequest) -> Path:
    """A tiny project after `genbench run` (the Prefect flow, ephemeral server)."""
    return _finished(request, "flow_project")[0]


@pytest.fixture(scope="session")
def torchrun_project(request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A tiny project after `genbench prepare` and a two-process `torchrun ... genbench train ddpm`: (root, output)."""
    return _finished(request, "torchrun_project")


@pytest.fixture(scope="session")
def kfp_project(request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A tiny project after `genbench kfp local` (the Kubeflow pipeline under kfp.local): (root, its output)."""
    return _finished(request, "kfp_project")


@pytest.fixture(scope="session")
def dvc_project(request: pytest.FixtureRequest) -> tuple[Path, str, str, str]:
    """A tiny project after `dvc repro` twice, then once more after one ddpm training setting changed (samples
    and sweeps from before it in before/, results.csv in results-before.csv and results-after.csv):
    (root, first output, second, third)."""
    root, output = _finished(request, "dvc_project")
    first, rest = output.split(SECOND_REPRO)
    second, third = rest.split(THIRD_REPRO)
    return root, first, second, third
