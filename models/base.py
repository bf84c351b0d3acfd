"""The one interface every model family implements, and the record that registers a family.

The training loop, the samplers and the evaluator only ever talk to `GenerativeModel`, so adding a family
never touches them. Images cross this boundary as float NCHW tensors in [-1, 1]; class labels, where a
family uses them, as int64 tensors of shape (B,) in [0, num_classes).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .config import NoArch, SamplingConfig, Strict, TrainConfig


class GenerativeModel(nn.Module, abc.ABC):
    """A generative model with named optimizer groups, a loss per group and a default seeded sampler.

    Constructors take `(channels, image_size, arch)` plus, for a family built on other trained models
    (`Family.frozen`), those models; never a sampler setting and never a path.
    """

    # Classes a conditional family models; 0 = unconditional, labels are then ignored.
    num_classes: int = 0

    def __init__(self, channels: int, image_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.image_size = image_size

    @abc.abstractmethod
    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters per optimizer, e.g. {"model": ...} or {"d": ..., "g": ...}.

        The trainer builds one optimizer per key and, each step, updates the groups in this dict's order,
        each `updates_per_step()[group]` times.
        """

    def updates_per_step(self) -> dict[str, int]:
        """How many optimizer updates each group gets per training step (WGAN's n_critic); default 1 each."""
        return {group: 1 for group in self.parameter_groups()}

    def after_update(self, group: str) -> None:
        """Called after each optimizer step of `group`; a place for constraints such as weight clipping."""

    def prior_network(self) -> tuple[nn.Module, int] | None:
        """(network, latent size) when sampling feeds z ~ N(0, I) to a network with BatchNorm layers (a GAN's
        generator, VAE-GAN's decoder): the trainer recomputes that network's running statistics under the
        averaged weights it samples from. None when sampling runs no BatchNorm."""
        return None

    def fit_data(self, images: Tensor) -> None:
        """Called once by the trainer before the first step of a fresh run (not on resume) with every training
        image (NCHW in [-1, 1], on the CPU): for statistics a family derives from its data and keeps in a
        buffer, so that they travel with the weights (the LDM's latent scale). Default: nothing."""

    def ema_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters whose moving average is sampled from (a GAN's generator); default all trainable ones."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    @abc.abstractmethod
    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Losses for one update of `group` on the real batch `x` (NCHW in [-1, 1]) with its class `labels`.

        `"loss"` is the scalar the trainer backpropagates into `group`'s optimizer; every other entry is
        a detached scalar that is only logged. Randomness comes from torch's global generator, which the
        trainer seeds and checkpoints, so a CPU run repeats bit for bit. Unconditional families ignore
        `labels`.
        """

    @abc.abstractmethod
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        """The family's default sampler: one image per generator (of class labels[i] for conditional families),
        NCHW float in [-1, 1]. Other samplers live in `samplers.SAMPLERS` and take the model as an argument.

        Every random draw for image i comes from `generators[i]` (see `randn_per_sample`), so image i
        depends only on its own seed (and label) and never on which other images share the batch.
        """

    def num_parameters(self) -> int:
        """Trainable parameter count, for reports and `genbench models`."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@dataclass(frozen=True)
class Family:
    """What the registry knows of a family: its module and the config classes beside it.

    `frozen` maps a constructor argument to the family whose trained model is passed there (the ldm's
    `vae`); `arch.<argument>_run` names the run folder it is loaded from at training time, and the trained
    weights travel inside this family's own `model.safetensors` afterwards.
    """

    model: type[GenerativeModel]
    arch: type[Strict] = NoArch
    train: type[TrainConfig] = TrainConfig
    sampling: type[SamplingConfig] = SamplingConfig
    frozen: dict[str, str] = field(default_factory=dict)


def check_divisible_by_4(image_size: int) -> None:
    """The two stride-2 stages of the VAE and GAN networks need a size divisible by 4 (28 and 32 are)."""
    if image_size % 4:
        raise ValueError(f"image_size {image_size} must be divisible by 4")


def randn_per_sample(
    shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device | str = "cpu"
) -> Tensor:
    """Standard normal noise of shape (len(generators), *shape), row i drawn from generators[i] only.

    Drawn on the CPU (generators are CPU generators) and then moved, so a seed gives the same noise on
    every device.
    """
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode (BatchNorm running statistics) inside the block, its previous mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def sample_from_prior(decoder: nn.Module, latent_dim: int, generators: Sequence[torch.Generator]) -> Tensor:
    """decoder(z) with z ~ N(0, I) drawn per image, in eval mode (BatchNorm running statistics), so image i
    never depends on the other images in its batch."""
    with eval_mode(decoder):
        device = next(decoder.parameters()).device
        return decoder(randn_per_sample((latent_dim,), generators, device))
