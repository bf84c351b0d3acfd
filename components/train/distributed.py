"""Several processes training one model: torchrun and DistributedDataParallel, for `components/train/train.py`.

`torchrun --nproc_per_node N genbench train NAME` starts N copies of the command. `processes` joins them into one
process group (gloo on the CPU; nccl on CUDA, each process on the GPU of its LOCAL_RANK); without torchrun, or with
N = 1, it is one process and the trainer runs exactly as it always has. N processes train the model that one process
trains on the same global batch (`train.batch_size`, split evenly, b = batch_size / N per rank):

- Batches: every rank draws the same global batch order from the run's seed and takes its contiguous share of each
  global batch, rows [r·b, (r+1)·b) on rank r (`Processes.shard`). DDP averages the ranks' gradients, which is the
  gradient of the mean loss over the global batch.
- Draws inside `training_losses` (noise, timesteps, z, dropout): the model is built on every rank from `seed`, as
  one process builds it; then, before the first step, rank r reseeds torch's generator with `rank_seed(seed, r)`, so
  the ranks draw independent noise (a single process never reseeds). A checkpoint keeps every rank's generator, so
  a resumed run continues each stream; it must resume with the same N.
- BatchNorm: normalised over the global batch (`GlobalBatchNorm`), as one process normalises the whole batch; DDP's
  default instead normalises each rank's b images and copies rank 0's running statistics to the others.
- Rank 0 alone logs, checkpoints, saves the FID-curve snapshots and writes the run folder; the others wait for it
  (`Processes.wait_for_main`). Every rank keeps the EMA itself: the ranks hold identical weights after every step,
  hence identical averages.
- Waiting: a collective waits for the other ranks up to the process group's timeout (`distributed.timeout_seconds`),
  which is meant to catch a hung rank, not to bound work that rank 0 does alone: a snapshot (BatchNorm statistics of
  the averaged weights, then a write) or a checkpoint on slow storage may take longer. So while rank 0 works alone
  the others wait at a barrier of a gloo group of their own whose timeout is `distributed.main_wait_seconds`, with
  nothing pending on the process group. Rather than each rank computing its share of that work: the FID network
  never runs in training (the fid-curve stage scores the snapshots afterwards, in one process, so its curve does
  not depend on how many processes trained), and what remains is a write only rank 0 does. Rather than waiting on
  the rendezvous store: a gloo connection breaks when rank 0 dies, so the others fail at once instead of at the
  limit, and a barrier needs no private API.
- Stopping: after every step the ranks agree (`Processes.largest`) whether any received SIGTERM or SIGINT, so all
  checkpoint the same step and stop together, whichever rank the signal reached first.

Up to summation order (DDP sums the ranks' gradients where one process sums the images' contributions), N processes
therefore give one process's weights when that process draws rank r's noise for rows [r·b, (r+1)·b).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from genbench.components.common.devices import pick_device
from genbench.config import DistributedConfig
from genbench.models.base import GenerativeModel

Losses = Callable[[Tensor, str, Tensor], dict[str, Tensor]]
TIMED_OUT = re.compile(r"Timed out waiting \d+ ?ms")  # how gloo says that a collective ran past its group's timeout


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s draws under torchrun: numpy's SeedSequence mixes (seed, rank), so no rank's stream
    is another run's plain `seed` stream."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def world_size() -> int:
    """How many processes train: the process group's size, else torchrun's WORLD_SIZE, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def main_process() -> bool:
    """Whether this process speaks for the run (rank 0, or no torchrun at all)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: its rank among `world_size` processes, and its device."""

    rank: int
    world_size: int
    device: torch.device
    control: Any = None  # a gloo group for the CPU-side agreements of `largest` when the main group is nccl
    waiting: Any = None  # a gloo group whose timeout is `limits.main_wait_seconds`, for `wait_for_main`
    limits: DistributedConfig = field(default_factory=DistributedConfig)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, indices: Tensor) -> Tensor:
        """This rank's contiguous share of a global batch's indices."""
        size = len(indices) // self.world_size
        return indices[self.rank * size : (self.rank + 1) * size]

    def seed_draws(self, seed: int) -> None:
        """Give this rank its own stream of training draws (`rank_seed`); a single process keeps its stream."""
        if self.distributed:
            torch.manual_seed(rank_seed(seed, self.rank))

    def losses(self, model: GenerativeModel, groups: int) -> Losses:
        """`model.training_losses`, or under torchrun the same call through DistributedDataParallel, which averages
        the ranks' gradients during backward. Call it once the model is in train mode.

        With several optimizer groups, each update's forward pass leaves the other groups' parameters without a
        gradient (a GAN's generator during the critic's update), which DDP must be told to expect. Buffers are copied
        from rank 0 once, not before every forward pass: BatchNorm statistics come from the global batch on every
        rank, and the other buffers are constants."""
        if not self.distributed:
            return model.training_losses
        return DistributedDataParallel(
            _Losses(global_batchnorm(model)), device_ids=[self.device.index] if self.device.type == "cuda" else None,
            forward_sync_buffers=False, find_unused_parameters=groups > 1,
        )  # fmt: skip

    def mean(self, values: list[Tensor]) -> list[float]:
        """Each scalar averaged over the ranks: a per-rank batch mean becomes the global batch's mean."""
        if not self.distributed:
            return [value.detach().item() for value in values]
        stacked = torch.stack([value.detach().float() for value in values])
        dist.all_reduce(stacked)
        return (stacked / self.world_size).tolist()

    def largest(self, value: int) -> int:
        """The largest of every rank's `value` (a collective under torchrun, on the CPU: no device sync). The trainer
        asks it after every step whether any rank was told to stop, so that every rank stops after the same step."""
        if not self.distributed:
            return value
        box = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(box, op=dist.ReduceOp.MAX, group=self.control)
        return int(box.item())

    def rng_states(self) -> list[dict[str, Any]]:
        """Every rank's generator states, in rank order (a collective under torchrun: every rank calls it)."""
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if not self.distributed:
            return [state]
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, state)
        return states

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a collective under torchrun). For what only rank 0's disk is sure to
        hold: on several nodes the other ranks' copies of the run folder may be older, or missing."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def wait_for_main(self, what: str) -> None:
        """Every rank calls it after rank 0 did `what` alone (the others may read what it wrote next): they wait for
        rank 0 at a barrier of `waiting`, whose timeout is `distributed.main_wait_seconds`, not in a collective of
        the process group, whose timeout is meant for hung ranks (the module's docstring: Waiting)."""
        if not self.distributed:
            return
        try:
            dist.barrier(group=self.waiting)
        except RuntimeError as exc:
            if not TIMED_OUT.search(str(exc)):
                raise
            waited = self.limits.main_wait_seconds
            raise ValueError(f"distributed.main_wait_seconds: rank {self.rank} waited {waited} s for rank 0 to {what} "
                             "and gave up; if rank 0 was only slow (storage, a large model), "
                             "raise distributed.main_wait_seconds in params.yaml, then run the same command again to "
                             "resume from the last checkpoint") from None


@contextmanager
def processes(device: str, limits: DistributedConfig = DistributedConfig()) -> Iterator[Processes]:
    """This process's `Processes` on `device` (`train.device`): under torchrun the process group is joined here, with
    `limits.timeout_seconds` as its timeout, and left at the end, unless the caller had initialised it already. A
    collective that times out on gloo is a ValueError naming the setting (nccl's watchdog ends the process itself,
    logging the timeout)."""
    picked, size = pick_device(device), world_size()
    if size == 1:
        yield Processes(0, 1, picked, limits=limits)
        return
    if picked.type == "cuda":
        picked = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(picked)
    owned, timeout = not dist.is_initialized(), timedelta(seconds=limits.timeout_seconds)
    if owned:
        dist.init_process_group("nccl" if picked.type == "cuda" else "gloo", timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout) if dist.get_backend() != "gloo" else None
    waiting = dist.new_group(backend="gloo", timeout=timedelta(seconds=limits.main_wait_seconds))
    try:
        yield Processes(dist.get_rank(), dist.get_world_size(), picked, control, waiting, limits)
    except RuntimeError as exc:
        if not TIMED_OUT.search(str(exc)):
            raise
        raise ValueError(f"distributed.timeout_seconds: rank {dist.get_rank()} waited {limits.timeout_seconds} s in a "
                         "collective for the other ranks and gave up; one of them hung, or was only slow: then raise "
                         "distributed.timeout_seconds in params.yaml and run the same command again to resume from "
                         "the last checkpoint") from None
    finally:
        if not owned:
            for group in (control, waiting):
                if group is not None:
                    dist.destroy_process_group(group)
        if owned:
            dist.destroy_process_group()


class _Losses(nn.Module):
    """`training_losses` as `forward`: DDP synchronises the gradients of passes through its forward only."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, group: str, labels: Tensor) -> dict[str, Tensor]:
        return self.model.training_losses(x, group, labels)


class _GlobalSum(torch.autograd.Function):
    """The sum of a tensor over the ranks; its gradient is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _GlobalSum.apply(grad)  # itself differentiable, for a loss that differentiates a gradient


class GlobalBatchNorm(nn.Module):
    """A BatchNorm layer that, in training, normalises with the mean and variance of the global batch (every rank's
    images) and puts those into the layer's running statistics, as the layer does in one process on that batch.

    It wraps the layer and so shares its weights and buffers. torch's SyncBatchNorm does the same on GPUs but
    refuses CPU tensors; this one runs wherever the process group does (gloo included), so the CPU tests check the
    code that GPUs run. Two all-reduces per call, in fp32: the sum, then the sum of squared deviations (every rank must
    hold the same number of images, as the trainer's shards do).
    """

    def __init__(self, norm: _BatchNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        norm = self.norm
        if not norm.training and norm.running_mean is not None:
            return norm(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        dims = [d for d in range(x.dim()) if d != 1]
        values = x.float()
        count = x.numel() // x.shape[1] * dist.get_world_size()  # the trainer gives every rank an equal share
        mean = _GlobalSum.apply(values.sum(dims)) / count
        centred = values - mean.view(shape)
        variance = _GlobalSum.apply(centred.square().sum(dims)) / count
        out = centred * torch.rsqrt(variance + norm.eps).view(shape)
        if norm.affine:
            out = out * norm.weight.view(shape) + norm.bias.view(shape)
        if norm.training and norm.track_running_stats:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
                norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
                unbiased = variance * count / (count - 1)
                norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), factor)
        return out.to(x.dtype)


def global_batchnorm(module: nn.Module) -> nn.Module:
    """`module` if it holds no BatchNorm layer, else a shallow twin of it whose BatchNorm layers are wrapped in
    `GlobalBatchNorm`: the twin shares every parameter and buffer, and `module` itself is left as it was.

    DDP trains the twin; rank 0 alone samples from, averages and saves `module`, whose BatchNorm layers must then
    not wait for the other ranks (`ema.averaged` recomputes their statistics in train mode)."""
    if isinstance(module, _BatchNorm):
        return GlobalBatchNorm(module)
    children = {name: child if child is None else global_batchnorm(child) for name, child in module._modules.items()}
    if all(children[name] is child for name, child in module._modules.items()):
        return module
    twin = copy.copy(module)
    twin._modules = children
    return twin
