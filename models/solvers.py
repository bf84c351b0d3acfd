"""Few-step ODE solvers for the diffusion samplers: DPM-Solver++ 2M (Lu et al., 2022) and Heun's second-order
method (Karras et al., 2022, Algorithm 1), each as diffusers runs it on a discrete DDPM schedule.

Both integrate the probability-flow ODE in Karras's noise level σ = sqrt((1 - abar) / abar), so a solver is two
parts kept apart here: a grid (the σ it visits and the timestep the network is told at each) and a step.
The grids are diffusers' own, computed as it computes them (numpy, float64), so a tie rounds alike:
`DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
lower_order_final=True, final_sigmas_type="zero", timestep_spacing="linspace")` and `HeunDiscreteScheduler` with
its defaults, each optionally with `use_karras_sigmas` (Karras et al. eq. 5, rho = 7). tests/unit/test_solvers.py
checks every intermediate x against them.

Where we differ from diffusers, and why:
- the x0 (data) prediction is clamped to [-1, 1] when `clip` (pixel models), as our ddpm and ddim samplers do.
  diffusers' schedulers do not clamp by default: DPM-Solver++ has dynamic thresholding instead (Saharia et al.,
  2022), which with `sample_max_value=1` reduces to this clamp, and Heun has `clip_sample`, off by default. The
  cross-check tests run with clip off, and with it on against those two settings.
- x_T ~ N(0, I) in the model's space, as for the other samplers; diffusers' linspace Heun starts from σ_max z,
  which differs by a factor sqrt(1 + 1/σ_max²).
- coefficients are float64 (our schedule's); diffusers rounds σ to float32 first.
- a v-network's output becomes ε inside the model (`diffusion.noise_predictor`) at the timestep the network is
  told; diffusers converts v with the solver's σ. The two agree wherever that σ is the timestep's, i.e. except on
  Karras grids, whose σ lie between the training timesteps. Where abar is tiny (the cosine schedule's last
  steps), v → ε → x0 in float32 also keeps fewer digits of x0 than diffusers' direct v → x0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .base import randn_per_sample
from .schedules import NoiseSchedule

EpsFn = Callable[[Tensor, Tensor], Tensor]  # (x_t, timestep per row) → the predicted noise ε
KARRAS_RHO = 7.0  # Karras et al.'s ρ, eq. 5: larger spends more steps at low noise


@dataclass(frozen=True)
class Grid:
    """Where a solver evaluates the network: at noise level `sigmas[i]` it tells it `timesteps[i]`."""

    timesteps: Tensor  # N: long for dpmpp_2m, float32 for heun (fractional), diffusers' own dtypes
    sigmas: list[float]  # N + 1 noise levels σ, falling, the last 0 (the data)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = KARRAS_RHO) -> np.ndarray:
    """Karras et al. eq. 5: σ_i = (σ_max^(1/ρ) + i/(N-1) (σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ, as diffusers'
    `_convert_to_karras`."""
    ramp = np.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The fractional timestep of each σ: log σ interpolated linearly between the schedule's integer steps,
    diffusers' `_sigma_to_t` (clamped to [0, T-1])."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(sigmas.shape)


def _check_steps(name: str, timesteps: int, steps: int, least: int = 1) -> None:
    if not least <= steps <= timesteps:
        raise ValueError(f"{name} takes sample_steps in [{least}, {timesteps}], got {steps}")


def dpmpp_2m_grid(schedule: NoiseSchedule, steps: int, karras: bool = False) -> Grid:
    """diffusers' DPM-Solver++ grid: `steps` integer timesteps from T-1 (linspace over [0, T-1] at steps + 1
    points, rounded, the last point dropped) at their own σ, or Karras σ at their rounded `sigma_to_t` timesteps;
    then σ = 0. Without Karras σ, steps = T rounds two points to one timestep, a zero step that makes the
    second-order update 0/0, so it is refused."""
    timesteps = schedule.timesteps
    _check_steps("dpmpp_2m", timesteps, steps)
    sigmas = schedule.sigmas.numpy()
    if karras:
        levels = karras_sigmas(float(sigmas[0]), float(sigmas[-1]), steps)
        times = sigma_to_t(levels, np.log(sigmas)).round()
    else:
        if steps == timesteps:
            raise ValueError(f"dpmpp_2m takes sample_steps < timesteps={timesteps} without karras_sigmas: at "
                             f"{steps} its linspace grid visits one timestep twice")
        times = np.linspace(0, timesteps - 1, steps + 1).round()[::-1][:-1].copy()
        levels = np.interp(times, np.arange(0, timesteps), sigmas)
    return Grid(torch.from_numpy(times.astype(np.int64)), [*map(float, levels), 0.0])


def heun_grid(schedule: NoiseSchedule, steps: int, karras: bool = False) -> Grid:
    """diffusers' Heun grid: `steps` fractional timesteps linspace over [T-1, 0] in float32, at σ interpolated
    linearly between the integer steps, or Karras σ at their (unrounded) `sigma_to_t` timesteps; then σ = 0.
    At least 2 steps: diffusers' one-step linspace grid is t = 0 alone, the data's end."""
    timesteps = schedule.timesteps
    _check_steps("heun", timesteps, steps, least=2)
    sigmas = schedule.sigmas.numpy()
    times = np.linspace(0, timesteps - 1, steps, dtype=np.float32)[::-1].copy()
    levels = np.interp(times, np.arange(0, timesteps), sigmas)
    if karras:
        levels = karras_sigmas(float(levels[-1]), float(levels[0]), steps)
        times = sigma_to_t(levels, np.log(sigmas))
    return Grid(torch.from_numpy(times).to(torch.float32), [*map(float, levels), 0.0])


def _alpha_sigma(sigma: float) -> tuple[float, float]:
    """(α, σ_vp) of noise level σ: x_t = α x0 + σ_vp ε with α = 1/sqrt(1 + σ²), σ_vp = σ α."""
    alpha = 1.0 / math.sqrt(1.0 + sigma**2)
    return alpha, sigma * alpha


def data_prediction(x: Tensor, eps: Tensor, sigma: float, clip: bool) -> Tensor:
    """x0 = (x - σ_vp ε) / α for x in the model's (variance-preserving) space, clamped to [-1, 1] when `clip`."""
    alpha, sigma_vp = _alpha_sigma(sigma)
    x0 = (x - sigma_vp * eps) / alpha
    return x0.clamp(-1.0, 1.0) if clip else x0


def dpmpp_2m_step(x: Tensor, x0: Tensor, sigma: float, sigma_next: float,
                  previous: tuple[Tensor, float] | None) -> Tensor:
    """One DPM-Solver++ step from σ to σ_next (Lu et al. 2022, Algorithm 2; diffusers' "midpoint" form).

    With h = λ_next - λ (λ = log(α/σ_vp) = -log σ): x_next = (σ_vp,next/σ_vp) x - α_next (e^-h - 1) D, where D
    is x0 (first order, `previous` None, as on the first step) or x0 + (x0 - x0_prev) / (2 r), r = h_prev / h,
    from the x0 prediction and σ of the step before. σ_next = 0 gives x0 itself (λ = ∞), so the last step is
    first order, as diffusers' `final_sigmas_type="zero"`.
    """
    if sigma_next == 0.0:
        return x0
    alpha_next, sigma_vp_next = _alpha_sigma(sigma_next)
    sigma_vp = _alpha_sigma(sigma)[1]
    h = math.log(sigma / sigma_next)
    d = x0
    if previous is not None:
        x0_prev, sigma_prev = previous
        r = math.log(sigma_prev / sigma) / h
        d = x0 + (0.5 / r) * (x0 - x0_prev)
    return (sigma_vp_next / sigma_vp) * x - (alpha_next * math.expm1(-h)) * d


def heun_step(x: Tensor, x0: Tensor, sigma: float, sigma_next: float,
              denoise_next: Callable[[Tensor], Tensor]) -> Tensor:
    """One step of Karras et al.'s Algorithm 1 (S_churn = 0) from σ to σ_next, x in their scaling (the model's x
    over α, so that x = x0 + σ n): an Euler step along d = (x - x0) / σ, then, unless σ_next = 0, the average
    of d and the slope at the Euler point (`denoise_next`: its x0 prediction at σ_next)."""
    dt = sigma_next - sigma
    d = (x - x0) / sigma
    x_euler = x + d * dt
    if sigma_next == 0.0:
        return x_euler
    d_next = (x_euler - denoise_next(x_euler)) / sigma_next
    return x + (d + d_next) / 2 * dt


def _rows(t: Tensor, x: Tensor) -> Tensor:
    """Timestep `t` (0-d) once per row of x, in t's dtype, on x's device."""
    return torch.full((x.shape[0],), t.item(), dtype=t.dtype, device=x.device)


def dpmpp_2m_sample(
    eps_fn: EpsFn, schedule: NoiseSchedule, shape: Sequence[int], generators: Sequence[torch.Generator],
    sample_steps: int, karras: bool = False, device: torch.device | str = "cpu", clip: bool = True,
) -> Tensor:
    """DPM-Solver++ 2M over `dpmpp_2m_grid`: x_T ~ N(0, I) per image from its generator, then one network pass
    and one `dpmpp_2m_step` per timestep, second order on every step but the first and the last. Deterministic."""
    grid = dpmpp_2m_grid(schedule, sample_steps, karras)
    x = randn_per_sample(shape, generators, device)
    previous: tuple[Tensor, float] | None = None
    for i, t in enumerate(tqdm(grid.timesteps, desc="dpmpp_2m sample", unit="step", leave=False, disable=None)):
        sigma = grid.sigmas[i]
        x0 = data_prediction(x, eps_fn(x, _rows(t, x)), sigma, clip)
        x = dpmpp_2m_step(x, x0, sigma, grid.sigmas[i + 1], previous)
        previous = (x0, sigma)
    return x.clamp(-1.0, 1.0) if clip else x


def heun_sample(
    eps_fn: EpsFn, schedule: NoiseSchedule, shape: Sequence[int], generators: Sequence[torch.Generator],
    sample_steps: int, karras: bool = False, device: torch.device | str = "cpu", clip: bool = True,
) -> Tensor:
    """Heun over `heun_grid`: x_T ~ N(0, I) per image from its generator, then `heun_step`s, two network
    passes each but the last (an Euler step to σ = 0). The network sees x·α at each σ, as diffusers'
    `scale_model_input`. Deterministic."""
    grid = heun_grid(schedule, sample_steps, karras)

    def denoise(x: Tensor, i: int) -> Tensor:
        sigma = grid.sigmas[i]
        eps = eps_fn(x / math.sqrt(sigma**2 + 1.0), _rows(grid.timesteps[i], x))
        x0 = x - sigma * eps
        return x0.clamp(-1.0, 1.0) if clip else x0

    x = randn_per_sample(shape, generators, device) * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    for i in tqdm(range(sample_steps), desc="heun sample", unit="step", leave=False, disable=None):
        x = heun_step(x, denoise(x, i), grid.sigmas[i], grid.sigmas[i + 1], partial(denoise, i=i + 1))
    return x.clamp(-1.0, 1.0) if clip else x
