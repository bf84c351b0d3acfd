"""What a training run costs, as summary.json records it and the report's cost table shows it: device-seconds count
every process of a torchrun run, summaries written before `processes` and `images_per_second` still read, and the
device-hours to reach a stated FID come from the FID curve."""

from __future__ import annotations

import pytest

from genbench.components.common.artifacts import TrainSummary
from genbench.components.common.records import CurvePoint, CurveRecord
from genbench.components.report.results import Row, Stat, cost_latex, cost_markdown, cost_rows

OLD_SUMMARY = {"name": "ddpm", "family": "ddpm", "steps": 800, "seconds": 120.0, "num_parameters": 10,
               "device": "cpu", "device_name": "Xeon (2 threads)", "config_sha256": "c" * 64}


def test_a_summary_from_before_the_throughput_fields_reads_as_one_process() -> None:
    old = TrainSummary.model_validate(OLD_SUMMARY)
    assert (old.processes, old.device_seconds, old.images_per_second) == (1, 120.0, None)
    ddp = TrainSummary.model_validate(OLD_SUMMARY | {"processes": 4, "images_per_second": 512.0})
    assert ddp.device_seconds == 480.0
    dumped = ddp.model_dump(mode="json")
    assert dumped["device_seconds"] == 480.0 and TrainSummary.model_validate(dumped) == ddp  # summary.json round trip


def _run(seed: int, seconds: float, processes: int, images_per_second: float | None) -> dict:
    return {"seed": seed, "train_seconds": seconds, "train_steps": 800, "device_name": "H100", "processes": processes,
            "device_seconds": seconds * processes, "images_per_second": images_per_second,
            "sample_seconds_per_image": 0.01}


def test_the_cost_table_counts_every_process_and_shows_images_per_second() -> None:
    ddp = Row("ddpm", "ddpm", (0, 1), {"fid": Stat(30.0)}, 100, 100, 10, 100,
              [_run(0, 1800.0, 2, 400.0), _run(1, 1800.0, 2, 600.0)])
    old = Row("vae", "vae", (0,), {"fid": Stat(60.0)}, 100, 100, 10, 1, [_run(0, 3600.0, 1, None)])
    costs = {c["name"]: c for c in cost_rows([ddp, old])}
    assert costs["ddpm"]["device"] == "2 × H100" and costs["vae"]["device"] == "H100"
    assert costs["ddpm"]["device_hours"] == pytest.approx(2.0)  # 2 seeds × 1800 s × 2 processes
    assert (costs["ddpm"]["images_per_second"], costs["vae"]["images_per_second"]) == (500.0, None)
    assert costs["ddpm"]["sample_images_per_second"] == pytest.approx(100.0)  # 0.01 s per image
    table = cost_markdown(list(costs.values()))
    assert "| ddpm | 2 × H100 | 800 | 1800 s | 500 | 100 | 2.0000 |" in table
    assert "| vae | H100 | 800 | 3600 s | – | 100 | 1.0000 |" in table


def _curve(entry: str, seed: int, fids: list[float], n: int = 64) -> CurveRecord:
    return CurveRecord(entry=entry, seed=seed, n=n, dtype="fp32", sampling={}, reference_md5="r" * 32,
                       points=[CurvePoint(step=200 * (i + 1), fid=fid, seconds=1.0) for i, fid in enumerate(fids)])


def test_device_hours_to_reach_a_stated_fid_on_the_curve() -> None:
    """Each entry's time to the highest FID any curve at its N ends at (so every curve reaches it): one run's
    device-hours × the first step at or under it ÷ its steps, mean over the seeds. It grows with a slower run."""
    ddpm = Row("ddpm", "ddpm", (0, 1), {"fid": Stat(30.0)}, 100, 100, 10, 100,
               [_run(0, 1800.0, 2, 400.0), _run(1, 3600.0, 2, 600.0)])
    dcgan = Row("dcgan", "dcgan", (0, 1), {"fid": Stat(40.0)}, 100, 100, 10, 1,
                [_run(0, 3600.0, 1, 900.0), _run(1, 3600.0, 1, 900.0)])
    vae = Row("vae", "vae", (0, 1), {"fid": Stat(60.0)}, 100, 100, 10, 1,
              [_run(0, 3600.0, 1, 900.0), _run(1, 3600.0, 1, 900.0)])
    curves = {"ddpm": [_curve("ddpm", 0, [190.0, 120.0, 100.0, 90.0]),
                       _curve("ddpm", 1, [200.0, 150.0, 130.0, 95.0])],
              "dcgan": [_curve("dcgan", 0, [180.0, 140.0, 150.0, 160.0]),
                        _curve("dcgan", 1, [170.0, 150.0, 140.0, 135.0])],
              "vae": []}
    costs = {c["name"]: c for c in cost_rows([ddpm, dcgan, vae], curves)}
    assert costs["ddpm"]["fid_target"] == costs["dcgan"]["fid_target"] == 160.0  # dcgan seed 0 ends there
    # ddpm reaches 160 at step 400 of 800 in both seeds: half of 1 and of 2 device-hours
    assert costs["ddpm"]["device_hours_to_fid_target"] == pytest.approx((0.5 + 1.0) / 2)
    # dcgan: seed 0 at step 400 (its later points rise again), seed 1 at step 400 too
    assert costs["dcgan"]["device_hours_to_fid_target"] == pytest.approx(0.5)
    assert costs["vae"]["fid_target"] is None and costs["vae"]["device_hours_to_fid_target"] is None
    table = cost_markdown(list(costs.values()))
    assert "| device-hours to FID ≤ 160.0 (curve, N = 64) |" in table
    assert "| ddpm | 2 × H100 | 800 | 2700 s | 500 | 100 | 3.0000 | 100 | 0.7500 |" in table
    assert table.count("| – |") == 1 and "–: no FID curve for vae; set `models.<entry>.train.fid_every`" in table
    assert "the quality table above does not" not in table and "`inception_dtype`" in table
    assert r"$\leq$ 160.0" in cost_latex(list(costs.values()))

    slower = Row("ddpm", "ddpm", (0, 1), {"fid": Stat(30.0)}, 100, 100, 10, 100,
                 [_run(0, 3600.0, 2, 200.0), _run(1, 7200.0, 2, 300.0)])
    assert cost_rows([slower, dcgan, vae], curves)[0]["device_hours_to_fid_target"] == pytest.approx(1.5)

    # a curve at another N is timed to its own target, and every cell then names its target
    curves["dcgan"] = [_curve("dcgan", 0, [180.0, 150.0], n=32), _curve("dcgan", 1, [170.0, 160.0], n=32)]
    costs = {c["name"]: c for c in cost_rows([ddpm, dcgan, vae], curves)}
    assert (costs["ddpm"]["fid_target"], costs["dcgan"]["fid_target"]) == (95.0, 160.0)
    table = cost_markdown(list(costs.values()))
    assert "(≤ 95.0, N = 64) |" in table and "(≤ 160.0, N = 32) |" in table
