"""The `paper` protocol's streamed training-split statistics equal the two-pass ones, and a stopped pass resumes."""

from __future__ import annotations

import numpy as np
import pytest

from genbench.components.evaluate import training_stats
from genbench.components.evaluate.inception import NUM_FEATURES
from genbench.components.evaluate.metrics import feature_stats
from genbench.components.evaluate.training_stats import RunningMoments, training_statistics

pytestmark = pytest.mark.unit


def test_running_moments_equal_two_pass_statistics() -> None:
    rows = np.random.default_rng(0).normal(3.0, 2.0, size=(103, 5))
    moments = RunningMoments(5)
    for chunk in np.array_split(rows, [1, 2, 40, 41, 90]):
        moments.add(chunk)
    mu, sigma = feature_stats(rows)
    assert moments.n == 103
    np.testing.assert_allclose(moments.mean, mu, rtol=1e-12)
    np.testing.assert_allclose(moments.covariance(), sigma, rtol=1e-10, atol=1e-12)


def _images(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, size=n)


PROJECTION = np.random.default_rng(2).normal(size=(64, NUM_FEATURES))


def _features(images: np.ndarray) -> np.ndarray:
    """A stand-in for the network (what is tested is the streaming, not the features): a fixed projection."""
    return images.reshape(len(images), -1).astype(np.float64) @ PROJECTION


def _batches(images: np.ndarray, batch_size: int = 50, *_: object, **__: object):
    for start in range(0, len(images), batch_size):
        yield start, _features(images[start : start + batch_size])


def test_streamed_statistics_equal_the_feature_matrix_and_resume(tmp_path, monkeypatch) -> None:
    images, labels = _images(23)
    features = _features(images)
    mu, sigma = feature_stats(features)
    monkeypatch.setattr(training_stats, "CHUNK_ROWS", 6)
    monkeypatch.setattr(training_stats, "CHECKPOINT_IMAGES", 8)

    def stopped(*args, **kwargs):  # a pass killed after its third batch (12 images, one checkpoint at 8)
        for index, item in enumerate(_batches(*args, **kwargs)):
            if index == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(training_stats, "iter_features", stopped)
    with pytest.raises(KeyboardInterrupt):
        training_statistics(images, labels, tmp_path, keep=7, batch_size=4)
    assert [path.name.endswith(".partial.npz") for path in tmp_path.iterdir()] == [True]
    resumed: list[int] = []

    def counted(images_left, *args, **kwargs):
        resumed.append(len(images_left))
        return _batches(images_left, *args, **kwargs)

    monkeypatch.setattr(training_stats, "iter_features", counted)
    stats = training_statistics(images, labels, tmp_path, keep=7, batch_size=4)
    assert resumed == [23 - 8]  # the 8 images before the checkpoint were not run again
    assert stats.n == 23
    np.testing.assert_allclose(stats.mu, mu, rtol=1e-9)
    np.testing.assert_allclose(stats.sigma, sigma, rtol=1e-7, atol=1e-9)
    kept = np.sort(np.random.default_rng(0).choice(23, size=7, replace=False))
    np.testing.assert_allclose(stats.features, features[kept], rtol=1e-6)
    np.testing.assert_array_equal(stats.labels, labels[kept])
    assert [path.name for path in tmp_path.iterdir()] == [f"train-stats-{stats.key}.npz"]
    resumed.clear()
    again = training_statistics(images, labels, tmp_path, keep=7, batch_size=4)
    assert resumed == [] and again.key == stats.key  # cached: the network does not run


def test_keep_larger_than_the_split_names_the_field(tmp_path) -> None:
    images, labels = _images(5)
    with pytest.raises(ValueError, match="data.reference_size"):
        training_statistics(images, labels, tmp_path, keep=6)
