"""Wasserstein GANs: WGAN-GP (Gulrajani et al., 2017) and WGAN with weight clipping (Arjovsky et al., 2017).

Both share DCGAN's generator; the critic is DCGAN's discriminator with a per-sample norm (GroupNorm with one
group, i.e. layer norm) instead of BatchNorm, since the gradient penalty is defined per image and a batch
norm would couple them. The critic is updated `n_critic` times per generator update (the trainer reads
`updates_per_step`), each time on a fresh real batch.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor, nn

from .base import Family
from .config import PositiveFloat, PositiveInt, TrainConfig, UnitInterval
from .gan import GAN, GANArch


class WGANGPArch(GANArch):
    n_critic: PositiveInt = 5  # critic updates per generator update
    gp_weight: PositiveFloat = 10.0  # lambda of the gradient penalty


class WGANArch(GANArch):
    n_critic: PositiveInt = 5  # critic updates per generator update
    clip: PositiveFloat = 0.01  # critic weights are clipped to [-clip, clip]


class WGANGPTrain(TrainConfig):
    steps: PositiveInt = 200000  # generator iterations of Gulrajani et al.'s MNIST code (ITERS = 200000)
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-4  # Gulrajani et al., algorithm 1: alpha = 1e-4, beta1 = 0.5, beta2 = 0.9
    betas: tuple[UnitInterval, UnitInterval] = (0.5, 0.9)


class WGANTrain(TrainConfig):
    steps: PositiveInt = 30000
    batch_size: PositiveInt = 64
    # Arjovsky et al., algorithm 1: RMSProp at 5e-5; they report Adam unstable with a clipped critic
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    lr: PositiveFloat = 5e-5


def critic_loss(critic: nn.Module, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """E[D(fake)] - E[D(real)]: minimising it maximises the critic's estimate of the Wasserstein distance."""
    real_score, fake_score = critic(real).mean(), critic(fake).mean()
    return {"loss": fake_score - real_score, "wasserstein": (real_score - fake_score).detach()}


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """Gulrajani et al. eq. 3: E[(||grad D(x_hat)||_2 - 1)^2] at x_hat uniform on lines between real and fake."""
    eps = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def wasserstein_generator_loss(critic: nn.Module, fake: Tensor) -> dict[str, Tensor]:
    """-E[D(G(z))]: the generator moves its samples up the critic's score."""
    return {"loss": -critic(fake).mean()}


class WassersteinGAN(GAN):
    """Generator `g` and critic `d` under the Wasserstein loss; the Lipschitz constraint is a gradient penalty
    (`gp_weight` > 0) or clipping every critic weight to [-clip, clip] after each critic update (`clip` > 0)."""

    def __init__(self, channels: int, image_size: int, arch: GANArch, n_critic: int, gp_weight: float = 0.0,
                 clip: float = 0.0) -> None:
        if (gp_weight > 0) == (clip > 0):
            raise ValueError("choose exactly one Lipschitz constraint: gp_weight > 0 or clip > 0")
        super().__init__(channels, image_size, arch, critic_norm=functools.partial(nn.GroupNorm, 1))
        self.n_critic, self.gp_weight, self.clip = n_critic, gp_weight, clip

    def updates_per_step(self) -> dict[str, int]:
        return {"d": self.n_critic, "g": 1}

    def after_update(self, group: str) -> None:
        if group == "d" and self.clip > 0:
            with torch.no_grad():
                for p in self.d.parameters():
                    p.clamp_(-self.clip, self.clip)

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        z = torch.randn(x.shape[0], self.latent_dim, device=x.device)
        if group == "d":
            fake = self.g(z).detach()
            losses = critic_loss(self.d, x, fake)
            if self.gp_weight > 0:
                penalty = gradient_penalty(self.d, x, fake)
                losses["loss"] = losses["loss"] + self.gp_weight * penalty
                losses["gradient_penalty"] = penalty.detach()
            return losses
        if group == "g":
            return wasserstein_generator_loss(self.d, self.g(z))
        raise ValueError(f"unknown WGAN group {group!r}; known: ['d', 'g']")


class WGANGP(WassersteinGAN):
    """`wgan_gp`: the gradient-penalty variant (λ = `gp_weight`)."""

    def __init__(self, channels: int, image_size: int, arch: WGANGPArch) -> None:
        super().__init__(channels, image_size, arch, arch.n_critic, gp_weight=arch.gp_weight)


class WGAN(WassersteinGAN):
    """`wgan`: the original weight-clipping variant."""

    def __init__(self, channels: int, image_size: int, arch: WGANArch) -> None:
        super().__init__(channels, image_size, arch, arch.n_critic, clip=arch.clip)


WGAN_GP_FAMILY = Family(WGANGP, WGANGPArch, WGANGPTrain)
WGAN_FAMILY = Family(WGAN, WGANArch, WGANTrain)
