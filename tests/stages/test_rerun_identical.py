"""Two runs of the tiny profile with two seeds, from scratch in two folders, give byte-identical tables, samples
and weights (fixed seeds, sorted iteration, no timestamps in those files); measured wall time lives in
cost.* and runs.csv, which are left out on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbench.components.evaluate.evaluate import evaluate, evaluate_real
from genbench.components.prepare.prepare import prepare
from genbench.components.report import report as report_module
from genbench.components.report.report import report
from genbench.components.sample.sample import sample
from genbench.components.sweep.sweep import sweep
from genbench.components.train.train import train
from genbench.config import load_config
from genbench.layout import Layout

from ..conftest import use_tiny

FAMILIES = ("vae", "ddpm")


def _run_from_scratch(root: Path) -> Layout:
    root.mkdir()
    use_tiny(root, seeds=[0, 1], entries=list(FAMILIES))
    config, layout = load_config(root / "params.yaml"), Layout(root)
    assert config.seeds == (0, 1) and config.entries == FAMILIES
    prepare(config.data, config.seed, layout.data, layout.downloads)
    evaluate_real(layout.holdout, layout.reference, layout.real_metrics, cache_dir=layout.cache,
                  settings=config.evaluate)
    for name in config.entries:
        for seed in config.seeds:
            train(name, config.entry(name), seed, layout.data, layout.run(name, seed))
            sample(layout.run(name, seed), layout.samples(name, seed), name, config.sample, config.sampling_for(name),
                   seed)
            evaluate(layout.samples(name, seed), layout.reference, layout.metrics(name, seed), cache_dir=layout.cache,
                     settings=config.evaluate)
    for name, spec in config.sweeps.items():
        sweep(name, spec, layout.run(spec.entry, config.seeds[0]), config.sampling_for(spec.entry), config.sample,
              config.seeds[0], layout.reference, layout.sweep(name), layout.sweep_summary(name), cache_dir=layout.cache,
              evaluate_settings=config.evaluate)
    report(config, layout, layout.results)
    return layout


def test_two_runs_from_scratch_are_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  pixel_network: list[int]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # The report writes its tables only: the figures are not compared (test_report.py checks them), are drawn after
    # the tables, and cost more than the rest of the report.
    monkeypatch.setattr(report_module, "_figures", lambda *_: [])
    one, two = _run_from_scratch(tmp_path / "one"), _run_from_scratch(tmp_path / "two")
    compared = [Path("results") / name for name in ("results.csv", "results.md", "results.tex")]
    for name in FAMILIES:
        for seed in (0, 1):
            compared += [one.samples(name, seed).relative_to(one.root),
                         (one.run(name, seed) / "model.safetensors").relative_to(one.root)]
    for path in compared:
        assert (one.root / path).read_bytes() == (two.root / path).read_bytes(), path
    # the seeds differ from each other (not one run copied twice)
    assert one.samples("ddpm", 0).read_bytes() != one.samples("ddpm", 1).read_bytes()
