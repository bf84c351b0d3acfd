"""DCGAN (Radford et al., 2016) for image_size/4-divisible images, trained with the non-saturating loss.

Generator: z → (4b, s/4, s/4) by a full-size transposed conv (the "project and reshape"), then two stride-2
transposed convs up to s, BatchNorm + ReLU between, tanh out. Discriminator: strided convs with LeakyReLU(0.2),
BatchNorm except on the input layer, and a last conv covering the s/4 map that gives one logit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, sample_from_prior


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


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


def dcgan_generator(channels: int, image_size: int, latent_dim: int, base_channels: int) -> nn.Sequential:
    """z (B, latent_dim) → image in [-1, 1]; shared by the GAN families so they differ only in loss and critic."""
    b, s = base_channels, image_size // 4
    return nn.Sequential(
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, 4 * b, s, bias=False), nn.BatchNorm2d(4 * b), nn.ReLU(),
        nn.ConvTranspose2d(4 * b, 2 * b, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * b), nn.ReLU(),
        nn.ConvTranspose2d(2 * b, channels, 4, stride=2, padding=1), nn.Tanh(),
    )


def dcgan_discriminator(
    channels: int, image_size: int, base_channels: int, norm: Callable[[int], nn.Module] = nn.BatchNorm2d
) -> nn.Sequential:
    """Image → one logit (or critic score) per image. `norm` is BatchNorm for DCGAN; WGAN-GP passes a
    per-sample norm, because a batch norm couples the images that the gradient penalty treats one by one."""
    b, s = base_channels, image_size // 4
    return nn.Sequential(
        nn.Conv2d(channels, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(b, 2 * b, 4, stride=2, padding=1, bias=False), norm(2 * b), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * b, 4 * b, 3, padding=1, bias=False), norm(4 * b), nn.LeakyReLU(0.2),
        nn.Conv2d(4 * b, 1, s), nn.Flatten(0),
    )


class GAN(GenerativeModel):
    """DCGAN's generator `g` fed from N(0, I) and its discriminator or critic `d` (normalised by `critic_norm`):
    the groups (d first, then g, as the dict's order says), the EMA over `g` and the prior sampler that every
    GAN family here shares. Subclasses supply `training_losses`."""

    def __init__(self, channels: int, image_size: int, latent_dim: int, base_channels: int,
                 critic_norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__(channels, image_size)
        if image_size % 4:
            raise ValueError(f"image_size {image_size} must be divisible by 4")
        self.latent_dim = latent_dim
        self.g = dcgan_generator(channels, image_size, latent_dim, base_channels)
        self.d = dcgan_discriminator(channels, image_size, base_channels, norm=critic_norm)
        self.apply(dcgan_init)

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"d": self.d.parameters(), "g": self.g.parameters()}

    def ema_parameters(self) -> dict[str, nn.Parameter]:
        return {f"g.{name}": p for name, p in self.g.named_parameters()}

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        """Generator in eval mode (BatchNorm running statistics), so image i never depends on its batch."""
        return sample_from_prior(self.g, self.latent_dim, generators)


class DCGAN(GAN):
    """`dcgan`: the non-saturating loss on a BatchNorm discriminator."""

    def __init__(self, channels: int, image_size: int, latent_dim: int = 64, base_channels: int = 64) -> None:
        super().__init__(channels, image_size, latent_dim, base_channels)

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        z = torch.randn(x.shape[0], self.latent_dim, device=x.device)
        if group == "d":
            return discriminator_loss(self.d, x, self.g(z).detach())
        if group == "g":
            return generator_loss(self.d, self.g(z))
        raise ValueError(f"unknown DCGAN group {group!r}; known: ['d', 'g']")
