"""One tiny project, prepared and trained once per session (vae, dcgan, ddpm), with the reference set's
Inception features cached, that stage tests copy from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genbench.components.features import reference_features
from genbench.components.io import file_digest, load_npy
from genbench.components.prepare import prepare
from genbench.components.train import train
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
        train(family, config.family(family), config.seed, layout.data, layout.run(family), cache_dir=layout.cache)
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
