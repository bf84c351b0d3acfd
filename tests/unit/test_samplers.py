"""Golden values of the samplers on a tiny seeded UNet (8×8 images, T = 10), as diffusers' scheduler tests do.

The expected numbers were produced by the samplers as they stood before sampling moved out of the models
(`DDPM(..., sampler=..., sample_steps=..., eta=..., guidance_scale=...).sample`, genbench c0be1c9): these tests
pin that moving them changed no number, and will catch any later change to the maths. They run on the UNet of
that time (tests/unit/golden_unet.py), and the ddpm sampler with the variance it then had (fixed_small).
"""

from __future__ import annotations

import inspect
from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from genbench.models import build_model
from genbench.models.base import GenerativeModel
from genbench.models.config import SamplingConfig
from genbench.models.ddpm import DDPMArch
from genbench.models.ldm import LDMSampling
from genbench.models.samplers import (
    SAMPLER_OPTIONS,
    SAMPLERS,
    DiffusionSamplerName,
    DiffusionSampling,
    ddpm_step,
    draw,
)
from genbench.models.schedules import make_schedule

from .golden_unet import GoldenUNet

# The ddpm sampler's numbers were made with the posterior variance, then its only one: fixed_small.
OLD_DDPM = {"variance_type": "fixed_small"}
GOLDEN = [  # prediction, schedule, sampler, options, image 0 row 3 columns 0-3, sum over both images
    ("eps", "linear", "ddpm", OLD_DDPM, [1.0, 0.190209, 0.548101, -0.244684], 3.82476),
    ("eps", "linear", "ddim", {"sample_steps": 5, "eta": 0.0}, [1.0, -1.0, -1.0, 0.874017], -12.66914),
    ("eps", "linear", "ddim", {"sample_steps": 5, "eta": 0.5}, [1.0, -0.028947, -1.0, 0.999317], 14.62294),
    ("v", "cosine", "ddpm", OLD_DDPM, [1.0, 0.507904, -0.304221, -0.360005], 6.93777),
    ("v", "cosine", "ddim", {"sample_steps": 5, "eta": 0.0}, [0.617739, -0.644616, -0.369171, 0.431422], -5.78954),
    ("v", "cosine", "ddim", {"sample_steps": 5, "eta": 0.5}, [0.238472, 0.125401, -1.0, 0.674596], -0.9493),
]


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def tiny_ddpm(**arch: object) -> GenerativeModel:
    """Seeded tiny DDPM on the UNet the golden values were made with (`GoldenUNet`, seeded as then), whose
    zero-initialised layers get small random weights, so every path matters."""
    model = build_model("ddpm", 1, 8, {"base_channels": 8, "channel_mults": (1, 2), "timesteps": 10,
                                       "attention_resolutions": (), **arch})
    torch.manual_seed(0)
    model.net = GoldenUNet(1, 8, (1, 2), model.num_classes)
    model.eval()
    with torch.no_grad():
        for p in model.net.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize(("prediction", "schedule", "sampler", "options", "row", "total"), GOLDEN,
                         ids=[f"{g[0]}-{g[1]}-{g[2]}-{g[3].get('eta', '')}" for g in GOLDEN])
def test_samplers_reproduce_their_golden_values(prediction: str, schedule: str, sampler: str, options: dict,
                                                row: list[float], total: float) -> None:
    images = SAMPLERS[sampler](tiny_ddpm(prediction=prediction, schedule=schedule), generators([0, 1]), **options)
    torch.testing.assert_close(images[0, 0, 3, :4], torch.tensor(row), rtol=0, atol=1e-5)
    assert images.sum().item() == pytest.approx(total, abs=1e-3)


def test_guided_ddim_reproduces_its_golden_values() -> None:
    model = tiny_ddpm(num_classes=3)
    images = SAMPLERS["ddim"](model, generators([0, 1]), torch.tensor([0, 2]), sample_steps=5, guidance_scale=2.0)
    torch.testing.assert_close(images[1, 0, 4, :4], torch.tensor([1.0, 1.0, 1.0, -1.0]), rtol=0, atol=1e-5)
    assert images.sum().item() == pytest.approx(9.85553, abs=1e-3)


def test_draw_picks_the_sampler_its_settings_name() -> None:
    model = tiny_ddpm()
    settings = DiffusionSampling(sampler="ddim", sample_steps=5, eta=0.5)
    assert settings.sampler_call() == ("ddim", {"sample_steps": 5, "eta": 0.5, "guidance_scale": 1.0})
    torch.testing.assert_close(draw(model, generators([0, 1]), None, settings),
                               SAMPLERS["ddim"](model, generators([0, 1]), sample_steps=5, eta=0.5))
    torch.testing.assert_close(draw(model, generators([0, 1]), None, SamplingConfig()),
                               model.sample(generators([0, 1])))  # "prior": the family's own sampler
    assert SamplingConfig().sampler_call() == ("prior", {})


def test_sampling_settings_check_the_model_they_sample() -> None:
    with pytest.raises(ValueError, match="sample_steps=20 exceeds the model's timesteps=10"):
        DiffusionSampling(sampler="ddim", sample_steps=20).check(DDPMArch(timesteps=10))
    with pytest.raises(ValueError, match="class-conditional"):
        DiffusionSampling(guidance_scale=2.0).check(DDPMArch())
    DiffusionSampling(sampler="ddpm", guidance_scale=2.0).check(DDPMArch(timesteps=10, num_classes=3))  # 100 > T


def test_the_sampler_names_and_their_options_are_declared_once() -> None:
    names = get_args(DiffusionSamplerName)
    assert names == ("ddpm", "ddim", "dpmpp_2m", "heun")
    assert set(names) == set(SAMPLER_OPTIONS) and set(names) <= set(SAMPLERS)
    for settings in (DiffusionSampling, LDMSampling):
        assert get_args(settings.model_fields["sampler"].annotation) == names
    for name, options in SAMPLER_OPTIONS.items():
        assert {*options, "guidance_scale"} <= set(inspect.signature(SAMPLERS[name]).parameters)


STEPS_TAKERS = ("only samplers ddim, dpmpp_2m and heun take sample_steps; remove it or set sampler: ddim, "
                "dpmpp_2m or heun")


@pytest.mark.parametrize(("settings", "option", "message"), [
    ({"sampler": "ddpm", "sample_steps": 10}, "sample_steps", STEPS_TAKERS),
    ({"sample_steps": 10}, "sample_steps", STEPS_TAKERS),  # ddpm is the default sampler
    ({"sampler": "ddpm", "eta": 0.5}, "eta", "only sampler ddim takes eta; remove it or set sampler: ddim"),
    ({"sampler": "ddim", "variance_type": "fixed_small"}, "variance_type",
     "only sampler ddpm takes variance_type; remove it or set sampler: ddpm"),
])
def test_an_option_the_sampler_ignores_is_refused_naming_it(settings: dict, option: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DiffusionSampling(**settings)
    [error] = caught.value.errors()
    assert error["loc"] == (option,)
    assert error["msg"] == f"Value error, {message}"


def test_only_options_written_with_a_value_of_their_own_are_refused() -> None:
    """Defaults are never refused, nor a written default: every sample record and registered model's request
    holds a dump of all the options, which must read back."""
    assert LDMSampling(sample_steps=10).sampler == "ddim"  # the ldm's default sampler takes it
    with pytest.raises(ValidationError, match="only sampler ddpm takes variance_type"):
        LDMSampling(variance_type="fixed_small")
    for settings in (DiffusionSampling(), DiffusionSampling(variance_type="fixed_small", guidance_scale=2.0),
                     DiffusionSampling(sampler="ddim", sample_steps=5, eta=0.5), LDMSampling()):
        assert type(settings).model_validate(settings.model_dump()) == settings


def test_updated_settings_leave_behind_the_options_the_new_sampler_ignores() -> None:
    entry = DiffusionSampling(variance_type="fixed_small", guidance_scale=2.0)
    swept = entry.updated({"sampler": "ddim", "sample_steps": 5})
    assert swept.sampler_call() == ("ddim", {"guidance_scale": 2.0, "sample_steps": 5, "eta": 0.0})
    assert entry.updated({"guidance_scale": 0.0}).variance_type == "fixed_small"
    with pytest.raises(ValidationError, match="only sampler ddpm takes variance_type"):
        swept.updated({"variance_type": "fixed_small"})
    assert SamplingConfig(ema=False).updated({"ema": True}) == SamplingConfig()


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ddpm_step_is_diffusers_ddpm_scheduler_step(variance_type: str, clip: bool, dtype: torch.dtype) -> None:
    """Our ancestral step and diffusers' `DDPMScheduler.step` (same betas, variance_type and clipping) map the
    same x_t, ε and noise to the same x_{t-1}, at every kind of t including the first (t = 1) and the last
    (t = 0, no noise). diffusers draws its noise from the generator it is given, so each side gets a generator
    seeded alike.

    Tolerance. float64: diffusers' schedule tensors are replaced by ours (float64), and the steps agree to
    rtol 1e-9 / atol 1e-12: the same maths. float32: diffusers as constructed keeps its schedule in float32,
    where 1 - abar_t near t = 0 keeps only ~3 significant digits; there the steps agree to rtol 1e-3 /
    atol 5e-4 (largest differences seen: 1.9e-4 absolute, 3.5e-4 relative, at t = 1).
    """
    from diffusers import DDPMScheduler

    schedule = make_schedule("linear", 1000)  # Ho et al.'s
    scheduler = DDPMScheduler(num_train_timesteps=1000, trained_betas=schedule.betas.numpy(),
                              variance_type=variance_type, clip_sample=clip)
    tolerance = {"rtol": 1e-3, "atol": 5e-4}
    if dtype == torch.float64:
        scheduler.alphas_cumprod, scheduler.one = schedule.alphas_cumprod.clone(), torch.tensor(1.0, dtype=dtype)
        tolerance = {"rtol": 1e-9, "atol": 1e-12}
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 8, 8, generator=g, dtype=dtype), torch.randn(2, 1, 8, 8, generator=g, dtype=dtype)
    for t in (999, 500, 100, 10, 1, 0):
        theirs = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=dtype)
        ours = ddpm_step(schedule, x, t, eps, noise, clip, variance_type)
        assert ours.dtype == theirs.dtype == dtype
        torch.testing.assert_close(ours, theirs, **tolerance, msg=lambda m: f"t={t}: {m}")


def test_the_two_variances_are_ho_et_als() -> None:
    """fixed_large is β_t (Ho's code puts the posterior's β̃_1 at the first step, where no noise is added);
    fixed_small is β̃_t; the two differ by a clear margin early in the chain and their steps differ."""
    schedule = make_schedule("linear", 1000)
    t = torch.arange(1000)
    like = torch.zeros(1000, dtype=torch.float64)
    large, small = schedule.step_variance(t, like, "fixed_large"), schedule.step_variance(t, like, "fixed_small")
    torch.testing.assert_close(large[1:], schedule.betas[1:], rtol=0, atol=0)
    torch.testing.assert_close(small, schedule.posterior_variance, rtol=0, atol=0)
    assert float(large[0]) == float(schedule.posterior_variance[1])
    assert float(large[1] / small[1]) > 1.9  # β_2 / β̃_2 = (1 - abar_2) / (1 - abar_1) ≈ 2
    x, eps, noise = torch.ones(1, 4), torch.zeros(1, 4), torch.ones(1, 4)
    assert not torch.allclose(ddpm_step(schedule, x, 1, eps, noise, False, "fixed_large"),
                              ddpm_step(schedule, x, 1, eps, noise, False, "fixed_small"))
    with pytest.raises(ValueError, match="needs noise"):
        ddpm_step(schedule, x, 1, eps, None)
    last = ddpm_step(schedule, x, 0, eps, None, False)  # the last step is the x0 estimate, without noise
    torch.testing.assert_close(last, x / float(schedule.alphas_cumprod[0]) ** 0.5)


def test_the_default_ddpm_sampler_is_fixed_large_and_the_setting_reaches_it() -> None:
    model = tiny_ddpm()
    assert DiffusionSampling().variance_type == "fixed_large"
    assert DiffusionSampling().sampler_call() == ("ddpm", {"guidance_scale": 1.0, "variance_type": "fixed_large"})
    small = DiffusionSampling(variance_type="fixed_small")
    torch.testing.assert_close(draw(model, generators([0, 1]), None, small),
                               SAMPLERS["ddpm"](model, generators([0, 1]), variance_type="fixed_small"))
    torch.testing.assert_close(model.sample(generators([0, 1])),
                               SAMPLERS["ddpm"](model, generators([0, 1]), variance_type="fixed_large"))
    assert not torch.allclose(model.sample(generators([0, 1])), draw(model, generators([0, 1]), None, small))


@pytest.mark.parametrize(("settings", "passes"), [
    ({"sampler": "ddpm"}, 20),
    ({"sampler": "ddim", "sample_steps": 5}, 5),
    ({"sampler": "ddim", "sample_steps": 5, "guidance_scale": 0.0}, 5),  # the unconditional branch alone
    ({"sampler": "ddim", "sample_steps": 5, "guidance_scale": 1.3}, 10),  # conditional and unconditional
])
def test_network_evaluations_count_the_denoiser_passes(settings: dict, passes: int) -> None:
    assert DiffusionSampling(**settings).network_evaluations(DDPMArch(timesteps=20, num_classes=10)) == passes
