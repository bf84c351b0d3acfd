"""One tiny project, prepared and trained once per session (vae, dcgan, ddpm), with the reference set's
Inception features cached, that stage tests copy from; and a cheap stand-in for the FID network.

Stage tests check plumbing: which files a stage reads and writes, and what it records. The real network costs
~0.1 s per image on 2 cores, so only the tests about the network itself (test_evaluate.py, the real-data and
CLI tests of test_metrics.py) run it; the others take `pixel_network`. The drivers tier runs the real network
through every stage end to end.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from genbench.components.common.io import file_digest, load_npy
from genbench.components.evaluate import evaluate as evaluate_module
from genbench.components.evaluate import features as features_module
from genbench.components.evaluate import inception
from genbench.components.evaluate.features import reference_features
from genbench.components.prepare.prepare import prepare
from genbench.components.train import fid_curve as fid_curve_module
from genbench.components.train.train import train
from genbench.config import load_config
from genbench.layout import Layout

from ..conftest import tiny_params

FAMILIES = ("vae", "dcgan", "ddpm")


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: the tiny profile's prepared data and trained runs of FAMILIES. Tests copy what they need."""
    root = tmp_path_factory.mktemp("tiny-trained")
    (root / "params.yaml").write_text(tiny_params())
    layout, config = Layout(root), load_config(root / "params.yaml")
    prepare(config.data, config.seed, layout.data, layout.downloads)
    for family in FAMILIES:
        train(family, config.family(family), 0, layout.data, layout.run(family, 0), cache_dir=layout.cache)
    reference_features(load_npy(layout.reference), file_digest(layout.reference), layout.cache,
                       config.evaluate.batch_size, "cpu")
    return root


@pytest.fixture()
def prepared(project: Path, tiny_trained: Path) -> Path:
    """`project` with the tiny prepared data in data/prepared and its reference features in the cache."""
    shutil.copytree(tiny_trained / "data" / "prepared", project / "data" / "prepared")
    shutil.copytree(tiny_trained / ".genbench", project / ".genbench")
    return project


@pytest.fixture()
def trained(prepared: Path, tiny_trained: Path) -> Path:
    """`prepared` with trained runs/{vae,dcgan,ddpm}."""
    shutil.copytree(tiny_trained / "runs", prepared / "runs")
    return prepared


STAND_IN_IDENTITY = {"name": "pixel-stand-in", "sha256": "0" * 64}  # keys its own reference cache entries


def pixel_features(images: np.ndarray, **_: object) -> np.ndarray:
    """Stand-in extractor: 16 pixel values per image plus a little jitter seeded by the set's size."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return flat[:, :: max(1, flat.shape[1] // 16)][:, :16] + np.random.default_rng(len(images)).normal(
        scale=1e-3, size=(len(images), 16)
    )


@pytest.fixture
def pixel_network(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Swap the FID network for `pixel_features` wherever a stage calls it, under an identity of its own (so
    its reference statistics never mix with the network's); the list records how many images each call saw."""
    calls: list[int] = []

    def counting(images: np.ndarray, **kwargs: object) -> np.ndarray:
        calls.append(len(images))
        return pixel_features(images)

    swap_in_pixel_network(monkeypatch.setattr, counting)
    return calls


def swap_in_pixel_network(setattr: Callable[[object, str, object], None],
                          features: Callable[..., np.ndarray] = pixel_features) -> None:
    """`features` in place of the FID network in every stage module, under `STAND_IN_IDENTITY`; `setattr` is
    monkeypatch's (undone after the test) or the builtin (in a process of its own, tests/faults/launcher.py)."""
    for module in (evaluate_module, features_module, fid_curve_module):
        setattr(module, "extract_features", features)
    for module in (evaluate_module, features_module):
        setattr(module, "extractor_identity", lambda: dict(STAND_IN_IDENTITY))


def fashion_test_split(n: int) -> np.ndarray:
    """The first n Fashion-MNIST test images (uint8 NHWC; IDX: a 16-byte header, then the pixels) from
    $GENBENCH_DATA_DIR, which tests/conftest.py always sets."""
    path = Path(os.environ[inception.DATA_DIR_ENV]) / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        raw = handle.read(16 + n * 28 * 28)
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 28, 28, 1).copy()
