"""Intra-class FID through `evaluate`: a class-conditional entry's samples (image i has class i % num_classes, as
`genbench sample` draws them) are also scored class by class against the reference images of that class, read
from the labels `prepare` writes beside them. Scored with the pixel stand-in for the FID network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genbench.components.common.io import file_digest, write_json
from genbench.components.common.manifest import labels_path
from genbench.components.common.records import SampleRecord, read_metrics
from genbench.components.evaluate.evaluate import evaluate
from genbench.components.evaluate.metrics import feature_stats, frechet_distance
from genbench.config import EvaluateConfig
from genbench.layout import Layout

from .conftest import pixel_features

CLASSES = 10


def _samples(root: Path, name: str, images: np.ndarray, num_classes: int) -> Path:
    """`images` as an entry's samples, with the record `genbench sample` would have written beside them."""
    path = root / "samples" / name / "seed-0.npy"
    path.parent.mkdir(parents=True)
    np.save(path, images)
    write_json(path.with_suffix(".json"), SampleRecord(
        entry=name, family="ddpm", n=len(images), seed=0, batch_size=len(images), shape=list(images.shape[1:]),
        device="cpu", weights_sha256="0" * 64, weights="ema", num_classes=num_classes, network_evaluations=1,
        seconds=0.0, labels="image i has class i % num_classes" if num_classes else None, sampling={}, out=str(path),
        samples_md5=file_digest(path)).model_dump(mode="json", exclude_none=True))
    return path


def _scored(root: Path, samples: Path) -> object:
    out = root / "metrics" / samples.parent.name / "seed-0.json"
    evaluate(samples, Layout(root).reference, out, cache_dir=root / ".cache", settings=EvaluateConfig(device="cpu"),
             recorded=True)
    return read_metrics(out)


def test_a_conditional_entry_is_scored_class_by_class(prepared: Path, pixel_network: list[int]) -> None:
    layout = Layout(prepared)
    reference, reference_labels = np.load(layout.reference), np.load(labels_path(layout.reference))
    train, train_labels = np.load(layout.data / "train.npy"), np.load(labels_path(layout.data / "train.npy"))
    n = 4 * CLASSES
    wanted = np.arange(n) % CLASSES
    # image i of class i % 10 is a real training image of that class (a model that follows its label), or of the
    # next class (one that ignores it): the same images overall, so the pooled FID cannot tell them apart
    follows = np.stack([train[train_labels == c][i // CLASSES] for i, c in enumerate(wanted)])
    ignores = follows[(np.arange(n) + 1) % n]
    good = _scored(prepared, _samples(prepared, "cond_good", follows, CLASSES))
    bad = _scored(prepared, _samples(prepared, "cond_bad", ignores, CLASSES))

    counted = [c for c in range(CLASSES) if (reference_labels == c).sum() >= 2]
    assert good.intra_class_fid is not None and good.intra_class_fid.classes == counted
    assert good.intra_class_fid.n_samples == [4] * len(counted)
    assert good.intra_class_fid.n_reference == [int((reference_labels == c).sum()) for c in counted]
    fake, real = pixel_features(follows), pixel_features(reference)  # as the stand-in saw each whole set
    expected = [frechet_distance(*feature_stats(fake[wanted == c]), *feature_stats(real[reference_labels == c]))
                for c in counted]  # the covariance form, independent of the SVD form evaluate takes
    np.testing.assert_allclose(good.intra_class_fid.fid, expected, rtol=1e-6)
    assert good.intra_class_fid.mean == pytest.approx(np.mean(expected), rel=1e-6)
    assert any("intra-class FID from as few as" in note for note in good.warnings)

    # one multiset of images: the pooled score is blind to the labels (but for the stand-in's jitter, which
    # follows the row order)
    assert bad.fid == pytest.approx(good.fid, rel=1e-5)
    assert bad.intra_class_fid.mean > 1.5 * good.intra_class_fid.mean


def test_an_unconditional_entry_has_no_intra_class_score(prepared: Path, pixel_network: list[int]) -> None:
    images = np.load(Layout(prepared).reference)[:12]
    record = _scored(prepared, _samples(prepared, "uncond", images, 0))
    assert record.intra_class_fid is None
    assert "intra_class_fid" not in (prepared / "metrics" / "uncond" / "seed-0.json").read_text()


def test_the_report_tables_each_class_with_the_images_it_had() -> None:
    from genbench.components.common.records import IntraClassFID
    from genbench.components.report.report import _intra_class_markdown

    assert _intra_class_markdown({}, "protocol holdout") == ""
    table = _intra_class_markdown({
        ("ddpm_cfg", 0): IntraClassFID(classes=[0, 1, 2], fid=[101.25, 202.5, 303.75], mean=202.5, n_samples=[3, 3, 2],
                                       n_reference=[4, 5, 4]),
        ("ddpm_cfg", 1): IntraClassFID(classes=[0, 2], fid=[99.0, 301.0], mean=200.0, n_samples=[3, 2],
                                       n_reference=[4, 4])}, "protocol holdout: stated")
    assert "protocol holdout: stated." in table  # the protocol the pooled table states
    rows = [line for line in table.splitlines() if line.startswith("| ddpm_cfg")]
    assert rows == ["| ddpm_cfg | 0 | 101.2 | 202.5 | 303.8 | 202.5 | 2–3 vs 4–5 |",
                    "| ddpm_cfg | 1 | 99.0 | – | 301.0 | 200.0 | 2–3 vs 4–4 |"]
    assert "| entry | seed | class 0 | class 1 | class 2 | mean ↓ | images per class |" in table
