"""`genbench bench --gpu-evidence` on the tiny profile, on the CPU: the dry run of the GPU evidence command
(docs/benchmarks.md). It prepares the tiny data from $GENBENCH_DATA_DIR, trains for a few seconds, draws with DDIM and
DPM-Solver++ and scores each set through `evaluate.score`; the table and record are rewritten after every phase, a
stopped run keeps the settings it finished, and bad options exit 2 before any work.

The FID network is the pixel stand-in (conftest.py): this checks the plumbing, whose numbers the real network would
only make slower; the copy of the real network the GPU machine scores with (--fid-kit) is checked in
tests/stages/test_bench_fid_copy.py, and here that the run points the evaluate stage at it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.bench import evidence as evidence_module
from genbench.components.bench.fid_copy import REBUILT_FILE
from genbench.components.common import dtypes
from genbench.components.evaluate.inception import DATA_DIR_ENV, FID_WEIGHTS_ENV

TINY = ["bench", "--gpu-evidence", "--profile", "tiny", "--minutes", "0.02", "--fid-n", "8", "--nfe", "2",
        "--out", "evidence.md", "--json", "evidence.json", "--work", "work"]


def test_the_dry_run_trains_samples_scores_and_writes_its_table(project: Path, pixel_network: list[int],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    # a CPU without native bf16, whichever CPU runs the test: `dtype: auto` then trains in eager fp32
    monkeypatch.setattr(dtypes, "native_bf16", lambda _: False)
    monkeypatch.setattr(evidence_module, "native_bf16", lambda _: False)
    seen: list[str | None] = []
    prepare = evidence_module.prepare
    monkeypatch.setattr(evidence_module, "prepare",
                        lambda *args: seen.append(os.environ.get(FID_WEIGHTS_ENV)) or prepare(*args))
    kit = Path(os.environ[DATA_DIR_ENV]) / "fid"
    result = CliRunner().invoke(app, [*TINY, "--fid-kit", str(kit)])
    assert result.exit_code == 0, result.output
    # the network rebuilt from the kit is the one the run scores with, and only during the run
    assert seen == [str(Path("work") / "fid" / REBUILT_FILE)] and FID_WEIGHTS_ENV not in os.environ
    assert (project / "work" / "fid" / REBUILT_FILE).is_file()
    record = json.loads((project / "evidence.json").read_text())
    assert record["complete"] is True and record["profile"] == "tiny" and record["device"] == "cpu"
    train = record["train"]
    assert train["steps"] >= 2 and train["images_per_s"] > 0 and 0 < train["mfu"] and train["peak_memory"] is None
    assert train["path"] == "eager fp32" and math.isfinite(train["final_loss"])
    assert [(row["sampler"], row["steps"], row["nfe"]) for row in record["rows"]] == [("ddim", 2, 2),
                                                                                       ("dpmpp_2m", 2, 2)]
    for row in record["rows"]:
        assert math.isfinite(row["fid"]) and row["images_per_s"] > 0 and row["mfu"] > 0
        assert row["peak_memory"] is None and row["score_seconds"] > 0
    assert record["protocol"] == {"name": "holdout", "dataset": "fashion_mnist", "n_generated": 8,
                                  "reference_split": "test", "reference_size": 24, "feature_reference_size": 24,
                                  "network": "pixel-stand-in@000000000000", "resize": "legacy-tf", "precision": "fp32"}
    assert pixel_network == [24, 8, 8]  # the reference once (then cached), each set once
    table = (project / "evidence.md").read_text()
    assert "(complete); profile tiny's ddpm" in table
    assert "| ddim | 2 | 2 |" in table and "| dpmpp_2m | 2 | 2 |" in table
    assert "FID-8 (8 generated images per row), protocol holdout: each row's N generated images against the " \
           "statistics of 24 fashion_mnist test-split images" in table
    assert table in result.output
    for said in ("training profile tiny's ddpm for 0.02 min ...", "ddim 2 steps (2 NFE): 8 images, then FID: FID",
                 "dpmpp_2m 2 steps (2 NFE): 8 images, then FID: FID"):
        assert said in result.output
    assert (project / "work" / "data" / "reference.npy").is_file()


def test_under_the_paper_protocol_it_scores_against_the_whole_training_split(
    project: Path, pixel_network: list[int]
) -> None:
    """The run follows the profile's evaluate.protocol as the evaluate stage does: paper scores against the statistics
    of all 60 000 Fashion-MNIST training images, with the profile's reference_size of them kept as rows."""
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("tiny: {bootstrap: 10}", "tiny: {bootstrap: 10, protocol: paper}", 1))
    result = CliRunner().invoke(app, TINY)
    assert result.exit_code == 0, result.output
    protocol = json.loads((project / "evidence.json").read_text())["protocol"]
    assert (protocol["name"], protocol["reference_split"], protocol["reference_size"]) == ("paper", "train", 60000)
    assert protocol["feature_reference_size"] == 24
    assert "statistics of fashion_mnist's whole training split (protocol paper)" in result.output


def test_a_stopped_run_keeps_the_settings_it_finished(project: Path, pixel_network: list[int],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    scored = evidence_module.score

    def once(*args: object, **kwargs: object) -> object:
        if len(pixel_network) > 1:  # the reference and the first set are done
            raise KeyboardInterrupt
        return scored(*args, **kwargs)

    monkeypatch.setattr(evidence_module, "score", once)
    result = CliRunner().invoke(app, TINY)
    assert result.exit_code == 130, result.output
    assert "stopped; the phases that finished are in evidence.md" in result.output
    record = json.loads((project / "evidence.json").read_text())
    assert record["complete"] is False and [row["sampler"] for row in record["rows"]] == ["ddim"]
    assert "stopped or still running: 1 of 2 settings scored" in (project / "evidence.md").read_text()


@pytest.mark.parametrize(("options", "named"), [
    (["--minutes", "1"], "--minutes: an option of the GPU evidence run; add --gpu-evidence"),
    (["--nfe", "2", "--fid-kit", "kit"], "--nfe, --fid-kit: options of the GPU evidence run"),
    (["--gpu-evidence", "--sample-n", "2"], "--sample-n: an option of the speed bench"),
    (["--gpu-evidence", "--no-write", "--ddim-steps", "2"], "--ddim-steps, --no-write: options of the speed bench"),
    (["--gpu-evidence", "--minutes", "0"], "--minutes 0: give a positive training time"),
    (["--gpu-evidence", "--nfe", "9"], "--nfe 9: ddim cannot take it"),
    (["--gpu-evidence", "--nfe", "2", "--fid-n", "5"], "--fid-n 5"),
    (["--gpu-evidence", "--nfe", "2", "--fid-kit", "kit"], "kit/inception-2015-12-05-pool3.arch-only"),
])  # fmt: skip
def test_bad_options_exit_2_naming_the_option_before_any_work(project: Path, options: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["bench", "--profile", "tiny", *options, "--out", "evidence.md"])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (project / "evidence.md").exists() and not (project / ".genbench").exists()
