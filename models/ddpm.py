"""DDPM (Ho et al., 2020): a UNet trained to predict the noise (or the velocity); optionally class-conditional,
trained for classifier-free guidance (Ho & Salimans, 2021).

The loss, the noise predictor and the default sampler are every diffusion family's (models/diffusion.py) and
the samplers (models/samplers.py) take the model at call time, so each can be swapped alone; `DDPM` only adds
its UNet, in pixel space. `DDPMArch`'s defaults are Ho et al.'s CIFAR-10 settings (width 128, two residual blocks
per level, dropout 0.1, attention at the 16×16 level, T = 1000, linear betas, EMA 0.9999), moved to
Fashion-MNIST's 28×28: three levels (28, 14, 7; 7 cannot be halved again) where Ho has four on 32×32.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import Field, field_validator
from torch import Tensor, nn

from .base import Family
from .config import NonNegativeInt, PositiveInt, TrainConfig, UnitInterval
from .diffusion import DiffusionArch, DiffusionModel
from .samplers import DiffusionSampling
from .unet import UNet, feature_sizes


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
    # The FID curve samples with DDIM at this many steps (0: ancestral over all T steps, the full cost):
    # monitoring only; the final numbers use `sampling.<name>`.
    fid_ddim_steps: NonNegativeInt = 100

    def curve_sampling(self, default: DiffusionSampling) -> DiffusionSampling:
        if not self.fid_ddim_steps:
            return default
        return default.model_copy(update={"sampler": "ddim", "sample_steps": self.fid_ddim_steps, "eta": 0.0})


class DDPM(DiffusionModel):
    """Denoising diffusion in pixel space: a UNet over the images themselves, x0 estimates clipped to [-1, 1]."""

    clip = True

    def __init__(self, channels: int, image_size: int, arch: DDPMArch) -> None:
        super().__init__(channels, image_size, arch, (channels, image_size, image_size))
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

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.parameters()}

    def encode(self, x: Tensor) -> Tensor:
        """DDPM diffuses in pixel space: it learns the images themselves."""
        return x

    def decode(self, x: Tensor) -> Tensor:
        """DDPM diffuses in pixel space: its samples are the images."""
        return x


FAMILY = Family(DDPM, DDPMArch, DDPMTrain, DiffusionSampling)
