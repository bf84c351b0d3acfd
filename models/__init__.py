"""Model families, picked by name from a plain dict so `grep` finds which class runs."""

from __future__ import annotations

from typing import Any

from .base import GenerativeModel
from .dcgan import DCGAN
from .ddpm import DDPM
from .ldm import LDM
from .vae import VAE
from .vae_gan import VAEGAN
from .wgan import WGANGP, WGANClip

REGISTRY: dict[str, type[GenerativeModel]] = {
    "vae": VAE, "dcgan": DCGAN, "wgan_gp": WGANGP, "wgan": WGANClip, "vae_gan": VAEGAN, "ddpm": DDPM, "ldm": LDM,
}


def build_model(family: str, channels: int, image_size: int, **arch: Any) -> GenerativeModel:
    """An untrained model of `family`; `arch` holds that family's constructor options (params.yaml `arch`
    and, for the diffusion families, `sampling`)."""
    if family not in REGISTRY:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[family](channels=channels, image_size=image_size, **arch)
