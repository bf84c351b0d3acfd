"""Every sweep point carries its 95 % bootstrap intervals (the tiny profile scores with `evaluate.bootstrap`), in
the sweep's summary, its table and its figure's error bars."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.common.records import MetricsRecord, read_sweep
from genbench.components.report import figures
from genbench.components.report.report import _sweep_markdown
from genbench.config import load_config


def test_a_sweep_point_carries_the_intervals_of_its_metrics(trained: Path, pixel_network: list[int]) -> None:
    assert load_config("params.yaml").evaluate.bootstrap > 0
    result = CliRunner().invoke(app, ["sweep", "ddim_steps"])
    assert result.exit_code == 0, result.output
    record = read_sweep(trained / "metrics" / "sweeps" / "ddim_steps.json")
    row = record.rows[0]
    scored = json.loads((trained / "sweeps" / "ddim_steps" / f"sample_steps-{row.value}.metrics.json").read_text())
    assert (row.fid_ci95, row.precision_ci95, row.recall_ci95) == (
        scored["fid_ci95"], scored["precision_ci95"], scored["recall_ci95"])
    low, high = row.fid_ci95
    assert low < high
    table = _sweep_markdown([record])
    # the FID carries the mark of its metrics file's warnings (N = 12 here), listed under the table with the
    # protocol and the bootstrap count
    assert row.warnings == scored["warnings"] != []
    assert f"| {row.value} | {row.fid:.2f} [{low:.2f}, {high:.2f}] ¹ | {row.precision:.3f} [" in table
    assert f"\n1. {'; '.join(w for w in row.warnings if 'KID' not in w)}\n" in table
    assert "Protocol holdout:" in table and f"intervals from {record.bootstrap} bootstrap resamples" in table
    without = record.model_copy(update={"rows": [row.model_copy(update={"fid_ci95": None, "warnings": []})]})
    assert f"| {row.value} | {row.fid:.2f} | {row.precision:.3f} [" in _sweep_markdown([without])

    figures.sweep(record, MetricsRecord.model_validate(scored), trained / "sweep")
    figures.sweep(without, MetricsRecord.model_validate(scored), trained / "sweep-without")
    assert (trained / "sweep.png").stat().st_size > 0 and (trained / "sweep-without.png").stat().st_size > 0
