"""The FID curve: FID of each EMA snapshot a training run saved (`train.fid_every`) against the validation split.

A trend, not a result: at small n FID is strongly biased upward (Chong & Forsyth 2020; see `metrics.FULL_FID_N`),
so a curve is comparable only with itself (same n, same reference). It is a stage of its own, after train, so that
training never runs the FID network: a change to the network re-scores curves and leaves trained runs valid. Each
point draws `train.fid_n` images from fixed seeds with the sampler `train.curve_sampling` picks, from the weights the
run had at that step; the reference features are computed once and cached as evaluate caches them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genbench.components.common.artifacts import check_complete, load_trained, snapshot_steps
from genbench.components.common.devices import pick_device
from genbench.components.common.drawing import draw_images
from genbench.components.common.dtypes import resolve as resolve_dtype
from genbench.components.common.images import validate_images
from genbench.components.common.io import load_npy, write_json
from genbench.components.common.manifest import cached_digest, verify_prepared
from genbench.components.common.records import CurvePoint, CurveRecord
from genbench.components.evaluate.features import reference_features
from genbench.components.evaluate.inception import extract_features
from genbench.components.evaluate.metrics import frechet_distance_from_features
from genbench.config import EntrySettings
from genbench.models import family as family_spec


class FIDCurve:
    """FID of image sets against one reference `.npy`, whose features are loaded (or computed and cached, keyed as
    `evaluate` keys them) on the first measurement, so a curve with no point costs nothing."""

    def __init__(self, reference_path: Path, cache_dir: Path, batch_size: int = 50, device: str = "cpu",
                 dtype: str = "fp32") -> None:
        self.reference_path, self.cache_dir = Path(reference_path), Path(cache_dir)
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self._reference_features: np.ndarray | None = None

    def reference_features(self) -> np.ndarray:
        """The reference features [N, 2048], from the on-disk cache after the first call (then from memory)."""
        if self._reference_features is None:
            reference = load_npy(self.reference_path)
            validate_images(reference, str(self.reference_path))
            self._reference_features = reference_features(reference, cached_digest(self.reference_path),
                                                          self.cache_dir, self.batch_size, self.device, self.dtype)[0]
        return self._reference_features

    def measure(self, images: np.ndarray, what: str) -> float:
        """FID of `images` (uint8 NHWC; `what` names them in errors) against the reference."""
        reference = self.reference_features()
        validate_images(images, what)
        features = extract_features(images, batch_size=self.batch_size, device=self.device, dtype=self.dtype)
        # Below 2048 rows the SVD form is exact and fast; the covariance form's 2048-D eigendecomposition is not.
        return frechet_distance_from_features(features, reference)


def fid_curve(run_dir: Path, validation: Path, out_path: Path, entry: str, settings: EntrySettings, seed: int,
              cache_dir: Path) -> CurveRecord:
    """Score every snapshot of the complete run in `run_dir` and write the curve to `out_path` (atomically); a run
    trained with `train.fid_every: 0` gets an empty curve without loading the network."""
    run_dir, cfg = Path(run_dir), settings.train
    check_complete(run_dir)  # train writes its snapshots before the summary.json this checks
    verify_prepared(Path(validation).parent, [Path(validation).name])
    snapshots = snapshot_steps(run_dir) if cfg.fid_every else []
    sampling = cfg.curve_sampling(family_spec(settings.family).sampling())
    if snapshots:  # train checked it when it saved them; the settings may have changed since
        sampling.check(settings.arch)
    device = pick_device(cfg.device)
    dtype = resolve_dtype(cfg.fid_dtype, False, device)[0]
    curve = FIDCurve(validation, cache_dir, device=str(device), dtype=dtype)
    points = []
    for step, weights in tqdm(snapshots, desc=f"fid-curve {entry}", unit="point", disable=None):
        started = time.perf_counter()
        model, _ = load_trained(run_dir, device, verify=False, weights=weights)
        images = draw_images(model, range(cfg.fid_n), seed, sampling)
        fid = curve.measure(images, f"{entry}'s {cfg.fid_n} images at step {step}")
        points.append(CurvePoint(step=step, fid=fid, seconds=round(time.perf_counter() - started, 3)))
    record = CurveRecord(entry=entry, seed=seed, n=cfg.fid_n, dtype=dtype, sampling=sampling.model_dump(mode="json"),
                         reference_md5=cached_digest(validation) if points else "", points=points)
    write_json(Path(out_path), record.model_dump(mode="json"))
    return record
