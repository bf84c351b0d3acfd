"""Noise schedules for Gaussian diffusion: fixed numbers, no network, no trainable parameters.

Kept apart from the UNet (which only ever sees integer timesteps) so a schedule can be swapped or checked in
closed form on its own. Timesteps are 0-based: index t here is step t+1 of Ho et al. (2020), so
`alphas_cumprod[t]` = prod_{s<=t} (1 - beta_s) and `alphas_cumprod_prev[0]` = 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class NoiseSchedule:
    """Betas and every quantity derived from them, computed once in float64.

    Tensors stay on the CPU in float64; `_at` indexes them and casts to the caller's device and dtype, so a
    schedule needs no `.to(device)` and float32 rounding never accumulates through the cumulative product.
    """

    def __init__(self, betas: Tensor) -> None:
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
        self.betas = betas
        self.timesteps = len(betas)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # Karras et al.'s noise level σ_t = sqrt((1 - abar_t) / abar_t), x_t / sqrt(abar_t) = x0 + σ_t ε: what the
        # ODE solvers (solvers.py) step in; written as diffusers computes it, so their grids match bit for bit.
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        # Ho et al. eq. 7: q(x_{t-1} | x_t, x_0) = N(coef_x0 * x0 + coef_xt * x_t, posterior_variance).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef_x0 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef_xt = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        # Ho et al.'s `fixed_large` reverse variance, as in their code: beta_t, with the posterior's at the first
        # step (posterior_variance[0] is 0, whose log their likelihood cannot take). Samplers add no noise on
        # the last step, so for sampling it is beta_t throughout, as diffusers' `fixed_large`.
        self.fixed_large_variance = torch.cat([self.posterior_variance[1:2], betas[1:]])

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I), reparametrised with the given `noise`."""
        return self._at(self.sqrt_alphas_cumprod, t, x0) * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert `q_sample` for x0 given a noise estimate: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return (xt - self._at(self.sqrt_one_minus_alphas_cumprod, t, xt) * eps) / self._at(self.sqrt_alphas_cumprod, t, xt)

    def predict_eps(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The noise consistent with x_t and an x0 estimate: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        return (xt - self._at(self.sqrt_alphas_cumprod, t, xt) * x0) / self._at(self.sqrt_one_minus_alphas_cumprod, t, xt)

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Salimans & Ho's velocity v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (the v-prediction target)."""
        return self._at(self.sqrt_alphas_cumprod, t, x0) * noise - self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0

    def eps_from_v(self, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """Invert v for the noise: eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v. A fractional t (the heun sampler's
        grid, in a floating dtype) sits at σ interpolated linearly between the integer steps, where diffusers'
        discrete schedulers put it, with abar = 1 / (1 + σ²)."""
        if t.is_floating_point():
            sigma = self._interpolated(self.sigmas, t)
            alpha = (1.0 + sigma**2).rsqrt()
            return self._shaped(alpha * sigma, xt) * xt + self._shaped(alpha, xt) * v
        return self._at(self.sqrt_one_minus_alphas_cumprod, t, xt) * xt + self._at(self.sqrt_alphas_cumprod, t, xt) * v

    def posterior_mean_variance(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7); the variance broadcasts like x_t."""
        mean = self._at(self.posterior_mean_coef_x0, t, xt) * x0 + self._at(self.posterior_mean_coef_xt, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, xt)

    def step_variance(self, t: Tensor, like: Tensor, variance_type: str = "fixed_large") -> Tensor:
        """σ_t² of the reverse step p(x_{t-1} | x_t), Ho et al.'s two fixed choices (sec. 3.2), shaped to broadcast
        like `like`: `fixed_small` is the posterior variance β̃_t (optimal for a deterministic x0),
        `fixed_large` is β_t (optimal for x0 ~ N(0, I); their best FID)."""
        if variance_type == "fixed_small":
            return self._at(self.posterior_variance, t, like)
        if variance_type == "fixed_large":
            return self._at(self.fixed_large_variance, t, like)
        raise ValueError(f"unknown variance_type {variance_type!r}; known: fixed_small, fixed_large")

    @staticmethod
    def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] per batch row, shaped (B, 1, 1, ...) to broadcast against `like`, in its device and dtype."""
        return NoiseSchedule._shaped(values[t.to("cpu", torch.long)], like)

    @staticmethod
    def _interpolated(values: Tensor, t: Tensor) -> Tensor:
        """values at fractional timesteps t, linearly between the integer steps (numpy's `interp`), float64."""
        t = t.to("cpu", torch.float64)
        low = t.floor().clamp(0, len(values) - 2)
        index = low.long()
        return values[index] + (t - low) * (values[index + 1] - values[index])

    @staticmethod
    def _shaped(values: Tensor, like: Tensor) -> Tensor:
        """One value per batch row, shaped (B, 1, 1, ...) to broadcast against `like`, in its device and dtype."""
        return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def linear_betas(timesteps: int, max_beta: float = 0.999) -> Tensor:
    """Ho et al.: betas evenly spaced from 1e-4 to 0.02 at T=1000, scaled by 1000/T so that other T keep a
    similar total amount of noise (as in improved-diffusion). Below T=50 the scaled end exceeds 1, so betas
    are clipped at `max_beta` as in the cosine schedule; only tiny test runs use such T."""
    scale = 1000.0 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=max_beta)


def cosine_alpha_bar(u: float, s: float = 0.008) -> float:
    """Nichol & Dhariwal's f(u) = cos^2(pi/2 (u + s) / (1 + s)) for u = t/T in [0, 1] (unnormalised)."""
    return math.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2


def cosine_betas(timesteps: int, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal: beta_t = 1 - abar(t)/abar(t-1) with abar from `cosine_alpha_bar`, clipped at 0.999
    so the last steps do not destroy the signal in a single jump."""
    betas = [
        min(1.0 - cosine_alpha_bar((i + 1) / timesteps) / cosine_alpha_bar(i / timesteps), max_beta)
        for i in range(timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def make_schedule(name: str, timesteps: int) -> NoiseSchedule:
    """The named schedule with `timesteps` steps; raises ValueError on an unknown name."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; known: {sorted(SCHEDULES)}")
    if timesteps < 2:
        raise ValueError(f"timesteps must be at least 2, got {timesteps}")
    return NoiseSchedule(SCHEDULES[name](timesteps))
