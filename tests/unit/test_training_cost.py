"""What a training run costs, as summary.json records it and the report's cost table shows it: device-seconds count
every process of a torchrun run, and summaries written before `processes` and `images_per_second` still read."""

from __future__ import annotations

import pytest

from genbench.components.common.artifacts import TrainSummary
from genbench.components.report.results import Row, Stat, cost_markdown, cost_rows

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
    assert costs["ddpm"]["fid_per_device_hour"] == pytest.approx(30.0)  # one run: 1 device-hour
    assert (costs["ddpm"]["images_per_second"], costs["vae"]["images_per_second"]) == (500.0, None)
    table = cost_markdown(list(costs.values()))
    assert "| ddpm | 2 × H100 | 800 | 1800 s | 500 | 2.0000 |" in table and "| vae | H100 | 800 | 3600 s | – |" in table
