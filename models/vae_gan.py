"""VAE-GAN (Larsen et al., 2016): a VAE whose reconstruction error is measured in a discriminator's features.

Three networks, three optimizers, the paper's three losses (section 2, algorithm 1):
  enc: KL(q(z|x) || N(0, I)) + L_llike          (pulls posteriors to the prior, reconstructs in feature space)
  dec: gamma * L_llike + non-saturating GAN loss on reconstructions plus that on prior samples
  d:   GAN loss, real against reconstructions plus real against prior samples (algorithm 1's L_GAN: the two
       fake terms are summed, each a mean over its batch)
L_llike is a unit-variance Gaussian log-likelihood of the real image's discriminator features (at the last
conv layer) given the reconstruction's: 0.5 * ||D_l(x) - D_l(x~)||^2 summed over features. The networks are
DCGAN's, with a per-sample norm in the discriminator so that the features of x and x~ do not depend on
which other images share the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import Family, GenerativeModel, check_divisible_by_4, sample_from_prior
from .config import PositiveInt, TrainConfig, UnitInterval
from .gan import GANArch, dcgan_discriminator, dcgan_generator, dcgan_init


class VAEGANArch(GANArch):
    beta: Annotated[float, Field(ge=0)] = 1.0  # weight of the KL term in the encoder's loss
    gamma: Annotated[float, Field(ge=0)] = 1e-2  # weight of feature reconstruction against the GAN term (decoder)


class VAEGANTrain(TrainConfig):
    steps: PositiveInt = 30000
    batch_size: PositiveInt = 64
    betas: tuple[UnitInterval, UnitInterval] = (0.5, 0.999)


class VAEGAN(GenerativeModel):
    """Encoder `enc`, decoder/generator `dec`, discriminator `d_features` → `d_head`."""

    def __init__(self, channels: int, image_size: int, arch: VAEGANArch) -> None:
        super().__init__(channels, image_size)
        check_divisible_by_4(image_size)
        latent_dim, base_channels = arch.latent_dim, arch.base_channels
        self.latent_dim, self.beta, self.gamma = latent_dim, arch.beta, arch.gamma
        b, s = base_channels, image_size // 4
        self.enc = nn.Sequential(
            nn.Conv2d(channels, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(b, 2 * b, 4, stride=2, padding=1), nn.GroupNorm(1, 2 * b), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * b * s * s, 2 * latent_dim),
        )
        self.dec = dcgan_generator(channels, image_size, latent_dim, base_channels)
        critic = dcgan_discriminator(channels, image_size, base_channels, norm=functools.partial(nn.GroupNorm, 1))
        self.d_features, self.d_head = critic[:-2], critic[-2:]  # features = Dis_l, the last conv block
        self.apply(dcgan_init)

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"d": [*self.d_features.parameters(), *self.d_head.parameters()], "enc": self.enc.parameters(),
                "dec": self.dec.parameters()}

    def ema_parameters(self) -> dict[str, nn.Parameter]:
        return {f"dec.{name}": p for name, p in self.dec.named_parameters()}

    def prior_network(self) -> tuple[nn.Module, int]:
        """The decoder; its averaged statistics come from prior z only (training mixes reconstructions in)."""
        return self.dec, self.latent_dim

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        recon = self.dec(z)
        prior = self.dec(torch.randn_like(mu))
        if group == "d":
            real_logits = self.d_head(self.d_features(x))
            recon_logits, prior_logits = self.d_head(self.d_features(torch.cat([recon, prior]).detach())).chunk(2)
            loss = F.softplus(-real_logits).mean() + F.softplus(recon_logits).mean() + F.softplus(prior_logits).mean()
            return {"loss": loss, "d_real": torch.sigmoid(real_logits).mean().detach(),
                    "d_fake": torch.sigmoid(torch.cat([recon_logits, prior_logits])).mean().detach()}
        features = self.d_features(torch.cat([x, recon]))
        real_features, recon_features = features.chunk(2)
        llike = 0.5 * (real_features.detach() - recon_features).pow(2).flatten(1).sum(1).mean()
        if group == "enc":
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
            return {"loss": self.beta * kl + llike, "kl": kl.detach(), "llike": llike.detach()}
        if group == "dec":
            recon_logits, prior_logits = self.d_head(torch.cat([recon_features, self.d_features(prior)])).chunk(2)
            gan = F.softplus(-recon_logits).mean() + F.softplus(-prior_logits).mean()
            return {"loss": self.gamma * llike + gan, "gan": gan.detach(), "llike": llike.detach()}
        raise ValueError(f"unknown VAE-GAN group {group!r}; known: ['d', 'enc', 'dec']")

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        """Decoded prior samples, decoder in eval mode (BatchNorm running statistics)."""
        return sample_from_prior(self.dec, self.latent_dim, generators)


FAMILY = Family(VAEGAN, VAEGANArch, VAEGANTrain)
