"""The two ways images reach the FID network's 299×299: legacy-tf (TF1 bilinear, the default; its agreement with
torch-fidelity is tests/stages/test_evaluate.py's) and clean, checked here against clean-fid's own resize function
(the `clean-fid` package, a test-only dependency; its network weights are not needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanfid.resize import make_resizer

from genbench.components.evaluate.features import reference_stats_key
from genbench.components.evaluate.inception import (
    INPUT_SIZE,
    PREPROCESSING,
    InceptionFeatures,
    clean_resize_bicubic,
    preprocessing,
    tf1_resize_bilinear,
)
from genbench.config import EvaluateConfig


def _images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (2, 32, 32, 3), (1, 400, 300, 3)])  # grey, RGB, a shrink
def test_clean_resize_is_clean_fids_resizer(shape: tuple[int, ...]) -> None:
    """clean-fid's "clean" mode (`make_resizer("PIL", False, "bicubic", (299, 299))`, applied to each HWC RGB
    image: a grey image reaches it as three equal channels) against ours on NCHW batches, to the last bit."""
    images = _images(shape)
    theirs = make_resizer("PIL", False, "bicubic", (INPUT_SIZE, INPUT_SIZE))
    expected = np.stack([theirs(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) for image in images])
    ours = clean_resize_bicubic(torch.from_numpy(images).permute(0, 3, 1, 2).float(), INPUT_SIZE)
    ours = ours.repeat(1, 3 // shape[3], 1, 1).permute(0, 2, 3, 1).numpy()
    assert expected.dtype == ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


class _Recorder(torch.nn.Module):
    """A stand-in network that keeps what it was given and returns its per-channel means as 'features'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return x.mean(dim=(2, 3))


@pytest.mark.parametrize("resize", ["legacy-tf", "clean"])
def test_each_mode_feeds_the_network_its_own_resize_on_three_channels(resize: str) -> None:
    images = torch.from_numpy(_images((2, 28, 28, 1), seed=1)).permute(0, 3, 1, 2)
    network = _Recorder()
    InceptionFeatures(network, resize=resize)(images)
    resized = (tf1_resize_bilinear(images.float().repeat(1, 3, 1, 1), INPUT_SIZE) if resize == "legacy-tf"
               else clean_resize_bicubic(images.float(), INPUT_SIZE).repeat(1, 3, 1, 1))
    torch.testing.assert_close(network.seen, (resized - 128.0) / 128.0, rtol=0, atol=0)


def test_the_modes_differ_and_legacy_stays_the_default_with_its_old_record() -> None:
    images = torch.from_numpy(_images((1, 28, 28, 1), seed=2)).permute(0, 3, 1, 2).float()
    legacy = tf1_resize_bilinear(images, INPUT_SIZE)
    clean = clean_resize_bicubic(images, INPUT_SIZE)
    assert (legacy - clean).abs().max() > 1.0  # a different filter, not a rounding difference
    assert EvaluateConfig().resize == "legacy-tf"
    assert preprocessing() == preprocessing("legacy-tf") == PREPROCESSING  # old metrics files and caches stay valid
    assert preprocessing("clean")["resize"] != PREPROCESSING["resize"]
    identity = {"name": "inception", "sha256": "ab"}
    assert reference_stats_key("md5", identity, preprocessing("clean")) != \
        reference_stats_key("md5", identity, preprocessing("legacy-tf"))


def test_an_unknown_mode_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="legacy-tf, clean"):
        InceptionFeatures(_Recorder(), resize="bicubic")
    with pytest.raises(ValueError, match="resize"):
        EvaluateConfig(resize="bicubic")  # type: ignore[arg-type]
