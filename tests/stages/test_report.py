"""The report: sample grids with the same pixels as torchvision's `save_image`, which they replace, and the
real-data row every family is read against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.io import file_digest
from genbench.components.report import save_grid
from genbench.config import load_config

from .test_stages import invoke


@pytest.mark.parametrize("shape", [(64, 28, 28, 1), (13, 32, 32, 3), (5, 28, 28, 1)])
def test_grids_match_torchvision_pixel_for_pixel(shape: tuple[int, ...], tmp_path: Path) -> None:
    from torchvision.utils import save_image

    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    save_grid(images, tmp_path / "ours.png")
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    batch = batch.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    save_image(batch, tmp_path / "theirs.png", nrow=8, padding=2, pad_value=1.0, format="png")
    ours, theirs = np.asarray(Image.open(tmp_path / "ours.png")), np.asarray(Image.open(tmp_path / "theirs.png"))
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


def test_report_leads_with_the_real_data_row(trained: Path, pixel_network: list[int]) -> None:
    """`genbench evaluate real` scores the held-out real images exactly as samples are scored, and the report's
    first row carries its numbers, marked as not a model."""
    config = load_config("params.yaml")
    assert "real: FID" in invoke("evaluate", "real")
    real = json.loads(Path("metrics/real.json").read_text())
    assert real["n_samples"] == config.sample.n and real["n_reference"] == config.data.reference_size
    assert real["samples_md5"] == file_digest(trained / "data" / "prepared" / "holdout.npy")
    assert {"kid_mean", "density", "coverage", "feature_extractor", "warnings"} <= real.keys()
    # The families' rows are not under test: stand-in samples and metrics save three Inception passes.
    rng = np.random.default_rng(0)
    Path("samples").mkdir()
    for k, family in enumerate(config.families):
        np.save(f"samples/{family}.npy", rng.integers(0, 256, (config.sample.n, 28, 28, 1), dtype=np.uint8))
        Path(f"metrics/{family}.json").write_text(json.dumps(
            {"fid": 300.0 + k, "precision": 0.1, "recall": 0.2, "n_samples": config.sample.n,
             "n_reference": config.data.reference_size}))
    Path("metrics/sweeps").mkdir()
    Path("metrics/sweeps/ddim_steps.json").write_text(json.dumps(
        {"name": "ddim_steps", "entry": "ddpm", "vary": "sample_steps", "set": {"sampler": "ddim"}, "rows": [
            {"value": 2, "fid": 123.456, "precision": 0.1, "recall": 0.2, "n_samples": 24,
             "seconds_per_image": 0.01}]}))
    invoke("report")
    models, sweeps = Path("report/report.md").read_text().split("## Sampling sweeps")
    assert "### ddim_steps: ddpm, sample_steps (sampler=ddim)" in sweeps
    assert "| 2 | 123.46 | 0.100 | 0.200 | 24 | 0.0100 |" in sweeps and Path("report/sweeps.png").stat().st_size
    table = [line for line in models.splitlines() if line.startswith("| ")]
    assert table[1] == (
        f"| real data (held-out images) | {real['fid']:.2f} | {real['precision']:.3f} | {real['recall']:.3f} "
        f"| {real['n_samples']} | {real['n_reference']} | not a model | – | – | – |"
    )
    assert [row.split(" | ")[0] for row in table[2:]] == [f"| {family}" for family in config.families]
    summary = json.loads(Path("report/summary.json").read_text())
    assert summary["real_data"] == {"name": "real data (held-out images)",
                                    **{key: real[key] for key in ("fid", "precision", "recall", "n_samples",
                                                                  "n_reference")}}


def test_evaluate_real_needs_the_holdout(prepared: Path) -> None:
    (prepared / "data" / "prepared" / "holdout.npy").unlink()
    result = CliRunner().invoke(app, ["evaluate", "real"])
    assert result.exit_code == 2 and "holdout.npy not found; run `genbench prepare` first" in result.output
