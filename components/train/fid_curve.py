"""FID during training: every `every` steps, FID of `n` fresh samples against cached reference statistics.

A curve, not a benchmark number: at small n FID is strongly biased upward (see `metrics.FULL_FID_N`), so the
curve is only comparable with itself (same n, same reference). Its cost is one feature pass over n images per
measurement (the reference is computed once and cached on disk); see docs/benchmarks.md for seconds per
measurement. The trainer owns MLflow: pass `log_metric` (e.g. `mlflow.log_metric`) to log each point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genbench.components.common.images import validate_images
from genbench.components.common.io import load_npy
from genbench.components.common.manifest import cached_digest
from genbench.components.evaluate.features import reference_features
from genbench.components.evaluate.inception import extract_features
from genbench.components.evaluate.metrics import frechet_distance_from_features


class FIDCurve:
    """Measure FID of `sample_fn(n)` against the reference `.npy` every `every` training steps.

    The reference features are loaded (or computed and cached, keyed like `evaluate`) on the first
    measurement, so constructing the object is free and a curve that never fires costs nothing.
    """

    def __init__(
        self,
        reference_path: Path,
        cache_dir: Path,
        n: int = 100,
        every: int = 1000,
        batch_size: int = 50,
        device: str = "cpu",
        dtype: str = "fp32",
        log_metric: Callable[[str, float, int], object] | None = None,
        metric_name: str = "fid_curve",
    ) -> None:
        if n < 2 or every < 1:
            raise ValueError(f"FIDCurve needs n >= 2 and every >= 1, got n={n}, every={every}")
        self.reference_path = Path(reference_path)
        self.cache_dir = Path(cache_dir)
        self.n, self.every, self.batch_size, self.device, self.dtype = n, every, batch_size, device, dtype
        self.log_metric, self.metric_name = log_metric, metric_name
        self.history: list[dict[str, float]] = []  # {"step", "fid", "seconds"} per measurement
        self._reference_features: np.ndarray | None = None

    def reference_features(self) -> np.ndarray:
        """The reference features [N, 2048], from the on-disk cache after the first call (then from memory)."""
        if self._reference_features is None:
            reference = load_npy(self.reference_path)
            validate_images(reference, str(self.reference_path))
            features = reference_features(reference, cached_digest(self.reference_path), self.cache_dir,
                                          self.batch_size, self.device, self.dtype)[0]
            self._reference_features = features
        return self._reference_features

    def due(self, step: int) -> bool:
        """Whether `step` is a measuring step (every `every` steps, not step 0)."""
        return step > 0 and step % self.every == 0

    def maybe_measure(self, step: int, sample_fn: Callable[[int], np.ndarray]) -> float | None:
        """FID at `step` if it is due, else None. `sample_fn(n)` returns n uint8 NHWC images."""
        if not self.due(step):
            return None
        reference = self.reference_features()
        start = time.perf_counter()
        images = np.asarray(sample_fn(self.n))
        validate_images(images, f"sample_fn({self.n}) at step {step}")
        if len(images) != self.n:
            raise ValueError(f"sample_fn({self.n}) returned {len(images)} images")
        features = extract_features(images, batch_size=self.batch_size, device=self.device, dtype=self.dtype)
        # Below 2048 rows the SVD form is exact and takes milliseconds; the covariance form takes seconds.
        fid = frechet_distance_from_features(features, reference)
        seconds = time.perf_counter() - start
        self.history.append({"step": step, "fid": fid, "seconds": seconds})
        if self.log_metric is not None:
            self.log_metric(self.metric_name, fid, step)
            self.log_metric(f"{self.metric_name}_seconds", seconds, step)
        return fid
