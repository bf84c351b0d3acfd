"""Metric maths over Inception feature arrays: FID, KID, Inception Score, improved precision/recall,
density/coverage and bootstrap intervals. Pure functions of numpy arrays: no network, no files.

Each cites the paper or reference implementation it follows; where torchmetrics has the metric it is used
or matched (FID, KID, IS), where it has none (precision/recall, density/coverage) the authors' code is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FULL_FID_N = 10000  # sample size at which published FIDs are reported; fewer biases FID upward
_CHUNK = 1024  # rows of a pairwise-distance block (1024 x 10000 float64 = 80 MB)
KID_SUBSETS = 100  # torchmetrics' and the KID paper's defaults
KID_SUBSET_SIZE = 1000
DENSITY_K = 5  # Naeem et al. 2020 recommend k = 5 for density/coverage (improved P/R uses k = 3)
IS_SPLITS = 10  # the usual Inception Score protocol (Salimans et al. 2016): 10 splits

def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (N-1), in float64, as every standard FID implementation uses."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance ||mu1-mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½) between two Gaussians, in float64.

    Tr((S1 S2)^½) equals Σ √λ over the eigenvalues of the symmetric PSD matrix S1^½ S2 S1^½ (it is similar to
    S1 S2). We use that form instead of `scipy.linalg.sqrtm(S1 @ S2)`: it is the same number (agreement with
    sqrtm and with torchmetrics to ~1e-7 relative here), stays real without discarding imaginary parts, is
    several times faster at 2048 dimensions, and stays accurate when N < 2048 makes the covariances
    singular, where sqrtm's Schur method loses digits (FID(X, X) came out -1e-4 instead of 0).
    """
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    sigma1 = np.asarray(sigma1, np.float64)
    sigma2 = np.asarray(sigma2, np.float64)
    eigvals, eigvecs = np.linalg.eigh(sigma1)
    root1 = (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T
    inner = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID straight from two feature arrays; exact and fast when a set has fewer rows than dimensions.

    With centred rows A = (X1 - mu1)/√(n1-1) and B likewise, S1 = AᵀA and S2 = BᵀB, so the non-zero eigenvalues
    of S1 S2 are the squared singular values of A Bᵀ and Tr((S1 S2)^½) is its nuclear norm: an n1×n2 SVD
    instead of 2048-D eigendecompositions (milliseconds instead of seconds at N = 100, which is what makes
    bootstrap resamples affordable). With both sets larger than the dimension it uses `frechet_distance`.
    """
    x1 = np.asarray(features1, dtype=np.float64)
    x2 = np.asarray(features2, dtype=np.float64)
    if min(len(x1), len(x2)) >= x1.shape[1]:
        return frechet_distance(*feature_stats(x1), *feature_stats(x2))
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    a = (x1 - mu1) / np.sqrt(len(x1) - 1)
    b = (x2 - mu2) / np.sqrt(len(x2) - 1)
    diff = mu1 - mu2
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * tr_covmean)


def intra_class_fid(fake: np.ndarray, fake_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray
                    ) -> dict[str, Any]:
    """FID within each class (the generated images of class c against the real images of class c) and their mean:
    Miyato & Koyama 2018 ("cGANs with Projection Discriminator", sec. 5) and StudioGAN's intra-class FID, which
    expose a conditional model that ignores its label or collapses a class while its pooled FID looks fine.
    Classes are those present in both sets with at least two images each (a covariance needs two)."""
    fake_labels, real_labels = np.asarray(fake_labels), np.asarray(real_labels)
    if len(fake_labels) != len(fake) or len(real_labels) != len(real):
        raise ValueError(f"labels: {len(fake_labels)} for {len(fake)} samples and {len(real_labels)} for "
                         f"{len(real)} reference images; one label per image")
    classes = [int(c) for c in np.unique(fake_labels)
               if (fake_labels == c).sum() >= 2 and (real_labels == c).sum() >= 2]
    if not classes:
        raise ValueError("intra-class FID: no class has two or more images in both sets")
    fids = [frechet_distance_from_features(fake[fake_labels == c], real[real_labels == c]) for c in classes]
    return {"classes": classes, "fid": fids, "mean": float(np.mean(fids)),
            "n_samples": [int((fake_labels == c).sum()) for c in classes],
            "n_reference": [int((real_labels == c).sum()) for c in classes]}


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances [len(a), len(b)] in float64."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0)


def _knn_radii_squared_many(features: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Squared k-th nearest-neighbour distances for several k from one pass over the distance blocks."""
    for k in ks:
        if not 0 < k < len(features):
            raise ValueError(f"k must be in [1, {len(features) - 1}] for {len(features)} points, got {k}")
    radii = {k: np.empty(len(features)) for k in ks}
    for start in range(0, len(features), _CHUNK):
        block = _squared_distances(features[start : start + _CHUNK], features)
        # Index 0 of the partition is the point itself (distance 0), so index k is its k-th neighbour.
        parted = np.partition(block, sorted(set(ks)), axis=1)
        for k in ks:
            radii[k][start : start + len(block)] = parted[:, k]
    return radii


def knn_radii_squared(features: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point (the point itself is not counted)."""
    return _knn_radii_squared_many(features, (k,))[k]


def _ball_membership(
    centers: np.ndarray, radii_sq: np.ndarray, queries: np.ndarray, *, inclusive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """For k-NN balls around `centers`: how many balls hold each query, and whether each ball holds any query.

    The shared core of precision/recall (Kynkäänniemi: a query is in the manifold if any ball holds it,
    boundary included) and density/coverage (Naeem: count of balls per query; share of balls with a query;
    their reference code uses a strict boundary). Blocks of `_CHUNK` centres keep memory bounded.
    """
    counts = np.zeros(len(queries), dtype=np.int64)
    ball_hit = np.empty(len(centers), dtype=bool)
    for start in range(0, len(centers), _CHUNK):
        block = _squared_distances(centers[start : start + _CHUNK], queries)
        radius = radii_sq[start : start + len(block), None]
        inside = block <= radius if inclusive else block < radius
        counts += inside.sum(axis=0)
        ball_hit[start : start + len(block)] = inside.any(axis=1)
    return counts, ball_hit


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls as manifold estimates.

    Precision: share of generated samples inside the real manifold (fidelity); recall: share of real samples
    inside the generated manifold (diversity). FID folds both into one number; these two tell them apart.
    Written by hand because torchmetrics has no such metric; it follows the paper's reference code (radius =
    distance to the k-th nearest neighbour within the same set, membership if within any ball, inclusive).
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    precision = float(_ball_membership(real, knn_radii_squared(real, k), fake, inclusive=True)[0].astype(bool).mean())
    recall = float(_ball_membership(fake, knn_radii_squared(fake, k), real, inclusive=True)[0].astype(bool).mean())
    return precision, recall


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = DENSITY_K, *, real_radii_sq: np.ndarray | None = None
) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics"), k = 5 by default.

    Density = Σ_fake (number of real k-NN balls holding it) / (k · M): ≈ 1 when fake and real share a
    distribution, > 1 when samples crowd dense real regions, and unlike precision it is not fooled by real
    outliers with huge balls. Coverage = share of real balls holding at least one fake: diversity measured
    around real points, robust to fake outliers. k = 5 follows the paper's recommendation (it is recorded
    as `density_k`), separate from the k = 3 of improved precision/recall. Written by hand because
    torchmetrics has none; it follows the authors' `prdc` code (strict `<` at the ball boundary).
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    radii = knn_radii_squared(real, k) if real_radii_sq is None else real_radii_sq
    counts, ball_hit = _ball_membership(real, radii, fake, inclusive=False)
    return float(counts.sum() / (k * len(fake))), float(ball_hit.mean())


def manifold_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3, density_k: int = DENSITY_K) -> dict[str, float]:
    """Precision, recall, density and coverage, with the real k-NN radii for both k from one distance pass."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    real_radii = _knn_radii_squared_many(real, (k, density_k))
    precision = float(_ball_membership(real, real_radii[k], fake, inclusive=True)[0].astype(bool).mean())
    recall = float(_ball_membership(fake, knn_radii_squared(fake, k), real, inclusive=True)[0].astype(bool).mean())
    density, coverage = density_coverage(real, fake, density_k, real_radii_sq=real_radii[density_k])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> dict[str, float | int]:
    """KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel, subset estimator.

    `poly_mmd` is torchmetrics' `KernelInceptionDistance` estimator (degree 3, gamma = 1/d, coef 1), on our
    features in float64. The subset loop is ours, because torchmetrics draws subsets from the global torch RNG
    (irreproducible) and raises when N < subset_size: here subsets come from a seeded generator, subset_size is
    clamped to the smaller set (the value used is returned, and must be reported, since KID's variance depends
    on it), and the std over subsets is the population std, as torchmetrics.
    """
    import torch

    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    real_t = torch.from_numpy(np.asarray(real, dtype=np.float64))
    fake_t = torch.from_numpy(np.asarray(fake, dtype=np.float64))
    values = np.empty(subsets)
    for i in range(subsets):
        r = torch.from_numpy(rng.choice(len(real), size, replace=False))
        f = torch.from_numpy(rng.choice(len(fake), size, replace=False))
        values[i] = float(poly_mmd(real_t[r], fake_t[f]))
    return {"kid_mean": float(values.mean()), "kid_std": float(values.std()), "kid_subsets": subsets,
            "kid_subset_size": size}  # fmt: skip


def poly_mmd(real: Any, fake: Any) -> Any:
    """Unbiased MMD² between two float64 torch feature tensors with k(x, y) = (x·y / d + 1)³: torchmetrics'
    `torchmetrics.image.kid.poly_mmd`, the same torch operations in the same order (so the same bits), written
    out because importing torchmetrics pulls in torchvision, an import every `genbench evaluate` would pay for one
    function (docs/benchmarks.md, "Import costs"). tests/unit/test_metrics.py checks it against torchmetrics' metric."""
    gamma = 1.0 / real.shape[1]
    k_rr, k_ff, k_rf = ((a @ b.T * gamma + 1.0) ** 3 for a, b in ((real, real), (fake, fake), (real, fake)))
    m = k_rr.shape[0]
    within = (k_rr.sum(dim=-1) - k_rr.diag()).sum() + (k_ff.sum(dim=-1) - k_ff.diag()).sum()
    return within / (m * (m - 1)) - 2 * k_rf.sum(dim=0).sum() / (m**2)


def inception_score(logits: np.ndarray, splits: int = IS_SPLITS, seed: int = 0) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) from classifier logits: (mean, std) over `splits` splits.

    Delegates to torchmetrics' `InceptionScore.compute` (the logits are fed through an identity "feature
    extractor"), with its random permutation drawn from a forked, seeded torch RNG so the number is
    reproducible. Constant logits give p(y|x) = p(y), KL = 0 and IS = 1 exactly.
    """
    import warnings

    import torch
    from torch import nn
    from torchmetrics.image.inception import InceptionScore

    logits = np.asarray(logits)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"inception_score needs [N >= splits={splits}, classes] logits, got shape {logits.shape}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=nn.Identity(), splits=splits)
    metric.update(torch.from_numpy(logits.astype(np.float64)))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # splits=1: no spread to measure
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


def bootstrap_intervals(
    real: np.ndarray, fake: np.ndarray, resamples: int, k: int = 3, seed: int = 0,
    fixed_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, list[float]]:
    """95 % bootstrap intervals of FID, precision and recall, resampling feature rows: the percentile interval
    of the resampled values shifted by their bias (mean of the resamples − the estimate), so it is centred on the
    estimate and reads as the estimate's sampling spread.

    Each resample draws both sets' rows with replacement (the network is not re-run). FID is recomputed from
    the resampled mean and covariance. For precision/recall a row drawn twice would be its own nearest
    neighbour at distance 0 and shrink the k-NN balls, so the manifold of a resample is built from its
    distinct rows (queries keep their multiplicity): with about 1 − 1/e of the rows distinct the balls grow a
    little, which the shift takes out along with FID's. Duplicated rows add to FID's small-N upward bias: the raw
    percentile interval sits above the estimate, at the quick profile's N often without containing it. Pairwise
    distances are computed once (3 matrices of N² float64: 2.4 GB at N = 10 000) and indexed. Cost per
    resample: an N×N SVD below 2048 rows, two 2048-D eigendecompositions above (seconds on CPU), so use tens
    to hundreds of resamples. `fixed_stats`: the reference mean and covariance FID is measured against when they
    are not `real`'s (the paper protocol's whole training split, whose sampling spread is negligible beside the
    samples'): then only the samples are resampled for FID.
    """
    if resamples < 1:
        raise ValueError(f"bootstrap needs at least 1 resample, got {resamples}")
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    d_rr, d_ff, d_rf = _squared_distances(real, real), _squared_distances(fake, fake), _squared_distances(real, fake)
    rng = np.random.default_rng(seed)
    fids, precisions, recalls = np.empty(resamples), np.empty(resamples), np.empty(resamples)
    for i in range(resamples):
        ri, fi = rng.integers(0, len(real), len(real)), rng.integers(0, len(fake), len(fake))
        fids[i] = (frechet_distance_from_features(real[ri], fake[fi]) if fixed_stats is None
                   else frechet_distance(*feature_stats(fake[fi]), *fixed_stats))
        ru, fu = np.unique(ri), np.unique(fi)
        if min(len(ru), len(fu)) <= k:
            raise ValueError(f"a bootstrap resample has <= k={k} distinct rows; use more images")
        # Radius of each distinct real row among the distinct real rows (index 0 of the partition is itself).
        r_radii = np.partition(d_rr[np.ix_(ru, ru)], k, axis=1)[:, k]
        f_radii = np.partition(d_ff[np.ix_(fu, fu)], k, axis=1)[:, k]
        fake_inside = (d_rf[ru] <= r_radii[:, None]).any(axis=0)  # per original fake row
        real_inside = (d_rf[:, fu] <= f_radii[None, :]).any(axis=1)  # per original real row
        precisions[i], recalls[i] = fake_inside[fi].mean(), real_inside[ri].mean()

    def ci(values: np.ndarray, estimate: float, high: float = math.inf) -> list[float]:
        lo, hi = np.percentile(values, [2.5, 97.5]) - (values.mean() - estimate)  # centred on the estimate
        return [float(max(lo, 0.0)), float(min(hi, high))]  # the shift never leaves the metric's range

    precision, recall = precision_recall(real, fake, k=k)
    fid = (frechet_distance_from_features(real, fake) if fixed_stats is None
           else frechet_distance(*feature_stats(fake), *fixed_stats))
    return {"fid_ci95": ci(fids, fid),
            "precision_ci95": ci(precisions, precision, 1.0), "recall_ci95": ci(recalls, recall, 1.0)}


def metric_warnings(n_samples: int, n_reference: int, num_features: int) -> list[str]:
    """Caveats a reader must see beside the numbers, decided from the sample sizes alone."""
    notes = []
    for label, n in (("samples", n_samples), ("reference", n_reference)):
        if n < FULL_FID_N:
            notes.append(f"{label}: N={n} < {FULL_FID_N}: FID is biased upward at small N; compare only at equal N")
        if n <= num_features:
            notes.append(
                f"{label}: N={n} <= {num_features} features: the covariance is singular, FID is far from its "
                "large-N value"
            )
    return notes


def compute_metrics(
    ref_features: np.ndarray,
    sample_features: np.ndarray,
    *,
    fixed_stats: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = 3,
    density_k: int = DENSITY_K,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Every feature-based metric from one pair of feature arrays (no network, no files). `fixed_stats`: the mean
    and covariance FID compares against when they are not `ref_features`' own (a training split's, of which the
    features are a subset); the bootstrap holds them fixed. Without them FID comes from the rows, exactly and, below
    2048 rows, far cheaper than from two 2048-D covariances."""
    fid = (frechet_distance(*feature_stats(sample_features), *fixed_stats) if fixed_stats is not None
           else frechet_distance_from_features(ref_features, sample_features))
    result: dict[str, Any] = {"fid": fid, "k": k, "density_k": density_k}
    result.update(manifold_metrics(ref_features, sample_features, k=k, density_k=density_k))
    result.update(kernel_inception_distance(ref_features, sample_features, kid_subsets, kid_subset_size, seed))
    result["seed"] = seed
    result["bootstrap_resamples"] = bootstrap
    if bootstrap:
        result.update(bootstrap_intervals(ref_features, sample_features, bootstrap, k=k, seed=seed,
                                          fixed_stats=fixed_stats))
    return result
