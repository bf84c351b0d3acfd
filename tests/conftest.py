"""Shared fixtures: offline data, a tiny-profile project folder, isolated MLflow/Prefect state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def offline_data() -> Path:
    """Point GENBENCH_DATA_DIR at local Fashion-MNIST and FID weights; fail loudly if they are missing."""
    data_dir = Path(os.environ.get("GENBENCH_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    for needed in ("fashion-mnist/t10k-images-idx3-ubyte.gz", "fid/inception-2015-12-05-pool3.torchscript.pt"):
        if not (data_dir / needed).exists():
            pytest.exit(f"{data_dir / needed} missing: set GENBENCH_DATA_DIR to a folder with the offline data", 2)
    os.environ["GENBENCH_DATA_DIR"] = str(data_dir)
    return data_dir


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder with the repo's params.yaml on the tiny profile, as the cwd."""
    text = (REPO / "params.yaml").read_text().replace("profile: quick ", "profile: tiny ", 1)
    assert "profile: tiny" in text
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path

