"""What each of the two gloo processes of test_distributed_train.py runs, and the settings and toy family that the
test's single-process references share with them."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genbench.components.common.interrupts import Interrupted
from genbench.components.train import train as train_module
from genbench.components.train.distributed import Processes, global_batchnorm
from genbench.config import DistributedConfig, EntrySettings
from genbench.models import REGISTRY
from genbench.models import family as family_spec
from genbench.models.base import Family, GenerativeModel, randn_per_sample

WORLD = 2
IMAGES, SIZE = 64, 8
# Every run: a global batch of 8 (4 per rank), fp32 on the CPU, a row of history every step, a checkpoint every 2.
COMMON = {"steps": 4, "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "fid_every": 0, "ema_decay": 0.9,
          "device": "cpu", "dtype": "fp32"}
ARCH = {
    "ddpm": {"base_channels": 6, "timesteps": 4, "num_res_blocks": 1, "dropout": 0.1, "attention_resolutions": ()},
    "dcgan": {"base_channels": 4, "latent_dim": 8},
    "wgan_gp": {"base_channels": 4, "latent_dim": 8, "n_critic": 2},
    "vae_gan": {"base_channels": 4, "latent_dim": 8},
    "toy_gan": {},
    "vae": {"base_channels": 4, "latent_dim": 8},
}
TRAIN = {"ddpm": {"warmup_steps": 2}}  # a short warmup; the DDPM's gradient clipping (1.0) stays on
GANS = ("dcgan", "wgan_gp", "vae_gan")


class ToyGAN(GenerativeModel):
    """Two optimizer groups with BatchNorm in both and no random draws: a `g` that maps each image to another and a
    critic `d`. Without draws, one process and two must agree to float rounding, BatchNorm statistics included."""

    def __init__(self, channels: int, image_size: int, arch: object) -> None:
        super().__init__(channels, image_size)
        # No bias before a BatchNorm (as in DCGAN): its gradient is zero up to rounding, which Adam would amplify.
        self.g = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                               nn.Conv2d(4, channels, 3, padding=1), nn.Tanh())
        self.d = nn.Sequential(nn.Conv2d(channels, 4, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(4),
                               nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * (image_size // 2) ** 2, 1))

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"d": self.d.parameters(), "g": self.g.parameters()}

    def ema_parameters(self) -> dict[str, nn.Parameter]:
        return {f"g.{name}": p for name, p in self.g.named_parameters()}

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        fake = self.g(x)
        if group == "d":  # g's parameters get no gradient here: DDP must expect that
            return {"loss": F.softplus(-self.d(x)).mean() + F.softplus(self.d(fake.detach())).mean()}
        return {"loss": F.softplus(-self.d(fake)).mean()}

    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        return torch.tanh(randn_per_sample((self.channels, self.image_size, self.image_size), generators))


TOY = Family(ToyGAN)


def settings(family: str, **train: object) -> EntrySettings:
    """Entry `family` at the sizes above (`toy_gan` must be in REGISTRY)."""
    spec = family_spec(family)
    return EntrySettings(family=family, arch=spec.arch(**ARCH[family]),
                          train=spec.train(**COMMON | TRAIN.get(family, {}) | train))


def write_data(data_dir: Path) -> None:
    """train.npy: 64 random 8×8 grey images (uint8 NHWC), and their labels."""
    rng = np.random.default_rng(0)
    data_dir.mkdir(parents=True)
    np.save(data_dir / "train.npy", rng.integers(0, 256, (IMAGES, SIZE, SIZE, 1), dtype=np.uint8))
    np.save(data_dir / "train_labels.npy", rng.integers(0, 10, IMAGES, dtype=np.int64))


class Stopped(Exception):
    pass


def run(rank: int, root: str, port: int) -> None:
    """Rank `rank` of WORLD, in a child forked from the test process: join the group as torchrun's environment says,
    then every scenario in turn. Run folders go to root/ddp (per-rank folders where the test checks that rank 1
    writes nothing), what the test inspects beyond them to root/probe."""
    # One thread each: the parent's OpenMP workers are not in the fork, and two processes share the two cores. The
    # runs are on the CPU, and a forked child must not touch a CUDA the parent may have initialised.
    torch.set_num_threads(1)
    torch.cuda.is_available = lambda: False
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    REGISTRY["toy_gan"] = TOY
    root_dir = Path(root)
    data, runs, probe = root_dir / "data", root_dir / "ddp", root_dir / "probe"
    dist.init_process_group("gloo")  # train() joins this group rather than making its own
    try:
        _batchnorm_probe(rank, probe)
        for family in ("toy_gan", "ddpm"):
            train_module.train(family, settings(family), 0, data, runs / f"{family}-rank{rank}")
        # A folder per rank, as on two nodes: only rank 0's holds the checkpoint, which rank 1 resumes from too.
        _stop_after_first_checkpoint(rank, data, runs / f"ddpm-resumed-rank{rank}", probe)
        train_module.train("ddpm", settings("ddpm"), 0, data, runs / f"ddpm-resumed-rank{rank}")
        # SIGTERM to rank 1 alone, as when one node is drained: both ranks checkpoint the same step and stop.
        _sigterm_to_rank_1_during_step_3(rank, data, runs / "ddpm-signalled", probe)
        train_module.train("ddpm", settings("ddpm"), 0, data, runs / "ddpm-signalled")
        # Each rank's own measure of each GAN run: its training loop (the summary it returns) and the whole call.
        timed = {}
        for family in GANS:
            called = time.perf_counter()
            summary = train_module.train(family, settings(family, steps=2), 0, data, runs / family)
            timed[family] = {"loop": summary.seconds, "call": time.perf_counter() - called}
        (probe / f"gans-rank{rank}.json").write_text(json.dumps(timed))
    finally:
        dist.destroy_process_group()


def _batchnorm_probe(rank: int, probe: Path) -> None:
    """One BatchNorm layer's GlobalBatchNorm twin on this rank's 4 of 8 images, forward and backward of
    sum(out · weights): the test compares the pieces with BatchNorm on all 8 in one process."""
    torch.manual_seed(0)
    x, weights = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    norm = nn.BatchNorm2d(3)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    rows = slice(4 * rank, 4 * rank + 4)
    mine = x[rows].clone().requires_grad_()
    out = global_batchnorm(norm)(mine)
    (out * weights[rows]).sum().backward()
    probe.mkdir(parents=True, exist_ok=True)
    torch.save({"out": out.detach(), "x_grad": mine.grad, "weight_grad": norm.weight.grad, "bias_grad": norm.bias.grad,
                "running_mean": norm.running_mean, "running_var": norm.running_var}, probe / f"bn-rank{rank}.pt")


def _stop_after_first_checkpoint(rank: int, data: Path, out: Path, probe: Path) -> None:
    """Train ddpm until every rank fails at the start of step 3, just after the step-2 checkpoint (as after a kill);
    rank 0 records what the checkpoint holds."""
    real = train_module.warmup_factor

    def stop_at_step_3(step: int, warmup_steps: int) -> float:
        if step == 3:
            raise Stopped
        return real(step, warmup_steps)

    train_module.warmup_factor = stop_at_step_3
    try:
        train_module.train("ddpm", settings("ddpm"), 0, data, out)
        raise AssertionError("the run was not stopped")
    except Stopped:
        pass
    finally:
        train_module.warmup_factor = real
    if rank == 0:
        checkpoint = torch.load(out / train_module.CHECKPOINT, weights_only=True)
        stopped = {"step": checkpoint["step"], "ranks": len(checkpoint["rank_rng"]),
                   "weights_written": (out / "model.safetensors").exists()}
        (probe / "stopped.json").write_text(json.dumps(stopped))


def _sigterm_to_rank_1_during_step_3(rank: int, data: Path, out: Path, probe: Path) -> None:
    """Rank 1 receives SIGTERM while it computes step 3; every rank records how it stopped (and rank 0 the step its
    checkpoint holds). The ranks share `out`, as on one node."""
    real = train_module.warmup_factor

    def sigterm_at_step_3(step: int, warmup_steps: int) -> float:
        if step == 3 and rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(step, warmup_steps)

    train_module.warmup_factor = sigterm_at_step_3
    try:
        train_module.train("ddpm", settings("ddpm"), 0, data, out)
        raise AssertionError("the run was not stopped")
    except Interrupted as stopped:
        record = {"signum": stopped.signum, "message": str(stopped)}
    finally:
        train_module.warmup_factor = real
    if rank == 0:
        record["checkpoint_step"] = torch.load(out / train_module.CHECKPOINT, weights_only=True)["step"]
        record["weights_written"] = (out / "model.safetensors").exists()
    (probe / f"signalled-rank{rank}.json").write_text(json.dumps(record))


# The slow snapshot: the process group's timeout is short, and rank 0 spends several times as long saving the step-2
# snapshot, as a large model on slow storage would. A VAE (its images are smooth functions of its weights, where a
# DDPM this small clips every pixel to 0 or 255), a snapshot every 2 steps, scored on 6 images.
TIMEOUT, DELAY = 3, 9  # seconds
CURVE = {"fid_every": 2, "fid_n": 6}


def slow_snapshot(rank: int, root: str, port: int, scenario: str) -> None:
    """Rank `rank` trains the vae with CURVE under `distributed.timeout_seconds: TIMEOUT` while rank 0 saves the step-2
    snapshot for DELAY; train() joins the group itself, with that timeout. Scenario `waits` runs the code as it is;
    `collective` has the other ranks wait in a barrier of the process group instead, as they waited before
    `wait_for_main`. Each rank records how its call ended in root/probe/<scenario>-rank<r>.json."""
    torch.set_num_threads(1)
    torch.cuda.is_available = lambda: False
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    save = train_module.save_weights

    def slow_step_2(run_dir: Path, model: GenerativeModel, *args: object) -> None:
        if args[-1] == train_module.snapshot_name(2):
            time.sleep(DELAY)
        save(run_dir, model, *args)

    if rank == 0:
        train_module.save_weights = slow_step_2
    if scenario == "collective":
        Processes.wait_for_main = lambda self, what: dist.barrier()
    limits = DistributedConfig(timeout_seconds=TIMEOUT, main_wait_seconds=10 * DELAY)
    started = time.perf_counter()
    try:
        train_module.train("vae", settings("vae", **CURVE), 0, Path(root) / "data", Path(root) / scenario, limits)
        record = {"finished": True, "seconds": time.perf_counter() - started}
    except (ValueError, RuntimeError) as exc:
        record = {"finished": False, "seconds": time.perf_counter() - started, "error": type(exc).__name__,
                  "message": str(exc)}
    (Path(root) / "probe").mkdir(exist_ok=True)
    (Path(root) / "probe" / f"{scenario}-rank{rank}.json").write_text(json.dumps(record))
