"""`genbench bench --gpu-evidence`: what a reader asks of a GPU before trusting its numbers, in one command sized for
one short lease of an H100: the DDPM of a profile trained for a fixed time, sampled with DDIM and DPM-Solver++ at a
few network-evaluation budgets, each set scored by the evaluate stage's `score`, with the GPU's name, images/s, MFU
and peak memory of every phase.

Training is the train stage's step (components/train/train.py: the profile's optimizer, learning-rate warm-up,
gradient clipping, `dtype`/`channels_last` resolved for the device, EMA) run until the time is up instead of for
`train.steps`, with the images on the device; it writes no checkpoint, so nothing here is a trained run. Sampling
draws images 0..N-1 of the profile's seed from the EMA weights through `drawing.draw_samples`, as the sample stage
does, in fp32. Scoring is `evaluate.score` under the profile's `evaluate` settings and protocol, as the evaluate
stage scores (holdout: the prepared reference split; paper: the whole training split's statistics), fp32 by
default; the run records that protocol (`records.Protocol`: N, reference split and size, network, resize, dtype).

The settings run cheapest first (all samplers at the smallest NFE, then the next NFE), and the result is handed to
`publish` after every phase, so a run stopped by a lease's time limit keeps every setting it finished.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from genbench.components.bench.bench import ENTRY, describe_path, sampling_step_flops
from genbench.components.bench.flops import count_flops, mfu
from genbench.components.bench.peak import Peak, device_peak
from genbench.components.bench.progress import Phases
from genbench.components.common.artifacts import to_model_range
from genbench.components.common.devices import device_name
from genbench.components.common.drawing import draw_samples
from genbench.components.common.dtypes import MixedPrecision, native_bf16
from genbench.components.common.dtypes import resolve as resolve_dtype
from genbench.components.common.io import load_npy
from genbench.components.common.manifest import cached_digest
from genbench.components.common.records import Protocol
from genbench.components.common.timing import synchronize
from genbench.components.evaluate.evaluate import score
from genbench.components.evaluate.features import reference_features
from genbench.components.evaluate.metrics import DENSITY_K
from genbench.components.evaluate.training_stats import load_training_split, training_statistics
from genbench.components.prepare.prepare import prepare
from genbench.components.train.ema import EMA, averaged
from genbench.components.train.train import make_optimizer, warmup_factor
from genbench.config import Config
from genbench.models import build_model
from genbench.models.config import PositiveFloat, PositiveInt, Strict
from genbench.models.ddpm import DDPM
from genbench.models.samplers import DiffusionSampling

SAMPLERS = ("ddim", "dpmpp_2m")  # DDIM and DPM-Solver++ 2M: the few-step samplers published tables quote
REPORT_EVERY = 30.0  # seconds between progress lines while training
# Per device type: images per sampling batch, per Inception forward pass, and the side of the peak's matrix
# product. A GPU takes large batches (its images are small); a CPU runs only the tiny dry run.
EVIDENCE_SIZES: dict[str, dict[str, int]] = {
    "cpu": {"sample_batch": 16, "feature_batch": 20, "matmul_size": 512},
    "cuda": {"sample_batch": 1000, "feature_batch": 500, "matmul_size": 8192},
}


class EvidenceSettings(Strict):
    """What one evidence run does; the CLI's options."""

    minutes: PositiveFloat  # training time, after the first (counted, untimed) step
    nfe: tuple[PositiveInt, ...]  # network evaluations per image of each sampler, one set each
    fid_n: PositiveInt  # images drawn and scored per (sampler, NFE)
    sample_batch: PositiveInt  # images per sampling batch
    feature_batch: PositiveInt  # images per Inception forward pass
    matmul_size: PositiveInt  # side of the matrix product that measures a peak no datasheet gives


class TrainRun(BaseModel):
    minutes: float  # asked for
    steps: int  # optimizer steps taken, the counted first one included
    batch_size: int
    seconds: float  # wall time of the timed steps (all but the first)
    images_per_s: float
    flops_per_step: int
    mfu: float
    peak_memory: int | None  # bytes, torch.cuda.max_memory_allocated over the phase; None on a CPU
    path: str  # precision and memory format the train stage's settings resolve to here
    lr_warmup_steps: int  # the profile's; a short run may end inside it
    final_loss: float


class SamplerRow(BaseModel):
    sampler: str
    steps: int
    nfe: int  # network evaluations per image, counted as `DiffusionSampling.network_evaluations` counts them
    sample_seconds: float
    images_per_s: float
    mfu: float
    peak_memory: int | None  # bytes over the sampling; None on a CPU
    fid: float
    precision: float
    recall: float
    score_seconds: float  # the feature pass and every metric of `score`
    warnings: list[str]


class EvidenceResult(BaseModel):
    complete: bool  # false until every setting is scored: a stopped run keeps what it finished
    date: str
    device: str
    device_name: str
    torch: str
    profile: str
    arch: dict[str, Any]
    settings: EvidenceSettings
    parameters: int | None = None  # the trained model's, once built
    peak: Peak | None = None
    reference_seconds: float | None = None  # the reference's features, computed once and cached
    train: TrainRun | None = None
    protocol: Protocol | None = None  # what the FIDs were measured under, as `score` records it
    rows: list[SamplerRow] = []
    notes: list[str] = []


def samplings(settings: EvidenceSettings) -> list[DiffusionSampling]:
    """Every (sampler, NFE) of the run, cheapest first; guidance off, so NFE is the step count."""
    return [DiffusionSampling(sampler=sampler, sample_steps=nfe)
            for nfe in sorted(set(settings.nfe)) for sampler in SAMPLERS]


def check(config: Config, settings: EvidenceSettings) -> None:
    """ValueError naming the option before any work: an NFE a sampler cannot take on this model, or too few images
    for the neighbourhood metrics `score` computes beside FID."""
    arch = config.entry(ENTRY).arch
    for sampling in samplings(settings):
        try:
            sampling.check(arch)
        except ValueError as exc:
            raise ValueError(f"--nfe {sampling.sample_steps}: {sampling.sampler} cannot take it on profile "
                             f"{config.profile}'s ddpm ({exc}); choose NFEs the model's timesteps allow") from None
    need = max(config.evaluate.k, DENSITY_K)
    if settings.fid_n <= need:
        raise ValueError(f"--fid-n {settings.fid_n}: precision/recall and density/coverage need more than {need} "
                         "images; raise --fid-n")
    if config.data.reference_size <= need:
        raise ValueError(f"profile {config.profile}'s data.reference_size {config.data.reference_size} is too small "
                         f"to score against (more than {need} images); use another --profile")


def gpu_evidence(config: Config, settings: EvidenceSettings, work: Path, device: torch.device, phases: Phases,
                 publish: Callable[[EvidenceResult], None]) -> EvidenceResult:
    """Prepare `config`'s data under `work`, train its ddpm for `settings.minutes` on `device`, then draw and score
    `settings.fid_n` images per sampler and NFE; `publish(result)` after every phase, the last time complete."""
    check(config, settings)
    entry = config.entry(ENTRY)
    name = device_name(device)
    result = EvidenceResult(
        complete=False, date=datetime.date.today().isoformat(), device=str(device), device_name=name,
        torch=torch.__version__, profile=config.profile, arch=entry.arch.model_dump(mode="json"), settings=settings,
    )  # fmt: skip
    dtype = "bf16" if native_bf16(device) else "fp32"
    peak = result.peak = phases.run(
        "peak", f"peak: {dtype} {settings.matmul_size}² matrix product",
        lambda: device_peak(device, name, settings.matmul_size, 3, 1, dtype),
        lambda p: f"{p.matmul_flops_per_s / 1e12:.3g} TFLOP/s measured; MFU against {p.flops_per_s / 1e12:.4g} "
                  f"TFLOP/s ({p.kind})")  # fmt: skip
    publish(result)
    data = work / "data"
    phases.run("prepare", f"prepare: {config.data.dataset} into {data}",
               lambda: prepare(config.data, config.seed, data, work / "raw"), lambda manifest: f"{manifest.counts}")
    trained: dict[str, Any] = {}  # the model and its EMA, which the phase's record leaves out

    def train() -> TrainRun:
        trained["model"], trained["ema"], run = _train_for(config, data, settings.minutes, device, peak, phases)
        return run

    result.train = phases.run("train", f"training profile {config.profile}'s ddpm for {settings.minutes:g} min",
                              train, said_train)
    model, ema = trained["model"], trained["ema"]
    result.parameters = model.num_parameters()
    result.notes = _notes(device, result.train)
    publish(result)

    scoring = _reference(config, data, work, settings, device, phases)
    result.reference_seconds = phases.record["phases"]["reference"]["seconds"]
    flops = sampling_step_flops(model, 1, device)
    with averaged(model, ema, config.seed, entry.train.batch_size):
        for sampling in samplings(settings):
            nfe = sampling.network_evaluations(entry.arch)

            def measure() -> tuple[SamplerRow, Protocol]:
                return _row(model, sampling, nfe, settings, config.seed, flops, peak, scoring, phases)

            row, result.protocol = phases.run(
                f"{sampling.sampler}_{sampling.sample_steps}",
                f"{sampling.sampler} {sampling.sample_steps} steps ({nfe} NFE): {settings.fid_n} images, then FID",
                measure, lambda scored: f"FID {scored[0].fid:.4g}, {said_row(scored[0])}")
            result.rows.append(row)
            publish(result)
    result.complete = True
    publish(result)
    return result


def said_train(run: TrainRun) -> str:
    """The training phase as its progress line ends."""
    return (f"{run.steps} steps of {run.batch_size}, {run.images_per_s:.4g} img/s, MFU {100 * run.mfu:.1f} %, final "
            f"loss {run.final_loss:.4g}")


def said_row(row: SamplerRow) -> str:
    return f"{row.images_per_s:.4g} img/s, MFU {100 * row.mfu:.1f} %"


def _reference(config: Config, data: Path, work: Path, settings: EvidenceSettings, device: torch.device,
               phases: Phases) -> dict[str, Any]:
    """The reference of the profile's `evaluate.protocol`, its features computed once and cached as the evaluate stage
    caches them (the prepared reference split under holdout, the whole training split's statistics under paper), and
    the arguments `score` takes with it."""
    evaluate = config.evaluate
    scoring: dict[str, Any] = {
        "cache_dir": work / "cache", "batch_size": settings.feature_batch, "device": str(device),
        "dtype": resolve_dtype(evaluate.dtype, False, device)[0], "resize": evaluate.resize, "k": evaluate.k,
        "protocol": evaluate.protocol, "dataset": config.data.dataset,
    }  # fmt: skip
    options = {key: scoring[key] for key in ("batch_size", "device", "dtype", "resize")}
    if evaluate.protocol == "paper":
        def statistics() -> str:
            images, labels = load_training_split(config.data, work / "raw")
            scoring["training"] = training_statistics(images, labels, scoring["cache_dir"],
                                                      keep=config.data.reference_size, **options)
            return scoring["training"].key

        title = f"FID reference: statistics of {config.data.dataset}'s whole training split (protocol paper)"
        phases.run("reference", title, statistics, lambda key: f"cached as {key[:12]}")
        return scoring | {"reference": None, "reference_md5": ""}
    path = data / "reference.npy"
    reference, md5 = load_npy(path), cached_digest(path)
    split = "folder" if config.data.dataset == "folder" else "test"
    title = f"FID reference: features of {len(reference)} {config.data.dataset} {split} images (protocol holdout)"
    phases.run("reference", title, lambda: reference_features(reference, md5, scoring["cache_dir"], **options)[1],
               lambda key: f"cached as {key[:12]}")
    return scoring | {"reference": reference, "reference_md5": md5, "reference_split": split}


def _notes(device: torch.device, run: TrainRun) -> list[str]:
    notes = ["sampling runs in fp32, as the sample stage does; its MFU is against the peak",
             "FLOPs count matrix products and convolutions only (components/bench/flops.py)"]
    if run.steps < run.lr_warmup_steps:
        notes.append(f"training ended at step {run.steps}, inside the profile's learning-rate warm-up of "
                     f"{run.lr_warmup_steps} steps: the FIDs are those of a short run, not of the profile's model")
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        notes.append("fp32 convolutions may run in TF32 (torch.backends.cudnn.allow_tf32, on by default)")
    return notes


def _memory(device: torch.device) -> int | None:
    """Bytes the phase held at most on a GPU since `_reset_memory`; None on a CPU, which has no such counter."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _train_for(config: Config, data: Path, minutes: float, device: torch.device, peak: Peak, phases: Phases
               ) -> tuple[DDPM, EMA, TrainRun]:
    """The ddpm entry trained as components/train/train.py steps, until `minutes` have passed after the first
    step (counted with FlopCounterMode, untimed: it also warms the device up); ValueError on a non-finite loss."""
    entry = config.entry(ENTRY)
    cfg = entry.train
    images = to_model_range(load_npy(data / "train.npy"))
    if cfg.batch_size > len(images):
        raise ValueError(f"models.{ENTRY}.train.batch_size {cfg.batch_size} exceeds the {len(images)} training images "
                         f"of profile {config.profile}")
    labels = torch.from_numpy(load_npy(data / "train_labels.npy")).long().to(device)
    torch.manual_seed(config.seed)
    model = build_model(ENTRY, images.shape[1], images.shape[2], entry.arch).to(device)
    model.fit_data(images)
    precision, channels_last = resolve_dtype(cfg.dtype, cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = images.to(device)
    ema = EMA(model.ema_parameters(), cfg.ema_decay)
    optimizer = make_optimizer(cfg, model.parameters())
    amp = MixedPrecision(precision, device, {"model": optimizer}, cfg.grad_clip)
    batches = torch.Generator().manual_seed(config.seed)
    order, cursor = torch.randperm(len(images), generator=batches).to(device), 0
    model.train()

    def step(number: int) -> torch.Tensor:
        nonlocal order, cursor
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=batches).to(device), 0
        index = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * warmup_factor(number, cfg.warmup_steps)
        batch = images[index]
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with amp.autocast():
            loss = model.training_losses(batch, "model", labels[index])["loss"]
        optimizer.zero_grad(set_to_none=True)
        amp.backward_and_step("model", loss, optimizer)
        model.after_update("model")
        ema.update(model.ema_parameters())
        return loss.detach()

    _reset_memory(device)
    flops = count_flops(lambda: step(1))
    synchronize(device)
    steps, started = 1, time.perf_counter()
    deadline, said_at = started + 60 * minutes, started
    loss = torch.zeros(())
    while (now := time.perf_counter()) < deadline:
        steps += 1
        loss = step(steps)
        if now - said_at >= REPORT_EVERY:
            said_at = now
            rate = (steps - 1) * cfg.batch_size / (now - started)
            phases.tell(f"  training: step {steps}, {rate:.4g} img/s, loss {loss.item():.4g}, {deadline - now:.0f} s "
                        "left")
    synchronize(device)
    seconds = time.perf_counter() - started
    final = float(loss)
    if not math.isfinite(final):
        raise ValueError(f"models.{ENTRY}: the loss is {final} at step {steps}; the run diverged and its samples would "
                         "score nothing: lower train.lr or train in fp32 (train.dtype: fp32)")
    timed = max(steps - 1, 1)
    run = TrainRun(
        minutes=minutes, steps=steps, batch_size=cfg.batch_size, seconds=seconds,
        images_per_s=timed * cfg.batch_size / seconds, flops_per_step=flops,
        mfu=mfu(flops * timed / seconds, peak.flops_per_s), peak_memory=_memory(device),
        path=describe_path(precision, channels_last, False), lr_warmup_steps=cfg.warmup_steps, final_loss=final,
    )  # fmt: skip
    return model, ema, run


def _row(model: DDPM, sampling: DiffusionSampling, nfe: int, settings: EvidenceSettings, seed: int, flops: int,
         peak: Peak, scoring: dict[str, Any], phases: Phases) -> tuple[SamplerRow, Protocol]:
    """Draw `settings.fid_n` images with `sampling` (timed, with its peak memory), then score them with `score`
    against the reference `scoring` holds; the row and the protocol its FID was measured under."""
    device = next(model.parameters()).device
    _reset_memory(device)
    synchronize(device)
    started = time.perf_counter()
    images = draw_samples(model, settings.fid_n, seed, settings.sample_batch, sampling,
                          desc=f"{sampling.sampler} {sampling.sample_steps}")
    synchronize(device)
    seconds = time.perf_counter() - started
    memory = _memory(device)
    phases.tell(f"  {sampling.sampler} {sampling.sample_steps}: {settings.fid_n / seconds:.4g} img/s; scoring")
    started = time.perf_counter()
    reference, md5 = scoring["reference"], scoring["reference_md5"]
    options = {key: value for key, value in scoring.items() if key not in ("reference", "reference_md5")}
    scores = score(images, reference, md5, compute_inception_score=False, seed=seed, **options)
    row = SamplerRow(
        sampler=sampling.sampler, steps=sampling.sample_steps, nfe=nfe, sample_seconds=seconds,
        images_per_s=settings.fid_n / seconds, mfu=mfu(flops * nfe * settings.fid_n / seconds, peak.flops_per_s),
        peak_memory=memory, fid=scores["fid"], precision=scores["precision"], recall=scores["recall"],
        score_seconds=time.perf_counter() - started, warnings=list(scores["warnings"]),
    )  # fmt: skip
    return row, Protocol.model_validate(scores["protocol"])
