"""DPM-Solver++ 2M and Heun (models/solvers.py) checked step by step against diffusers' schedulers.

Each side runs the same deterministic toy network (a fixed random linear map of x plus functions of t and of the
class) from the same x_T; every network input (x and t) and the final x must agree. diffusers is configured with
`trained_betas` = our betas, and its float32 cumulative product is replaced by ours (float64), as
test_samplers.py does for DDPM: in float32, 1 - abar_t near t = 0 keeps only a few digits, which would test
diffusers' rounding rather than the maths. The full matrix (schedules, ε and v, guidance, Karras σ, step counts)
runs in float64 with diffusers' σ replaced by ours, which the grid test finds equal to float32 rounding; a smaller
one runs in float32, as sampling does, against diffusers as it comes.

A v-network reaches our solvers as ε, converted inside the model (`diffusion.noise_predictor`) at the timestep the
network is told; diffusers converts v itself, with the solver's σ. The two agree where that σ is the timestep's
own; on Karras grids it lies between the training timesteps, so there diffusers is given the ε our model path
makes (what the solver itself must match), and the conversion is checked off those grids.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

from genbench.models import build_model
from genbench.models.base import GenerativeModel, randn_per_sample
from genbench.models.ddpm import DDPMArch
from genbench.models.diffusion import noise_predictor
from genbench.models.samplers import SAMPLERS, DiffusionSampling, draw
from genbench.models.schedules import NoiseSchedule, make_schedule
from genbench.models.solvers import dpmpp_2m_grid, dpmpp_2m_sample, heun_grid, heun_sample

# diffusers' set_timesteps reads its torch abar through np.array, which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
SHAPE = (1, 4, 4)  # per image; two images per run
SOLVERS = {"dpmpp_2m": (dpmpp_2m_sample, dpmpp_2m_grid), "heun": (heun_sample, heun_grid)}
CASES = [(1000, 2), (1000, 5), (1000, 10), (1000, 50), (50, 2), (50, 5), (50, 20)]  # (T, sample_steps)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # float32's, for the float64 runs
Seen = list[tuple[Tensor, Tensor]]  # (t, x) of every network pass, in order


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


class ToyNet:
    """A `Denoiser` made of a fixed random linear map of x, sin(3t/T) times a fixed vector and a fixed vector per
    class (row num_classes being "no class"): cheap, smooth in t, exactly repeatable. As a v-network that is its
    output; as an ε-network it is the same in ε, sqrt(1 - abar_t) x + sqrt(abar_t) (that), where the first term is
    the noise of data drawn from N(0, I), so that x0 estimates keep the data's size at every t."""

    def __init__(self, schedule: NoiseSchedule, prediction: str = "eps", num_classes: int = 0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        size = math.prod(SHAPE)
        self.weight = torch.randn(size, size, generator=g) * 0.5 / math.sqrt(size)
        self.bias = torch.randn(size, generator=g) * 0.5
        self.classes = torch.randn(num_classes + 1, size, generator=g) * 0.5
        self.schedule, self.prediction, self.num_classes = schedule, prediction, num_classes
        self.rows = 0  # images through the network so far

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        self.rows += x.shape[0]
        t = t.reshape(-1).expand(x.shape[0])
        flat = x.flatten(1)
        out = flat @ self.weight.T.to(x.dtype) + torch.sin(3.0 * t.double() / self.schedule.timesteps)[:, None].to(
            x.dtype) * self.bias.to(x.dtype)
        if y is not None:
            out = out + self.classes[y].to(x.dtype)
        if self.prediction == "eps":  # ε for the v above, at t's noise level as the model path converts it
            out = self.schedule.eps_from_v(flat, t if t.is_floating_point() else t.long(), out)
        return out.view_as(x)


def recorded(fn: Callable[[Tensor, Tensor], Tensor], seen: Seen) -> Callable[[Tensor, Tensor], Tensor]:
    def call(x: Tensor, t: Tensor) -> Tensor:
        seen.append((t.reshape(-1)[0].clone(), x.clone()))
        return fn(x, t)

    return call


def scheduler(solver: str, schedule: NoiseSchedule, steps: int, prediction: str = "epsilon", karras: bool = False,
              clip: bool = False, exact: bool = False):
    """diffusers' scheduler for `solver` on our betas (and our float64 abar), set to `steps`. `clip`: the
    settings whose x0 clamp is ours (Heun's clip_sample; DPM-Solver++'s thresholding with max 1, whose per-image
    threshold is then 1: a plain clamp). `exact`: its σ (float32) replaced by ours (float64), which
    `test_the_grids_are_diffusers` finds equal to float32 rounding, for a float64 run."""
    from diffusers import DPMSolverMultistepScheduler, HeunDiscreteScheduler

    common = {"num_train_timesteps": schedule.timesteps, "trained_betas": schedule.betas.numpy(),
              "prediction_type": prediction, "use_karras_sigmas": karras}
    if solver == "dpmpp_2m":
        made = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
                                           timestep_spacing="linspace", thresholding=clip, sample_max_value=1.0)
    else:
        made = HeunDiscreteScheduler(**common, timestep_spacing="linspace", clip_sample=clip)
    made.alphas_cumprod = schedule.alphas_cumprod.clone()
    made.set_timesteps(steps)
    # From pure noise a pipeline starts at the first index; left to find it, diffusers takes the second of two
    # equal first timesteps (its image-to-image rule), as a Karras grid on the cosine schedule rounds them.
    made.set_begin_index(0)
    if exact:
        sigmas = torch.tensor(SOLVERS[solver][1](schedule, steps, karras).sigmas, dtype=torch.float64)
        if solver == "heun":  # its layout: each σ but the first and the last twice, once per pass
            sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        assert sigmas.shape == made.sigmas.shape
        made.sigmas = sigmas
    return made


def run_diffusers(made, fn: Callable[[Tensor, Tensor], Tensor], x_T: Tensor) -> tuple[Seen, Tensor]:
    """A diffusers pipeline's loop from `x_T`, in the scheduler's own scaling."""
    seen: Seen = []
    sample = x_T.clone()
    for t in made.timesteps:
        x = made.scale_model_input(sample, t)
        seen.append((t.clone(), x.clone()))
        sample = made.step(fn(x, t.reshape(1).expand(x.shape[0])), t, sample).prev_sample
    return seen, sample


def start(solver: str, schedule: NoiseSchedule, steps: int, karras: bool, seeds: list[int],
          shape: tuple[int, ...] = SHAPE) -> Tensor:
    """Our x_T as diffusers holds it: Heun's x is the model's over α (x_T / α at the first σ)."""
    x_T = randn_per_sample(shape, generators(seeds))
    return x_T * math.sqrt(1.0 + heun_grid(schedule, steps, karras).sigmas[0] ** 2) if solver == "heun" else x_T


def assert_same_path(ours: Seen, final: Tensor, theirs: Seen, their_final: Tensor, **tolerance: float) -> None:
    assert len(ours) == len(theirs)
    for i, ((t, x), (their_t, their_x)) in enumerate(zip(ours, theirs)):
        assert t.dtype == their_t.dtype and t.item() == their_t.item(), f"pass {i}: t {t} against {their_t}"
        torch.testing.assert_close(x, their_x, **(tolerance or TOLERANCE), msg=lambda m: f"pass {i}: {m}")
    torch.testing.assert_close(final, their_final, **(tolerance or TOLERANCE), msg=lambda m: f"final: {m}")


@pytest.fixture
def float64() -> Iterator[None]:
    """Images in float64 for the test: the samplers draw x_T, and so work, in the default dtype."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def walk_both(solver: str, schedule: NoiseSchedule, steps: int, karras: bool, prediction: str, guidance: float,
              exact: bool) -> tuple[Seen, Tensor, Seen, Tensor]:
    """Our solver and diffusers' from the same x_T on the same toy network, guided alike (two images, classes 0
    and 2): ours through `noise_predictor` (both branches in one batch, v → ε inside), diffusers' by hand on
    the raw output (two calls, v converted by the scheduler unless on a Karras grid; module docstring)."""
    net = ToyNet(schedule, prediction, num_classes=3)
    labels = torch.tensor([0, 2])
    ours_eps = noise_predictor(net, schedule, prediction, labels, guidance_scale=guidance)
    null = torch.full_like(labels, net.num_classes)

    def combined(x: Tensor, t: Tensor) -> Tensor:
        conditional, unconditional = net(x, t, labels), net(x, t, null)
        return unconditional + guidance * (conditional - unconditional)

    if prediction == "eps":
        made, theirs_fn = scheduler(solver, schedule, steps, "epsilon", karras, exact=exact), combined
    elif not karras:  # v converted at the same σ on both sides: diffusers is given the raw v
        made, theirs_fn = scheduler(solver, schedule, steps, "v_prediction", karras, exact=exact), combined
    else:  # Karras σ between timesteps: diffusers is given the ε our model path makes
        made, theirs_fn = scheduler(solver, schedule, steps, "epsilon", karras, exact=exact), ours_eps
    ours: Seen = []
    final = SOLVERS[solver][0](recorded(ours_eps, ours), schedule, SHAPE, generators([0, 1]), steps, karras,
                               clip=False)
    return ours, final, *run_diffusers(made, theirs_fn, start(solver, schedule, steps, karras, [0, 1]))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("karras", [False, True], ids=["linspace", "karras"])
@pytest.mark.parametrize(("timesteps", "steps"), CASES, ids=[f"T{t}-{n}" for t, n in CASES])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("guidance", [1.0, 2.0], ids=["unguided", "guided"])
@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun"])
def test_the_solver_walks_diffusers_path(solver: str, schedule_name: str, guidance: float, prediction: str,
                                         timesteps: int, steps: int, karras: bool) -> None:
    """The maths, in float64 with diffusers' σ replaced by ours: every network input and the result agree to
    float32 precision (DPM-Solver++ rounds its sample to float32 each step; diffusers' Heun computes in the
    sample's dtype). Few linspace steps of Heun from the cosine schedule's σ_max are badly conditioned: the
    trajectory grows large, which is why this runs in float64."""
    assert_same_path(*walk_both(solver, make_schedule(schedule_name, timesteps), steps, karras, prediction,
                                guidance, exact=True))


FLOAT32 = [("linear", "eps"), ("linear", "v"), ("cosine", "eps")]
FLOAT32_CASES = [(1000, 10), (1000, 50), (50, 5)]


@pytest.mark.parametrize("karras", [False, True], ids=["linspace", "karras"])
@pytest.mark.parametrize(("timesteps", "steps"), FLOAT32_CASES, ids=[f"T{t}-{n}" for t, n in FLOAT32_CASES])
@pytest.mark.parametrize(("schedule_name", "prediction"), FLOAT32, ids=[f"{s}-{p}" for s, p in FLOAT32])
@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun"])
def test_in_float32_the_solver_stays_by_diffusers(solver: str, schedule_name: str, prediction: str,
                                                  timesteps: int, steps: int, karras: bool) -> None:
    """As the samplers run, float32 images, against diffusers as it comes (σ in float32): agreement to float32
    tolerance. Not on the cosine schedule with a v-network: there abar_T is so small that v → ε → x0 in
    float32 (our model path) keeps only a few digits of x0 at the first step, where diffusers goes v → x0."""
    assert_same_path(*walk_both(solver, make_schedule(schedule_name, timesteps), steps, karras, prediction, 2.0,
                                exact=False), rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun"])
def test_the_clamped_x0_is_diffusers_clamp(solver: str) -> None:
    """With `clip` (pixel models) our x0 clamp is Heun's clip_sample and DPM-Solver++'s thresholding at max 1."""
    schedule = make_schedule("linear", 1000)
    net = ToyNet(schedule)
    eps = noise_predictor(net, schedule, "eps")
    ours: Seen = []
    final = SOLVERS[solver][0](recorded(eps, ours), schedule, SHAPE, generators([0, 1]), 10, clip=True)
    theirs, their_final = run_diffusers(scheduler(solver, schedule, 10, clip=True, exact=True), eps,
                                        start(solver, schedule, 10, False, [0, 1]))
    assert_same_path(ours, final, theirs, their_final.clamp(-1, 1))
    unclipped = SOLVERS[solver][0](eps, schedule, SHAPE, generators([0, 1]), 10, clip=False)
    assert final.abs().max() <= 1 and not torch.allclose(final, unclipped)  # the clamp bites on this net


@pytest.mark.parametrize("karras", [False, True], ids=["linspace", "karras"])
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 49, 50])
@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [1000, 50])
@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun"])
def test_the_grids_are_diffusers(solver: str, timesteps: int, schedule_name: str, steps: int, karras: bool) -> None:
    """Our timesteps are diffusers' `scheduler.timesteps` exactly (Heun's list names each but the first twice,
    once per pass), our σ its `scheduler.sigmas` to float32 rounding."""
    schedule = make_schedule(schedule_name, timesteps)
    if (solver == "heun" and steps < 2) or (solver == "dpmpp_2m" and steps == timesteps and not karras):
        with pytest.raises(ValueError, match=f"{solver} takes sample_steps"):
            SOLVERS[solver][1](schedule, steps, karras)
        return
    grid, made = SOLVERS[solver][1](schedule, steps, karras), scheduler(solver, schedule, steps, karras=karras)
    times, sigmas = grid.timesteps, torch.tensor(grid.sigmas)
    if solver == "heun":  # one t per network pass, one σ per half step
        times = torch.cat([times[:1], times[1:].repeat_interleave(2)])
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
    assert times.dtype == made.timesteps.dtype and torch.equal(times, made.timesteps)
    torch.testing.assert_close(sigmas.float(), made.sigmas, rtol=1e-6, atol=0)
    assert len(grid.timesteps) == steps and grid.sigmas[-1] == 0.0


def tiny_ddpm(**arch: object) -> GenerativeModel:
    """A seeded 8×8 DDPM (T = 10) whose zero-initialised layers get small random weights, so every path matters."""
    torch.manual_seed(0)
    model = build_model("ddpm", 1, 8, {"base_channels": 8, "channel_mults": (1, 2), "timesteps": 10,
                                       "attention_resolutions": (), "num_res_blocks": 1, "dropout": 0.0, **arch})
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_a_tiny_ddpm_is_sampled_through_its_model_path_as_diffusers_samples_it(solver: str, prediction: str) -> None:
    """The sampler in `SAMPLERS`, through `_noise_predictor` and the model's own guidance (one batch) and v → ε,
    against diffusers driving the raw network, guided by hand (two passes), on a tiny conditional DDPM in
    float32, x0 clamped as the DDPM does (diffusers' settings for it: `test_the_clamped_x0_is_diffusers_clamp`).
    Heun's 5 steps over T = 50 put the network at fractional timesteps, where the model converts v at the
    interpolated σ. A random UNet is no denoiser, and float32 rounding grows along its path, hence the wider
    tolerance."""
    model = tiny_ddpm(prediction=prediction, num_classes=3, timesteps=50)
    labels, scale = torch.tensor([1, 2]), 2.0
    null = torch.full_like(labels, 3)
    inner, ours = model.noise_predictor, []
    model.noise_predictor = lambda y, s: recorded(inner(y, s), ours)  # type: ignore[method-assign]
    final = SAMPLERS[solver](model, generators([0, 1]), labels, sample_steps=5, guidance_scale=scale)

    def combined(x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            conditional, unconditional = model.net(x, t, labels), model.net(x, t, null)
        return unconditional + scale * (conditional - unconditional)

    made = scheduler(solver, model.schedule, 5, "epsilon" if prediction == "eps" else "v_prediction", clip=True)
    theirs, their_final = run_diffusers(made, combined, start(solver, model.schedule, 5, False, [0, 1], (1, 8, 8)))
    assert_same_path(ours, final, theirs, their_final.clamp(-1, 1), rtol=5e-4, atol=5e-4)
    if solver == "heun":
        assert any(t != t.round() for t, _ in ours)  # fractional timesteps were exercised


@pytest.mark.parametrize(("sampler", "options"), [
    ("dpmpp_2m", {"sample_steps": 4}), ("dpmpp_2m", {"sample_steps": 6, "karras_sigmas": True}),
    ("heun", {"sample_steps": 3}), ("heun", {"sample_steps": 4, "karras_sigmas": True}),
])
def test_draw_samples_a_tiny_ddpm_by_the_solvers_reproducibly(sampler: str, options: dict) -> None:
    model = tiny_ddpm(num_classes=3, timesteps=50)
    settings = DiffusionSampling(sampler=sampler, guidance_scale=2.0, **options)
    assert settings.sampler_call() == (sampler, {"guidance_scale": 2.0, "karras_sigmas": False, **options})
    labels = torch.tensor([0, 1, 2])
    images = draw(model, generators([0, 1, 2]), labels, settings)
    assert images.shape == (3, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(draw(model, generators([0, 1, 2]), labels, settings), images, rtol=0, atol=0)
    alone = draw(model, generators([1]), labels[1:2], settings)  # image i depends on generators[i] only
    torch.testing.assert_close(alone[0], images[1], rtol=0, atol=1e-4)  # convolutions may sum in another order
    assert not torch.allclose(draw(model, generators([3, 1, 2]), labels, settings)[0], images[0])


@pytest.mark.parametrize(("settings", "passes"), [
    ({"sampler": "dpmpp_2m", "sample_steps": 5}, 5),
    ({"sampler": "dpmpp_2m", "sample_steps": 5, "karras_sigmas": True, "guidance_scale": 0.0}, 5),
    ({"sampler": "dpmpp_2m", "sample_steps": 5, "guidance_scale": 1.3}, 10),
    ({"sampler": "heun", "sample_steps": 5}, 9),
    ({"sampler": "heun", "sample_steps": 2, "karras_sigmas": True}, 3),
    ({"sampler": "heun", "sample_steps": 5, "guidance_scale": 3.0}, 18),
])
def test_network_evaluations_count_the_solvers_passes(settings: dict, passes: int) -> None:
    """The count the report shows is the images the network sees per image sampled."""
    sampling = DiffusionSampling(**settings)
    assert sampling.network_evaluations(DDPMArch(timesteps=20, num_classes=3)) == passes
    schedule = make_schedule("linear", 20)
    net = ToyNet(schedule, num_classes=3)
    eps = noise_predictor(net, schedule, "eps", torch.tensor([0]), guidance_scale=sampling.guidance_scale)
    SOLVERS[sampling.sampler][0](eps, schedule, SHAPE, generators([0]), sampling.sample_steps, sampling.karras_sigmas)
    assert net.rows == passes


BOTH = "only samplers dpmpp_2m and heun take karras_sigmas; remove it or set sampler: dpmpp_2m or heun"
STEPS = ("only samplers ddim, dpmpp_2m and heun take sample_steps; remove it or set sampler: ddim, dpmpp_2m or "
         "heun")


@pytest.mark.parametrize(("settings", "option", "message"), [
    ({"sampler": "ddpm", "karras_sigmas": True}, "karras_sigmas", BOTH),
    ({"sampler": "ddim", "karras_sigmas": True}, "karras_sigmas", BOTH),
    ({"karras_sigmas": True}, "karras_sigmas", BOTH),  # ddpm is the default sampler
    ({"sampler": "ddpm", "sample_steps": 10}, "sample_steps", STEPS),
    ({"sampler": "heun", "eta": 0.5}, "eta", "only sampler ddim takes eta; remove it or set sampler: ddim"),
    ({"sampler": "dpmpp_2m", "variance_type": "fixed_small"}, "variance_type",
     "only sampler ddpm takes variance_type; remove it or set sampler: ddpm"),
])
def test_an_option_the_solver_ignores_is_refused_naming_its_takers(settings: dict, option: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DiffusionSampling(**settings)
    [error] = caught.value.errors()
    assert error["loc"] == (option,) and error["msg"] == f"Value error, {message}"


def test_the_solvers_settings_are_checked_against_the_model() -> None:
    arch = DDPMArch(timesteps=10)
    for sampler in ("ddim", "dpmpp_2m", "heun"):
        with pytest.raises(ValueError, match="sample_steps=11 exceeds the model's timesteps=10"):
            DiffusionSampling(sampler=sampler, sample_steps=11).check(arch)
    with pytest.raises(ValueError, match=r"heun takes sample_steps in \[2, 10\], got 1"):
        DiffusionSampling(sampler="heun", sample_steps=1).check(arch)
    with pytest.raises(ValueError, match="dpmpp_2m takes sample_steps < timesteps=10 without karras_sigmas"):
        DiffusionSampling(sampler="dpmpp_2m", sample_steps=10).check(arch)
    for settings in ({"sampler": "dpmpp_2m", "sample_steps": 10, "karras_sigmas": True},
                     {"sampler": "dpmpp_2m", "sample_steps": 1}, {"sampler": "heun", "sample_steps": 10},
                     {"sampler": "heun", "sample_steps": 2, "karras_sigmas": True}):
        DiffusionSampling(**settings).check(arch)
        DiffusionSampling(**settings).check(DDPMArch(timesteps=10, schedule="cosine"))


def test_a_sweep_between_samplers_keeps_the_options_the_new_one_takes() -> None:
    entry = DiffusionSampling(sampler="dpmpp_2m", sample_steps=20, karras_sigmas=True)
    assert entry.updated({"sampler": "heun"}).sampler_call() == (
        "heun", {"guidance_scale": 1.0, "sample_steps": 20, "karras_sigmas": True})
    assert entry.updated({"sampler": "ddim"}).sampler_call() == (
        "ddim", {"guidance_scale": 1.0, "sample_steps": 20, "eta": 0.0})
    assert entry.updated({"sampler": "ddpm"}).sample_steps == 100  # left behind: ddpm walks all T
    for settings in (entry, DiffusionSampling(sampler="heun", sample_steps=3)):
        assert DiffusionSampling.model_validate(settings.model_dump()) == settings
