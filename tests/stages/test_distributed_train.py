"""DistributedDataParallel on the CPU: two gloo processes on 127.0.0.1 train what one process trains on the same
global batch of 8, rank 0 alone writes, a stopped run resumes exactly, the GAN families train, and a global batch the
processes cannot share evenly is an input error. (The drivers tier runs `torchrun` itself on the CLI.)

The two processes are forked from this one, so they start with torch and the trainer already imported: a fresh
interpreter spends far longer importing them (torch._dynamo, which DistributedDataParallel loads) than the runs take.

Tolerance: the two ranks' gradients are summed by the all-reduce and halved, where one process sums the 8 images'
contributions in its own order (and runs convolutions and BatchNorm over 8 images instead of 4), so float32 results
differ in the last bits; four Adam steps keep that far below what one step moves a weight (about lr = 2e-4).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.common.artifacts import read_history, read_summary
from genbench.components.train import train as train_module
from genbench.components.train.distributed import rank_seed
from genbench.components.train.train import train
from genbench.models import REGISTRY

from . import ddp_worker
from .ddp_worker import GANS, WORLD, settings, write_data

RTOL, ATOL = 1e-5, 1e-6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every scenario of ddp_worker.run, once, on two forked processes; returns their root folder."""
    import torch._dynamo  # noqa: F401  (DDP loads it: here once, before the fork, not in each child)

    root = tmp_path_factory.mktemp("ddp")
    write_data(root / "data")
    mp.start_processes(ddp_worker.run, args=(str(root), free_port()), nprocs=WORLD, start_method="fork")
    return root


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The single-process references in one torch thread, like each rank: runs this small gain nothing from two,
    and lose much to OpenMP's spin-waits when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "toy_gan", ddp_worker.TOY)


def draws_like_ranks(losses: Callable[..., dict[str, torch.Tensor]], seed: int) -> Callable[..., dict[str, torch.Tensor]]:
    """`training_losses` of one process over the whole global batch that draws as the ranks do: rows [4r, 4r + 4)
    from rank r's stream (torch.manual_seed(rank_seed(seed, r)), continued call after call), averaged."""
    streams: list[torch.Tensor] = []

    def split(x: torch.Tensor, group: str, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        outside = torch.get_rng_state()
        if not streams:
            for rank in range(WORLD):
                torch.manual_seed(rank_seed(seed, rank))
                streams.append(torch.get_rng_state())
        parts = []
        for rank, (rows, row_labels) in enumerate(zip(x.chunk(WORLD), labels.chunk(WORLD), strict=True)):
            torch.set_rng_state(streams[rank])
            parts.append(losses(rows, group, row_labels))
            streams[rank] = torch.get_rng_state()
        torch.set_rng_state(outside)
        return {key: torch.stack([part[key] for part in parts]).mean() for key in parts[0]}

    return split


def drawing_like_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model the trainer builds draws as `draws_like_ranks` says (seed 0)."""
    build = train_module.build_model

    def build_drawing_like_ranks(*args: object, **kwargs: object) -> torch.nn.Module:
        model = build(*args, **kwargs)
        model.training_losses = draws_like_ranks(model.training_losses, seed=0)
        return model

    monkeypatch.setattr(train_module, "build_model", build_drawing_like_ranks)


def assert_same_run(ddp_run: Path, single: Path) -> None:
    """history.csv and every tensor of model.safetensors (EMA, raw, BatchNorm statistics) agree to the tolerance."""
    ddp_history, single_history = read_history(ddp_run), read_history(single)
    assert [row[:2] for row in ddp_history] == [row[:2] for row in single_history]
    np.testing.assert_allclose([row[2] for row in ddp_history], [row[2] for row in single_history], RTOL, ATOL)
    ddp_weights, single_weights = load_file(ddp_run / "model.safetensors"), load_file(single / "model.safetensors")
    assert ddp_weights.keys() == single_weights.keys()
    for key, value in ddp_weights.items():
        assert_close(value, single_weights[key], key)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), RTOL, ATOL, err_msg=what)


def test_global_batchnorm_gives_one_process_batchnorm_over_the_global_batch(ddp: Path) -> None:
    ranks = [torch.load(ddp / "probe" / f"bn-rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    torch.manual_seed(0)
    x, weights = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    norm = torch.nn.BatchNorm2d(3)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x.requires_grad_()
    out = norm(x)
    (out * weights).sum().backward()
    assert_close(torch.cat([r["out"] for r in ranks]), out.detach(), "out")
    assert_close(torch.cat([r["x_grad"] for r in ranks]), x.grad, "input gradient")
    assert_close(sum(r["weight_grad"] for r in ranks), norm.weight.grad, "weight gradient")  # DDP then averages
    assert_close(sum(r["bias_grad"] for r in ranks), norm.bias.grad, "bias gradient")
    for r in ranks:
        assert_close(r["running_mean"], norm.running_mean, "running mean")
        assert_close(r["running_var"], norm.running_var, "running variance")


def test_two_processes_train_one_process_weights_with_batchnorm_and_two_groups(
    ddp: Path, tmp_path: Path, toy_registered: None
) -> None:
    """The toy GAN draws nothing, so plain one-process training on the global batch is the reference."""
    single = tmp_path / "toy"
    train("toy_gan", settings("toy_gan"), 0, ddp / "data", single)
    assert_same_run(ddp / "ddp" / "toy_gan-rank0", single)


def test_two_processes_train_the_ddpm_of_one_process_drawing_each_ranks_noise(
    ddp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DDPM (timesteps, noise and dropout drawn per rank) after 4 steps of warmup, clipping and EMA equals one
    process whose draws for rows [4r, 4r + 4) come from rank r's stream, and differs from a plain process."""
    plain = tmp_path / "plain"
    train("ddpm", settings("ddpm"), 0, ddp / "data", plain)
    drawing_like_ranks(monkeypatch)
    single = tmp_path / "single"
    train("ddpm", settings("ddpm"), 0, ddp / "data", single)
    assert_same_run(ddp / "ddp" / "ddpm-rank0", single)
    # The plain process draws other noise from the first step on: the same rows, and every loss differs.
    ddp_history, plain_history = read_history(ddp / "ddp" / "ddpm-rank0"), read_history(plain)
    assert [row[:2] for row in plain_history] == [row[:2] for row in ddp_history]
    differs = ~np.isclose([row[2] for row in plain_history], [row[2] for row in ddp_history], RTOL, ATOL)
    assert differs.all(), (plain_history, ddp_history)


def test_only_rank_0_writes_and_a_stopped_run_resumes_exactly(ddp: Path) -> None:
    runs = ddp / "ddp"
    for name in ("toy_gan", "ddpm"):
        assert sorted(p.name for p in (runs / f"{name}-rank0").iterdir()) == [
            "checkpoint.pt", "config.json", "history.csv", "model.safetensors", "snapshots", "summary.json"]
        assert not (runs / f"{name}-rank1").exists()
    stopped = json.loads((ddp / "probe" / "stopped.json").read_text())
    assert stopped == {"step": 2, "ranks": WORLD, "weights_written": False}
    assert not (runs / "ddpm-resumed-rank1").exists()  # rank 1 resumed from rank 0's checkpoint, wrote nothing
    for name in ("model.safetensors", "history.csv"):
        assert (runs / "ddpm-resumed-rank0" / name).read_bytes() == (runs / "ddpm-rank0" / name).read_bytes(), name


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(ddp: Path) -> None:
    """SIGTERM reached rank 1 alone during step 3: the ranks agreed after that step, rank 0 checkpointed it, both
    stopped with the same message, and the same command resumed to the weights of a run never stopped."""
    stopped = [json.loads((ddp / "probe" / f"signalled-rank{rank}.json").read_text()) for rank in range(WORLD)]
    message = (f"train ddpm: stopped by SIGTERM after step 3 of 4, saved in {ddp / 'ddp' / 'ddpm-signalled'}/"
               "checkpoint.pt; run the same command again to resume from it")
    assert stopped[0] == {"signum": 15, "message": message, "checkpoint_step": 3, "weights_written": False}
    assert stopped[1] == {"signum": 15, "message": message}
    for name in ("model.safetensors", "history.csv"):
        assert (ddp / "ddp" / "ddpm-signalled" / name).read_bytes() == (ddp / "ddp" / "ddpm-rank0" / name).read_bytes()


def test_the_gan_families_train_under_ddp_and_the_summary_counts_both_processes(ddp: Path) -> None:
    """dcgan (BatchNorm everywhere), wgan_gp (a gradient penalty, 2 critic updates a step), vae_gan (3 groups).

    The device time counts every process: it matches the sum of what each rank measured of its own training loop
    (the loops start after the same broadcast and end after the same barrier, so they differ by scheduling
    jitter, far less than the quarter allowed; rank 0's alone would be half) and stays under the sum of each
    rank's whole train() call (each call encloses rank 0's loop)."""
    timed = [json.loads((ddp / "probe" / f"gans-rank{rank}.json").read_text()) for rank in range(WORLD)]
    for family in GANS:
        run = ddp / "ddp" / family
        history = read_history(run)
        assert {name for _, name, _ in history} >= {"d/loss"} and all(np.isfinite(v) for *_, v in history), family
        summary = read_summary(run)
        assert (summary.steps, summary.processes) == (2, WORLD)
        own = [ranks[family] for ranks in timed]
        assert summary.device_seconds == pytest.approx(sum(t["loop"] for t in own), rel=0.25), (family, own)
        assert summary.device_seconds <= sum(t["call"] for t in own) + 1e-3, (family, own)
        assert summary.images_per_second > 0
        assert load_file(run / "model.safetensors")


def test_a_torchrun_checkpoint_resumes_only_with_as_many_processes(ddp: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((ddp / "ddp" / "ddpm-resumed-rank0" / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) and this run has 1.*torchrun --nproc_per_node 2"):
        train("ddpm", settings("ddpm"), 0, ddp / "data", run)


def test_a_global_batch_the_processes_cannot_share_is_an_input_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node 3 sets it; the tiny batch is 16
    result = CliRunner().invoke(app, ["train", "ddpm"])
    assert result.exit_code == 2
    assert "models.ddpm.train.batch_size: 16 is not divisible by the 3 processes" in result.output
    assert not Path("runs").exists()


@pytest.fixture(scope="module")
def slow_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ddp_worker.slow_snapshot's two scenarios, each on two forked processes; returns their root folder, with a
    validation set to score the curve against."""
    import torch._dynamo  # noqa: F401  (as in `ddp`)

    root = tmp_path_factory.mktemp("slow")
    write_data(root / "data")
    np.save(root / "data" / "validation.npy", np.random.default_rng(1).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8))
    for scenario in ("waits", "collective"):
        mp.start_processes(ddp_worker.slow_snapshot, args=(str(root), free_port(), scenario), nprocs=WORLD,
                           start_method="fork")
    return root


def outcome(root: Path, scenario: str) -> list[dict[str, object]]:
    return [json.loads((root / "probe" / f"{scenario}-rank{rank}.json").read_text()) for rank in range(WORLD)]


def test_a_snapshot_longer_than_the_process_group_timeout_finishes_and_scores_as_one_process(
    slow_snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixel_network: list[int]
) -> None:
    """Rank 0 saved the step-2 snapshot for three times `distributed.timeout_seconds` while rank 1 waited for it in
    `wait_for_main`: both finished, and the snapshots and the curve the fid-curve stage scores on them are those of
    one process that draws each rank's noise for its rows."""
    from genbench.components.evaluate.fid_curve import fid_curve

    waited = outcome(slow_snapshot, "waits")
    assert [rank["finished"] for rank in waited] == [True, True], waited
    assert min(rank["seconds"] for rank in waited) > ddp_worker.DELAY  # rank 1 waited the whole delay out
    curve_settings = settings("vae", **ddp_worker.CURVE)
    single, ddp_run = tmp_path / "single", slow_snapshot / "waits"
    drawing_like_ranks(monkeypatch)
    train("vae", curve_settings, 0, slow_snapshot / "data", single)
    assert_same_run(ddp_run, single)
    names = sorted(p.name for p in (ddp_run / "snapshots").iterdir())
    assert names == sorted(p.name for p in (single / "snapshots").iterdir()) and len(names) == 2
    for name in names:
        ddp_weights, single_weights = load_file(ddp_run / "snapshots" / name), load_file(single / "snapshots" / name)
        assert ddp_weights.keys() == single_weights.keys()
        for key, value in ddp_weights.items():
            assert_close(value, single_weights[key], f"{name}: {key}")

    validation = slow_snapshot / "data" / "validation.npy"
    ddp_curve, single_curve = (
        [(p.step, p.fid) for p in fid_curve(run, validation, tmp_path / f"{run.name}.json", "vae", curve_settings, 0,
                                            tmp_path / "cache").points]
        for run in (ddp_run, single))
    assert [step for step, _ in ddp_curve] == [step for step, _ in single_curve] == [2, 4]
    np.testing.assert_allclose([fid for _, fid in ddp_curve], [fid for _, fid in single_curve], rtol=RTOL)
    assert ddp_curve[0][1] != ddp_curve[1][1]  # the points follow the weights
    assert (tmp_path / "waits.json").is_file()


def test_waiting_for_the_snapshot_in_a_collective_times_out_naming_the_setting(slow_snapshot: Path) -> None:
    """The same run with rank 1 waiting in a barrier of the process group (where it waited before `wait_for_main`):
    rank 1 gives up after `distributed.timeout_seconds`, long before rank 0 is done, naming the setting."""
    rank_0, rank_1 = outcome(slow_snapshot, "collective")
    assert not rank_1["finished"] and rank_1["error"] == "ValueError", rank_1
    assert rank_1["message"].startswith(f"distributed.timeout_seconds: rank 1 waited {ddp_worker.TIMEOUT} s in a "
                                        "collective"), rank_1
    assert ddp_worker.TIMEOUT <= rank_1["seconds"] < ddp_worker.DELAY, rank_1
    assert not rank_0["finished"], rank_0  # rank 1 left, so rank 0's next collective failed too
    assert not (slow_snapshot / "collective" / "summary.json").exists()
