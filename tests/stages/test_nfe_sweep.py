"""An FID-against-NFE sweep (`vary: nfe`) on the tiny ddpm (T = 4): each sampler at the most steps whose network
evaluations fit each target, run through the sweep command every driver runs, with its table and its figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.common.records import MetricsRecord, read_sweep
from genbench.components.report import figures
from genbench.components.report.report import _sweep_markdown
from genbench.components.sample.sample import sample
from genbench.config import load_config

from .test_stages import edit_params, invoke

NFE_SWEEP = {"entry": "ddpm", "vary": "nfe", "samplers": ["ddim", "dpmpp_2m", "heun"], "values": [3], "n": 12}


def test_an_nfe_sweep_draws_each_sampler_within_its_target(trained: Path, pixel_network: list[int]) -> None:
    edit_params(lambda p: p["profiles"]["tiny"]["sweeps"].update(nfe=NFE_SWEEP))
    said = invoke("sweep", "nfe")
    assert "nfe: heun 2 steps, NFE 3 (target 3): FID" in said
    record = read_sweep(trained / "metrics" / "sweeps" / "nfe.json")
    # Heun's 2 steps cost 3 network evaluations (2 per step but the last); DDIM and DPM-Solver++ one per step
    assert [(r.sampler, r.sample_steps, r.network_evaluations, r.value) for r in record.rows] == [
        ("ddim", 3, 3, 3), ("dpmpp_2m", 3, 3, 3), ("heun", 2, 3, 3)]
    folder = trained / "sweeps" / "nfe"
    assert sorted(p.name for p in folder.glob("*.npy")) == ["ddim-nfe-3.npy", "dpmpp_2m-nfe-3.npy", "heun-nfe-3.npy"]
    for row in record.rows:
        stem = f"{row.sampler}-nfe-{row.value}"
        drawn = json.loads((folder / f"{stem}.json").read_text())
        assert (drawn["sampling"]["sampler"], drawn["sampling"]["sample_steps"], drawn["network_evaluations"]) == (
            row.sampler, row.sample_steps, row.network_evaluations)
        scored = json.loads((folder / f"{stem}.metrics.json").read_text())
        assert (row.fid, row.fid_ci95) == (scored["fid"], scored["fid_ci95"]) and row.fid_ci95 is not None

    # the set is what `sample` draws from the same weights and seeds at the row's settings
    config = load_config("params.yaml")
    heun = config.sampling_for("ddpm").updated({"sampler": "heun", "sample_steps": 2})
    sample(trained / "runs" / "ddpm" / "seed-0", trained / "direct.npy", "ddpm",
           config.sample.model_copy(update={"n": 12}), heun, config.seed)
    assert np.array_equal(np.load(folder / "heun-nfe-3.npy"), np.load(trained / "direct.npy"))

    table = _sweep_markdown([record])
    assert "### nfe: ddpm, FID against NFE" in table and "| sampler | steps | NFE | FID ↓ |" in table
    low, high = record.rows[2].fid_ci95
    assert f"| heun | 2 | 3 | {record.rows[2].fid:.2f} [{low:.2f}, {high:.2f}] ¹ |" in table  # N = 12: warned

    real = MetricsRecord.model_validate(json.loads((folder / "heun-nfe-3.metrics.json").read_text()))
    figures.nfe_sweep(record, real, trained / "nfe")
    without = record.model_copy(update={"rows": [r.model_copy(update={"fid_ci95": None}) for r in record.rows]})
    figures.nfe_sweep(without, real, trained / "nfe-without")
    for stem in ("nfe", "nfe-without"):
        assert (trained / f"{stem}.png").stat().st_size > 5000
        assert (trained / f"{stem}.pdf").read_bytes().startswith(b"%PDF")


def test_an_nfe_target_the_sampler_cannot_meet_stops_before_sampling(trained: Path) -> None:
    """At T = 4 DPM-Solver++ runs at most 3 steps (4 would visit one timestep twice), so targets 3 and 4 would draw
    the same set twice: refused at load, naming the field, before anything is written."""
    edit_params(lambda p: p["profiles"]["tiny"]["sweeps"].update(nfe=NFE_SWEEP | {"values": [3, 4]}))
    result = CliRunner().invoke(app, ["sweep", "nfe"])
    assert result.exit_code == 2
    assert "sweeps.nfe.values: NFE targets 3 and 4 both give dpmpp_2m 3 steps (3 network evaluations); drop one" \
        in result.output
    edit_params(lambda p: p["profiles"]["tiny"]["sweeps"].update(nfe=NFE_SWEEP | {"values": [2]}))
    result = CliRunner().invoke(app, ["sweep", "nfe"])
    assert result.exit_code == 2 and "sweeps.nfe.values: NFE 2 with sampler heun: 2 network evaluations are too " \
        "few for heun: its fewest steps (2) take 3 here" in result.output
    assert not (trained / "sweeps" / "nfe").exists() and not (trained / "metrics" / "sweeps").exists()
