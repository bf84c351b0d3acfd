"""The TrainJob's trainer command, run here as a TrainJob pod runs it after `fetch` restored a run folder.

The Kubeflow SDK's LocalProcessBackend cannot run it offline: it takes only a CustomTrainer (a Python function,
not an image's command), and runs that through the torchrun of a venv it creates empty, into which torch comes
only by `pip install` from an index. So this test runs the command itself: `torchrun` with the rendered arguments
and, in place of its flags, the PET_* variables the Trainer's torch plugin sets (v2.3: PET_NNODES,
PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT), in a project whose trained run stands for
what `fetch` brought back from S3. It resumes from that run's checkpoint instead of starting over.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from genbench.components.common.artifacts import read_summary
from genbench.config import load_config
from genbench.flows.trainjob import PARAMS_IN_IMAGE, render
from genbench.kubeflow_config import KubeflowConfig


def test_the_trainer_command_resumes_the_restored_run_under_torchrun(trained: Path, tmp_path: Path) -> None:
    config = load_config(trained / "params.yaml")
    config = config.model_copy(update={"kubeflow": KubeflowConfig.model_validate(
        {"resources": {"train": {"gpu": 0}}})})
    trainer = render(config, "vae", 0, 1)["spec"]["trainer"]
    args = [arg.replace(PARAMS_IN_IMAGE, str(trained / "params.yaml")) for arg in trainer["args"]]
    assert args != trainer["args"]  # the image's params, moved to this project's
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plugin = {"PET_NNODES": str(trainer["numNodes"]), "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
              "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}
    before = read_summary(trained / "runs" / "vae" / "seed-0")
    (torchrun,) = trainer["command"]
    # TMPDIR: torchrun keeps its log folder (torchelastic_*) there
    done = subprocess.run([str(Path(sys.executable).with_name(torchrun)), *args], cwd=trained, timeout=240,
                          env=os.environ | plugin | {"CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resuming at step {before.steps}" in done.stdout + done.stderr
    after = read_summary(trained / "runs" / "vae" / "seed-0")
    assert (after.steps, after.processes) == (before.steps, 1)
