"""FID statistics of a dataset's whole training split, streamed: the reference of the `paper` protocol.

Published FIDs (Heusel et al. 2017; Ho et al. 2020 and Karras et al. 2022 on CIFAR-10) compare 50 000 samples
with the statistics of the full training split (CIFAR-10: 50 000 images; Fashion-MNIST: 60 000). Those features
are about 1 GB in float64, so they are never held at once: each chunk's mean and scatter are merged into running
ones in float64 (Chan, Golub & LeVeque's pairwise update), which gives the two-pass mean and unbiased covariance up
to rounding. A seeded subset of `keep` feature rows, with their labels, is kept for the metrics that need rows
(precision/recall, density/coverage, KID, intra-class FID).

The result is cached under the split's md5, the network's sha256, the preprocessing and dtype, and the subset's
size and seed; the pass saves its running state every `CHECKPOINT_IMAGES` images, so a stopped pass resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genbench.components.common.images import array_digest
from genbench.components.common.io import atomic_write, config_hash
from genbench.components.evaluate.features import dtype_record
from genbench.components.evaluate.inception import NUM_FEATURES, extractor_identity, iter_features, preprocessing
from genbench.config import DataConfig

CHUNK_ROWS = 1000  # feature rows merged at once: few 2048² updates, 16 MB of rows held
CHECKPOINT_IMAGES = 5000  # images between saves of the running state (one every few minutes on CPU)


@dataclass(frozen=True)
class TrainingStatistics:
    """Mean and covariance of all `n` training images' features, and the kept subset of rows."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray  # `keep` rows, in split order
    labels: np.ndarray  # their class labels
    key: str  # the cache key: what these statistics were computed from
    split_md5: str


class RunningMoments:
    """Mean and scatter (sum of centred outer products) of the rows added so far, merged chunk by chunk."""

    def __init__(self, dim: int, n: int = 0, mean: np.ndarray | None = None, scatter: np.ndarray | None = None):
        self.n = n
        self.mean = np.zeros(dim) if mean is None else mean
        self.scatter = np.zeros((dim, dim)) if scatter is None else scatter

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        if not len(rows):
            return
        chunk_mean = rows.mean(axis=0)
        centred = rows - chunk_mean
        total = self.n + len(rows)
        delta = chunk_mean - self.mean
        self.scatter += centred.T @ centred + np.outer(delta, delta) * (self.n * len(rows) / total)
        self.mean += delta * (len(rows) / total)
        self.n = total

    def covariance(self) -> np.ndarray:
        """Unbiased (N-1), as `metrics.feature_stats` and every standard FID implementation."""
        return self.scatter / (self.n - 1)


def load_training_split(data: DataConfig, download_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's whole training split (uint8 NHWC, labels), as published statistics use it; ValueError
    naming the field for a dataset that has none."""
    if data.dataset == "folder":
        raise ValueError("evaluate.protocol: paper scores against a dataset's training split, and dataset folder "
                         "has none; use evaluate.protocol: holdout for your own images")
    from genbench.components.prepare.prepare import load_dataset

    images, labels, _, _ = load_dataset(data.dataset, download_dir)
    return images, labels


def statistics_key(split_md5: str, dtype: str, resize: str, keep: int, seed: int) -> str:
    return config_hash({"training_split_md5": split_md5, "extractor": extractor_identity(),
                        "preprocessing": preprocessing(resize) | dtype_record(dtype), "keep": keep, "seed": seed})


def training_statistics(images: np.ndarray, labels: np.ndarray, cache_dir: Path, *, keep: int, seed: int = 0,
                        batch_size: int = 50, device: str = "cpu", dtype: str = "fp32",
                        resize: str = "legacy-tf") -> TrainingStatistics:
    """Statistics of every image in `images` (a training split), from the cache or streamed once and cached."""
    if not 0 < keep <= len(images):
        raise ValueError(f"data.reference_size: {keep} kept rows of a {len(images)}-image training split; "
                         f"give 1 to {len(images)}")
    split_md5 = array_digest(images)
    key = statistics_key(split_md5, dtype, resize, keep, seed)
    path = Path(cache_dir) / f"train-stats-{key}.npz"
    if not path.is_file():
        _stream(images, labels, path, keep, seed, batch_size, device, dtype, resize)
    with np.load(path, allow_pickle=False) as saved:
        return TrainingStatistics(mu=saved["mu"], sigma=saved["sigma"], n=int(saved["n"]),
                                  features=saved["features"], labels=saved["labels"], key=key, split_md5=split_md5)


def _stream(images: np.ndarray, labels: np.ndarray, path: Path, keep: int, seed: int, batch_size: int, device: str,
            dtype: str, resize: str) -> None:
    """One pass over `images`, resumed from `path`'s partial state when a stopped pass left one."""
    kept_index = np.sort(np.random.default_rng(seed).choice(len(images), size=keep, replace=False))
    partial = path.with_name(path.name.replace(".npz", ".partial.npz"))
    moments, kept, start = RunningMoments(NUM_FEATURES), np.zeros((keep, NUM_FEATURES)), 0
    if partial.is_file():
        with np.load(partial, allow_pickle=False) as saved:
            kept, start = saved["kept"].copy(), int(saved["n"])
            moments = RunningMoments(kept.shape[1], start, saved["mean"].copy(), saved["scatter"].copy())
    pending: list[np.ndarray] = []
    rest = images[start:]
    for offset, rows in iter_features(rest, batch_size, device, dtype, resize, desc="training-split features"):
        if start == offset == 0 and rows.shape[1] != kept.shape[1]:  # a network of another width (tests' stand-in)
            moments, kept = RunningMoments(rows.shape[1]), np.zeros((keep, rows.shape[1]))
        first = start + offset
        chosen = kept_index[(kept_index >= first) & (kept_index < first + len(rows))]
        kept[np.searchsorted(kept_index, chosen)] = rows[chosen - first]
        pending.append(rows)
        done = first + len(rows)
        if sum(map(len, pending)) >= CHUNK_ROWS or done == len(images):
            moments.add(np.concatenate(pending))
            pending = []
        if done < len(images) and done // CHECKPOINT_IMAGES > (done - len(rows)) // CHECKPOINT_IMAGES:
            moments.add(np.concatenate(pending) if pending else np.empty((0, kept.shape[1])))
            pending = []
            _save(partial, n=moments.n, mean=moments.mean, scatter=moments.scatter, kept=kept)
    _save(path, mu=moments.mean, sigma=moments.covariance(), n=moments.n, features=kept, labels=labels[kept_index])
    partial.unlink(missing_ok=True)


def _save(path: Path, **arrays: Any) -> None:
    atomic_write(path, lambda handle: np.savez(handle, **arrays))
