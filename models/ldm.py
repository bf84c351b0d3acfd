"""Latent diffusion (Rombach et al., 2022), small: a DDPM trained on a frozen, already trained VAE's latents
and decoded by it.

The VAE's latent is a vector, so it is viewed as a tiny image (`latent_shape`, e.g. 16 = 1×4×4) for the
UNet. Diffusion runs on the posterior means without clipping (latents are not in [-1, 1]). The model is
given its VAE (it reads no files); the VAE is part of this model's state, so its weights are saved inside the
LDM's own `model.safetensors`, frozen and never in an optimizer group.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .base import Family, GenerativeModel
from .config import PositiveInt
from .ddpm import DDPM, DDPMArch, DDPMTrain
from .samplers import DiffusionSampling, EpsFn, ancestral
from .vae import VAE


class LDMArch(DDPMArch):
    base_channels: PositiveInt = 64
    channel_mults: tuple[PositiveInt, ...] = (1, 2)
    vae_run: str = "runs/vae"  # the trained vae run (folder) whose frozen encoder/decoder the diffusion works through
    latent_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 4, 4)  # vae latent viewed as C×H×W


class LDMTrain(DDPMTrain):
    steps: PositiveInt = 50000


class LDMSampling(DiffusionSampling):
    sampler: Literal["ddpm", "ddim"] = "ddim"  # 100 DDIM steps: 10x cheaper than ancestral, as Rombach et al.


class LDM(GenerativeModel):
    """A frozen `vae` and a `diffusion` model over its latents."""

    clip = False

    def __init__(self, channels: int, image_size: int, arch: LDMArch, vae: VAE) -> None:
        super().__init__(channels, image_size)
        if (vae.channels, vae.image_size) != (channels, image_size):
            raise ValueError(f"the vae was trained on {vae.channels}×{vae.image_size} images, the ldm is for "
                             f"{channels}×{image_size}")
        self.vae = vae.requires_grad_(False).eval()
        self.latent_shape = tuple(arch.latent_shape)
        if math.prod(self.latent_shape) != vae.latent_dim or self.latent_shape[1] != self.latent_shape[2]:
            raise ValueError(f"latent_shape {list(self.latent_shape)} must be square and hold the vae's "
                             f"latent_dim={vae.latent_dim} values")
        self.diffusion = DDPM(self.latent_shape[0], self.latent_shape[1], arch, clip=False)
        self.num_classes = self.diffusion.num_classes
        self.schedule = self.diffusion.schedule
        self.diffusion_shape = self.latent_shape

    def train(self, mode: bool = True) -> LDM:
        """The frozen VAE stays in eval mode whatever the trainer asks."""
        super().train(mode)
        self.vae.eval()
        return self

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.diffusion.parameters()}

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        with torch.no_grad():
            z = self.vae.encode(x)[0].reshape(-1, *self.latent_shape)
        return self.diffusion.training_losses(z, group, labels)

    def noise_predictor(self, labels: Tensor | None, guidance_scale: float = 1.0) -> EpsFn:
        return self.diffusion.noise_predictor(labels, guidance_scale)

    def decode(self, x: Tensor) -> Tensor:
        """Latents → images through the frozen VAE's decoder."""
        return self.vae.decode(x.flatten(1))

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        """The default sampler: ancestral over all T steps in latent space, decoded."""
        return ancestral(self, generators, labels)


FAMILY = Family(LDM, LDMArch, LDMTrain, LDMSampling, frozen={"vae": "vae"})
