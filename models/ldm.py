"""Latent diffusion (Rombach et al., 2022), small: the DDPM trained on a frozen, already trained VAE's latents
and decoded by it.

The VAE's latent is a vector, so it is viewed as a tiny image (`latent_shape`, e.g. 16 = 1×4×4) for the
UNet. Diffusion runs on the posterior means without clipping (latents are not in [-1, 1]). The VAE is part
of this model's state (its weights are saved with the LDM's), frozen, and never in an optimizer group.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from .base import GenerativeModel
from .ddpm import DDPM
from .vae import VAE


def load_vae_run(run_dir: Path, channels: int, image_size: int) -> VAE:
    """The trained VAE of a `genbench train vae` run folder, with the weights it samples from."""
    run_dir = Path(run_dir)
    for name in ("config.json", "model.safetensors"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found: the ldm needs a trained vae "
                                    "(run `genbench train vae` first, or set models.ldm.arch.vae_run)")
    config = json.loads((run_dir / "config.json").read_text())
    if config["family"] != "vae":
        raise ValueError(f"{run_dir} holds a {config['family']!r} run, not a vae")
    if (config["image"]["channels"], config["image"]["size"]) != (channels, image_size):
        raise ValueError(f"{run_dir}: vae trained on {config['image']} images, ldm on {channels}×{image_size}")
    vae = VAE(channels, image_size, **config["arch"])
    weights = {k: v for k, v in load_file(str(run_dir / "model.safetensors")).items() if not k.startswith("raw.")}
    vae.load_state_dict(weights)
    return vae


class LDM(GenerativeModel):
    """A frozen `vae` and a `diffusion` model over its latents."""

    def __init__(self, channels: int, image_size: int, vae_run: str = "runs/vae",
                 latent_shape: Sequence[int] = (1, 4, 4), **diffusion: Any) -> None:
        super().__init__(channels, image_size)
        self.vae = load_vae_run(Path(vae_run), channels, image_size).requires_grad_(False).eval()
        self.latent_shape = tuple(latent_shape)
        if math.prod(self.latent_shape) != self.vae.latent_dim or self.latent_shape[1] != self.latent_shape[2]:
            raise ValueError(f"latent_shape {list(self.latent_shape)} must be square and hold the vae's "
                             f"latent_dim={self.vae.latent_dim} values")
        self.diffusion = DDPM(self.latent_shape[0], self.latent_shape[1], clip=False, **diffusion)
        self.num_classes = self.diffusion.num_classes

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

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        z = self.diffusion.sample(generators, labels)
        return self.vae.decode(z.flatten(1))
