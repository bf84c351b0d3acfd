"""Samplers for Gaussian diffusion: plain functions of (noise predictor, schedule), so the same weights can be
sampled by either and a sampler can be checked alone.

`eps_fn(x_t, t)` is whatever predicts the noise: a bare UNet, a v-prediction network converted to ε, or a
classifier-free-guided pair of branches (models/ddpm.py builds these). Every random draw for image i comes
from generators[i], and steps use the clipped x0 estimate when `clip` is set (pixels live in [-1, 1];
latents do not, so the latent model turns it off).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .base import randn_per_sample
from .schedules import NoiseSchedule

EpsFn = Callable[[Tensor, Tensor], Tensor]


def ddpm_sample(
    eps_fn: EpsFn, schedule: NoiseSchedule, shape: Sequence[int], generators: Sequence[torch.Generator],
    device: torch.device | str = "cpu", clip: bool = True,
) -> Tensor:
    """Ho et al. algorithm 2 with the posterior written through an x0 estimate.

    x_T ~ N(0, I); each step predicts ε, forms x0 = (x_t - sqrt(1-abar_t) ε) / sqrt(abar_t) (clipped to
    [-1, 1] when `clip`: keeps early, poor estimates in the data range), and draws
    x_{t-1} ~ q(x_{t-1} | x_t, x0). The last step adds no noise.
    """
    x = randn_per_sample(shape, generators, device)
    for step in tqdm(range(schedule.timesteps - 1, -1, -1), desc="ddpm sample", unit="step", leave=False,
                     disable=None):
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        x0 = schedule.predict_x0(x, t, eps_fn(x, t))
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        mean, variance = schedule.posterior_mean_variance(x0, x, t)
        x = mean + variance.sqrt() * randn_per_sample(shape, generators, device) if step > 0 else mean
    return x.clamp(-1.0, 1.0) if clip else x


def ddim_timesteps(timesteps: int, sample_steps: int) -> list[int]:
    """`sample_steps` timesteps evenly spread over [0, T-1], both ends included; all of them when equal to T."""
    if not 1 <= sample_steps <= timesteps:
        raise ValueError(f"sample_steps must be in [1, {timesteps}], got {sample_steps}")
    if sample_steps == 1:
        return [timesteps - 1]
    return sorted({round(i * (timesteps - 1) / (sample_steps - 1)) for i in range(sample_steps)})


def ddim_step(
    schedule: NoiseSchedule, x: Tensor, t: int, t_prev: int, eps: Tensor, eta: float, noise: Tensor | None,
    clip: bool = True,
) -> Tensor:
    """Song et al. (2021) eq. 12 from timestep t to t_prev (-1 = the data, abar = 1).

    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z, with
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev). ε is recomputed from the
    (clipped) x0 so the two stay consistent; then eta = 1 and consecutive steps give exactly DDPM's posterior,
    and eta = 0 adds no noise at all.
    """
    abar = float(schedule.alphas_cumprod[t])
    abar_prev = float(schedule.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    x0 = (x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - math.sqrt(abar) * x0) / math.sqrt(1.0 - abar)
    sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
    x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("eta > 0 needs noise")
        x_prev = x_prev + sigma * noise
    return x_prev


def ddim_sample(
    eps_fn: EpsFn, schedule: NoiseSchedule, shape: Sequence[int], generators: Sequence[torch.Generator],
    sample_steps: int, eta: float = 0.0, device: torch.device | str = "cpu", clip: bool = True,
) -> Tensor:
    """DDIM over `ddim_timesteps(T, sample_steps)`: deterministic given x_T when eta = 0, DDPM-like at eta = 1.

    Noise is drawn only on steps with sigma > 0 (never at eta = 0, never on the last step), so eta = 1 with
    sample_steps = T consumes each generator exactly as `ddpm_sample` does.
    """
    x = randn_per_sample(shape, generators, device)
    steps = ddim_timesteps(schedule.timesteps, sample_steps)[::-1]
    for t, t_prev in tqdm(list(zip(steps, [*steps[1:], -1])), desc="ddim sample", unit="step", leave=False,
                          disable=None):
        eps = eps_fn(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        noise = randn_per_sample(shape, generators, device) if eta > 0 and t_prev >= 0 else None
        x = ddim_step(schedule, x, t, t_prev, eps, eta, noise, clip)
    return x.clamp(-1.0, 1.0) if clip else x

