"""`genbench bench` end to end at tiny sizes: the row it appends to a copy of docs/benchmarks.md, the JSON it
saves, what it says while it runs and leaves when stopped, the phases it skips where bf16 is emulated, and the exit
code 2 of bad options (before anything runs or is written).

The smoke run swaps the FID network for the 16-pixel stand-in (conftest.py): it checks plumbing and arithmetic,
and the real network's cost would dwarf the rest. That the peer computes our features needs torch-fidelity, which
only the `bench` group installs: tests/bench_peer.py checks it there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.bench import bench as bench_module
from genbench.components.bench import fidelity_peer
from genbench.components.bench.bench_report import COLUMNS, HEADING, header
from genbench.components.common import dtypes

from ..conftest import REPO
from .conftest import pixel_features

TINY = ["--profile", "tiny", "--batch-size", "2", "--sample-n", "1", "--ddim-steps", "2", "--feature-n", "2",
        "--feature-batch", "2", "--repeats", "2", "--warmup", "0", "--matmul-size", "32"]


@pytest.fixture
def stand_in_extractors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ours and the peer both become the pixel stand-in, whether or not torch-fidelity is installed."""
    monkeypatch.setattr(bench_module, "extract_features", lambda images, *_, **__: pixel_features(images))
    monkeypatch.setattr(fidelity_peer, "installed", lambda: True)
    monkeypatch.setattr(fidelity_peer, "peer_extractor", lambda *_: pixel_features)


def bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """The device computes bf16 natively, or only emulates it, whichever CPU runs the test."""
    monkeypatch.setattr(dtypes, "native_bf16", lambda _: native)
    monkeypatch.setattr(bench_module, "native_bf16", lambda _: native)


@pytest.fixture
def benchmarks(project: Path) -> Path:
    """A copy of the repository's docs/benchmarks.md in the tmp project."""
    path = project / "docs" / "benchmarks.md"
    path.parent.mkdir()
    shutil.copy(REPO / "docs" / "benchmarks.md", path)
    return path


def test_bench_appends_a_row_of_measured_rates_and_their_ratios(
    project: Path, benchmarks: Path, stand_in_extractors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bf16(monkeypatch, native=True)  # every phase runs: the fast path is bf16 autocast, ours bf16 is timed
    before = benchmarks.read_text().splitlines()
    result = CliRunner().invoke(app, ["bench", *TINY, "--out", str(benchmarks), "--json", "bench.json"])
    assert result.exit_code == 0, result.output
    assert f"appended a row to {benchmarks}" in result.output

    record = json.loads((project / "bench.json").read_text())
    train, sample, features = record["train"], record["sample"], record["features"]
    for rate, images in ((train["eager_fp32"], 2), (train["fast"], 2), (sample["ddpm"], 1), (sample["ddim"], 1),
                         (features["peer"], 2), (features["ours_fp32"], 2)):
        assert rate["seconds"] > 0 and rate["images_per_s"] == pytest.approx(images / rate["seconds"])
    assert train["speedup"] == pytest.approx(train["fast"]["images_per_s"] / train["eager_fp32"]["images_per_s"])
    assert sample["speedup"] == pytest.approx(sample["ddim"]["images_per_s"] / sample["ddpm"]["images_per_s"])
    assert features["speedup_fp32"] == pytest.approx(
        features["ours_fp32"]["images_per_s"] / features["peer"]["images_per_s"])
    assert (sample["ddpm_steps"], sample["ddim_steps"]) == (4, 2)  # the tiny profile's T, and --ddim-steps
    peak = record["peak"]["flops_per_s"]
    assert train["flops_per_step"] > 0 and sample["flops_per_step"] > 0
    assert train["fast"]["mfu"] == pytest.approx(train["flops_per_step"] / train["fast"]["seconds"] / peak)
    assert sample["ddpm"]["mfu"] == pytest.approx(4 * sample["flops_per_step"] / sample["ddpm"]["seconds"] / peak)

    after = benchmarks.read_text().splitlines()
    heading = after.index(HEADING)
    header_at = after.index(header()[0], heading)
    added = [line for line in after if line not in before]
    assert len(added) == 1
    at = after.index(added[0])  # the table's last row: below the header, rows above it, none after it
    assert at >= header_at + 2 and all(line.startswith("| ") for line in after[header_at + 2:at])
    assert at + 1 == len(after) or not after[at + 1].startswith("|")
    assert [line for line in after if line != added[0]] == before  # nothing else moved
    cells = [cell.strip() for cell in added[0].strip("|").split(" | ")]
    named = dict(zip((title for title, _ in COLUMNS), cells, strict=True))
    assert named["FID img/s ours bf16"] == f"{features['ours_bf16']['images_per_s']:.3g}"
    assert all(cell and cell != "–" for cell in named.values()), named
    assert record["skipped"] == {} and named["fast path"] == "bf16 autocast + channels_last"
    assert not benchmarks.with_suffix(".partial.json").exists()  # --json held the phases, the row holds them now
    assert named["date"] == record["date"] and named["torch"] == torch.__version__
    assert named["fast ×"] == f"{train['speedup']:.2f}×" and named["DDIM ×"] == f"{sample['speedup']:.2f}×"
    assert named["ours ×"] == f"{features['speedup_fp32']:.2f}×"
    assert named["train MFU eager / fast"] == (f"{100 * train['eager_fp32']['mfu']:.1f} % / "
                                               f"{100 * train['fast']['mfu']:.1f} %")


def _row_cells(line: str) -> dict[str, str]:
    return dict(zip((title for title, _ in COLUMNS), (cell.strip() for cell in line.strip("|").split(" | ")),
                    strict=True))


def test_where_bf16_is_emulated_it_skips_the_bf16_phases_and_says_so_in_the_output_and_the_row(
    project: Path, benchmarks: Path, stand_in_extractors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bf16(monkeypatch, native=False)
    timed: list[str] = []
    monkeypatch.setattr(bench_module, "extract_features",
                        lambda images, batch, device, precision: timed.append(precision) or pixel_features(images))
    before = set(benchmarks.read_text().splitlines())
    result = CliRunner().invoke(app, ["bench", *TINY, "--out", str(benchmarks), "--json", "bench.json"])
    assert result.exit_code == 0, result.output
    record = json.loads((project / "bench.json").read_text())
    assert set(record["skipped"]) == {"train_fast", "features_ours_bf16"}
    assert record["train"]["fast"] is None and record["features"]["ours_bf16"] is None
    assert set(timed) == {"fp32"}  # our bf16 features never ran
    assert record["peak"]["matmul_dtype"] == "fp32" and record["fast_path"] == "eager fp32"
    assert "FID features, ours bf16: skipped, bf16 is emulated on this device" in result.output
    assert "training, fast path eager fp32: skipped, it is eager fp32 itself" in result.output
    assert "skipped: features_ours_bf16: bf16 is emulated" in result.output  # the summary says it again
    [added] = [line for line in benchmarks.read_text().splitlines() if line not in before]
    named = _row_cells(added)
    assert named["FID img/s ours bf16"] == "skipped: bf16 emulated" and named["bf16 ×"] == "–"
    assert (named["train img/s fast"], named["fast ×"]) == ("= eager", "–")
    assert named["train MFU eager / fast"].endswith(" / –") and named["peak TFLOP/s"].endswith("(measured fp32)")


def test_each_phase_says_when_it_starts_and_ends_and_ddpm_how_far_it_is(
    project: Path, benchmarks: Path, stand_in_extractors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bf16(monkeypatch, native=True)
    result = CliRunner().invoke(app, ["bench", *TINY, "--out", str(benchmarks), "--no-write"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for title in ("peak: bf16 32² matrix product", "training, eager fp32", "training, fast path bf16 autocast",
                  "sampling, DDIM 2 steps", "sampling, DDPM ancestral over 4 steps", "FID features, ours fp32",
                  "FID features, ours bf16", "FID features, torch-fidelity's layout"):
        said = [(i, line.endswith(" ...")) for i, line in enumerate(lines) if f"] {title}" in line]
        assert [started for _, started in said] == [True, False], (title, result.output)  # once, then its figure
        assert "/s" in lines[said[1][0]]
    steps = [line.split("] ", 1)[1] for line in lines if "  DDPM " in line]
    assert [step.split(",")[0] for step in steps] == [f"  DDPM {i}/4 steps" for i in range(1, 5)]


def test_a_stopped_bench_keeps_its_finished_phases_and_writes_no_row(
    project: Path, benchmarks: Path, stand_in_extractors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stop(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_module, "_feature_figures", stop)  # Ctrl-C once sampling is done
    text = benchmarks.read_text()
    result = CliRunner().invoke(app, ["bench", *TINY, "--out", str(benchmarks)])
    partial = benchmarks.with_suffix(".partial.json")
    assert result.exit_code == 130, result.output
    assert f"stopped; the phases that finished are in {partial}" in result.output
    record = json.loads(partial.read_text())
    assert record["complete"] is False and record["device_name"] and record["sizes"]["batch_size"] == 2
    assert {"peak", "train_eager", "sample_ddim", "sample_ddpm"} <= set(record["phases"])
    assert not any(key.startswith("features") for key in record["phases"])
    ddpm = record["phases"]["sample_ddpm"]["figures"]
    assert ddpm["seconds"] > 0 and ddpm["images_per_s"] == pytest.approx(1 / ddpm["seconds"])
    assert benchmarks.read_text() == text


def test_without_torch_fidelity_it_notes_the_missing_peer_and_no_write_only_prints(
    project: Path, benchmarks: Path, stand_in_extractors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fidelity_peer, "installed", lambda: False)
    text = benchmarks.read_text()
    result = CliRunner().invoke(app, ["bench", *TINY, "--out", str(benchmarks), "--no-write"])
    assert result.exit_code == 0, result.output
    assert benchmarks.read_text() == text
    assert "torch-fidelity is not installed" in result.output and "uv run --group bench" in result.output
    [printed] = [line for line in result.output.splitlines() if line.startswith("| ")]
    named = dict(zip((title for title, _ in COLUMNS), (cell.strip() for cell in printed.strip("|").split(" | ")),
                     strict=True))
    assert (named["FID img/s peer"], named["ours ×"]) == ("–", "–") and named["FID img/s ours fp32"] != "–"


@pytest.mark.parametrize(("options", "named"), [
    (["--batch-size", "0"], "--batch-size"),
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
    (["--timesteps", "1"], "--timesteps"),
    (["--ddim-steps", "5"], "--ddim-steps"),  # the tiny profile's T is 4
    (["--ddim-steps", "60", "--timesteps", "50"], "--ddim-steps"),
    (["--device", "tpu"], "--device"),
    (["--profile", "nope"], "nope"),
])  # fmt: skip
def test_bad_options_exit_2_naming_the_option_and_write_nothing(
    project: Path, benchmarks: Path, options: list[str], named: str
) -> None:
    text = benchmarks.read_text()
    result = CliRunner().invoke(app, ["bench", "--profile", "tiny", *options, "--out", str(benchmarks),
                                      "--json", "bench.json"])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert benchmarks.read_text() == text and not (project / "bench.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_without_a_gpu_exits_2(project: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--profile", "tiny", "--ddim-steps", "2", "--device", "cuda",
                                      "--no-write"])
    assert result.exit_code == 2 and "no CUDA device" in result.output


def test_a_benchmarks_table_with_other_columns_is_refused_before_the_run(project: Path) -> None:
    out = project / "old.md"
    out.write_text(f"{HEADING}\n\n| date | figure |\n|---|---:|\n| 2026-01-01 | 1 |\n")
    text = out.read_text()
    result = CliRunner().invoke(app, ["bench", *TINY, "--out", str(out)])
    assert result.exit_code == 2 and "other columns" in result.output
    assert out.read_text() == text
