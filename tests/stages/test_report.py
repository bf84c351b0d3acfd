"""The report's sample grids: the same pixels as torchvision's `save_image`, which they replace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genbench.components.report import save_grid


@pytest.mark.parametrize("shape", [(64, 28, 28, 1), (13, 32, 32, 3), (5, 28, 28, 1)])
def test_grids_match_torchvision_pixel_for_pixel(shape: tuple[int, ...], tmp_path: Path) -> None:
    from torchvision.utils import save_image

    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    save_grid(images, tmp_path / "ours.png")
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    batch = batch.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    save_image(batch, tmp_path / "theirs.png", nrow=8, padding=2, pad_value=1.0, format="png")
    ours, theirs = np.asarray(Image.open(tmp_path / "ours.png")), np.asarray(Image.open(tmp_path / "theirs.png"))
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)
