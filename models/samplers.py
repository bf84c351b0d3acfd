"""Samplers, apart from the models they sample, as diffusers keeps schedulers apart from UNets: a sampler takes
the model and its options at call time, so a change of sampler, step count, η or guidance scale never
touches training and a sweep re-samples the same weights.

`SAMPLERS` maps a name to `sampler(model, generators, labels, **options) -> images in [-1, 1]`:
  prior  the family's own `sample` (VAE and GANs: decode z ~ N(0, I))
  ddpm   ancestral sampling over all T steps (Ho et al., 2020, algorithm 2), σ_t² = β_t (`fixed_large`) or
         the posterior variance β̃_t (`fixed_small`)
  ddim   DDIM over `sample_steps` of them (Song et al., 2021), η from 0 (deterministic) to 1 (DDPM-like)
  dpmpp_2m  DPM-Solver++ 2M over `sample_steps` (Lu et al., 2022), linspace or Karras σ (`karras_sigmas`)
  heun   Heun's second-order ODE solver over `sample_steps` (Karras et al., 2022, Algorithm 1), two network
         passes a step but the last; linspace or Karras σ. Both solvers are deterministic (models/solvers.py)
The diffusion samplers drive any `Diffusion` model (DDPM, and the LDM in its latent space) through plain
functions of (noise predictor, schedule), each checkable alone. Every random draw for image i comes from
generators[i], and steps use the clipped x0 estimate when the model `clip`s (pixels live in [-1, 1]; latents
do not). The network runs in eval mode (no dropout) whatever mode the model is in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Annotated, Any, Literal, Protocol, Self

import torch
from pydantic import BaseModel, Field, ValidationInfo, field_validator
from torch import Tensor
from tqdm.auto import tqdm

from .base import GenerativeModel, eval_mode, randn_per_sample
from .config import PositiveInt, SamplingConfig
from .schedules import NoiseSchedule, make_schedule
from .solvers import EpsFn, dpmpp_2m_grid, dpmpp_2m_sample, heun_grid, heun_sample

VarianceType = Literal["fixed_small", "fixed_large"]
DiffusionSamplerName = Literal["ddpm", "ddim", "dpmpp_2m", "heun"]  # the diffusion samplers of `SAMPLERS`, once
# The options each sampler takes besides guidance_scale (every diffusion sampler's): its keywords in `SAMPLERS`.
SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {
    "ddpm": ("variance_type",),
    "ddim": ("sample_steps", "eta"),
    "dpmpp_2m": ("sample_steps", "karras_sigmas"),
    "heun": ("sample_steps", "karras_sigmas"),
}
OPTIONS = tuple(dict.fromkeys(chain(*SAMPLER_OPTIONS.values())))  # every sampler option, once
SOLVER_GRIDS = {"dpmpp_2m": dpmpp_2m_grid, "heun": heun_grid}  # the ODE solvers' grids: their step limits


def ignores(sampler: str, option: str) -> bool:
    """Whether diffusion sampler `sampler` ignores `option`, one that another sampler takes."""
    taken = SAMPLER_OPTIONS.get(sampler)
    return taken is not None and option not in taken and option in OPTIONS


def takers(option: str) -> list[str]:
    """The samplers that take `option`, in `SAMPLER_OPTIONS` order."""
    return [name for name, options in SAMPLER_OPTIONS.items() if option in options]


class DiffusionSampling(SamplingConfig):
    """The sample stage's settings for a diffusion family (`sampling.<family>` in params.yaml). An option
    written for another sampler than the chosen one is refused: it would change nothing."""

    sampler: DiffusionSamplerName = "ddpm"  # ancestral over all T, or DDIM, DPM-Solver++ 2M, Heun over sample_steps
    sample_steps: PositiveInt = 100  # ddim, dpmpp_2m and heun: their steps (<= timesteps)
    eta: Annotated[float, Field(ge=0, le=1)] = 0.0  # ddim only: its noise, 0 deterministic, 1 DDPM-like
    karras_sigmas: bool = False  # dpmpp_2m and heun: Karras et al.'s σ spacing (rho 7) instead of linspace timesteps
    guidance_scale: Annotated[float, Field(ge=0)] = 1.0  # CFG: 0 unconditional, 1 conditional, >1 guided
    # ddpm only: its step variance, fixed_large σ_t² = β_t (Ho et al.'s best CIFAR-10 FID, 3.17) or
    # fixed_small σ_t² = β̃_t, the posterior's (their better log-likelihood); under ddim, η sets it.
    variance_type: VarianceType = "fixed_large"

    @field_validator(*OPTIONS)
    @classmethod
    def _taken_by_the_sampler(cls, value: Any, info: ValidationInfo) -> Any:
        """Pydantic validates only the fields given, never a default. A given default passes: a dump of valid
        settings (a sample record, a registered model's request params) holds every option and must read back."""
        option = str(info.field_name)
        if ignores(info.data.get("sampler", ""), option) and value != cls.model_fields[option].default:
            names = takers(option)
            if len(names) == 1:
                raise ValueError(f"only sampler {names[0]} takes {option}; remove it or set sampler: {names[0]}")
            *rest, last = names
            raise ValueError(f"only samplers {', '.join(rest)} and {last} take {option}; remove it or set sampler: "
                             f"{', '.join(rest)} or {last}")
        return value

    def sampler_call(self) -> tuple[str, dict[str, Any]]:
        options = {option: getattr(self, option) for option in SAMPLER_OPTIONS[self.sampler]}
        return self.sampler, {"guidance_scale": self.guidance_scale, **options}

    def updated(self, changes: Mapping[str, Any]) -> Self:
        """As `SamplingConfig.updated`, less the options of these settings that the resulting sampler ignores: a
        DDIM sweep of an entry that sets the ddpm sampler's variance_type leaves it behind, while such an
        option in `changes` is refused as a written one."""
        sampler = changes.get("sampler", self.sampler)
        kept = {name: value for name, value in self.model_dump().items() if not ignores(sampler, name)}
        return type(self).model_validate(kept | dict(changes))

    def network_evaluations(self, arch: BaseModel) -> int:
        """Denoiser passes per image: T (ddpm), the DDIM or DPM-Solver++ steps, or 2 per Heun step but its last
        (an Euler step to the data), twice each under guidance (conditional and unconditional; once at scale 0 or
        1, where one branch is the result); an LDM's decode is not counted."""
        timesteps = getattr(arch, "timesteps")
        if self.sampler == "ddpm":
            steps = timesteps
        elif self.sampler == "ddim":
            steps = len(ddim_timesteps(timesteps, self.sample_steps))
        else:
            steps = 2 * self.sample_steps - 1 if self.sampler == "heun" else self.sample_steps
        return steps * (1 if self.guidance_scale in (0.0, 1.0) else 2)

    def at_nfe(self, arch: BaseModel, nfe: int) -> Self:
        """These settings at the most `sample_steps` the sampler runs whose `network_evaluations` stay within
        `nfe` (a point of an FID-against-NFE sweep): the count is the one the tables show, so a Heun or guided
        point never spends more network passes than its target. A step costs at least one pass, so no more than
        `nfe` steps can fit. ValueError when the sampler has no steps to choose or even its fewest take more."""
        timesteps = getattr(arch, "timesteps")
        if "sample_steps" not in SAMPLER_OPTIONS[self.sampler]:
            raise ValueError(f"sampler {self.sampler} runs all {timesteps} timesteps, so it has no step count to "
                             f"fit to an NFE target; use {', '.join(takers('sample_steps'))}")
        for steps in range(min(nfe, timesteps), 0, -1):
            candidate = self.model_copy(update={"sample_steps": steps})
            if candidate.network_evaluations(arch) <= nfe and candidate._runs_steps(arch):
                return self.updated({"sample_steps": steps})
        fewest = next((steps for steps in range(1, timesteps + 1)
                       if self.model_copy(update={"sample_steps": steps})._runs_steps(arch)), None)
        if fewest is None:
            raise ValueError(f"{self.sampler} runs no step count on a model of timesteps={timesteps}")
        needed = self.model_copy(update={"sample_steps": fewest}).network_evaluations(arch)
        raise ValueError(f"{nfe} network evaluations are too few for {self.sampler}: its fewest steps ({fewest}) "
                         f"take {needed} here")

    def _runs_steps(self, arch: BaseModel) -> bool:
        try:
            self._check_steps(arch)
        except ValueError:
            return False
        return True

    def _check_steps(self, arch: BaseModel) -> None:
        """ValueError when the sampler cannot run `sample_steps` on a model of `arch`'s timesteps."""
        timesteps = getattr(arch, "timesteps")
        if "sample_steps" in SAMPLER_OPTIONS[self.sampler] and self.sample_steps > timesteps:
            raise ValueError(f"sample_steps={self.sample_steps} exceeds the model's timesteps={timesteps}")
        if self.sampler in SOLVER_GRIDS:  # a solver's own limits on its steps, raised where its grid is built
            schedule = make_schedule(getattr(arch, "schedule"), timesteps)
            SOLVER_GRIDS[self.sampler](schedule, self.sample_steps, self.karras_sigmas)

    def check(self, arch: BaseModel) -> None:
        self._check_steps(arch)
        if self.guidance_scale != 1.0 and not getattr(arch, "num_classes"):
            raise ValueError(f"guidance_scale={self.guidance_scale} needs a class-conditional model "
                             "(arch.num_classes > 0); use 1.0")


class Diffusion(Protocol):
    """What the diffusion samplers need of a model: its schedule, the shape it diffuses in, a noise predictor
    (with classifier-free guidance for conditional models) and the map from that space to images."""

    schedule: NoiseSchedule
    num_classes: int
    clip: bool
    diffusion_shape: tuple[int, ...]

    def noise_predictor(self, labels: Tensor | None, guidance_scale: float) -> EpsFn: ...

    def decode(self, x: Tensor) -> Tensor: ...

    def parameters(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


def ddpm_step(
    schedule: NoiseSchedule, x: Tensor, t: int, eps: Tensor, noise: Tensor | None, clip: bool = True,
    variance_type: VarianceType = "fixed_large",
) -> Tensor:
    """One step of Ho et al.'s algorithm 2 from timestep t to t-1, with the mean written through an x0 estimate.

    x0 = (x_t - sqrt(1-abar_t) ε) / sqrt(abar_t) (clipped to [-1, 1] when `clip`: keeps early, poor estimates
    in the data range), the mean is q(x_{t-1} | x_t, x0)'s (eq. 7), and x_{t-1} = mean + σ_t `noise` with
    σ_t² from `NoiseSchedule.step_variance`. The last step (t = 0) returns the mean and needs no noise. This
    is diffusers' `DDPMScheduler.step` with `clip_sample=clip` and the same `variance_type`.
    """
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    x0 = schedule.predict_x0(x, tt, eps)
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    mean, _ = schedule.posterior_mean_variance(x0, x, tt)
    if t == 0:
        return mean
    if noise is None:
        raise ValueError("a ddpm step with t > 0 needs noise")
    return mean + schedule.step_variance(tt, x, variance_type).sqrt() * noise


StepHook = Callable[[int, Tensor, Tensor], None]  # (t, x_t, the predicted x0) at each step


def ddpm_sample(
    eps_fn: EpsFn, schedule: NoiseSchedule, shape: Sequence[int], generators: Sequence[torch.Generator],
    device: torch.device | str = "cpu", clip: bool = True, variance_type: VarianceType = "fixed_large",
    on_step: StepHook | None = None,
) -> Tensor:
    """Ho et al. algorithm 2: x_T ~ N(0, I), then `ddpm_step` from t = T-1 down to 0, noise drawn per image from
    its generator on every step but the last. `on_step` sees x_t and the x0 estimate of each step (it draws no
    random numbers, so the samples are the same with or without it)."""
    x = randn_per_sample(shape, generators, device)
    for step in tqdm(range(schedule.timesteps - 1, -1, -1), desc="ddpm sample", unit="step", leave=False,
                     disable=None):
        eps = eps_fn(x, torch.full((x.shape[0],), step, device=x.device, dtype=torch.long))
        if on_step is not None:
            x0 = schedule.predict_x0(x, torch.full((x.shape[0],), step, device=x.device, dtype=torch.long), eps)
            on_step(step, x, x0.clamp(-1.0, 1.0) if clip else x0)
        noise = randn_per_sample(shape, generators, device) if step > 0 else None
        x = ddpm_step(schedule, x, step, eps, noise, clip, variance_type)
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


def _noise_predictor(model: Diffusion, labels: Tensor | None, guidance_scale: float) -> tuple[EpsFn, torch.device]:
    device = next(model.parameters()).device
    if model.num_classes and labels is None:
        raise ValueError("a class-conditional model (num_classes > 0) needs labels to sample")
    if guidance_scale != 1.0 and not model.num_classes:
        raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional model (num_classes > 0)")
    labels = labels.to(device) if model.num_classes else None
    return model.noise_predictor(labels, guidance_scale), device


@torch.no_grad()
def ancestral(model: Diffusion, generators: Sequence[torch.Generator], labels: Tensor | None = None,
              guidance_scale: float = 1.0, variance_type: VarianceType = "fixed_large") -> Tensor:
    """`ddpm`: ancestral sampling over all T steps with σ_t² by `variance_type`, then the model's decoder."""
    with eval_mode(model):
        eps_fn, device = _noise_predictor(model, labels, guidance_scale)
        x = ddpm_sample(eps_fn, model.schedule, model.diffusion_shape, generators, device, model.clip, variance_type)
        return model.decode(x)


@torch.no_grad()
def trajectory(model: Diffusion, generators: Sequence[torch.Generator], times: Sequence[int],
               labels: Tensor | None = None, variance_type: VarianceType = "fixed_large"
               ) -> list[tuple[int, Tensor, Tensor]]:
    """The ancestral sampler's path, for looking at: (t, decoded x_t, decoded x0 estimate) at each of `times`
    (T-1 … 0), from the same draws as `ancestral` with the same generators."""
    kept: dict[int, tuple[Tensor, Tensor]] = {}
    wanted = set(times)

    def keep(t: int, x: Tensor, x0: Tensor) -> None:
        if t in wanted:
            kept[t] = (model.decode(x.clamp(-1.0, 1.0) if model.clip else x), model.decode(x0))

    with eval_mode(model):
        eps_fn, device = _noise_predictor(model, labels, 1.0)
        ddpm_sample(eps_fn, model.schedule, model.diffusion_shape, generators, device, model.clip, variance_type,
                    on_step=keep)
    return [(t, *kept[t]) for t in sorted(wanted, reverse=True)]


@torch.no_grad()
def ddim(model: Diffusion, generators: Sequence[torch.Generator], labels: Tensor | None = None,
         sample_steps: int = 50, eta: float = 0.0, guidance_scale: float = 1.0) -> Tensor:
    """`ddim`: DDIM over `sample_steps` evenly spread timesteps, then the model's decoder."""
    with eval_mode(model):
        eps_fn, device = _noise_predictor(model, labels, guidance_scale)
        x = ddim_sample(eps_fn, model.schedule, model.diffusion_shape, generators, sample_steps, eta, device,
                        model.clip)
        return model.decode(x)


def _ode_solver(solve: Callable[..., Tensor], name: str) -> Callable[..., Tensor]:
    """The sampler of a deterministic solver in models/solvers.py: `solve` over `sample_steps` from x_T, then the
    model's decoder (DPM-Solver++ 2M and Heun take the same options)."""

    @torch.no_grad()
    def sampler(model: Diffusion, generators: Sequence[torch.Generator], labels: Tensor | None = None,
                sample_steps: int = 20, karras_sigmas: bool = False, guidance_scale: float = 1.0) -> Tensor:
        with eval_mode(model):
            eps_fn, device = _noise_predictor(model, labels, guidance_scale)
            x = solve(eps_fn, model.schedule, model.diffusion_shape, generators, sample_steps, karras_sigmas, device,
                      model.clip)
            return model.decode(x)

    sampler.__name__ = sampler.__qualname__ = name
    sampler.__doc__ = f"`{name}`: {solve.__name__} over `sample_steps` (models/solvers.py), then the model's decoder."
    return sampler


dpmpp_2m = _ode_solver(dpmpp_2m_sample, "dpmpp_2m")  # DPM-Solver++ 2M
heun = _ode_solver(heun_sample, "heun")  # Heun's second-order method


def prior(model: GenerativeModel, generators: Sequence[torch.Generator], labels: Tensor | None = None) -> Tensor:
    """`prior`: the family's own default sampler (`GenerativeModel.sample`)."""
    return model.sample(generators, labels)


Sampler = Callable[..., Tensor]
SAMPLERS: dict[str, Sampler] = {"prior": prior, "ddpm": ancestral, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "heun": heun}


def draw(model: GenerativeModel, generators: Sequence[torch.Generator], labels: Tensor | None,
         sampling: SamplingConfig) -> Tensor:
    """Images from `model` by the sampler and options `sampling` names."""
    name, options = sampling.sampler_call()
    return SAMPLERS[name](model, generators, labels, **options)
