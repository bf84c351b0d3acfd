"""What the diffusion families (DDPM, LDM) share, written once: the process and conditioning settings, the
training loss, the noise predictor the samplers call and the default sampler.

A family adds only its denoising network (`net`) and the maps between images and the space it diffuses in
(`encode`, `decode`: the identity for DDPM's pixels, a frozen VAE for the LDM's latents), so both are sampled
by the same code path in models/samplers.py.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Annotated, Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import GenerativeModel
from .config import Int, NonNegativeInt, Strict
from .samplers import EpsFn, ancestral
from .schedules import NoiseSchedule, make_schedule


class DiffusionArch(Strict):
    """What every diffusion family's arch holds besides its network: the process and the conditioning."""

    timesteps: Annotated[Int, Field(ge=2)] = 1000  # diffusion steps T (training; the ddpm sampler walks all)
    schedule: Literal["linear", "cosine"] = "linear"
    prediction: Literal["eps", "v"] = "eps"  # what the network predicts: the noise or the velocity
    num_classes: NonNegativeInt = 0  # classes to condition on; 0 = unconditional
    cond_drop_prob: Annotated[float, Field(ge=0, le=1)] = 0.1  # share of labels dropped to train the CFG branch


class Denoiser(Protocol):
    """A diffusion network: (x_t, t[, class per row]) → ε or v. Class `num_classes` is its "no class" row, the
    unconditional branch of classifier-free guidance; an unconditional network (0 classes) takes no labels."""

    num_classes: int

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor: ...


def diffusion_loss(
    net: nn.Module, schedule: NoiseSchedule, x0: Tensor, prediction: str = "eps", y: Tensor | None = None
) -> Tensor:
    """Ho et al.'s simplified objective, t uniform in [0, T): MSE to the true noise (`eps`) or, for `v`, to
    Salimans & Ho's velocity sqrt(abar) eps - sqrt(1-abar) x0, which keeps the target well scaled at both ends."""
    t = torch.randint(0, schedule.timesteps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    target = noise if prediction == "eps" else schedule.v_target(x0, t, noise)
    return F.mse_loss(net(schedule.q_sample(x0, t, noise), t, y), target)


def noise_predictor(
    net: Denoiser, schedule: NoiseSchedule, prediction: str, labels: Tensor | None = None, *,
    guidance_scale: float = 1.0,
) -> EpsFn:
    """(x_t, t) → ε for the samplers, from an ε- or v-network, with classifier-free guidance when `labels`:

    ε = ε(x, ∅) + s (ε(x, y) - ε(x, ∅)) (Ho & Salimans, 2021, in the diffusers convention): s = 0 is the
    unconditional branch, s = 1 the conditional one, s > 1 guides harder. Both branches run in one batch; at
    s = 0 and s = 1 only the branch that counts runs. ∅ is the network's own "no class" row, never a caller's
    guess, since any other number is a real class and would guide towards it without an error.
    """
    if labels is not None and not net.num_classes:
        raise ValueError("labels need a class-conditional network (num_classes > 0); pass None")

    def eps(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        out = net(x, t, y)
        return out if prediction == "eps" else schedule.eps_from_v(x, t, out)

    if labels is None:
        return lambda x, t: eps(x, t, None)
    if guidance_scale == 1.0:
        return lambda x, t: eps(x, t, labels)
    null = torch.full_like(labels, net.num_classes)
    if guidance_scale == 0.0:
        return lambda x, t: eps(x, t, null)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        conditional, unconditional = eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return guided


def training_labels(labels: Tensor | None, num_classes: int, cond_drop_prob: float) -> Tensor | None:
    """The labels a conditional network trains on: each replaced by "no class" (row num_classes) with
    probability `cond_drop_prob` (classifier-free guidance's unconditional branch); None when unconditional."""
    if not num_classes:
        return None
    if labels is None:
        raise ValueError("a class-conditional model (num_classes > 0) needs labels to train")
    drop = torch.rand(labels.shape, device=labels.device) < cond_drop_prob
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


class DiffusionModel(GenerativeModel):
    """A `net` trained and sampled under one noise schedule in `diffusion_shape`; the schedule is fixed numbers,
    not state, so it is not saved. The model knows nothing of samplers: `samplers.SAMPLERS` draws from it by any
    of them, so the same trained weights serve DDPM and DDIM at any guidance scale."""

    net: nn.Module
    clip: bool  # x0 estimates kept in [-1, 1]: true of pixels, not of latents

    def __init__(self, channels: int, image_size: int, arch: DiffusionArch, diffusion_shape: tuple[int, ...]) -> None:
        super().__init__(channels, image_size)
        self.schedule = make_schedule(arch.schedule, arch.timesteps)
        self.num_classes, self.prediction, self.cond_drop_prob = arch.num_classes, arch.prediction, arch.cond_drop_prob
        self.diffusion_shape = diffusion_shape

    @abc.abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Images → what the diffusion learns, in `diffusion_shape`."""

    @abc.abstractmethod
    def decode(self, x: Tensor) -> Tensor:
        """The diffusion's samples → images in [-1, 1]."""

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        """The diffusion loss on `encode(x)`; a conditional model sees "no class" for a `cond_drop_prob` share of
        the batch, which trains the unconditional branch that guidance needs."""
        x0 = self.encode(x)
        y = training_labels(labels, self.num_classes, self.cond_drop_prob)
        return {"loss": diffusion_loss(self.net, self.schedule, x0, self.prediction, y)}

    def noise_predictor(self, labels: Tensor | None, guidance_scale: float = 1.0) -> EpsFn:
        """(x_t, t) → ε for the samplers; guided when `labels` are given and `guidance_scale` != 1."""
        return noise_predictor(self.net, self.schedule, self.prediction, labels, guidance_scale=guidance_scale)

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        """The default sampler: ancestral over all T steps, no guidance, decoded."""
        return ancestral(self, generators, labels)
