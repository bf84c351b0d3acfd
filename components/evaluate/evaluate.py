"""Stage 4: score generated samples, and the held-out real images (the floor), against the reference images.

One feature pass per image set: the Inception pool3 features of the samples (and, cached, of the reference)
feed every metric in `metrics.py`. Inception Score is the one exception: it needs classifier logits, which the
offline pool3 network does not have, so it takes a second pass with the standard logits network when that
loads (see `inception.py`), and records why not otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genbench.components.common.devices import pick_device
from genbench.components.common.drawing import image_labels
from genbench.components.common.dtypes import resolve as resolve_dtype
from genbench.components.common.images import array_digest, load_images, validate_images
from genbench.components.common.io import clean_leftovers, file_digest, load_npy, require_file, write_json
from genbench.components.common.manifest import cached_digest, labels_path, verify_prepared
from genbench.components.common.records import PAPER_N, MetricsRecord, Protocol, Scores, check_samples
from genbench.components.evaluate.features import reference_features, set_features
from genbench.components.evaluate.inception import (
    extract_features,
    extractor_identity,
    preprocessing,
    standard_inception_logits,
)
from genbench.components.evaluate.metrics import (
    DENSITY_K,
    FULL_FID_N,
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    compute_metrics,
    inception_score,
    intra_class_fid,
    metric_warnings,
)  # fmt: skip
from genbench.components.evaluate.training_stats import TrainingStatistics, load_training_split, training_statistics
from genbench.config import DataConfig, EvaluateConfig


def _try_inception_score(
    images: np.ndarray, splits: int, batch_size: int, device: str, seed: int
) -> dict[str, Any]:
    """Inception Score with the standard logits network, or null plus the reason it could not be computed."""
    if len(images) < splits:
        return {"inception_score": None, "inception_score_std": None, "inception_score_splits": splits,
                "inception_score_unavailable": f"N={len(images)} < {splits} splits"}  # fmt: skip
    try:
        logits, identity = standard_inception_logits(images, batch_size=batch_size, device=device)
        mean, std = inception_score(logits, splits=splits, seed=seed)
    except Exception as error:  # noqa: BLE001 - any failure is recorded in the metrics file, never hidden
        reason = (
            f"the standard Inception logits network did not load or run ({type(error).__name__}: {error}); the "
            "offline FID network has pool3 features only, no classifier logits"
        )
        return {"inception_score": None, "inception_score_std": None, "inception_score_splits": splits,
                "inception_score_unavailable": reason[:500]}  # fmt: skip
    return {"inception_score": mean, "inception_score_std": std, "inception_score_splits": splits,
            "inception_score_unavailable": None, "inception_score_extractor": identity}  # fmt: skip


def check_sets(samples: np.ndarray, reference: np.ndarray | None, k: int = 3, density_k: int = DENSITY_K,
               samples_name: str = "samples", reference_name: str = "reference") -> None:
    """ValueError naming the set unless both are uint8 NHWC images of one shape, more than the neighbourhoods need
    (`reference` None: statistics stand for it, and only the samples are checked)."""
    validate_images(samples, samples_name)
    if reference is None:
        reference = samples
    else:
        validate_images(reference, reference_name)
    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"{samples_name}: image shape {samples.shape[1:]} (HWC) differs from the reference "
            f"{reference_name} {reference.shape[1:]}"
        )
    need = max(k, density_k)
    for name, n in ((samples_name, len(samples)), (reference_name, len(reference))):
        if n <= need:
            raise ValueError(
                f"{name}: {n} images, but precision/recall (k={k}) and density/coverage (k={density_k}) need "
                f"more than {need}"
            )


def score(
    samples: np.ndarray,
    reference: np.ndarray | None,
    reference_md5: str,
    *,
    cache_dir: Path,
    batch_size: int = 50,
    k: int = 3,
    density_k: int = DENSITY_K,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    bootstrap: int = 0,
    seed: int = 0,
    is_splits: int = IS_SPLITS,
    compute_inception_score: bool = True,
    device: str = "cpu",
    dtype: str = "fp32",
    resize: str = "legacy-tf",
    samples_name: str = "samples",
    reference_name: str = "reference",
    sample_labels: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    training: TrainingStatistics | None = None,
    protocol: str = "given",
    dataset: str | None = None,
    reference_split: str = "given",
    samples_md5: str | None = None,
) -> dict[str, Any]:
    """All metrics of `samples` against `reference` (uint8 NHWC): one network pass per set, reference cached.

    `reference_md5` keys the reference cache together with the extractor's sha256 and the preprocessing
    (`resize`: inception.RESIZE_MODES). With both label arrays (a class-conditional model's samples), also FID
    within each class. With `training` (the paper protocol) every metric is against a training split instead:
    FID against its statistics, the row-based metrics against its kept rows; `reference` is then None. The
    record states the `protocol` (named, over `dataset`'s `reference_split`). With `samples_md5` the samples'
    features are cached under it too (features.set_features).
    """
    if training is None:
        assert reference is not None, "a reference set or training statistics"
        check_sets(samples, reference, k, density_k, samples_name, reference_name)
        ref_features, key = reference_features(reference, reference_md5, cache_dir, batch_size, device, dtype, resize)
        n_reference, fixed_stats = len(reference), None
    else:
        check_sets(samples, None, k, density_k, samples_name)
        ref_features, key, fixed_stats = training.features, training.key, (training.mu, training.sigma)
        n_reference, reference_labels = training.n, training.labels if sample_labels is not None else None
    sample_features = (extract_features(samples, batch_size=batch_size, device=device, dtype=dtype, resize=resize)
                       if samples_md5 is None else
                       set_features(samples, samples_md5, cache_dir, batch_size, device, dtype, resize))
    result = compute_metrics(
        ref_features, sample_features, fixed_stats=fixed_stats, k=k, density_k=density_k, kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size, bootstrap=bootstrap, seed=seed,
    )  # fmt: skip
    if compute_inception_score:
        result.update(_try_inception_score(samples, is_splits, batch_size, device, seed))
    else:
        result.update({"inception_score": None, "inception_score_std": None, "inception_score_splits": is_splits,
                       "inception_score_unavailable": "not requested"})  # fmt: skip
    notes = metric_warnings(len(samples), n_reference, sample_features.shape[1])
    if training is not None and len(samples) != PAPER_N:
        notes.append(f"paper protocol with N={len(samples)} generated images, not {PAPER_N}: not comparable with "
                     f"published FID-{PAPER_N // 1000}k (FID falls as N grows); set sample.n: {PAPER_N}")
    if sample_labels is not None and reference_labels is not None:
        result["intra_class_fid"] = intra_class_fid(sample_features, sample_labels, ref_features, reference_labels)
        fewest = min(result["intra_class_fid"]["n_samples"] + result["intra_class_fid"]["n_reference"])
        if fewest < FULL_FID_N:
            notes.append(f"intra-class FID from as few as {fewest} images per class: biased far upward at this N, "
                         "indicative only; compare classes with each other, at equal N")
    if result["kid_subset_size"] < kid_subset_size:
        notes.append(
            f"KID subset_size clamped from {kid_subset_size} to {result['kid_subset_size']} (the smaller set); "
            "compare KID only at equal subset_size"
        )
    identity = extractor_identity()
    result.update({
        "n_samples": int(len(samples)),
        "n_reference": int(n_reference),
        "reference_md5": reference_md5 if training is None else training.split_md5,
        "feature_extractor": identity,
        "preprocessing": preprocessing(resize),
        "inception_dtype": dtype,
        "reference_stats_key": key,
        "warnings": notes,
        "protocol": Protocol(
            name=protocol, dataset=dataset, n_generated=len(samples),
            reference_split="train" if training is not None else reference_split, reference_size=n_reference,
            feature_reference_size=len(ref_features), resize=resize, network=f"{identity['name']}@"
            f"{identity['sha256'][:12]}", precision=dtype,
        ).model_dump(),
    })  # fmt: skip
    return result


def evaluate(samples_path: Path, reference_path: Path, out_path: Path, *, cache_dir: Path,
             settings: EvaluateConfig = EvaluateConfig(), recorded: bool = False, data: DataConfig | None = None,
             download_dir: Path | None = None, cache_samples: bool = False, **options: Any) -> dict[str, Any]:
    """Score generated samples against reference images and write the record, with the samples' md5, to `out_path`.

    The samples' record beside them (`genbench sample` writes one) must vouch for their bytes; `recorded`: it must
    exist (an entry's samples). Reference statistics are cached under `cache_dir` so that every family is scored
    against the same numbers without re-running the slow network on the reference set. `settings.protocol` paper
    scores against `data`'s whole training split instead (found in `download_dir`, as `prepare` fetches it), whose
    statistics are cached the same way. `cache_samples`: the samples' features too (a sweep's sets, which other
    sweeps of the entry may draw again byte for byte). `options` go to `score()` (density_k, kid_subsets,
    kid_subset_size, bootstrap, seed, is_splits, compute_inception_score).
    """
    samples_path, reference_path, out_path = Path(samples_path), Path(reference_path), Path(out_path)
    paper = settings.protocol == "paper"
    if paper and (data is None or download_dir is None):
        raise ValueError("evaluate.protocol: paper scores against the dataset's training split, so evaluate needs "
                         "the params' data section and the download folder (the evaluate stage passes both)")
    require_file(samples_path, "genbench sample")
    reference = None
    if not paper:
        require_file(reference_path, "genbench prepare")
        verify_prepared(reference_path.parent, [reference_path.name])
        reference = load_npy(reference_path)
    samples = load_npy(samples_path)
    drawn = check_samples(samples_path, required=recorded)
    sample_labels = reference_labels = None
    if drawn is not None and drawn.num_classes and (paper or labels_path(reference_path).is_file()):
        sample_labels = image_labels(range(len(samples)), drawn.num_classes).numpy()  # as `sample` drew them
        if not paper:
            verify_prepared(reference_path.parent, [labels_path(reference_path).name])
            reference_labels = load_npy(labels_path(reference_path))
    options = {"bootstrap": settings.bootstrap, **options}
    check_sets(samples, reference, settings.k, options.get("density_k", DENSITY_K), str(samples_path),
               str(reference_path))
    extractor_identity()  # a missing FID network is an input error too: found before the old metrics go
    device = pick_device(settings.device)
    dtype = resolve_dtype(settings.dtype, False, device)[0]
    training = None
    if paper:
        assert data is not None and download_dir is not None
        images, labels = load_training_split(data, download_dir)
        training = training_statistics(images, labels, cache_dir, keep=data.reference_size,
                                       batch_size=settings.batch_size, device=str(device), dtype=dtype,
                                       resize=settings.resize)
    clean_leftovers(out_path.parent, out_path.name)
    out_path.unlink(missing_ok=True)  # a stop while scoring leaves no metrics of what the samples were before
    result = score(
        samples, reference, cached_digest(reference_path) if reference is not None else "", cache_dir=cache_dir,
        batch_size=settings.batch_size, k=settings.k, device=str(device), dtype=dtype, resize=settings.resize,
        samples_name=str(samples_path), reference_name=str(reference_path), sample_labels=sample_labels,
        reference_labels=reference_labels, training=training, protocol=settings.protocol,
        dataset=data.dataset if data is not None else None,
        reference_split="given" if data is None else "folder" if data.dataset == "folder" else "test",
        samples_md5=cached_digest(samples_path) if cache_samples else None, **options,
    )  # fmt: skip
    result["samples_md5"] = cached_digest(samples_path)  # hashed once: check_samples read it above
    # exclude_unset: the keys `score` returned, no more (an interval or network it did not compute stays out)
    write_json(out_path, MetricsRecord.model_validate(result).model_dump(mode="json", exclude_unset=True))
    return result


def evaluate_real(holdout_path: Path, reference_path: Path, out_path: Path, *, cache_dir: Path,
                  settings: EvaluateConfig = EvaluateConfig(), data: DataConfig | None = None,
                  download_dir: Path | None = None) -> dict[str, Any]:
    """The report's floor: real images scored by `evaluate` exactly as a family's samples are, so every model's
    numbers can be read against what real data reaches. Under protocol holdout these are the held-out training
    images at the samples' N; under paper, whose reference is the whole training split, the test split's
    reference images (the held-out images belong to that split)."""
    real_path = Path(reference_path if settings.protocol == "paper" else holdout_path)
    require_file(real_path, "genbench prepare")
    verify_prepared(real_path.parent, [real_path.name])
    return evaluate(real_path, reference_path, out_path, cache_dir=cache_dir, settings=settings, data=data,
                    download_dir=download_dir)


def compare(real: Path | None, fake: Path, *, cache_dir: Path, settings: EvaluateConfig = EvaluateConfig(),
            bootstrap: int = 0, seed: int = 0, data: DataConfig | None = None,
            download_dir: Path | None = None) -> Scores:
    """`genbench metrics`: every metric of FAKE against REAL, each a `.npy` (uint8 NHWC) or an image folder;
    REAL's features are cached like a reference's (by file md5, or by content for a folder). Under
    `settings.protocol` paper REAL is None: FAKE is scored against `data`'s whole training split (from
    `download_dir`), its `data.reference_size` kept rows for the row-based metrics."""
    fake_images = load_images(fake)
    device = pick_device(settings.device)
    dtype = resolve_dtype(settings.dtype, False, device)[0]
    common = {"cache_dir": cache_dir, "batch_size": settings.batch_size, "k": settings.k, "bootstrap": bootstrap,
              "seed": seed, "device": str(device), "dtype": dtype, "resize": settings.resize,
              "samples_name": str(fake)}
    if settings.protocol == "paper":
        if real is not None or data is None or download_dir is None:
            raise ValueError("--protocol paper scores FAKE against the dataset's training split: give FAKE alone")
        images, labels = load_training_split(data, download_dir)
        training = training_statistics(images, labels, cache_dir, keep=data.reference_size,
                                       batch_size=settings.batch_size, device=str(device), dtype=dtype,
                                       resize=settings.resize)
        return Scores.model_validate(score(fake_images, None, "", training=training, protocol="paper",
                                           dataset=data.dataset, **common))
    if real is None:
        raise ValueError("REAL: give the real images (a .npy or a folder) before FAKE, or --protocol paper")
    real_images = load_images(real)
    real_md5 = file_digest(real) if Path(real).is_file() else array_digest(real_images)
    return Scores.model_validate(score(fake_images, real_images, real_md5, reference_name=str(real), **common))
