"""`genbench bench`'s arithmetic: FLOPs against closed forms, MFU, the vendor peak table, the goals, the rows it
writes into a benchmarks file, how it reports phases and progress inside the DDPM sampler (the measurements
themselves run in tests/stages/test_bench.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genbench.components.bench import bench as bench_module
from genbench.components.bench.bench import (
    BF16_EMULATED,
    BenchResult,
    BenchSizes,
    FeatureFigures,
    Rate,
    SampleFigures,
    TrainFigures,
    counted_steps,
    goals,
)  # fmt: skip
from genbench.components.bench.bench_report import COLUMNS, HEADING, append_row, check_table, header, row, summary
from genbench.components.bench.flops import count_flops, mfu
from genbench.components.bench.peak import Peak, device_peak, vendor_peak
from genbench.components.bench.progress import Phases
from genbench.components.common.drawing import draw_images
from genbench.models.ddpm import DDPMArch
from genbench.models.samplers import DiffusionSampling

from ..conftest import REPO


def test_linear_counts_two_m_n_k_forward_and_three_times_that_with_both_gradients() -> None:
    m, k, n = 5, 7, 3
    layer, x = torch.nn.Linear(k, n), torch.randn(m, k, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * m * n * k
    # backward: the input's gradient (m×n by n×k) and the weight's (n×m by m×k), each 2·m·n·k
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * m * n * k


def test_convolution_counts_two_flops_per_multiply_add() -> None:
    conv, x = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1), torch.randn(2, 3, 5, 5)
    assert count_flops(lambda: conv(x)) == 2 * (2 * 5 * 5) * 4 * (3 * 3 * 3)


def test_attention_on_the_cpu_counts_its_two_products_forward_and_five_backward() -> None:
    """Torch's table counts the CUDA attention kernels only; without components/bench/flops.py's formulas the CPU
    kernel, and the fused op `inference_mode` dispatches, would count 0."""
    b, s, d = 2, 49, 16
    q = torch.randn(b, s, d, requires_grad=True)
    forward = 2 * b * s * s * d * 2  # Q Kᵀ, then softmax · V
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == forward
    with torch.inference_mode():
        assert count_flops(lambda: F.scaled_dot_product_attention(q.detach(), q.detach(), q.detach())) == forward
    backward = 2 * b * s * s * d * 5  # scores recomputed; the gradients of V, the scores, Q and K
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward()) == forward + backward


def test_mfu_is_achieved_over_peak() -> None:
    assert mfu(346.3e12, 989.5e12) == pytest.approx(0.35, abs=1e-4)
    assert mfu(2.0, 8.0) == 0.25
    with pytest.raises(ValueError, match="positive"):
        mfu(1.0, 0.0)


@pytest.mark.parametrize(("name", "part", "tflops"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5),
    ("NVIDIA H200", "H200 SXM", 989.5),
    ("NVIDIA H200 NVL", "H200 NVL", 835.5),
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
    ("NVIDIA A100 80GB PCIe", "A100", 312.0),
])  # fmt: skip
def test_vendor_table_gives_the_dense_bf16_peak(name: str, part: str, tflops: float) -> None:
    peak = vendor_peak(name)
    assert peak is not None and (peak.part, peak.flops_per_s) == (part, tflops * 1e12)


@pytest.mark.parametrize("name", ["NVIDIA RTX A1000", "NVIDIA GH200 480GB", "NVIDIA L4", "Intel(R) Xeon(R)"])
def test_names_outside_the_table_get_no_vendor_peak(name: str) -> None:
    assert vendor_peak(name) is None


def test_a_cpu_peak_is_its_measured_bf16_matmul() -> None:
    peak = device_peak(torch.device("cpu"), "NVIDIA H100 PCIe", matmul_size=32, repeats=1, warmup=0)
    assert peak.kind == "measured" and peak.flops_per_s == peak.matmul_flops_per_s > 0
    assert "32×32" in peak.source and peak.matmul_dtype == "bf16"


def test_where_bf16_is_emulated_the_peak_is_an_fp32_matmul_and_says_so() -> None:
    peak = device_peak(torch.device("cpu"), "AMD EPYC", matmul_size=32, repeats=1, warmup=0, dtype="fp32")
    assert peak.matmul_dtype == "fp32" and peak.source == "fp32 32×32 matrix product" and peak.flops_per_s > 0


def _result(device_name: str = "Test CPU", train_speedup: float = 2.5, sample_speedup: float = 16.0,
            peer: bool = True) -> BenchResult:
    """A result whose rates follow from round seconds, so every cell of its row is known."""
    peak = Peak(flops_per_s=1e12, kind="measured", source="bf16 32×32 matrix product", matmul_size=32,
                matmul_flops_per_s=1e12)

    def rate(seconds: float, images: int, flops: float | None = None) -> Rate:
        achieved = None if flops is None else flops / seconds
        return Rate(seconds=seconds, images_per_s=images / seconds, flops_per_s=achieved,
                    mfu=None if achieved is None else achieved / peak.flops_per_s)

    train = TrainFigures(flops_per_step=400_000_000_000, eager_fp32=rate(2.0, 4, 4e11),
                         fast=rate(2.0 / train_speedup, 4, 4e11), speedup=train_speedup)
    sample = SampleFigures(flops_per_step=10**9, ddpm_steps=1000, ddim_steps=50, ddpm=rate(16.0, 2, 1e12),
                           ddim=rate(16.0 / sample_speedup, 2, 5e10), speedup=sample_speedup)
    features = FeatureFigures(peer=rate(4.0, 8) if peer else None, ours_fp32=rate(2.0, 8), ours_bf16=None,
                              speedup_fp32=2.0 if peer else None, speedup_bf16=None, difference=3e-6 if peer else None)
    sizes = BenchSizes(batch_size=4, sample_n=2, feature_n=8, feature_batch=4, repeats=3, warmup=1, matmul_size=32)
    return BenchResult(
        date="2026-12-01", device="cpu", device_name=device_name, torch="2.14.1", profile="full",
        arch={"base_channels": 128}, image=(1, 28), parameters=10, fast_path="bf16 autocast + channels_last",
        sizes=sizes, peak=peak, train=train, sample=sample, features=features,
        goals=goals(device_name, train, sample, 1000, 50), notes=[],
    )  # fmt: skip


def _cells(result: BenchResult) -> dict[str, str]:
    """The row's cells by column title."""
    cells = [cell.strip() for cell in row(result).strip("|").split(" | ")]
    return dict(zip((title for title, _ in COLUMNS), cells, strict=True))


def test_goals_are_judged_only_on_an_h100_and_met_at_their_thresholds() -> None:
    here = _result()
    assert [goal.judged for goal in here.goals] == [False, False, False]
    h100 = _result("NVIDIA H100 80GB HBM3", train_speedup=2.0, sample_speedup=14.9)
    assert [(goal.judged, goal.met) for goal in h100.goals] == [(True, True), (True, True), (True, False)]
    assert h100.goals[1].value == pytest.approx(0.4)  # 4e11 FLOPs in 1 s against 1e12


def test_a_row_has_a_cell_per_column_with_the_ratios_and_mfu_of_its_rates() -> None:
    named = _cells(_result())
    assert len(named) == len(COLUMNS) == len(header()[0].split(" | "))
    assert named["train img/s eager fp32"] == "2" and named["train img/s fast"] == "5"
    assert named["fast ×"] == "2.50×" and named["DDIM ×"] == "16.00×" and named["ours ×"] == "2.00×"
    assert named["train GFLOP/img"] == "100"
    assert named["train MFU eager / fast"] == "20.0 % / 50.0 %"
    assert named["FID img/s ours bf16"] == "–" and named["peak TFLOP/s"] == "1 (measured bf16)"
    assert named["H100 goals"] == "not judged here"
    without_peer = _cells(_result(peer=False))
    assert (without_peer["FID img/s peer"], without_peer["ours ×"]) == ("–", "–")


def test_a_run_that_timed_the_fast_path_once_and_skipped_bf16_says_so_in_its_row() -> None:
    """Where bf16 is emulated the fast path is eager fp32 itself and our bf16 features are not timed (bench.py)."""
    result = _result()
    result.train = TrainFigures(flops_per_step=result.train.flops_per_step, eager_fp32=result.train.eager_fp32,
                                fast=None, speedup=None)
    result.skipped = {"train_fast": "it is eager fp32 itself", "features_ours_bf16": BF16_EMULATED}
    result.peak = result.peak.model_copy(update={"matmul_dtype": "fp32"})
    result.goals = goals(result.device_name, result.train, result.sample, 1000, 50)
    named = _cells(result)
    assert (named["train img/s fast"], named["fast ×"], named["train MFU eager / fast"]) == ("= eager", "–",
                                                                                             "20.0 % / –")
    assert (named["FID img/s ours bf16"], named["peak TFLOP/s"]) == ("skipped: bf16 emulated", "1 (measured fp32)")
    assert [(goal.value, goal.met) for goal in result.goals[:2]] == [(None, False), (None, False)]
    lines = summary(result)
    assert "train: eager fp32 2 img/s, the fast path is eager fp32 here" in lines[2]
    assert f"skipped: features_ours_bf16: {BF16_EMULATED}" in lines


def test_phases_say_each_start_and_end_and_save_every_finished_phase(tmp_path: Path) -> None:
    said: list[str] = []
    path = tmp_path / "partial.json"
    phases = Phases(said.append, path)
    phases.about(device="cpu", sizes=BenchSizes(batch_size=4, sample_n=2, feature_n=8, feature_batch=4, repeats=3,
                                                warmup=1, matmul_size=32))
    assert json.loads(path.read_text())["sizes"]["batch_size"] == 4
    rate = phases.run("one", "first phase", lambda: Rate(seconds=2.0, images_per_s=4.0), lambda r: f"{r.seconds} s")
    assert rate.images_per_s == 4.0
    saved = json.loads(path.read_text())
    assert saved["complete"] is False and saved["phases"]["one"]["figures"]["images_per_s"] == 4.0
    phases.skip("two", "second phase", "not here")
    assert json.loads(path.read_text())["skipped"] == {"two": "not here"}
    assert [line.split("] ", 1)[1] for line in said] == ["first phase ...", "first phase: 2.0 s (0 s)",
                                                         "second phase: skipped, not here"]
    assert all(line.startswith("[") and " s] " in line for line in said)


def test_a_phase_that_fails_leaves_the_file_with_the_phases_before_it(tmp_path: Path) -> None:
    path = tmp_path / "partial.json"
    phases = Phases(None, path)
    phases.run("one", "first", lambda: 1.5, str)

    def stop() -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        phases.run("two", "second", stop, str)
    assert list(json.loads(path.read_text())["phases"]) == ["one"]


def test_counted_steps_reports_within_a_sampler_and_changes_no_sample() -> None:
    """DDPM's progress lines come from wrapping the model's noise predictor (bench.counted_steps): every `every`-th
    evaluation is reported, the images are the same bits as without it, and the model is as it was after."""
    arch = DDPMArch(base_channels=4, channel_mults=(1,), num_res_blocks=1, attention_resolutions=(), timesteps=6,
                    dropout=0.0)
    model = bench_module._model(arch, (1, 8), torch.device("cpu"))
    sampling = DiffusionSampling(sampler="ddpm")
    plain = draw_images(model, range(2), 0, sampling)
    reports: list[int] = []
    with counted_steps(model, 2, lambda done, seconds: reports.append(done)):
        counted = draw_images(model, range(2), 0, sampling)
    assert reports == [2, 4, 6] and (counted == plain).all()
    assert "noise_predictor" not in vars(model)


def test_append_row_adds_heading_and_header_once_then_rows_under_them(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Later section\n\ntext\n")
    append_row(path, _result())
    append_row(path, _result(device_name="Second CPU"))
    lines = path.read_text().splitlines()
    assert lines[:7] == ["# Benchmarks", "", "intro", "", "## Later section", "", "text"]
    start = lines.index(HEADING)
    assert lines[start + 2 : start + 4] == header()
    assert "Test CPU" in lines[start + 4] and "Second CPU" in lines[start + 5] and len(lines) == start + 6


def test_append_row_extends_the_table_inside_its_section(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    before = ["# Benchmarks", "", HEADING, "", "How it is run.", "", *header(), "", "## Older", "", "| a |", ""]
    path.write_text("\n".join(before))
    append_row(path, _result())
    lines = path.read_text().splitlines()
    assert lines == [*before[:8], row(_result()), *before[8:-1]]


def test_a_table_with_other_columns_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    text = f"{HEADING}\n\n| date | device |\n|---|---|\n| 2026-01-01 | old |\n"
    path.write_text(text)
    with pytest.raises(ValueError, match="other columns"):
        check_table(path)
    with pytest.raises(ValueError, match="--out"):
        append_row(path, _result())
    assert path.read_text() == text


def test_the_repository_benchmarks_file_holds_the_current_header() -> None:
    path = REPO / "docs" / "benchmarks.md"
    check_table(path)
    lines = path.read_text().splitlines()
    start = lines.index(HEADING)
    assert header()[0] in lines[start:], "docs/benchmarks.md has no `genbench bench` table; rows would start a new one"
