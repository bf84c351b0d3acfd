"""Stage 2: train one model family on the prepared images.

One loop serves every family: it asks the model for its optimizer groups (`train.optimizer`, the learning rate
warmed up over `warmup_steps`) and, each step, for the loss of each group in turn (`updates_per_step` times,
each on a fresh batch: WGAN's n_critic), clipping each group's gradient norm to `grad_clip`, then updates the
exponential moving average of the weights the model samples from; BatchNorm statistics are recomputed for the
averaged weights before each FID-curve snapshot and at the end (`ema.averaged`). `train.dtype` runs the
forward passes under autocast (bf16, or fp16 with a gradient scaler per group; `auto` picks bf16 where the
hardware runs it natively). A checkpoint (weights, EMA, optimizers, loss scalers, step, RNG states, history)
is written every `checkpoint_every` steps and resumed from when the run record is unchanged, so a killed run
continues where it stopped and a CPU run repeats bit for bit. Sampler settings are not an input: training
never depends on how the model will be sampled.

What a stop leaves: summary.json, the run's completion record (`artifacts.check_complete`), is deleted before
anything is written and written last; SIGTERM / SIGINT checkpoint the step in flight and stop (`interrupts.py`); a
non-finite loss, or weights, stop the run before any save, so a NaN is never checkpointed or finished (the losses
are checked where they are fetched anyway, at log steps, and before every save: no extra host sync per step).

Under torchrun the same loop runs on every process with DistributedDataParallel; `components/train/distributed.py` holds
that plumbing and the rules (batch shares, per-rank seeds, BatchNorm over the global batch, rank 0 writes).
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genbench.components.common.artifacts import (
    SNAPSHOTS,
    SUMMARY,
    RunRecord,
    TrainSummary,
    history_text,
    load_frozen,
    parse_history,
    save_weights,
    signed_digests,
    snapshot_name,
    to_model_range,
    write_config,
    write_history,
    write_summary,
)  # fmt: skip
from genbench.components.common.devices import device_name
from genbench.components.common.dtypes import MixedPrecision
from genbench.components.common.dtypes import resolve as resolve_dtype
from genbench.components.common.interrupts import Interrupted, StopRequests, signal_name
from genbench.components.common.io import atomic_write, clean_leftovers, config_hash, load_npy
from genbench.components.common.manifest import cached_digest, verify_prepared
from genbench.components.train import optimizers
from genbench.components.train.distributed import Processes, processes, world_size
from genbench.components.train.ema import EMA, averaged
from genbench.config import DistributedConfig, EntrySettings
from genbench.models import build_model
from genbench.models import family as family_spec
from genbench.models.base import GenerativeModel
from genbench.models.config import TrainConfig

CHECKPOINT = "checkpoint.pt"


def train(entry: str, settings: EntrySettings, seed: int, data_dir: Path, out_dir: Path,
          distributed: DistributedConfig = DistributedConfig()) -> TrainSummary:
    """Train `entry` (its `models.<entry>` settings: family, arch and train) and write model.safetensors,
    history.csv, config.json and summary.json to out_dir.

    A family built on trained models (the ldm's vae) loads them from `arch.<argument>_run` and stores them,
    weights and records, with its own. With `train.fid_every > 0`, every that many steps the EMA weights go to
    snapshots/step-<step>.safetensors, which the fid-curve stage scores (components/evaluate/fid_curve.py):
    training never runs the FID network, so a change to it leaves trained runs valid.

    Under torchrun every process calls this; `train.batch_size` is the global batch, split evenly over them, and
    `distributed` says how long they wait for each other (components/train/distributed.py).
    """
    size = world_size()
    if settings.train.batch_size % size:
        raise ValueError(f"models.{entry}.train.batch_size: {settings.train.batch_size} is not divisible by the {size} "
                         f"processes torchrun started, which share each batch evenly; use a multiple of {size} or "
                         "start another number of processes")
    with processes(settings.train.device, distributed) as ranks:
        return _train(entry, settings, seed, Path(data_dir), Path(out_dir), ranks)


def _train(entry: str, settings: EntrySettings, seed: int, data_dir: Path, out_dir: Path, ranks: Processes
           ) -> TrainSummary:
    cfg = settings.train
    train_path = data_dir / "train.npy"
    verify_prepared(data_dir, ["train.npy", "train_labels.npy"])
    images = to_model_range(load_npy(train_path))
    if cfg.batch_size > len(images):
        raise ValueError(f"models.{entry}.train.batch_size: {cfg.batch_size} is more than the {len(images)} images of "
                         f"{train_path} (data.train_size), so every batch would be the whole training set; lower "
                         f"models.{entry}.train.batch_size or raise data.train_size and re-run `genbench prepare`")
    labels = torch.from_numpy(load_npy(data_dir / "train_labels.npy")).long()
    channels, image_size = images.shape[1], images.shape[2]
    device = ranks.device
    family = settings.family
    frozen = load_frozen(entry, family, settings.arch, channels, image_size, seed)
    torch.manual_seed(seed)
    model = build_model(family, channels, image_size, settings.arch,
                        **{argument: model for argument, (model, _) in frozen.items()}).to(device)
    record = RunRecord(
        entry=entry, family=family, seed=seed, image={"channels": channels, "size": image_size},
        arch=settings.arch.model_dump(mode="json"), train=cfg.model_dump(mode="json"),
        train_data_md5=cached_digest(train_path), frozen={argument: rec for argument, (_, rec) in frozen.items()},
    )  # fmt: skip
    dtype, channels_last = resolve_dtype(cfg.dtype, cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model.ema_parameters(), cfg.ema_decay)
    updates = model.updates_per_step()
    optimizers = {group: make_optimizer(cfg, params) for group, params in model.parameter_groups().items()}
    precision = MixedPrecision(dtype, device, optimizers, cfg.grad_clip)
    batches = torch.Generator().manual_seed(seed)
    # The frozen weights a model was given are part of what it trains on: another copy of them invalidates it.
    fingerprint = config_hash(record.model_dump(mode="json") | _frozen_digest(model))
    state = _resume(out_dir / CHECKPOINT, fingerprint, model, ema, optimizers, precision, batches, ranks)
    step, history, seconds = state["step"], state["history"], state["seconds"]
    if step == 0:
        model.fit_data(images)
        ranks.seed_draws(seed)

    steps, batch_size = cfg.steps, cfg.batch_size
    order, cursor = state["order"], state["cursor"]
    if cfg.fid_every:  # refused before hours of training rather than when the snapshots are scored
        try:
            cfg.curve_sampling(family_spec(family).sampling()).check(settings.arch)
        except ValueError as exc:
            raise ValueError(f"models.{entry}.train: the FID curve cannot sample: {exc}") from None
    if ranks.main:  # the run's files are about to change: its completion record goes first, with what kills left
        clean_leftovers(out_dir)
        (out_dir / SUMMARY).unlink(missing_ok=True)
        if step == 0:  # a fresh run: snapshots of an earlier one would join its curve
            shutil.rmtree(out_dir / SNAPSHOTS, ignore_errors=True)
    ranks.wait_for_main("clear the run folder")
    model.train()
    training_losses = ranks.losses(model, len(optimizers))
    started = time.perf_counter() - seconds
    saved = step  # the step checkpoint.pt holds (0: none yet)
    bar = tqdm(total=steps, initial=step, desc=f"train {entry}", unit="step", disable=None if ranks.main else True)
    with StopRequests() as stop:
        while step < steps:
            # The i-th update of every group in a step sees the step's i-th batch (one batch for most families), of
            # which each rank takes its share.
            indices = []
            for _ in range(max(updates.values())):
                if order is None or cursor + batch_size > len(order):
                    order, cursor = torch.randperm(len(images), generator=batches), 0
                indices.append(ranks.shard(order[cursor : cursor + batch_size]))
                cursor += batch_size
            losses: dict[str, dict[str, torch.Tensor]] = {}
            for optimizer in optimizers.values():
                for param_group in optimizer.param_groups:
                    param_group["lr"] = cfg.lr * warmup_factor(step + 1, cfg.warmup_steps)
            for group, optimizer in optimizers.items():
                for index in indices[: updates[group]]:
                    batch = images[index].to(device)
                    if channels_last:
                        batch = batch.contiguous(memory_format=torch.channels_last)
                    with precision.autocast():
                        losses[group] = training_losses(batch, group, labels[index].to(device))
                    optimizer.zero_grad(set_to_none=True)
                    precision.backward_and_step(group, losses[group]["loss"], optimizer)
                    model.after_update(group)
            ema.update(model.ema_parameters())
            step += 1
            bar.update()
            stopping = ranks.largest(stop.received)  # the signal any rank received, or 0
            logging = step % cfg.log_every == 0 or step == steps
            saving = step % cfg.checkpoint_every == 0 or step == steps or stopping
            if logging or saving:
                named = {f"{g}/{term}": v for g, group_losses in losses.items() for term, v in group_losses.items()}
                logged = dict(zip(named, ranks.mean(list(named.values())), strict=True))
                _require_finite(entry, step, logged, model if saving else None, out_dir / CHECKPOINT, saved)
                if logging:
                    history.extend((step, term, value) for term, value in logged.items())
                    bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items() if k.endswith("/loss")})
            if cfg.fid_every and step % cfg.fid_every == 0:
                if ranks.main:
                    with averaged(model, ema, seed, batch_size) as statistics:
                        snapshot = ema.shadow | statistics
                    save_weights(out_dir, model, snapshot, {"entry": entry, "step": str(step)}, snapshot_name(step))
                ranks.wait_for_main(f"save the snapshot of step {step}")
            if saving:
                elapsed = time.perf_counter() - started
                rng = ranks.rng_states()
                if ranks.main:
                    _save_checkpoint(out_dir / CHECKPOINT, fingerprint, model, ema, optimizers, precision, batches,
                                     step, order, cursor, elapsed, history, rng)
                    write_history(out_dir, history)
                ranks.wait_for_main(f"write the checkpoint of step {step}")
                saved = step
            if stopping:
                bar.close()
                raise Interrupted(stopping, f"train {entry}: stopped by {signal_name(stopping)} after step {step} of "
                                            f"{steps}, saved in {out_dir / CHECKPOINT}; run the same command again "
                                            "to resume from it")
    bar.close()
    seconds = time.perf_counter() - started

    images_seen = steps * cfg.batch_size * max(updates.values())
    summary = TrainSummary(entry=entry, family=family, steps=steps, seconds=round(seconds, 3),
                           num_parameters=model.num_parameters(), device=device.type,
                           device_name=device_name(device), dtype=dtype,
                           channels_last=channels_last, config_sha256=fingerprint, processes=ranks.world_size,
                           images_per_second=round(images_seen / max(seconds, 1e-9), 3))
    if ranks.main:  # the set, then summary.json naming the sha256 of each of its files, last
        write_history(out_dir, history)
        write_config(out_dir, record)
        (out_dir / SNAPSHOTS).mkdir(exist_ok=True)  # always there, empty without a curve: every driver tracks it
        with averaged(model, ema, seed, batch_size) as statistics:
            averaged_state = ema.shadow | statistics
        save_weights(out_dir, model, averaged_state, {"entry": entry, "family": family, "config_sha256": fingerprint})
        summary = summary.model_copy(update={"sha256": signed_digests(out_dir)})
        write_summary(out_dir, summary)
    ranks.wait_for_main("write the run folder")
    return summary


def _require_finite(entry: str, step: int, losses: dict[str, float], model: GenerativeModel | None,
                    checkpoint: Path, saved: int) -> None:
    """ValueError naming the entry, the step and the first non-finite loss term, or, with `model` (before a save),
    non-finite weights: a diverged run stops before it is logged, checkpointed or saved as finished."""
    bad = next((f"the loss {term} is {value}" for term, value in losses.items() if not math.isfinite(value)), None)
    if bad is None and model is not None and not torch.stack([p.isfinite().all() for p in model.parameters()]).all():
        bad = "the weights hold non-finite values (the losses were finite: an update overflowed)"
    if bad is None:
        return
    kept = f"{checkpoint} keeps step {saved}" if saved else "no checkpoint was written"
    raise ValueError(f"models.{entry}: {bad} at step {step}; training stopped without saving it ({kept}). Lower "
                     f"models.{entry}.train.lr, set models.{entry}.train.grad_clip (e.g. 1.0) or train in fp32 "
                     f"(models.{entry}.train.dtype: fp32), then train again")


def make_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """`train.optimizer`: Adam with `betas` (most papers here), or RMSProp (Arjovsky et al.'s WGAN, who found
    momentum-based optimizers unstable for a clipped critic) with torch's defaults, as in their code."""
    if cfg.optimizer == "rmsprop":
        return optimizers.RMSprop(params, lr=cfg.lr)
    return optimizers.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The learning-rate multiplier of 1-based step `step`: step/warmup_steps up to 1 (Ho et al.'s linear
    warmup; their step 0 ran at lr 0, ours starts at lr/warmup_steps so that no step is wasted)."""
    return min(1.0, step / warmup_steps) if warmup_steps else 1.0


def _frozen_digest(model: GenerativeModel) -> dict[str, str]:
    """{"frozen_sha256": ...} over the model's non-trainable parameters; {} when it has none."""
    frozen = [(name, p) for name, p in model.named_parameters() if not p.requires_grad]
    if not frozen:
        return {}
    digest = hashlib.sha256()
    for name, p in frozen:
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return {"frozen_sha256": digest.hexdigest()}


def _resume(
    path: Path, fingerprint: str, model: GenerativeModel, ema: EMA, optimizers: dict[str, torch.optim.Optimizer],
    precision: MixedPrecision, batches: torch.Generator, ranks: Processes,
) -> dict[str, Any]:
    """Load the checkpoint into the run's state (on every rank) if it was written for this run record; a
    torchrun checkpoint keeps every rank's generators, so it resumes only with as many processes. Every rank
    loads rank 0's file, which it writes: on several nodes another rank's copy may be stale or absent."""
    fresh = {"step": 0, "order": None, "cursor": 0, "seconds": 0.0, "history": []}
    raw = path.read_bytes() if ranks.main and path.exists() else None
    ranks.wait_for_main(f"read {path}")
    raw = ranks.from_main(raw)
    if raw is None:
        return fresh
    checkpoint = _read_checkpoint(path, raw)
    if checkpoint["config_sha256"] != fingerprint:
        if ranks.main:
            tqdm.write(f"{path}: written for another config; starting from scratch")
        return fresh
    generators = checkpoint.get("rank_rng", [checkpoint])
    if len(generators) != ranks.world_size:
        raise ValueError(f"{path} was written by {len(generators)} process(es) and this run has {ranks.world_size}: "
                         f"resume with `torchrun --nproc_per_node {len(generators)}` (1: plain `genbench train`), "
                         f"or delete {path} to start again")
    model.load_state_dict(checkpoint["model"])
    ema.load_state_dict(checkpoint["ema"])
    for group, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint["optimizers"][group])
    precision.load_state_dict(checkpoint["scalers"])
    mine = generators[ranks.rank]
    torch.set_rng_state(mine["torch_rng"])
    batches.set_state(checkpoint["batch_rng"])
    if torch.cuda.is_available() and "cuda_rng" in mine:
        torch.cuda.set_rng_state_all(mine["cuda_rng"])
    if ranks.main:
        tqdm.write(f"{path}: resuming at step {checkpoint['step']}")
    return {"step": checkpoint["step"], "order": checkpoint["order"], "cursor": checkpoint["cursor"],
            "seconds": checkpoint["seconds"], "history": parse_history(checkpoint["history_csv"], str(path))}


def _read_checkpoint(path: Path, raw: bytes) -> dict[str, Any]:
    """checkpoint.pt's contents; ValueError naming it when it is damaged. Never discarded silently: it may hold
    days of training, and a copy from a backup may still resume it."""
    try:
        checkpoint = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split()).split('. ')[0][:160]}"  # torch's advice: not ours
        raise ValueError(f"{path}: unreadable checkpoint ({reason}); it is truncated or damaged: restore it, or "
                         "delete it to start again") from None
    if not isinstance(checkpoint, dict) or "config_sha256" not in checkpoint:
        raise ValueError(f"{path}: not a checkpoint of `genbench train`; delete it to start again")
    return checkpoint


def _save_checkpoint(
    path: Path, fingerprint: str, model: GenerativeModel, ema: EMA, optimizers: dict[str, torch.optim.Optimizer],
    precision: MixedPrecision, batches: torch.Generator, step: int, order: torch.Tensor, cursor: int, seconds: float,
    history: list[tuple[int, str, float]], rng: list[dict[str, Any]],
) -> None:
    """checkpoint.pt, atomically. `rng` holds every rank's generators (`Processes.rng_states`): rank 0's at the top
    level, as a single process writes them, and under torchrun all of them under `rank_rng`."""
    checkpoint: dict[str, Any] = {
        "config_sha256": fingerprint,
        "step": step,
        "order": order,
        "cursor": cursor,
        "seconds": seconds,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizers": {group: opt.state_dict() for group, opt in optimizers.items()},
        "scalers": precision.state_dict(),
        "batch_rng": batches.get_state(),
        "history_csv": history_text(history),
        **rng[0],
    }
    if len(rng) > 1:
        checkpoint["rank_rng"] = rng
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))
