"""DDPM (Ho et al., 2020): a UNet trained to predict the noise (or the velocity), sampled by ancestral steps
over all T or by DDIM over a subset; optionally class-conditional with classifier-free guidance.

The loss and the samplers are plain functions of (network, schedule) so either can be swapped alone; `DDPM`
only binds a UNet to a schedule and adapts them to `GenerativeModel`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel
from .samplers import EpsFn, ddim_sample, ddpm_sample
from .schedules import NoiseSchedule, make_schedule
from .unet import UNet

PREDICTIONS = ("eps", "v")
SAMPLER_NAMES = ("ddpm", "ddim")


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
    net: nn.Module, schedule: NoiseSchedule, prediction: str, labels: Tensor | None = None,
    null_label: int = 0, guidance_scale: float = 1.0,
) -> EpsFn:
    """(x_t, t) → ε for the samplers, from an ε- or v-network, with classifier-free guidance when `labels`:

    ε = ε(x, ∅) + s (ε(x, y) - ε(x, ∅)) (Ho & Salimans, 2021, in the diffusers convention): s = 0 is the
    unconditional branch, s = 1 the conditional one, s > 1 guides harder. Both branches run in one batch.
    """

    def eps(x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        out = net(x, t, y)
        return out if prediction == "eps" else schedule.eps_from_v(x, t, out)

    if labels is None:
        return lambda x, t: eps(x, t, None)
    if guidance_scale == 1.0:
        return lambda x, t: eps(x, t, labels)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        null = torch.full_like(labels, null_label)
        conditional, unconditional = eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return guided


class DDPM(GenerativeModel):
    """Denoising diffusion; the schedule is fixed numbers, not state, so it is not saved.

    Sampling settings (`sampler`, `sample_steps`, `eta`, `guidance_scale`) change no weight: the same trained
    model can be sampled every way. `clip` keeps x0 estimates in [-1, 1]; the latent model turns it off.
    """

    def __init__(
        self, channels: int, image_size: int, base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
        timesteps: int = 1000, schedule: str = "linear", prediction: str = "eps", num_classes: int = 0,
        cond_drop_prob: float = 0.1, sampler: str = "ddpm", sample_steps: int = 50, eta: float = 0.0,
        guidance_scale: float = 1.0, clip: bool = True,
    ) -> None:
        super().__init__(channels, image_size)
        channel_mults = tuple(channel_mults)
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(f"image_size {image_size} must be divisible by 2**(len(channel_mults)-1) "
                             f"= {2 ** (len(channel_mults) - 1)}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; known: {list(PREDICTIONS)}")
        if sampler not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {sampler!r}; known: {list(SAMPLER_NAMES)}")
        self.net = UNet(channels, base_channels, channel_mults, num_classes)
        self.schedule = make_schedule(schedule, timesteps)
        self.num_classes, self.prediction, self.cond_drop_prob = num_classes, prediction, cond_drop_prob
        self.sampler, self.sample_steps, self.eta = sampler, sample_steps, eta
        self.guidance_scale, self.clip = guidance_scale, clip

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.parameters()}

    def training_losses(self, x: Tensor, group: str, labels: Tensor | None = None) -> dict[str, Tensor]:
        """The diffusion loss; a conditional model sees "no class" for a `cond_drop_prob` share of the batch,
        which trains the unconditional branch that guidance needs."""
        y = None
        if self.num_classes:
            if labels is None:
                raise ValueError("a class-conditional DDPM (num_classes > 0) needs labels to train")
            drop = torch.rand(labels.shape, device=labels.device) < self.cond_drop_prob
            y = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return {"loss": diffusion_loss(self.net, self.schedule, x, self.prediction, y)}

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
        device = next(self.parameters()).device
        if self.num_classes and labels is None:
            raise ValueError("a class-conditional DDPM (num_classes > 0) needs labels to sample")
        labels = labels.to(device) if self.num_classes else None
        eps_fn = noise_predictor(self.net, self.schedule, self.prediction, labels, self.num_classes,
                                 self.guidance_scale)
        shape = (self.channels, self.image_size, self.image_size)
        if self.sampler == "ddim":
            return ddim_sample(eps_fn, self.schedule, shape, generators, self.sample_steps, self.eta, device,
                               self.clip)
        return ddpm_sample(eps_fn, self.schedule, shape, generators, device, self.clip)
