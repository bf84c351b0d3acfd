"""One tiny project, prepared and trained once per session (vae, dcgan, ddpm), that stage tests copy from; a
cheap stand-in for the FID network; and the real network with a memory of what it has computed.

Stage tests check plumbing: which files a stage reads and writes, and what it records. The real network costs
~0.1 s per image on 2 cores, so only the tests about the network itself (test_evaluate.py, the real-data and
CLI tests of test_metrics.py) run it, through `remembered_network`, which passes each distinct batch through it
once per session; the others take `pixel_network`. The drivers tier runs the real network through every stage
end to end.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from genbench.components.evaluate import evaluate as evaluate_module
from genbench.components.evaluate import features as features_module
from genbench.components.evaluate import fid_curve as fid_curve_module
from genbench.components.evaluate import inception
from genbench.components.evaluate import training_stats as training_stats_module
from genbench.components.register import register as register_module
from genbench.components.register import registry as registry_module
from genbench.components.register import tracking
from genbench.config import load_config
from genbench.layout import Layout
from genbench.stages import STAGES, At

from ..conftest import built_once, use_tiny

FAMILIES = ("vae", "dcgan", "ddpm")


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: the tiny profile's prepared data and trained runs of FAMILIES. Tests copy what they need (no
    reference statistics: the tests that score use the pixel stand-in, whose statistics are its own)."""
    def build(root: Path) -> None:
        use_tiny(root)
        layout, config = Layout(root), load_config(root / "params.yaml")
        STAGES["prepare"].run(config, layout)  # through the stages, as every driver runs them: provenance recorded
        for family in FAMILIES:
            STAGES["train"].run(config, layout, At(family, 0))

    return built_once(tmp_path_factory, "tiny-trained", build)


_EMPTY_STORE: list[Path] = []  # the session's empty MLflow store, once made


@pytest.fixture(autouse=True)
def one_mlflow_schema(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each embedded MLflow store a stage test makes starts as a copy of one empty store made at the session's first
    need: making a store runs MLflow's schema migrations, which cost more than most register tests' own work. The
    copy is what a new store is (the tables and MLflow's Default experiment); genbench adds the rest as always."""
    configure = tracking.configure_tracking

    def configure_from_a_copy(project_dir: Path) -> str:
        database = Path(project_dir) / tracking.DB_FILENAME
        if tracking.resolve_tracking_uri(project_dir)[1] and not database.exists():
            if not _EMPTY_STORE:
                def build(folder: Path) -> None:
                    from mlflow import MlflowClient

                    tracking.quiet_mlflow()
                    MlflowClient(tracking_uri=tracking.embedded_tracking_uri(folder)).search_experiments()

                _EMPTY_STORE.append(built_once(tmp_path_factory, "empty-mlflow-store", build) / tracking.DB_FILENAME)
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_EMPTY_STORE[0], database)
        return configure(project_dir)

    for module in (tracking, register_module, registry_module):
        monkeypatch.setattr(module, "configure_tracking", configure_from_a_copy)


@pytest.fixture()
def prepared(project: Path, tiny_trained: Path) -> Path:
    """`project` with the tiny prepared data in data/prepared."""
    shutil.copytree(tiny_trained / "data" / "prepared", project / "data" / "prepared")
    return project


@pytest.fixture()
def trained(prepared: Path, tiny_trained: Path) -> Path:
    """`prepared` with trained runs/{vae,dcgan,ddpm}."""
    shutil.copytree(tiny_trained / "runs", prepared / "runs")
    return prepared


STAND_IN_IDENTITY = {"name": "pixel-stand-in", "sha256": "0" * 64}  # keys its own reference cache entries
# The standard FID network (TF Inception 2015-12-05 pool3, NVIDIA's TorchScript export), as every record must name
# it: written out here, not read from the code under test
FID_IDENTITY = {"name": "inception-v3-tf-2015-12-05-pool3",
                "sha256": "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"}


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
    for module in (evaluate_module, features_module, training_stats_module):
        setattr(module, "extractor_identity", lambda: dict(STAND_IN_IDENTITY))

    def batches(images: np.ndarray, batch_size: int = 50, *_: object, **__: object) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(images), batch_size):
            yield start, features(images[start : start + batch_size])

    setattr(training_stats_module, "iter_features", batches)


def fashion_test_split(n: int) -> np.ndarray:
    """The first n Fashion-MNIST test images (uint8 NHWC; IDX: a 16-byte header, then the pixels) from
    $GENBENCH_DATA_DIR, which tests/conftest.py always sets."""
    path = Path(os.environ[inception.DATA_DIR_ENV]) / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        raw = handle.read(16 + n * 28 * 28)
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 28, 28, 1).copy()


_REMEMBERED: dict[tuple[object, ...], torch.Tensor] = {}  # remembered_network's features, for the whole session


@pytest.fixture
def remembered_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real FID network, each distinct input passed through it once per session: a batch it has seen (the same
    uint8 images, the same network and precision) gets back the features it gave then, bit for bit. The tests about
    the network score the same few real images many times over (ours and torchmetrics', evaluate() twice, the CLI);
    every feature they see is still the network's own, and a batch laid out differently is computed anew."""
    forward = inception.InceptionFeatures.forward

    def remembering(self: inception.InceptionFeatures, images: torch.Tensor) -> torch.Tensor:
        key = (id(self.network), self.autocast_dtype, images.device.type, images.dtype, tuple(images.shape),
               hashlib.sha256(images.cpu().numpy().tobytes()).hexdigest())
        if key not in _REMEMBERED:
            _REMEMBERED[key] = forward(self, images)
        return _REMEMBERED[key].clone()

    monkeypatch.setattr(inception.InceptionFeatures, "forward", remembering)
