"""DCGAN (Radford et al., 2016) for image_size/4-divisible images, trained with the non-saturating loss
(Goodfellow et al., 2014, section 3) on DCGAN's BatchNorm discriminator; Adam(2e-4, β1 = 0.5) as in the paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Family
from .config import PositiveInt, TrainConfig, UnitInterval
from .gan import GAN, GANArch


class DCGANTrain(TrainConfig):
    steps: PositiveInt = 30000
    betas: tuple[UnitInterval, UnitInterval] = (0.5, 0.999)  # Radford et al.: β1 = 0.5 stabilises training


def discriminator_loss(d: nn.Module, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """-log D(real) - log(1 - D(fake)), written with softplus on logits for stability."""
    real_logits, fake_logits = d(real), d(fake)
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    return {"loss": loss, "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach()}


def generator_loss(d: nn.Module, fake: Tensor) -> dict[str, Tensor]:
    """Non-saturating -log D(G(z)): strong gradients early, when D rejects every fake."""
    fake_logits = d(fake)
    return {"loss": F.softplus(-fake_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean().detach()}


class DCGAN(GAN):
    """`dcgan`: the non-saturating loss on a BatchNorm discriminator."""

    def __init__(self, channels: int, image_size: int, arch: GANArch) -> None:
        super().__init__(channels, image_size, arch)

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        z = torch.randn(x.shape[0], self.latent_dim, device=x.device)
        if group == "d":
            return discriminator_loss(self.d, x, self.g(z).detach())
        if group == "g":
            return generator_loss(self.d, self.g(z))
        raise ValueError(f"unknown DCGAN group {group!r}; known: ['d', 'g']")


FAMILY = Family(DCGAN, GANArch, DCGANTrain)
