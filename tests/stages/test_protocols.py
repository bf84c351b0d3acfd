"""Named evaluation protocols: `paper` scores against the whole training split's statistics (computed once and
cached), every metrics record states its protocol, and the report never puts two protocols in one table. Scored
with the pixel stand-in for the FID network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.evaluate.metrics import feature_stats, frechet_distance
from genbench.components.prepare.prepare import load_dataset
from genbench.components.report import report as report_module
from genbench.layout import Layout

from ..conftest import use_tiny
from .conftest import pixel_features
from .test_stages import invoke

pytestmark = pytest.mark.stages
TRAIN_SPLIT = 60_000  # Fashion-MNIST's


def _paper(project: Path, **evaluate: str) -> None:
    params = project / "params.yaml"
    lines = "".join(f"  {key}: {value}\n" for key, value in {"protocol": "paper", **evaluate}.items())
    params.write_text(params.read_text().replace("\nevaluate:\n", f"\nevaluate:\n{lines}", 1))


def _stats_files(project: Path) -> list[Path]:
    return sorted((project / ".genbench" / "cache").glob("train-stats-*"))


def test_paper_scores_against_the_training_split_once(trained: Path, pixel_network: list[int]) -> None:
    _paper(trained)
    layout = Layout(trained)
    assert "real: FID" in invoke("evaluate", "real")
    real = json.loads(layout.real_metrics.read_text())
    protocol = real["protocol"]
    assert (protocol["name"], protocol["reference_split"], protocol["reference_size"]) == ("paper", "train",
                                                                                           TRAIN_SPLIT)
    assert protocol["feature_reference_size"] == 24 and protocol["precision"] == "fp32"  # data.reference_size rows
    # the floor is the test split (the held-out images belong to the training split the statistics cover)
    reference = np.load(layout.reference)
    assert real["n_samples"] == len(reference) == protocol["n_generated"] and real["n_reference"] == TRAIN_SPLIT
    assert any("not comparable with published FID-50k" in note for note in real["warnings"])

    # FID against the mean and covariance of all 60 000 training images' features, not of a subset
    train, *_ = load_dataset("fashion_mnist", layout.downloads)
    mu, sigma = feature_stats(np.concatenate([pixel_features(train[i:i + 50]) for i in range(0, len(train), 50)]))
    expected = frechet_distance(*feature_stats(pixel_features(reference)), mu, sigma)
    assert real["fid"] == pytest.approx(expected, rel=1e-6)

    [cached] = _stats_files(trained)
    stamp = cached.stat().st_mtime_ns
    invoke("sample", "vae")
    assert "vae: FID" in invoke("evaluate", "vae")
    assert _stats_files(trained) == [cached] and cached.stat().st_mtime_ns == stamp  # read, not recomputed
    assert json.loads(layout.metrics("vae", 0).read_text())["protocol"] == protocol | {"n_generated": 12}


def test_the_report_refuses_rows_of_two_protocols(trained: Path, pixel_network: list[int],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny(trained, entries=["vae"], sweeps={})
    monkeypatch.setattr(report_module, "_figures", lambda *_: [])
    invoke("sample", "vae")
    invoke("evaluate", "vae")  # holdout, the tiny profile's protocol
    _paper(trained)
    invoke("evaluate", "real")
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 2
    assert "different protocols" in result.output and "protocol paper" in result.output
    assert "protocol holdout" in result.output and not Path("results").exists()


def test_paper_takes_fp32_only(project: Path) -> None:
    _paper(project, dtype="bf16")
    result = CliRunner().invoke(app, ["evaluate", "real"])
    assert result.exit_code == 2 and "evaluate.dtype" in result.output and "fp32" in result.output


def test_metrics_command_under_paper(prepared: Path, pixel_network: list[int]) -> None:
    fake = Layout(prepared).reference
    output = invoke("metrics", str(fake), "--protocol", "paper", "--reference-n", "30")
    assert f"statistics of {TRAIN_SPLIT} fashion_mnist training-split images" in output
    assert "precision/recall, density/coverage, KID: 30 of them" in output
    both = CliRunner().invoke(app, ["metrics", str(fake), str(fake), "--protocol", "paper"])
    assert both.exit_code == 2 and "FAKE alone" in both.output
