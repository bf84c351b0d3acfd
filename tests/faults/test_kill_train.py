"""`genbench train` killed with SIGKILL at random steps resumes to the weights of a run nobody interrupted."""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import signal
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from genbench.components.common.artifacts import HISTORY, WEIGHTS
from genbench.config import load_config

from .conftest import project_copy
from .launcher import Child, Launcher
from .records import FaultRecord

STEPS, KILLS = 40, 5
TINY_VAE = ("tiny: {arch: {base_channels: 8}, train: {fid_every: 0, steps: 4, batch_size: 16, log_every: 1, "
            "checkpoint_every: 2, ema_decay: 0.9}}")  # params.yaml's tiny vae line (dcgan's follows it)


def _long_vae(project: Path) -> None:
    """The tiny vae (the smallest model) for STEPS steps with a checkpoint after each, so a kill lands mid-run."""
    params = project / "params.yaml"
    text = params.read_text()
    longer = TINY_VAE.replace("steps: 4,", f"steps: {STEPS},").replace("checkpoint_every: 2", "checkpoint_every: 1")
    assert TINY_VAE in text, "params.yaml's tiny vae line changed; update TINY_VAE"
    params.write_text(text.replace(TINY_VAE, longer, 1))
    train = load_config(params).entry("vae").train
    assert (train.steps, train.checkpoint_every) == (STEPS, 1)


def _last_step(history: Path) -> int:
    try:
        lines = history.read_text().strip().splitlines()
    except FileNotFoundError:
        return 0
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_at(child: Child, history: Path, step: int, timeout: float = 120.0) -> None:
    """SIGKILL the child once its history.csv (rewritten with each checkpoint) reaches `step`."""
    deadline = time.monotonic() + timeout
    while _last_step(history) < step and _alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    with contextlib.suppress(ProcessLookupError):  # it ended on its own: the test then sees no mid-run kill
        os.kill(child.pid, signal.SIGKILL)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_kill_9_at_random_steps_resumes_to_the_uninterrupted_weights(
    faults_project: Path, launcher: Launcher, fault: FaultRecord, tmp_path: Path
) -> None:
    seed = secrets.randbits(32)
    targets = sorted(random.Random(seed).sample(range(2, STEPS - 3), KILLS))
    fault.fault, fault.kind, fault.tried = "SIGKILL of `genbench train` at a random step, then rerun", "crash", KILLS
    project = project_copy(faults_project, tmp_path / "project")
    _long_vae(project)
    code, output = launcher.run(project, ["train", "vae", "--out", "runs/straight"], tmp_path / "straight.log")
    assert code == 0, output
    expected = load_file(project / "runs/straight" / WEIGHTS)

    outcomes = []
    for i, target in enumerate(targets):
        run = project / "runs" / f"killed-{i}"
        child = launcher.start(project, ["train", "vae", "--out", str(run)], tmp_path / f"killed-{i}.log")
        _kill_at(child, run / HISTORY, target)
        killed = launcher.wait(child) == -signal.SIGKILL and not (run / WEIGHTS).exists()
        code, output = launcher.run(project, ["train", "vae", "--out", str(run)], tmp_path / f"resumed-{i}.log")
        at = int(match.group(1)) if (match := re.search(r"resuming at step (\d+)", output)) else 0
        same = code == 0 and _equal(load_file(run / WEIGHTS), expected)
        outcomes.append({"target": target, "checkpoint": at, "killed mid-run": killed and 0 < at < STEPS,
                         "same weights": same})
    fault.survived = sum(o["killed mid-run"] and o["same weights"] for o in outcomes)
    fault.lost = "the step in flight: each rerun resumed from the checkpoint of the step before"
    fault.made_by = (f"SIGKILL of the `genbench train vae` process as soon as its history shows the target step, "
                     f"{KILLS} times at random steps")
    fault.verified = (f"the same command resumed from the last checkpoint and finished; {fault.survived} of {KILLS} "
                      "resumed model.safetensors equal to an uninterrupted run's, tensor by tensor")
    fault.detail = (f"tiny vae, {STEPS} steps, a checkpoint after each; killed after steps "
                    f"{[o['checkpoint'] for o in outcomes]} (random seed {seed}); every resumed model.safetensors "
                    "compared tensor by tensor with an uninterrupted run's")
    assert fault.survived == KILLS, outcomes
