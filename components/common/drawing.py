"""Drawing images from a model: image i comes from its own generator seeded by (seed, i) and, for a
class-conditional model, has class i % num_classes. The sample stage, the FID curve during training, a registered
version's `predict` and the report's grids all draw through here, so they agree bit for bit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from genbench.components.common.artifacts import to_uint8_nhwc
from genbench.models.base import GenerativeModel
from genbench.models.config import SamplingConfig
from genbench.models.samplers import draw


def image_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator that owns every random draw of image `index` under `seed`."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def image_labels(indices: Sequence[int], num_classes: int) -> torch.Tensor | None:
    """Class i % num_classes for image i: balanced and a function of i alone; None for unconditional models."""
    return torch.tensor(list(indices), dtype=torch.long) % num_classes if num_classes else None


@torch.no_grad()
def draw_images(model: GenerativeModel, indices: Sequence[int], seed: int, sampling: SamplingConfig,
                labels: torch.Tensor | None = None) -> np.ndarray:
    """Images `indices` of `seed` as uint8 NHWC, each from its own generator: the training RNG is untouched.
    `labels` (one class per index) replace the default classes `image_labels` gives."""
    generators = [image_generator(seed, i) for i in indices]
    labels = image_labels(indices, model.num_classes) if labels is None else labels
    return to_uint8_nhwc(draw(model, generators, labels, sampling))


def draw_samples(model: GenerativeModel, n: int, seed: int, batch_size: int, sampling: SamplingConfig,
                 labels: torch.Tensor | None = None, desc: str = "sample") -> np.ndarray:
    """Images 0..n-1 of `seed` (uint8 NHWC) in batches of `batch_size`: the one loop behind `genbench sample` and a
    registered version's pyfunc `predict`. Image i depends on (seed, i) and its label alone; another batch split
    moves only float rounding, so two callers agree bit for bit at the same `batch_size`."""
    with torch.inference_mode():
        batches = [draw_images(model, range(start, min(start + batch_size, n)), seed, sampling,
                               None if labels is None else labels[start:start + batch_size])
                   for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=None)]
    return np.concatenate(batches)
