"""What a stop, a divergence or a stale file leaves behind (issue 14): the provenance chain register checks, stage
outputs that commit as a set (a completion record written last, checked by the next stage), leftovers of killed
writes removed by the stage that owns them, the NaN guard, and a checkpoint on SIGTERM / SIGINT."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.evaluate import evaluate as evaluate_module
from genbench.components.report import report as report_module
from genbench.components.sample import sample as sample_module
from genbench.components.train import train as train_module
from genbench.models.vae import VAE

from ..conftest import use_tiny
from .test_report import _two_seed_project
from .test_stages import edit_params, invoke


class Stopped(Exception):
    """A simulated stop (a kill, a full disk) between two writes of a stage."""


def refused(args: list[str], message: str) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output, (args, result.output, result.exception)
    return result.output


def stop_calls_to(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> Callable[..., Any]:
    """Make `module.name` raise Stopped; returns the real one."""
    def stop(*args: object, **kwargs: object) -> None:
        raise Stopped(f"simulated stop instead of {name}")

    real = getattr(module, name)
    monkeypatch.setattr(module, name, stop)
    return real


def tiny_vae(**train: object) -> None:
    edit_params(lambda p: p["models"]["vae"]["profiles"]["tiny"]["train"].update(train))


# ------------------------------------------------------------------------------------------ provenance chain


def test_a_retrained_run_is_not_registered_with_its_old_metrics(trained: Path, pixel_network: list[int]) -> None:
    """The reported failure: a model retrained after a good one was registered with the good one's metrics file and
    became champion. Now register refuses, naming the first stale stage, and the registry keeps one version."""
    from mlflow import MlflowClient

    for stage in ("sample", "evaluate", "register"):
        invoke(stage, "vae")
    tiny_vae(lr=0.01)
    invoke("train", "vae")  # other weights, and the old samples, their record and metrics still on disk
    refused(["register", "vae"], "were drawn from other weights than runs/vae/seed-0/model.safetensors; give the "
                                 "record of this run's samples, or re-run `genbench sample vae`")
    invoke("sample", "vae")
    refused(["register", "vae"], "re-run `genbench evaluate vae`")
    client = MlflowClient(tracking_uri=f"sqlite:///{trained / 'mlflow.db'}")
    assert [int(v.version) for v in client.search_model_versions("name='genbench-vae'")] == [1]
    assert json.loads(Path("registry/vae/seed-0.json").read_text())["version"] == 1


def test_evaluate_scores_only_samples_their_record_vouches_for(trained: Path, pixel_network: list[int]) -> None:
    invoke("sample", "vae")
    record = json.loads(Path("samples/vae/seed-0.json").read_text())
    assert record["samples_md5"] == hashlib.md5(Path("samples/vae/seed-0.npy").read_bytes()).hexdigest()
    images = np.load("samples/vae/seed-0.npy")
    np.save("samples/vae/seed-0.npy", 255 - images)  # other bytes under the record's name
    refused(["evaluate", "vae"], "seed-0.npy is not the file samples/vae/seed-0.json was written with")
    assert not Path("metrics/vae/seed-0.json").exists() and pixel_network == []


# ------------------------------------------------------------------------------------------ outputs as a set


def test_a_training_stopped_before_its_summary_is_not_sampled(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json goes first and comes last: new weights without it are refused, and so is an edited file."""
    run = Path("runs/vae/seed-0")
    leftover = run / ".model.safetensors.k1ll3d.tmp"
    leftover.write_bytes(b"half a file")
    weights = (run / "model.safetensors").read_bytes()
    write_summary = stop_calls_to(monkeypatch, train_module, "write_summary")
    tiny_vae(lr=0.01)
    assert isinstance(CliRunner().invoke(app, ["train", "vae"]).exception, Stopped)
    assert (run / "model.safetensors").read_bytes() != weights and not (run / "summary.json").exists()
    assert not leftover.exists()  # removed by the next run of the stage that owns the folder
    refused(["sample", "vae"], "runs/vae/seed-0/summary.json not found; run `genbench train` first")
    assert not Path("samples/vae/seed-0.npy").exists()

    monkeypatch.setattr(train_module, "write_summary", write_summary)
    invoke("train", "vae")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"seed": 7}))
    refused(["sample", "vae"], "runs/vae/seed-0/config.json is not the file summary.json was written with (a "
                               "training stopped between its writes, or an edit); re-run `genbench train vae`")


def test_samples_stopped_before_their_record_are_not_scored(trained: Path, monkeypatch: pytest.MonkeyPatch,
                                                            pixel_network: list[int]) -> None:
    invoke("sample", "vae")
    old = Path("samples/vae/seed-0.npy").read_bytes()
    leftover = Path("samples/vae/.seed-0.npy.k1ll3d.tmp")
    leftover.write_bytes(b"half a file")
    stop_calls_to(monkeypatch, sample_module, "write_json")
    edit_params(lambda p: p["sampling"]["vae"].update(ema=False))
    assert isinstance(CliRunner().invoke(app, ["sample", "vae"]).exception, Stopped)
    assert Path("samples/vae/seed-0.npy").read_bytes() != old and not leftover.exists()
    refused(["evaluate", "vae"], "samples/vae/seed-0.json not found; run `genbench sample` first")
    assert pixel_network == []


def test_an_evaluation_stopped_midway_leaves_no_metrics(trained: Path, monkeypatch: pytest.MonkeyPatch,
                                                        pixel_network: list[int]) -> None:
    invoke("sample", "vae")
    invoke("evaluate", "vae")
    stop_calls_to(monkeypatch, evaluate_module, "score")
    assert isinstance(CliRunner().invoke(app, ["evaluate", "vae"]).exception, Stopped)
    refused(["register", "vae"], "metrics/vae/seed-0.json not found; run `genbench evaluate` first")
    assert not Path("mlflow.db").exists()


def report_inputs(trained: Path) -> None:
    """What the report reads, the metrics of samples written by hand (test_report.py's two-seed project)."""
    invoke("evaluate", "real")
    _two_seed_project(trained)


def test_a_report_stopped_midway_keeps_the_old_results(trained: Path, monkeypatch: pytest.MonkeyPatch,
                                                       pixel_network: list[int]) -> None:
    """results/ is built beside the old one and swapped in: a stop leaves the old page whole, and what a killed
    report left is removed by the next one."""
    report_inputs(trained)
    Path("results").mkdir()
    Path("results/index.html").write_text("the old page")
    Path(".results.k1ll3d.tmp").mkdir()  # a killed report's staging folder
    Path(".results.k1ll3d.tmp/index.html").write_text("half a page")

    def figures_then_stop(*args: object, **kwargs: object) -> None:
        (args[-1] / "figures").mkdir()  # the staging folder: part of the new set written, then the stop
        raise Stopped("simulated stop while drawing the figures")

    monkeypatch.setattr(report_module, "_figures", figures_then_stop)
    assert isinstance(CliRunner().invoke(app, ["report"]).exception, Stopped)
    assert sorted(p.name for p in Path("results").iterdir()) == ["index.html"]
    assert Path("results/index.html").read_text() == "the old page"
    assert not list(Path(".").glob(".results*"))


def test_a_sweep_stopped_midway_leaves_no_summary(trained: Path, monkeypatch: pytest.MonkeyPatch,
                                                  pixel_network: list[int]) -> None:
    from genbench.components.sweep import sweep as sweep_module

    use_tiny(Path("."), entries=["ddpm"])  # the sweep's entry alone: the report's inputs up to its sweeps, cheaply
    for args in (["evaluate", "real"], ["sample", "ddpm"], ["evaluate", "ddpm"]):
        invoke(*args)
    invoke("sweep", "ddim_steps")
    row = json.loads(Path("metrics/sweeps/ddim_steps.json").read_text())["rows"][0]
    assert row["samples_md5"] == hashlib.md5(Path("sweeps/ddim_steps/sample_steps-2.npy").read_bytes()).hexdigest()
    stop_calls_to(monkeypatch, sweep_module, "evaluate")
    assert isinstance(CliRunner().invoke(app, ["sweep", "ddim_steps"]).exception, Stopped)
    assert not Path("metrics/sweeps/ddim_steps.json").exists()
    refused(["report"], "metrics/sweeps/ddim_steps.json not found; run `genbench sweep ddim_steps` first")


def test_prepare_removes_what_killed_writes_left(prepared: Path) -> None:
    data = prepared / "data" / "prepared"
    manifest = (data / "manifest.json").read_bytes()
    (data / ".train.npy.k1ll3d.tmp").write_bytes(b"half a file")
    invoke("prepare")
    assert not list(data.glob(".*")) and (data / "manifest.json").read_bytes() == manifest


# ------------------------------------------------------------------------------------------ the NaN guard


@pytest.mark.parametrize(("log_every", "fault", "message"), [
    (1, "loss", "the loss model/loss is nan at step 3"),  # caught where the losses are logged
    (100, "loss", "the loss model/loss is nan at step 4"),  # not logged: caught before the step-4 checkpoint
    (1, "weights", "the weights hold non-finite values (the losses were finite: an update overflowed) at step 4"),
])
def test_a_non_finite_loss_stops_training_before_any_save(
    prepared: Path, monkeypatch: pytest.MonkeyPatch, log_every: int, fault: str, message: str
) -> None:
    """A loss that turns nan at step 3 (or an update that overflows at step 4) stops the run with exit 2 before it is
    checkpointed or saved: the step-2 checkpoint stays, and no model.safetensors or summary.json is written."""
    tiny_vae(steps=6, checkpoint_every=2, log_every=log_every)
    calls = {"losses": 0, "updates": 0}
    real_losses = VAE.training_losses

    def nan_from_step_3(self: VAE, *args: object) -> dict[str, torch.Tensor]:
        calls["losses"] += 1
        losses = real_losses(self, *args)
        return {**losses, "loss": losses["loss"] * float("nan")} if fault == "loss" and calls["losses"] >= 3 else losses

    def overflow_at_step_4(self: VAE, group: str) -> None:
        calls["updates"] += 1
        if fault == "weights" and calls["updates"] == 4:
            with torch.no_grad():
                next(self.parameters()).fill_(float("inf"))

    monkeypatch.setattr(VAE, "training_losses", nan_from_step_3)
    monkeypatch.setattr(VAE, "after_update", overflow_at_step_4)
    output = refused(["train", "vae"], f"models.vae: {message}; training stopped without saving it "
                                       "(runs/vae/seed-0/checkpoint.pt keeps step 2). Lower models.vae.train.lr, set "
                                       "models.vae.train.grad_clip (e.g. 1.0) or train in fp32")
    assert "models.vae.train.dtype: fp32" in output
    run = prepared / "runs" / "vae" / "seed-0"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "history.csv"]
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 2 and all(value.isfinite().all() for value in checkpoint["model"].values())
    assert all(np.isfinite(float(row.split(",")[2])) for row in (run / "history.csv").read_text().splitlines()[1:])


# ------------------------------------------------------------------------------------------ stopping on signals


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Every run of a comparison in one torch thread (the forked child too), so their float sums agree bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def straight_and_resumed_agree(out: str) -> None:
    invoke("train", "vae", "--out", "straight")
    straight, resumed = load_file("straight/model.safetensors"), load_file(f"{out}/model.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert Path("straight/history.csv").read_text() == Path(f"{out}/history.csv").read_text()


def test_ctrl_c_checkpoints_the_step_in_flight(prepared: Path, monkeypatch: pytest.MonkeyPatch,
                                               one_thread: None) -> None:
    """SIGINT during step 3 lets step 3 finish, checkpoints it and exits 130; the same command resumes from it to
    an uninterrupted run's weights."""
    tiny_vae(steps=6, checkpoint_every=100)
    real_warmup = train_module.warmup_factor

    def interrupt_during_step_3(step: int, warmup_steps: int) -> float:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_warmup(step, warmup_steps)

    monkeypatch.setattr(train_module, "warmup_factor", interrupt_during_step_3)
    handler = signal.getsignal(signal.SIGINT)
    result = CliRunner().invoke(app, ["train", "vae", "--out", "resumed"])
    assert result.exit_code == 130, (result.output, result.exception)
    assert ("train vae: stopped by SIGINT after step 3 of 6, saved in resumed/checkpoint.pt; run the same command "
            "again to resume from it") in result.output
    assert torch.load("resumed/checkpoint.pt", weights_only=True)["step"] == 3
    assert not Path("resumed/summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    monkeypatch.setattr(train_module, "warmup_factor", real_warmup)
    assert "resuming at step 3" in invoke("train", "vae", "--out", "resumed")
    straight_and_resumed_agree("resumed")


def _train_in_child(args: list[str]) -> None:
    """`genbench train` in a forked child (torch already imported: a fresh interpreter spends seconds on it)."""
    torch.set_num_threads(1)
    app(args, prog_name="genbench")


def test_sigterm_checkpoints_and_the_same_command_resumes(prepared: Path, one_thread: None,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    """`genbench train` in another process gets SIGTERM once its first checkpoint is written: it saves the step it is
    in, exits 143 saying how to resume, and the rerun ends with the weights of a run never stopped."""
    steps = 150
    tiny_vae(steps=steps, checkpoint_every=5)
    child = multiprocessing.get_context("fork").Process(target=_train_in_child, args=(["train", "vae", "--out", "run"],))
    child.start()
    deadline = time.monotonic() + 120
    while not Path("run/history.csv").exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGTERM)
    child.join(60)
    assert child.exitcode == 128 + signal.SIGTERM, capfd.readouterr().err
    stopped = torch.load("run/checkpoint.pt", weights_only=True)["step"]
    assert 0 < stopped < steps and not Path("run/model.safetensors").exists()
    assert (f"train vae: stopped by SIGTERM after step {stopped} of {steps}, saved in run/checkpoint.pt; run the same "
            "command again to resume from it") in capfd.readouterr().err
    assert f"resuming at step {stopped}" in invoke("train", "vae", "--out", "run")
    straight_and_resumed_agree("run")
