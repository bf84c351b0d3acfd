"""What every GAN family here shares: DCGAN's networks (Radford et al., 2016), their initialisation, and a
base class holding a generator `g` fed from N(0, I) and a discriminator or critic `d`.

Generator: z → (4b, s/4, s/4) by a full-size transposed conv (the "project and reshape"), then two stride-2
transposed convs up to s, BatchNorm + ReLU between, tanh out. Discriminator: strided convs with LeakyReLU(0.2),
a norm except on the input layer, and a last conv covering the s/4 map that gives one logit (or score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from .base import GenerativeModel, check_divisible_by_4, sample_from_prior
from .config import PositiveInt, Strict


class GANArch(Strict):
    latent_dim: PositiveInt = 64  # size of z
    base_channels: PositiveInt = 64  # width b of the first discriminator layer (the generator mirrors it)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


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
    """DCGAN's generator `g` and its discriminator or critic `d` (normalised by `critic_norm`): the groups (d
    first, then g, as the dict's order says), the EMA over `g` and the prior sampler that every GAN family here
    shares. Subclasses supply `training_losses`."""

    def __init__(self, channels: int, image_size: int, arch: GANArch,
                 critic_norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__(channels, image_size)
        check_divisible_by_4(image_size)
        self.latent_dim = arch.latent_dim
        self.g = dcgan_generator(channels, image_size, arch.latent_dim, arch.base_channels)
        self.d = dcgan_discriminator(channels, image_size, arch.base_channels, norm=critic_norm)
        self.apply(dcgan_init)

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"d": self.d.parameters(), "g": self.g.parameters()}

    def ema_parameters(self) -> dict[str, nn.Parameter]:
        return {f"g.{name}": p for name, p in self.g.named_parameters()}

    def prior_network(self) -> tuple[nn.Module, int]:
        return self.g, self.latent_dim

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        """Generator in eval mode (BatchNorm running statistics), so image i never depends on its batch."""
        return sample_from_prior(self.g, self.latent_dim, generators)
