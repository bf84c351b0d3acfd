"""Model families, picked by name from a plain dict so `grep` finds which class runs.

Adding a family is one module beside these (its `nn.Module` and config classes, ending in a `Family`) and one
line here; docs/adding-a-family.md walks through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from . import dcgan, ddpm, ldm, vae, vae_gan, wgan
from .base import Family, GenerativeModel

REGISTRY: dict[str, Family] = {
    "vae": vae.FAMILY,
    "dcgan": dcgan.FAMILY,
    "wgan_gp": wgan.WGAN_GP_FAMILY,
    "wgan": wgan.WGAN_FAMILY,
    "vae_gan": vae_gan.FAMILY,
    "ddpm": ddpm.FAMILY,
    "ldm": ldm.FAMILY,
}


def family(name: str) -> Family:
    """The registered family `name`; ValueError listing the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def build_model(name: str, channels: int, image_size: int, arch: BaseModel | Mapping[str, Any] | None = None,
                **frozen: GenerativeModel) -> GenerativeModel:
    """An untrained model of family `name`. `arch` is its arch config (a mapping is validated into it; None
    takes every default); `frozen` passes the trained models a family is built on (the ldm's `vae`)."""
    spec = family(name)
    arch = spec.arch.model_validate(dict(arch or {})) if not isinstance(arch, BaseModel) else arch
    missing = set(spec.frozen) - set(frozen)
    if missing:
        raise ValueError(f"{name} is built on trained {', '.join(sorted(spec.frozen[m] for m in missing))} "
                         f"model(s): pass {', '.join(sorted(missing))}")
    return spec.model(channels, image_size, arch, **frozen)
