"""Convolutional VAE (Kingma & Welling, 2014) with a Bernoulli decoder on [0, 1]-rescaled pixels.

Why Bernoulli (BCE) rather than a Gaussian (MSE): Fashion-MNIST pixels sit mostly near black or white,
and a unit-variance Gaussian likelihood makes the reconstruction term so weak against the KL that samples
wash out to grey blobs; BCE weights errors like a sharp likelihood without tuning a variance. `encode` and
`decode` are public for latent-space work (interpolation, latent diffusion).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import Family, GenerativeModel, check_divisible_by_4, eval_mode, randn_per_sample
from .config import PositiveFloat, PositiveInt, Strict, TrainConfig


class VAEArch(Strict):
    latent_dim: PositiveInt = 16
    base_channels: PositiveInt = 32
    beta: Annotated[float, Field(ge=0)] = 1.0  # weight of the KL term (beta-VAE; 1 = the ELBO)


class VAETrain(TrainConfig):
    steps: PositiveInt = 20000
    lr: PositiveFloat = 1e-3


class VAE(GenerativeModel):
    """Two stride-2 convs down to image_size/4, a linear map to (mu, logvar), and the mirror image up."""

    def __init__(self, channels: int, image_size: int, arch: VAEArch) -> None:
        super().__init__(channels, image_size)
        check_divisible_by_4(image_size)
        latent_dim = self.latent_dim = arch.latent_dim
        self.beta = arch.beta
        c, s = arch.base_channels, image_size // 4
        self._feature_shape = (2 * c, s, s)
        features = 2 * c * s * s
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Flatten(),
            nn.Linear(features, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, features), nn.SiLU(),
            nn.Unflatten(1, self._feature_shape),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1),
        )

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.parameters()}

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior q(z|x) = N(mu, exp(logvar)) for images in [-1, 1]."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Mean image in [-1, 1] (the Bernoulli means, rescaled) for latents z."""
        return torch.sigmoid(self.decoder(z)) * 2.0 - 1.0

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Negative ELBO per image with beta-weighted KL: sum over pixels/latents, mean over the batch."""
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, (x + 1.0) / 2.0, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        loss = (recon + self.beta * kl).mean()
        return {"loss": loss, "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        device = next(self.parameters()).device
        return self.decode(randn_per_sample((self.latent_dim,), generators, device))


@torch.no_grad()
def interpolate(vae: VAE, a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Decoded images along the straight line between the posterior means of real images `a` and `b`
    (each CHW in [-1, 1]); shape (steps, C, H, W), the ends being the two reconstructions."""
    with eval_mode(vae):
        mu = vae.encode(torch.stack([a, b]))[0]
        weights = torch.linspace(0.0, 1.0, steps, device=mu.device)[:, None]
        return vae.decode((1.0 - weights) * mu[0] + weights * mu[1])


FAMILY = Family(VAE, VAEArch, VAETrain)
