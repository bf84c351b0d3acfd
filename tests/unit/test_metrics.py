"""Metric maths on synthetic feature arrays, checked against closed forms, hand-computed toy cases and
torchmetrics: milliseconds each, no network, no files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genbench.components.evaluate.features import dtype_record, reference_stats_key
from genbench.components.evaluate.inception import PREPROCESSING, tf1_resize_bilinear
from genbench.components.evaluate.metrics import (
    bootstrap_intervals,
    compute_metrics,
    density_coverage,
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    inception_score,
    kernel_inception_distance,
    knn_radii_squared,
    manifold_metrics,
    poly_mmd,
    precision_recall,
)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same = kernel_inception_distance(a, b, subsets=20, subset_size=300, seed=0)
    shifted = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=300, seed=0)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"] + 1e-3  # unbiased estimator: zero within its noise
    assert shifted["kid_mean"] > 10 * max(abs(same["kid_mean"]), same["kid_std"])
    assert (same["kid_subsets"], same["kid_subset_size"]) == (20, 300)
    assert kernel_inception_distance(a, b, subsets=20, subset_size=300, seed=0) == same  # seeded


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
def test_kid_clamps_subset_size_and_agrees_with_torchmetrics_on_one_full_subset() -> None:
    import torch
    from torch import nn
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(50, 8)), rng.normal(0.3, 1.0, size=(40, 8))
    ours = kernel_inception_distance(real[:40], fake, subsets=1, subset_size=1000)
    assert ours["kid_subset_size"] == 40  # clamped to the smaller set, and reported

    class Features(nn.Identity):
        num_features = 8

    from torchmetrics.image.kid import poly_mmd as torchmetrics_poly_mmd

    r, f = torch.from_numpy(real[:40]), torch.from_numpy(fake)
    assert float(poly_mmd(r, f)) == float(torchmetrics_poly_mmd(r, f))  # the same operations, the same bits
    metric = KernelInceptionDistance(feature=Features(), subsets=1, subset_size=40)
    metric.update(torch.from_numpy(real[:40]), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    theirs, _ = metric.compute()  # one subset of all rows: the permutation cannot change the MMD
    assert ours["kid_mean"] == pytest.approx(float(theirs), rel=1e-9)


def test_inception_score_is_one_for_constant_logits_and_the_class_count_for_confident_uniform_ones() -> None:
    assert inception_score(np.zeros((100, 1008)), splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
    assert inception_score(np.tile(np.random.default_rng(0).normal(size=1008), (50, 1)), splits=5)[0] == (
        pytest.approx(1.0, abs=1e-9)
    )
    # 10 classes, each predicted with certainty by 10 images: p(y) uniform, KL = log 10, IS = 10.
    logits = np.full((100, 10), -50.0)
    logits[np.arange(100), np.arange(100) % 10] = 50.0
    assert inception_score(logits, splits=1) == pytest.approx((10.0, 0.0), rel=1e-9)  # one split: std 0


def test_density_and_coverage_on_a_hand_computed_toy_case() -> None:
    real = np.array([[0, 0], [1, 0], [10, 0], [12, 0], [50, 0]], dtype=float)
    fake = np.array([[0.5, 0], [5, 0], [11, 1], [11, -1]], dtype=float)
    # k=1 real radii 1, 1, 2, 2, 38. Balls holding each fake: 2, 0, 2, 2 -> density 6 / (1 * 4) = 1.5.
    # Real balls holding a fake: all but (50, 0) -> coverage 4/5.
    assert density_coverage(real, fake, k=1) == pytest.approx((1.5, 0.8))


def test_density_and_coverage_are_near_one_for_two_samples_of_one_gaussian() -> None:
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    density, coverage = density_coverage(real, fake, k=5)
    assert density == pytest.approx(1.0, abs=0.1)
    assert coverage > 0.95  # expected 1 - 2^-k = 0.969 for k = 5 and equal N (Naeem et al., Lemma 2)
    far_density, far_coverage = density_coverage(real, fake + 3.0, k=5)
    assert far_density < 0.3 and far_coverage < 0.3


def test_manifold_metrics_match_the_separate_functions() -> None:
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(300, 6)), rng.normal(0.2, 1.1, size=(250, 6))
    combined = manifold_metrics(real, fake, k=3, density_k=5)
    assert (combined["precision"], combined["recall"]) == precision_recall(real, fake, k=3)
    assert (combined["density"], combined["coverage"]) == density_coverage(real, fake, k=5)
    assert manifold_metrics(real, real.copy(), k=3)["precision"] == 1.0


@pytest.mark.parametrize("rows", [(30, 45), (200, 150)])  # fewer rows than dimensions, and more
def test_frechet_distance_from_features_matches_the_covariance_form(rows: tuple[int, int]) -> None:
    rng = np.random.default_rng(6)
    x1, x2 = rng.normal(size=(rows[0], 64)), rng.normal(0.2, 1.3, size=(rows[1], 64))
    expected = frechet_distance(*feature_stats(x1), *feature_stats(x2))
    assert frechet_distance_from_features(x1, x2) == pytest.approx(expected, rel=1e-6)  # eigh loses ~1e-8 when singular


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate() -> None:
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(200, 4)), rng.normal(0.3, 1.0, size=(200, 4))
    first = bootstrap_intervals(real, fake, resamples=40, k=3, seed=7)
    assert first == bootstrap_intervals(real, fake, resamples=40, k=3, seed=7)
    assert first != bootstrap_intervals(real, fake, resamples=40, k=3, seed=8)
    fid = frechet_distance(*feature_stats(fake), *feature_stats(real))
    precision, recall = precision_recall(real, fake, k=3)
    assert first["fid_ci95"][0] < fid < first["fid_ci95"][1]
    assert first["precision_ci95"][0] < precision < first["precision_ci95"][1]
    assert first["recall_ci95"][0] < recall < first["recall_ci95"][1]
    record = compute_metrics(real, fake, bootstrap=20, kid_subsets=5, kid_subset_size=100)
    assert {"fid_ci95", "precision_ci95", "recall_ci95"} <= record.keys() and record["bootstrap_resamples"] == 20
    assert "fid_ci95" not in compute_metrics(real, fake, kid_subsets=5, kid_subset_size=100)


def test_frechet_distance_matches_closed_form_for_diagonal_and_rotated_gaussians() -> None:
    rng = np.random.default_rng(0)
    dim = 16
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = rng.uniform(0.1, 3.0, size=dim), rng.uniform(0.1, 3.0, size=dim)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))

    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)

    # Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged.
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-8)


def test_fid_of_identical_features_is_zero_and_a_shift_adds_its_squared_norm() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64))
    mu, sigma = feature_stats(features)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6

    shift = rng.normal(size=64)
    mu_shifted, sigma_shifted = feature_stats(features + shift)
    assert frechet_distance(mu, sigma, mu_shifted, sigma_shifted) == pytest.approx(shift @ shift, rel=1e-6)


def test_tf1_resize_uses_no_half_pixel_centres() -> None:
    # Upsample 2x2 -> 4x4: TF1 samples source rows/cols 0, 0.5, 1, 1.5 (1.5 clamps to the last pixel).
    image = torch.tensor([[0.0, 10.0], [20.0, 30.0]]).reshape(1, 1, 2, 2)
    expected = torch.tensor(
        [
            [0.0, 5.0, 10.0, 10.0],
            [10.0, 15.0, 20.0, 20.0],
            [20.0, 25.0, 30.0, 30.0],
            [20.0, 25.0, 30.0, 30.0],
        ]
    )
    torch.testing.assert_close(tf1_resize_bilinear(image, 4)[0, 0], expected)

    # Downsample 3x3 -> 2x2: source coordinates 0 and 1.5, so the second pixel averages pixels 1 and 2.
    image = torch.tensor([[0.0, 6.0, 12.0], [30.0, 36.0, 42.0], [60.0, 66.0, 72.0]]).reshape(1, 1, 3, 3)
    expected = torch.tensor([[0.0, 9.0], [45.0, 54.0]])
    torch.testing.assert_close(tf1_resize_bilinear(image, 2)[0, 0], expected)


def test_precision_recall_are_one_for_identical_sets() -> None:
    features = np.random.default_rng(2).normal(size=(40, 8))
    assert precision_recall(features, features.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_on_a_hand_computed_toy_case() -> None:
    real = np.array([[0, 0], [1, 0], [10, 0], [12, 0], [50, 0]], dtype=float)
    fake = np.array([[0.5, 0], [5, 0], [11, 1], [11, -1]], dtype=float)
    # k=1 radii: real 1, 1, 2, 2, 38; fake 4.5, 4.5, 2, 2.
    np.testing.assert_allclose(knn_radii_squared(real, 1), [1, 1, 4, 4, 38**2])
    np.testing.assert_allclose(knn_radii_squared(fake, 1), [4.5**2, 4.5**2, 4, 4])
    # Fakes inside a real ball: (0.5,0) by (0,0); (11,±1) by (10,0) at √2 ≤ 2; (5,0) by none -> 3/4.
    # Reals inside a fake ball: all but (50,0), whose nearest fake is ~39 away with radius 2 -> 4/5.
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(0.75)
    assert recall == pytest.approx(0.8)


def test_bf16_statistics_cached_by_the_torchscript_network_are_not_reused() -> None:
    """Its bf16 rounding differs from the folded network's (FID 1 % apart); exact features agree to 1e-6, so fp32
    keys stay what they were."""
    identity, before = {"name": "inception", "sha256": "ab"}, PREPROCESSING | {"precision": "bf16"}
    assert reference_stats_key("md5", identity, PREPROCESSING | dtype_record("bf16")) != \
        reference_stats_key("md5", identity, before)
    assert reference_stats_key("md5", identity, PREPROCESSING | dtype_record("fp32")) == \
        reference_stats_key("md5", identity, PREPROCESSING)


def test_intra_class_fid_needs_one_label_per_image_and_a_class_with_two_on_each_side() -> None:
    from genbench.components.evaluate.metrics import intra_class_fid

    rng = np.random.default_rng(0)
    fake, real = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    with pytest.raises(ValueError, match="one label per image"):
        intra_class_fid(fake, np.zeros(5), real, np.zeros(6))
    with pytest.raises(ValueError, match="no class has two"):
        intra_class_fid(fake, np.arange(6), real, np.arange(6))
    scored = intra_class_fid(fake, np.array([0, 0, 1, 1, 2, 3]), real, np.array([0, 0, 0, 1, 1, 1]))
    assert scored["classes"] == [0, 1] and scored["n_samples"] == [2, 2] and scored["n_reference"] == [3, 3]
    assert scored["mean"] == pytest.approx(np.mean(scored["fid"]))
