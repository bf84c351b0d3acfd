"""DDPM (Ho et al., 2020): a UNet trained to predict the noise (or the velocity); optionally class-conditional,
trained for classifier-free guidance (Ho & Salimans, 2021).

The loss is a plain function of (network, schedule) and the samplers (models/samplers.py) take the model at
call time, so each can be swapped alone; `DDPM` only binds a UNet to a schedule and adapts them to
`GenerativeModel`. `DDPMArch`'s defaults are Ho et al.'s CIFAR-10 settings (width 128, two residual blocks
per level, dropout 0.1, attention at the 16×16 level, T = 1000, linear betas, EMA 0.9999), moved to
Fashion-MNIST's 28×28: three levels (28, 14, 7; 7 cannot be halved again) where Ho has four on 32×32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from .base import Family, GenerativeModel
from .config import Int, NonNegativeInt, PositiveInt, Strict, TrainConfig, UnitInterval
from .samplers import DiffusionSampling, EpsFn, ancestral
from .schedules import NoiseSchedule, make_schedule
from .unet import UNet, feature_sizes


def diffusion_loss(
    net: nn.Module, schedule: NoiseSchedule, x0: Tensor, prediction: str = "eps", y: Tensor | None = None
) -> Tensor:
    """Ho et al.'s simplified objective, t uniform in [0, T): MSE to the true noise (`eps`) or, for `v`, to
    Salimans & Ho's velocity sqrt(abar) eps - sqrt(1-abar) x0, which keeps the target well scaled at both ends."""
    t = torch.randint(0, schedule.timesteps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    target = noise if prediction == "eps" else schedule.v_target(x0, t, noise)
    return F.mse_loss(net(schedule.q_sample(x0, t, noise), t, y), target)


def noise_predictor(
    net: nn.Module, schedule: NoiseSchedule, prediction: str, labels: Tensor | None = None,
    null_label: int = 0, guidance_scale: float = 1.0,
) -> EpsFn:
    """(x_t, t) → ε for the samplers, from an ε- or v-network, with classifier-free guidance when `labels`:

    ε = ε(x, ∅) + s (ε(x, y) - ε(x, ∅)) (Ho & Salimans, 2021, in the diffusers convention): s = 0 is the
    unconditional branch, s = 1 the conditional one, s > 1 guides harder. Both branches run in one batch; at
    s = 0 and s = 1 only the branch that counts runs.
    """

    def eps(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        out = net(x, t, y)
        return out if prediction == "eps" else schedule.eps_from_v(x, t, out)

    if labels is None:
        return lambda x, t: eps(x, t, None)
    if guidance_scale == 1.0:
        return lambda x, t: eps(x, t, labels)
    if guidance_scale == 0.0:
        return lambda x, t: eps(x, t, torch.full_like(labels, null_label))

    def guided(x: Tensor, t: Tensor) -> Tensor:
        null = torch.full_like(labels, null_label)
        conditional, unconditional = eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return guided


def training_labels(labels: Tensor | None, num_classes: int, cond_drop_prob: float) -> Tensor | None:
    """The labels a conditional network trains on: each replaced by "no class" (row num_classes) with
    probability `cond_drop_prob` (classifier-free guidance's unconditional branch); None when unconditional."""
    if not num_classes:
        return None
    if labels is None:
        raise ValueError("a class-conditional model (num_classes > 0) needs labels to train")
    drop = torch.rand(labels.shape, device=labels.device) < cond_drop_prob
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


class DiffusionArch(Strict):
    """What every diffusion family's arch holds besides its network: the process and the conditioning."""

    timesteps: Annotated[Int, Field(ge=2)] = 1000  # diffusion steps T (training; the ddpm sampler walks all)
    schedule: Literal["linear", "cosine"] = "linear"
    prediction: Literal["eps", "v"] = "eps"  # what the network predicts: the noise or the velocity
    num_classes: NonNegativeInt = 0  # classes to condition on; 0 = unconditional
    cond_drop_prob: Annotated[float, Field(ge=0, le=1)] = 0.1  # share of labels dropped to train the CFG branch


class DDPMArch(DiffusionArch):
    base_channels: PositiveInt = 128  # UNet width at full resolution (Ho et al.: 128 on CIFAR-10)
    channel_mults: tuple[PositiveInt, ...] = (1, 2, 2)  # UNet width per resolution level (Ho: 1,2,2,2 on 32 px)
    num_res_blocks: PositiveInt = 2  # residual blocks per level on the way down (+1 on the way up); Ho et al.: 2
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1  # in every residual block, train mode only; Ho: 0.1
    # Feature-map sides that get self-attention after each residual block (the middle block always has one).
    # Ho et al.: 16 on 32 px; at 28 px the matching level is 14, and we attend at the lowest (7) too. cifar10
    # (32 px): use [16, 8]. Checked against the UNet's sizes when the model is built.
    attention_resolutions: tuple[PositiveInt, ...] = (14, 7)

    @field_validator("channel_mults")
    @classmethod
    def _levels(cls, mults: tuple[int, ...]) -> tuple[int, ...]:
        if not mults:
            raise ValueError("needs at least one level (one width multiplier per resolution, e.g. [1, 2, 2])")
        return mults

    @field_validator("attention_resolutions")
    @classmethod
    def _distinct(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"lists a size twice: {list(sizes)}")
        return sizes


class DDPMTrain(TrainConfig):
    steps: PositiveInt = 100000
    log_every: PositiveInt = 100
    checkpoint_every: PositiveInt = 5000
    ema_decay: UnitInterval = 0.9999  # Ho et al.
    warmup_steps: Annotated[int, Field(ge=0)] = 5000  # Ho et al.'s learning-rate warmup
    grad_clip: Annotated[float, Field(ge=0)] = 1.0  # Ho et al. clip the gradient norm to 1
    # The FID curve samples with DDIM at this many steps (0: ancestral over all T, 10× the cost at T = 1000):
    # monitoring only; the final numbers use `sampling.<name>`.
    fid_ddim_steps: NonNegativeInt = 100

    def curve_sampling(self, default: DiffusionSampling) -> DiffusionSampling:
        if not self.fid_ddim_steps:
            return default
        return default.model_copy(update={"sampler": "ddim", "sample_steps": self.fid_ddim_steps, "eta": 0.0})


class DDPM(GenerativeModel):
    """Denoising diffusion; the schedule is fixed numbers, not state, so it is not saved.

    The model knows nothing of samplers: `samplers.SAMPLERS` draws from it by any of them, so the same trained
    weights serve DDPM and DDIM at any guidance scale. `clip` keeps x0 estimates in [-1, 1].
    """

    clip = True

    def __init__(self, channels: int, image_size: int, arch: DDPMArch) -> None:
        super().__init__(channels, image_size)
        channel_mults = tuple(arch.channel_mults)
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(f"image_size {image_size} must be divisible by 2**(len(channel_mults)-1) "
                             f"= {2 ** (len(channel_mults) - 1)}")
        sizes = feature_sizes(image_size, len(channel_mults))
        unknown = [size for size in arch.attention_resolutions if size not in sizes]
        if unknown:
            raise ValueError(f"models.ddpm.arch.attention_resolutions: {unknown} not among the UNet's feature-map "
                             f"sizes {sizes} (on {image_size}×{image_size} images with channel_mults "
                             f"{list(channel_mults)})")
        self.net = UNet(channels, arch.base_channels, channel_mults, arch.num_classes,
                        num_res_blocks=arch.num_res_blocks, attention_resolutions=arch.attention_resolutions,
                        dropout=arch.dropout, image_size=image_size)
        self.schedule = make_schedule(arch.schedule, arch.timesteps)
        self.num_classes, self.prediction, self.cond_drop_prob = arch.num_classes, arch.prediction, arch.cond_drop_prob
        self.diffusion_shape = (channels, image_size, image_size)

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.parameters()}

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        """The diffusion loss; a conditional model sees "no class" for a `cond_drop_prob` share of the batch,
        which trains the unconditional branch that guidance needs."""
        y = training_labels(labels, self.num_classes, self.cond_drop_prob)
        return {"loss": diffusion_loss(self.net, self.schedule, x, self.prediction, y)}

    def noise_predictor(self, labels: Tensor | None, guidance_scale: float = 1.0) -> EpsFn:
        """(x_t, t) → ε for the samplers; guided when `labels` are given and `guidance_scale` != 1."""
        return noise_predictor(self.net, self.schedule, self.prediction, labels, self.num_classes, guidance_scale)

    def decode(self, x: Tensor) -> Tensor:
        """DDPM diffuses in pixel space: its samples are the images."""
        return x

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        """The default sampler: ancestral over all T steps, no guidance."""
        return ancestral(self, generators, labels)


FAMILY = Family(DDPM, DDPMArch, DDPMTrain, DiffusionSampling)
