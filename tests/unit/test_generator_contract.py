"""The pyfunc contract in memory: what a request may send a loaded version and the errors a bad one gets.

A tiny class-conditional DDPM (8×8, T = 4, untrained, its zero-initialised layers given small random weights so
the labels matter) stands in for a registered version; tests/stages checks a registered one against `genbench
sample`, tests/services through a fresh process and the REST server.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from genbench.components.common.artifacts import ImageShape, RunRecord
from genbench.components.common.drawing import draw_samples
from genbench.components.register.generator_contract import Generator, request_options, signature
from genbench.models import build_model
from genbench.models.samplers import DiffusionSampling

ARCH = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
        "timesteps": 4, "num_classes": 3, "dropout": 0.0}
REGISTERED = DiffusionSampling(sampler="ddim", sample_steps=2, eta=0.5)  # what the version's samples were drawn with


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    model = build_model("ddpm", 1, 8, ARCH).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.1)
    record = RunRecord(entry="ddpm_cfg", family="ddpm", seed=0, image=ImageShape(channels=1, size=8), arch=ARCH,
                       train={}, train_data_md5="0" * 32)
    return Generator(model, record, batch_size=2, ema=True)


def ask(generator: Generator, n: int, seed: int, labels: list[int] | None = None, **params: object) -> np.ndarray:
    """A request as MLflow hands it over: one row, and params with the registered values filled in."""
    row = {"n": [n], "seed": [seed]} | ({"labels": [labels]} if labels is not None else {})
    return generator.predict(pd.DataFrame(row), request_options(REGISTERED) | params)


def test_a_request_draws_what_genbench_sample_draws(generator: Generator) -> None:
    images = ask(generator, 5, 7)
    assert images.dtype == np.uint8 and images.shape == (5, 8, 8, 1)
    # the loop `genbench sample` runs, at the same batch size: image i of class i % 3
    assert np.array_equal(images, draw_samples(generator.model, 5, 7, 2, REGISTERED))
    assert np.array_equal(ask(generator, 5, 7, labels=[0, 1, 2, 0, 1]), images)  # the default classes, sent
    assert not np.array_equal(ask(generator, 5, 7, labels=[2, 2, 2, 2, 2]), images)  # other classes, other images
    assert not np.array_equal(ask(generator, 5, 7, eta=0.0), images)  # a sampler option reaches the sampler


@pytest.mark.parametrize(("row", "params", "message"), [
    ({"n": [0], "seed": [0]}, {}, "n: the number of images must be at least 1 (got 0)"),
    ({"n": [2], "seed": [-1]}, {}, "seed: must be 0 or more (got -1)"),
    ({"n": [2, 2], "seed": [0, 1]}, {}, "input: 2 rows; send one row (n, seed) per request"),
    ({"n": [2], "seed": [0], "labels": [[1]]}, {}, "labels: 1 classes for n=2 images; send one per image or none"),
    ({"n": [2], "seed": [0], "labels": [[1, 3]]}, {}, "labels: classes must be in [0, 3) (got [1, 3])"),
    ({"n": [2], "seed": [0]}, {"sampler": "euler"},
     "params.sampler: Input should be 'ddpm', 'ddim', 'dpmpp_2m' or 'heun' (got 'euler')"),
    ({"n": [2], "seed": [0]}, {"sample_steps": 5}, "params: sample_steps=5 exceeds the model's timesteps=4"),
])
def test_a_bad_request_names_its_field(generator: Generator, row: dict, params: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        generator.predict(pd.DataFrame(row), request_options(REGISTERED) | params)
    assert str(error.value) == message


def test_the_signature_declares_the_request_and_the_registered_options() -> None:
    options = request_options(REGISTERED)
    assert options == {"sampler": "ddim", "sample_steps": 2, "eta": 0.5, "karras_sigmas": False, "guidance_scale": 1.0,
                       "variance_type": "fixed_large"}  # every sampling field but ema, which picks weights at load
    conditional = signature(ImageShape(channels=3, size=32), 10, options)
    assert conditional.inputs.input_names() == ["n", "seed", "labels"]
    assert [spec.name for spec in conditional.inputs.inputs if spec.required] == ["n", "seed"]
    assert conditional.outputs.to_dict() == [{"name": "images", "type": "tensor",
                                              "tensor-spec": {"dtype": "uint8", "shape": (-1, 32, 32, 3)}}]
    assert [(p["name"], p["type"], p["default"]) for p in conditional.params.to_dict()] == [
        ("sampler", "string", "ddim"), ("sample_steps", "long", 2), ("eta", "double", 0.5),
        ("karras_sigmas", "boolean", False), ("guidance_scale", "double", 1.0),
        ("variance_type", "string", "fixed_large")]
    prior = signature(ImageShape(channels=1, size=28), 0, {})  # a VAE or GAN: no labels, no options
    assert prior.inputs.input_names() == ["n", "seed"] and prior.params is None
