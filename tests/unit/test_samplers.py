"""Golden values of the samplers on a tiny seeded UNet (8×8 images, T = 10), as diffusers' scheduler tests do.

The expected numbers were produced by the samplers as they stood before sampling moved out of the models
(`DDPM(..., sampler=..., sample_steps=..., eta=..., guidance_scale=...).sample`, genbench c0be1c9): these tests
pin that moving them changed no number, and will catch any later change to the maths.
"""

from __future__ import annotations

import pytest
import torch

from genbench.models import build_model
from genbench.models.base import GenerativeModel
from genbench.models.config import SamplingConfig
from genbench.models.ddpm import DDPMArch
from genbench.models.samplers import SAMPLERS, DiffusionSampling, draw

GOLDEN = [  # prediction, schedule, sampler, options, image 0 row 3 columns 0-3, sum over both images
    ("eps", "linear", "ddpm", {}, [1.0, 0.190209, 0.548101, -0.244684], 3.82476),
    ("eps", "linear", "ddim", {"sample_steps": 5, "eta": 0.0}, [1.0, -1.0, -1.0, 0.874017], -12.66914),
    ("eps", "linear", "ddim", {"sample_steps": 5, "eta": 0.5}, [1.0, -0.028947, -1.0, 0.999317], 14.62294),
    ("v", "cosine", "ddpm", {}, [1.0, 0.507904, -0.304221, -0.360005], 6.93777),
    ("v", "cosine", "ddim", {"sample_steps": 5, "eta": 0.0}, [0.617739, -0.644616, -0.369171, 0.431422], -5.78954),
    ("v", "cosine", "ddim", {"sample_steps": 5, "eta": 0.5}, [0.238472, 0.125401, -1.0, 0.674596], -0.9493),
]


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def tiny_ddpm(**arch: object) -> GenerativeModel:
    """Seeded tiny DDPM whose zero-initialised layers get small random weights, so every path matters."""
    torch.manual_seed(0)
    model = build_model("ddpm", 1, 8, {"base_channels": 8, "channel_mults": (1, 2), "timesteps": 10, **arch}).eval()
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
    DiffusionSampling(sampler="ddpm", sample_steps=20, guidance_scale=2.0).check(DDPMArch(timesteps=10, num_classes=3))
