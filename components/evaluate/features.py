"""Inception features of image sets, with the reference set's (and a sweep set's) features cached on disk.

Every family is scored against the same reference numbers, and the slow network runs over the reference once:
the cache key is the reference bytes' md5, the network's sha256 and the preprocessing, so a changed byte,
network or resize rule recomputes. Sweep sets are cached the same way, since sweeps of one entry overlap (the
DDIM line of an NFE sweep is a DDIM-steps sweep; a guidance sweep's w = 1 is the entry's own setting): the same
weights, seeds and settings give the same bytes, which pass through the network once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genbench.components.common.io import atomic_write, config_hash
from genbench.components.evaluate.inception import extract_features, extractor_identity, preprocessing


def dtype_record(dtype: str) -> dict[str, str]:
    """What the cache key records of the network's dtype; {} for exact fp32, so fp32 keys stay those of
    before dtype was a choice (and of the TorchScript network, whose fp32 features the rebuilt one equals to
    1e-6). bf16 names the folded network: its rounding differs from the TorchScript's under autocast enough to
    move FID (docs/benchmarks.md, "FID fidelity checks"), so statistics cached by that one are never mixed with
    these."""
    return {} if dtype == "fp32" else {"dtype": dtype, "batch_norm": "folded"}


def reference_stats_key(reference_md5: str, extractor: dict[str, str], preprocessing: dict[str, Any]) -> str:
    """Cache key of reference statistics: same image bytes, same network, same preprocessing, same stats."""
    return config_hash({"reference_md5": reference_md5, "extractor": extractor, "preprocessing": preprocessing})


def _cached_features(
    images: np.ndarray, md5: str, cache_dir: Path, kind: str, batch_size: int, device: str, dtype: str,
    resize: str,
) -> tuple[np.ndarray, str]:
    """Features of an image set whose bytes hash to `md5`, and their cache key: from `cache_dir`, or computed once
    and cached atomically (per dtype and resize mode: features of one are never mixed with another's). Stored as
    float32 where that is exact (the network gives float32): half of float64's disk."""
    key = reference_stats_key(md5, extractor_identity(), preprocessing(resize) | dtype_record(dtype))
    cache_path = Path(cache_dir) / f"{kind}-{key}.npz"
    if cache_path.is_file():
        with np.load(cache_path, allow_pickle=False) as cached:
            return cached["features"].astype(np.float64), key
    features = extract_features(images, batch_size=batch_size, device=device, dtype=dtype, resize=resize)
    narrow = features.astype(np.float32)
    stored = narrow if np.array_equal(narrow, features) else features
    atomic_write(cache_path, lambda handle: np.savez(handle, features=stored))
    return features, key


def reference_features(
    reference: np.ndarray, reference_md5: str, cache_dir: Path, batch_size: int, device: str,
    dtype: str = "fp32", resize: str = "legacy-tf",
) -> tuple[np.ndarray, str]:
    """The reference set's features and their cache key (every metric takes the rows; FID too, exactly)."""
    return _cached_features(reference, reference_md5, cache_dir, "reference", batch_size, device, dtype, resize)


def set_features(
    images: np.ndarray, md5: str, cache_dir: Path, batch_size: int, device: str, dtype: str = "fp32",
    resize: str = "legacy-tf",
) -> np.ndarray:
    """A generated set's features (a sweep's: another sweep may draw the same bytes), cached like the reference's."""
    return _cached_features(images, md5, cache_dir, "features", batch_size, device, dtype, resize)[0]
