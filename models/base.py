"""The one interface every model family implements.

The training loop, the sampler and the evaluator only ever talk to `GenerativeModel`, so adding a family
never touches them. Images cross this boundary as float NCHW tensors in [-1, 1].
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn


class GenerativeModel(nn.Module, abc.ABC):
    """A generative model with named optimizer groups, a loss per group and a seeded sampler."""

    def __init__(self, channels: int, image_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.image_size = image_size

    @abc.abstractmethod
    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters per optimizer, e.g. {"model": ...} or {"d": ..., "g": ...}.

        The trainer builds one optimizer per key and, each step, updates the groups in this dict's order.
        """

    @abc.abstractmethod
    def training_losses(self, x: Tensor, group: str) -> dict[str, Tensor]:
        """Losses for one update of `group` on the real batch `x` (NCHW in [-1, 1]).

        `"loss"` is the scalar the trainer backpropagates into `group`'s optimizer; every other entry is
        a detached scalar that is only logged. Randomness comes from torch's global generator, which the
        trainer seeds and checkpoints, so a CPU run repeats bit for bit.
        """

    @abc.abstractmethod
    def sample(self, generators: Sequence[torch.Generator]) -> Tensor:
        """One image per generator, NCHW float in [-1, 1].

        Every random draw for image i comes from `generators[i]` (see `randn_per_sample`), so image i
        depends only on its own seed and never on which other images share the batch.
        """

    def num_parameters(self) -> int:
        """Trainable parameter count, for reports and `genbench models`."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def randn_per_sample(
    shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device | str = "cpu"
) -> Tensor:
    """Standard normal noise of shape (len(generators), *shape), row i drawn from generators[i] only.

    Drawn on the CPU (generators are CPU generators) and then moved, so a seed gives the same noise on
    every device.
    """
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device)
