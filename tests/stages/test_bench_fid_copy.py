"""The FID network as the GPU machine gets it (components/bench/fid_copy.py): rebuilt from $GENBENCH_DATA_DIR/fid's
arch-only TorchScript and fp16 weights, it computes the exact network's features to fp16 rounding, its file is the
same bytes on every rebuild (so the sha256 every record names is too), and a kit missing a piece or holding another
network's weights is refused, naming the file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genbench.components.bench.fid_copy import ARCH_FILE, WEIGHTS_FILE, rebuild
from genbench.components.evaluate import inception

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
KIT = Path(os.environ[inception.DATA_DIR_ENV]) / "fid"  # tests/conftest.py sets it


def test_the_rebuilt_network_gives_the_exact_features_to_fp16_rounding_and_the_same_bytes_each_time(
    tmp_path: Path,
) -> None:
    first, second = rebuild(KIT, tmp_path / "a"), rebuild(KIT, tmp_path / "b")
    assert inception.weights_sha256(first) == inception.weights_sha256(second)
    assert inception.weights_sha256(first) != inception.weights_sha256(inception.locate_weights())
    written = first.stat().st_mtime_ns
    assert rebuild(KIT, tmp_path / "a") == first and first.stat().st_mtime_ns == written  # reused, not rebuilt
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 1, 28, 28), dtype=np.uint8))
    with torch.inference_mode():
        exact = inception.InceptionFeatures(inception.load_network(inception.locate_weights()))(images)
        copied = inception.InceptionFeatures(inception.load_network(first))(images)
    difference = float((copied - exact).norm() / exact.norm())
    assert 0 < difference < 1e-2  # fp16 has 11 significant bits; the features keep that order of error


def test_a_kit_missing_a_piece_or_holding_other_weights_is_refused(tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    kit.mkdir()
    with pytest.raises(FileNotFoundError, match=ARCH_FILE):
        rebuild(kit, tmp_path / "out")
    shutil.copy(KIT / ARCH_FILE, kit / ARCH_FILE)
    torch.save({"conv.weight": torch.zeros(1, dtype=torch.float16)}, kit / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="not the network's"):
        rebuild(kit, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
