"""Latent diffusion (Rombach et al., 2022), small: a diffusion model trained on a frozen, already trained VAE's
latents and decoded by it.

What follows Rombach et al.: the first stage is frozen; the diffusion model learns the latents of the
training images, z = mu + sigma * eps drawn from the encoder's posterior (their `encode_first_stage(x).sample()`),
not its mean; and the latents are multiplied by a scale factor, 1 / (standard deviation of the training
latents), so the diffusion sees unit-variance data whatever the VAE's KL weight. The factor is computed once
by `fit_data` before the first training step and kept as the buffer `latent_scale`, so it is saved with the
weights; samples are divided by it before decoding. Diffusion runs without clipping (latents are not in
[-1, 1]).

Where we differ, and why: Rombach et al. diffuse over a spatial latent (e.g. 4×32×32) with a UNet. Our VAE's
latent is a flat vector of `latent_dim` values with no spatial structure, so the denoiser is an MLP with skip
connections, as in Preechakul et al. (2022, Diffusion Autoencoders), whose latent DDIM denoises a flat
semantic vector with exactly such a network (`SkipMLP` below). The scale factor is computed on all training
images rather than on Rombach's first batch, and as the expected standard deviation of the posterior samples
(see `fit_data`) so that it needs no random draws.

The model is given its VAE (it reads no files); the VAE is part of this model's state, so its weights are
saved inside the LDM's own `model.safetensors`, frozen and never in an optimizer group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from .base import Family
from .config import Int, PositiveInt
from .ddpm import DDPMTrain
from .diffusion import DiffusionArch, DiffusionModel
from .samplers import DiffusionSamplerName, DiffusionSampling
from .unet import ConditionEmbedding
from .vae import VAE


class LDMArch(DiffusionArch):
    vae_run: str = "runs/vae"  # the trained vae run (folder) whose frozen encoder/decoder the diffusion works through
    hidden_dim: PositiveInt = 2048  # width of the denoiser MLP's hidden layers (Preechakul et al.: 2048)
    num_layers: Annotated[Int, Field(ge=2)] = 10  # linear layers of the denoiser MLP (Preechakul et al.: 10)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # in every hidden layer, train mode only (Preechakul: 0)


class LDMTrain(DDPMTrain):
    steps: PositiveInt = 50000


class LDMSampling(DiffusionSampling):
    sampler: DiffusionSamplerName = "ddim"  # DDIM over sample_steps rather than all T steps, as Rombach et al.


class SkipLayer(nn.Module):
    """Linear, scaled by (1 + a projection of the embedding), LayerNorm, SiLU, dropout (Preechakul et al.'s
    `MLPLNAct` with condition_bias 1); the last layer is the linear map alone."""

    def __init__(self, in_dim: int, out_dim: int, emb_dim: int, dropout: float, last: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.last = last
        if not last:
            self.emb = nn.Linear(emb_dim, out_dim)
            self.norm = nn.LayerNorm(out_dim)
            self.dropout = nn.Dropout(dropout)
            for layer in (self.linear, self.emb):  # Kaiming for the SiLU layers, as theirs; the last keeps torch's
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        h = self.linear(h)
        if self.last:
            return h
        h = self.norm(h * (1.0 + self.emb(nn.functional.silu(emb))))
        return self.dropout(nn.functional.silu(h))


class SkipMLP(nn.Module):
    """The latent denoiser: (z_t, t[, class]) → ε (or v) for flat latents of `dim` values.

    Preechakul et al.'s MLPSkipNet: `num_layers` linear layers, every one after the first also fed z_t itself
    (the skip connections that keep the input within reach of a deep MLP), each hidden layer modulated by the
    embedding. The embedding is their time embedding (64 sinusoidal features, Linear-SiLU-Linear to `dim`)
    plus, for a class-conditional model, a learned class embedding (row num_classes = "no class", the
    unconditional branch of classifier-free guidance), added as the UNet does.
    """

    time_features = 64

    def __init__(self, dim: int, hidden_dim: int, num_layers: int, num_classes: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding = ConditionEmbedding(self.time_features, dim, num_classes)
        widths = [dim, *[hidden_dim] * (num_layers - 1), dim]
        self.layers = nn.ModuleList(
            SkipLayer(w_in + (dim if i else 0), w_out, dim, dropout, last=i == num_layers - 1)
            for i, (w_in, w_out) in enumerate(zip(widths, widths[1:]))
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """`y`: class per row (num_classes = no class); required by, and only by, a class-conditional network."""
        emb = self.embedding(t, y)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([h, x], dim=1) if i else h, emb)
        return h


class LDM(DiffusionModel):
    """A frozen `vae` and a `SkipMLP` denoiser over its scaled latents."""

    clip = False
    fit_batch_size = 1000  # images per encoder pass in `fit_data`

    def __init__(self, channels: int, image_size: int, arch: LDMArch, vae: VAE) -> None:
        super().__init__(channels, image_size, arch, (vae.latent_dim,))
        if (vae.channels, vae.image_size) != (channels, image_size):
            raise ValueError(f"the vae was trained on {vae.channels}×{vae.image_size} images, the ldm is for "
                             f"{channels}×{image_size}")
        self.vae = vae.requires_grad_(False).eval()
        self.net = SkipMLP(vae.latent_dim, arch.hidden_dim, arch.num_layers, arch.num_classes, arch.dropout)
        # Rombach et al.'s scale factor; 1 until `fit_data` measures it, then saved and loaded with the weights.
        self.register_buffer("latent_scale", torch.ones(()))

    def train(self, mode: bool = True) -> LDM:
        """The frozen VAE stays in eval mode whatever the trainer asks."""
        super().train(mode)
        self.vae.eval()
        return self

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.net.parameters()}

    @torch.no_grad()
    def fit_data(self, images: Tensor) -> None:
        """Set `latent_scale` to 1 / std of the training latents: the posterior samples z = mu + sigma eps of
        every training image, over all images and latent dimensions pooled, as Rombach et al.'s one scalar.

        Their estimate is the empirical std of one batch of samples; here it is the same std in expectation over
        eps, var = var(mu) + mean(sigma^2) (population variance over all values), computed in float64 on every
        image and without random draws, so the global generator is untouched and the value is exact. Images are
        encoded `fit_batch_size` at a time on the model's device.
        """
        device = self.latent_scale.device
        means, variances = [], []
        for batch in images.split(self.fit_batch_size):
            mu, logvar = self.vae.encode(batch.to(device))
            means.append(mu.double().cpu())
            variances.append(logvar.double().exp().cpu())
        variance = torch.cat(means).var(correction=0) + torch.cat(variances).mean()
        self.latent_scale.fill_(float(variance.rsqrt()))

    def encode(self, x: Tensor) -> Tensor:
        """A scaled latent per image, drawn from the VAE's posterior (global generator): what the diffusion learns."""
        with torch.no_grad():
            mu, logvar = self.vae.encode(x)
            return (mu + (0.5 * logvar).exp() * torch.randn_like(mu)) * self.latent_scale

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents → images: undo the scale, then the frozen VAE's decoder."""
        return self.vae.decode(z / self.latent_scale)


FAMILY = Family(LDM, LDMArch, LDMTrain, LDMSampling, frozen={"vae": "vae"})
