"""DDPM (Ho et al., 2020): a UNet trained to predict the noise, sampled by ancestral steps over all T.

The loss and the sampler are plain functions of (network, schedule) so either can be swapped alone; `DDPM`
only binds a UNet to a schedule and adapts them to `GenerativeModel`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .base import GenerativeModel, randn_per_sample
from .schedules import NoiseSchedule, make_schedule
from .unet import UNet


def epsilon_loss(net: nn.Module, schedule: NoiseSchedule, x0: Tensor) -> Tensor:
    """Ho et al.'s simplified objective: MSE between the true and predicted noise, t uniform in [0, T)."""
    t = torch.randint(0, schedule.timesteps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    return F.mse_loss(net(schedule.q_sample(x0, t, noise), t), noise)


def ancestral_sample(
    net: nn.Module, schedule: NoiseSchedule, shape: Sequence[int], generators: Sequence[torch.Generator],
    device: torch.device | str = "cpu",
) -> Tensor:
    """Ho et al. algorithm 2 with the posterior written through a clipped x0 estimate.

    x_T ~ N(0, I); each step predicts ε, forms x0 = (x_t - sqrt(1-abar_t) ε) / sqrt(abar_t) clipped to [-1, 1]
    (keeps early, poor estimates in the data range), and draws x_{t-1} ~ q(x_{t-1} | x_t, x0). Every draw
    for image i comes from generators[i]; the last step adds no noise.
    """
    x = randn_per_sample(shape, generators, device)
    for step in tqdm(range(schedule.timesteps - 1, -1, -1), desc="ddpm sample", unit="step", leave=False,
                     disable=None):
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        x0 = schedule.predict_x0(x, t, net(x, t)).clamp(-1.0, 1.0)
        mean, variance = schedule.posterior_mean_variance(x0, x, t)
        x = mean + variance.sqrt() * randn_per_sample(shape, generators, device) if step > 0 else mean
    return x.clamp(-1.0, 1.0)


class DDPM(GenerativeModel):
    """Denoising diffusion with ε-prediction; the schedule is fixed numbers, not state, so it is not saved."""

    def __init__(
        self, channels: int, image_size: int, base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
        timesteps: int = 1000, schedule: str = "linear",
    ) -> None:
        super().__init__(channels, image_size)
        channel_mults = tuple(channel_mults)
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(f"image_size {image_size} must be divisible by 2**(len(channel_mults)-1) "
                             f"= {2 ** (len(channel_mults) - 1)}")
        self.net = UNet(channels, base_channels, channel_mults)
        self.schedule = make_schedule(schedule, timesteps)

    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"model": self.parameters()}

    def training_losses(self, x: Tensor, group: str) -> dict[str, Tensor]:
        return {"loss": epsilon_loss(self.net, self.schedule, x)}

    @torch.no_grad()
    def sample(self, generators: Sequence[torch.Generator]) -> Tensor:
        device = next(self.parameters()).device
        shape = (self.channels, self.image_size, self.image_size)
        return ancestral_sample(self.net, self.schedule, shape, generators, device)
