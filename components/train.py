"""Stage 2: train one model family on the prepared images.

One loop serves every family: it asks the model for its optimizer groups (`train.optimizer`, the learning rate
warmed up over `warmup_steps`) and, each step, for the loss of each group in turn (`updates_per_step` times,
each on a fresh batch: WGAN's n_critic), clipping each group's gradient norm to `grad_clip`, then updates the
exponential moving average of the weights the model samples from; BatchNorm statistics are recomputed for the
averaged weights before each FID-curve point and at the end (`ema.averaged`). `train.precision` runs the
forward passes under autocast (bf16, or fp16 with a gradient scaler per group; `auto` picks bf16 where the
hardware runs it natively). A checkpoint (weights, EMA, optimizers, loss scalers, step, RNG states, history)
is written every `checkpoint_every` steps and resumed from when the run record is unchanged, so a killed run
continues where it stopped and a CPU run repeats bit for bit. Sampler settings are not an input: training
never depends on how the model will be sampled.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import FamilySettings
from ..models import build_model
from ..models import family as family_spec
from ..models.base import GenerativeModel, eval_mode
from ..models.config import TrainConfig
from .artifacts import (
    RunRecord,
    TrainSummary,
    history_text,
    load_frozen,
    parse_history,
    save_weights,
    to_model_range,
    write_config,
    write_history,
    write_summary,
)  # fmt: skip
from .devices import device_name, pick_device
from .ema import EMA, averaged
from .io import atomic_write, config_hash, file_digest, load_npy
from .precision import Precision
from .precision import resolve as resolve_precision
from .sample import draw_images

CHECKPOINT = "checkpoint.pt"


def train(name: str, settings: FamilySettings, seed: int, data_dir: Path, out_dir: Path,
          cache_dir: Path | None = None) -> TrainSummary:
    """Train entry `name` (its `models.<name>` settings: family, arch and train) and write model.safetensors,
    history.csv, config.json and summary.json to out_dir.

    A family built on trained models (the ldm's vae) loads them from `arch.<argument>_run` and stores them,
    weights and records, with its own. With `train.fid_every > 0`, every that many steps the EMA weights draw
    `fid_n` fixed-seed images (the sampler `train.curve_sampling` picks) whose FID against
    `data_dir/validation.npy` (never the test split; statistics cached in `cache_dir`) goes into history.csv as
    `fid_curve` (and its cost as `fid_curve_seconds`), which `register` logs to MLflow per step.
    """
    cfg, out_dir, data_dir = settings.train, Path(out_dir), Path(data_dir)
    train_path = data_dir / "train.npy"
    images = to_model_range(load_npy(train_path))
    labels = torch.from_numpy(load_npy(data_dir / "train_labels.npy")).long()
    channels, image_size = images.shape[1], images.shape[2]
    device = pick_device(cfg.device)
    family = settings.family
    frozen = load_frozen(name, family, settings.arch, channels, image_size, seed)
    torch.manual_seed(seed)
    model = build_model(family, channels, image_size, settings.arch,
                        **{argument: model for argument, (model, _) in frozen.items()}).to(device)
    record = RunRecord(
        name=name, family=family, seed=seed, image={"channels": channels, "size": image_size},
        arch=settings.arch.model_dump(mode="json"), train=cfg.model_dump(mode="json"),
        train_data_md5=file_digest(train_path), frozen={argument: rec for argument, (_, rec) in frozen.items()},
    )  # fmt: skip
    dtype, channels_last = resolve_precision(cfg.precision, cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model.ema_parameters(), cfg.ema_decay)
    updates = model.updates_per_step()
    optimizers = {group: make_optimizer(cfg, params) for group, params in model.parameter_groups().items()}
    precision = Precision(dtype, device, optimizers, cfg.grad_clip)
    batches = torch.Generator().manual_seed(seed)
    # The frozen weights a model was given are part of what it trains on: another copy of them invalidates it.
    fingerprint = config_hash(record.model_dump(mode="json") | _frozen_digest(model))
    state = _resume(out_dir / CHECKPOINT, fingerprint, model, ema, optimizers, precision, batches)
    step, history, seconds = state["step"], state["history"], state["seconds"]
    if step == 0:
        model.fit_data(images)

    steps, batch_size = cfg.steps, cfg.batch_size
    order, cursor = state["order"], state["cursor"]
    curve = _fid_curve(cfg, data_dir, cache_dir or out_dir / "fid-cache", device)
    curve_sampling = cfg.curve_sampling(family_spec(family).sampling())
    if curve is not None:
        try:
            curve_sampling.check(settings.arch)
        except ValueError as exc:
            raise ValueError(f"models.{name}.train: the FID curve cannot sample: {exc}") from None
    model.train()
    started = time.perf_counter() - seconds
    bar = tqdm(total=steps, initial=step, desc=f"train {name}", unit="step", disable=None)
    while step < steps:
        # The i-th update of every group in a step sees the step's i-th batch (one batch for most families).
        indices = []
        for _ in range(max(updates.values())):
            if order is None or cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(images), generator=batches), 0
            indices.append(order[cursor : cursor + batch_size])
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
                    losses[group] = model.training_losses(batch, group, labels[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                precision.backward_and_step(group, losses[group]["loss"], optimizer)
                model.after_update(group)
        ema.update(model.ema_parameters())
        step += 1
        bar.update()
        if step % cfg.log_every == 0 or step == steps:
            logged = {f"{g}/{name}": v.detach().item() for g, group_losses in losses.items() for name, v in group_losses.items()}
            history.extend((step, name, value) for name, value in logged.items())
            bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items() if k.endswith("/loss")})
        if curve is not None and curve.due(step):
            with averaged(model, ema, seed, batch_size), eval_mode(model):
                fid = curve.maybe_measure(step, lambda n: draw_images(model, range(n), seed, curve_sampling))
            history.extend([(step, "fid_curve", fid), (step, "fid_curve_seconds", curve.history[-1]["seconds"])])
            bar.set_postfix({"fid_curve": f"{fid:.1f}"})
        if step % cfg.checkpoint_every == 0 or step == steps:
            elapsed = time.perf_counter() - started
            _save_checkpoint(out_dir / CHECKPOINT, fingerprint, model, ema, optimizers, precision, batches, step,
                             order, cursor, elapsed, history)
            write_history(out_dir, history)
    bar.close()
    seconds = time.perf_counter() - started

    write_config(out_dir, record)
    with averaged(model, ema, seed, batch_size) as statistics:
        averaged_state = ema.shadow | statistics
    save_weights(out_dir, model, averaged_state, {"name": name, "family": family, "config_sha256": fingerprint})
    summary = TrainSummary(name=name, family=family, steps=steps, seconds=round(seconds, 3),
                           num_parameters=model.num_parameters(), device=str(device),
                           device_name=device_name(device), precision=dtype,
                           channels_last=channels_last, config_sha256=fingerprint)
    write_summary(out_dir, summary)
    return summary


def make_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """`train.optimizer`: Adam with `betas` (most papers here), or RMSProp (Arjovsky et al.'s WGAN, who found
    momentum-based optimizers unstable for a clipped critic) with torch's defaults, as in their code."""
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The learning-rate multiplier of 1-based step `step`: step/warmup_steps up to 1 (Ho et al.'s linear
    warmup; their step 0 ran at lr 0, ours starts at lr/warmup_steps so that no step is wasted)."""
    return min(1.0, step / warmup_steps) if warmup_steps else 1.0


def _fid_curve(cfg: TrainConfig, data_dir: Path, cache_dir: Path, device: torch.device):
    """The FID curve the config asks for, or None (imports the Inception code only when used)."""
    if not cfg.fid_every:
        return None
    from .fid_curve import FIDCurve

    return FIDCurve(data_dir / "validation.npy", cache_dir, n=cfg.fid_n, every=cfg.fid_every, device=str(device),
                    precision=resolve_precision(cfg.fid_precision, False, device)[0])


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
    precision: Precision, batches: torch.Generator,
) -> dict[str, Any]:
    fresh = {"step": 0, "order": None, "cursor": 0, "seconds": 0.0, "history": []}
    if not path.exists():
        return fresh
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint["config_sha256"] != fingerprint:
        tqdm.write(f"{path}: written for another config; starting from scratch")
        return fresh
    model.load_state_dict(checkpoint["model"])
    ema.load_state_dict(checkpoint["ema"])
    for group, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint["optimizers"][group])
    precision.load_state_dict(checkpoint["scalers"])
    torch.set_rng_state(checkpoint["torch_rng"])
    batches.set_state(checkpoint["batch_rng"])
    if torch.cuda.is_available() and "cuda_rng" in checkpoint:
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    tqdm.write(f"{path}: resuming at step {checkpoint['step']}")
    return {"step": checkpoint["step"], "order": checkpoint["order"], "cursor": checkpoint["cursor"],
            "seconds": checkpoint["seconds"], "history": parse_history(checkpoint["history_csv"], str(path))}


def _save_checkpoint(
    path: Path, fingerprint: str, model: GenerativeModel, ema: EMA, optimizers: dict[str, torch.optim.Optimizer],
    precision: Precision, batches: torch.Generator, step: int, order: torch.Tensor, cursor: int, seconds: float,
    history: list[tuple[int, str, float]],
) -> None:
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
        "torch_rng": torch.get_rng_state(),
        "batch_rng": batches.get_state(),
        "history_csv": history_text(history),
    }
    if torch.cuda.is_available():
        checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))
