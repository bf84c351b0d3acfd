"""Stage 2: train one model family on the prepared images.

One loop serves every family: it asks the model for its optimizer groups and, each step, for the loss of
each group in turn (`updates_per_step` times, each on a fresh batch: WGAN's n_critic), then updates the
exponential moving average of the weights the model samples from. `train.precision` runs the forward passes
under autocast (bf16, or fp16 with a gradient scaler per group). A checkpoint (weights, EMA, optimizers, loss
scalers, step, RNG states, history) is written every `checkpoint_every` steps and resumed from when the config
is unchanged, so a killed run continues where it stopped and a CPU run repeats bit for bit.

model.safetensors holds the weights to sample from (the EMA where the model averages, its own weights
elsewhere) under the model's state_dict keys, and the last iterate of every averaged tensor under `raw.<key>`,
so `sampling.ema: false` can sample the raw weights without retraining.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..models import build_model
from ..models.base import GenerativeModel, eval_mode
from .devices import pick_device
from .ema import EMA
from .io import atomic_path, atomic_write, config_hash, load_npy, write_json
from .precision import Precision

CHECKPOINT = "checkpoint.pt"


def train(
    family: str, arch: dict[str, Any], train_cfg: dict[str, Any], record: dict[str, Any], seed: int,
    data_dir: Path, out_dir: Path, cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Train `family` and write model.safetensors, history.csv, config.json and summary.json to out_dir.

    With `train_cfg["fid_every"] > 0`, every that many steps the EMA weights draw `fid_n` fixed-seed images
    whose FID against `data_dir/reference.npy` (statistics cached in `cache_dir`) goes into history.csv as
    `fid_curve` (and its cost as `fid_curve_seconds`), which `register` logs to MLflow per step.

    `record` is the resolved config written beside the outputs; its hash (less `sampling`) decides whether an
    existing checkpoint may be resumed. Its `sampling` section, where present, holds the sampler options the
    model is built with.
    """
    sampling = _model_sampling_options(record.get("sampling", {}))
    out_dir = Path(out_dir)
    images = _to_model_range(load_npy(Path(data_dir) / "train.npy"))
    labels = torch.from_numpy(load_npy(Path(data_dir) / "train_labels.npy")).long()
    channels, image_size = images.shape[1], images.shape[2]
    device = pick_device(train_cfg["device"])
    torch.manual_seed(seed)
    model = build_model(family, channels=channels, image_size=image_size, **arch, **sampling).to(device)
    ema = EMA(model.ema_parameters(), train_cfg["ema_decay"])
    updates = model.updates_per_step()
    optimizers = {
        group: torch.optim.Adam(params, lr=train_cfg["lr"], betas=tuple(train_cfg["betas"]))
        for group, params in model.parameter_groups().items()
    }
    precision = Precision(train_cfg.get("precision", "fp32"), device, optimizers)
    batches = torch.Generator().manual_seed(seed)
    record = record | {"image": {"channels": channels, "size": image_size}}
    # Sampling settings change no weight, so a checkpoint stays valid when only they change; frozen weights a
    # model loaded (the ldm's vae) are part of what it trains on, so another copy of them invalidates it.
    fingerprint = config_hash({k: v for k, v in record.items() if k != "sampling"} | _frozen_digest(model))
    state = _resume(out_dir / CHECKPOINT, fingerprint, model, ema, optimizers, precision, batches)
    step, history, seconds = state["step"], state["history"], state["seconds"]

    steps, batch_size = train_cfg["steps"], train_cfg["batch_size"]
    order, cursor = state["order"], state["cursor"]
    curve = _fid_curve(train_cfg, Path(data_dir), cache_dir or out_dir / "fid-cache", device)
    model.train()
    started = time.perf_counter() - seconds
    bar = tqdm(total=steps, initial=step, desc=f"train {family}", unit="step", disable=None)
    while step < steps:
        # The i-th update of every group in a step sees the step's i-th batch (one batch for most families).
        indices = []
        for _ in range(max(updates.values())):
            if order is None or cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(images), generator=batches), 0
            indices.append(order[cursor : cursor + batch_size])
            cursor += batch_size
        losses: dict[str, dict[str, torch.Tensor]] = {}
        for group, optimizer in optimizers.items():
            for index in indices[: updates[group]]:
                with precision.autocast():
                    losses[group] = model.training_losses(images[index].to(device), group, labels[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                precision.backward_and_step(group, losses[group]["loss"], optimizer)
                model.after_update(group)
        ema.update(model.ema_parameters())
        step += 1
        bar.update()
        if step % train_cfg["log_every"] == 0 or step == steps:
            logged = {f"{g}/{name}": v.detach().item() for g, group_losses in losses.items() for name, v in group_losses.items()}
            history.extend((step, name, value) for name, value in logged.items())
            bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items() if k.endswith("/loss")})
        if curve is not None and curve.due(step):
            with ema.swapped_in(model.ema_parameters()), eval_mode(model):
                fid = curve.maybe_measure(step, lambda n: _fixed_samples(model, n, seed))
            history.extend([(step, "fid_curve", fid), (step, "fid_curve_seconds", curve.history[-1]["seconds"])])
            bar.set_postfix({"fid_curve": f"{fid:.1f}"})
        if step % train_cfg["checkpoint_every"] == 0 or step == steps:
            elapsed = time.perf_counter() - started
            _save_checkpoint(out_dir / CHECKPOINT, fingerprint, model, ema, optimizers, precision, batches, step,
                             order, cursor, elapsed, history)
            _write_history(out_dir / "history.csv", history)
    bar.close()
    seconds = time.perf_counter() - started

    write_json(out_dir / "config.json", record)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(_sampling_weights(model, ema), str(tmp), metadata={"family": family, "config_sha256": fingerprint})
    summary = {
        "family": family,
        "steps": steps,
        "seconds": round(seconds, 3),
        "num_parameters": model.num_parameters(),
        "device": str(device),
        "config_sha256": fingerprint,
    }
    write_json(out_dir / "summary.json", summary)
    return summary


def load_trained(
    run_dir: Path, device: torch.device | str = "cpu", sampling: dict[str, Any] | None = None
) -> tuple[GenerativeModel, dict[str, Any]]:
    """Rebuild a trained model from a run folder's config.json and model.safetensors.

    `sampling` (a family's `sampling` section) replaces the one stored at training time: sampler settings
    change no weight, so the same weights serve DDPM and DDIM, EMA and raw. The returned config holds it.
    """
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    for name in ("config.json", "model.safetensors"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found; run `genbench train` for this family first")
    config = json.loads((run_dir / "config.json").read_text())
    if sampling is not None:
        config["sampling"] = dict(sampling)
    sampling = config.get("sampling", {})
    model = build_model(config["family"], channels=config["image"]["channels"],
                        image_size=config["image"]["size"], **config["arch"], **_model_sampling_options(sampling))
    stored = load_file(str(run_dir / "model.safetensors"))
    weights = {k: v for k, v in stored.items() if not k.startswith("raw.")}
    if not sampling.get("ema", True):
        weights |= {k.removeprefix("raw."): v for k, v in stored.items() if k.startswith("raw.")}
    model.load_state_dict(weights)
    return model.to(device).eval(), config


def _fid_curve(train_cfg: dict[str, Any], data_dir: Path, cache_dir: Path, device: torch.device):
    """The FID curve the config asks for, or None (imports the Inception code only when used)."""
    if not train_cfg.get("fid_every"):
        return None
    from .fid_curve import FIDCurve

    return FIDCurve(data_dir / "reference.npy", cache_dir, n=train_cfg["fid_n"], every=train_cfg["fid_every"],
                    device=str(device))


@torch.no_grad()
def _fixed_samples(model: GenerativeModel, n: int, seed: int) -> np.ndarray:
    """Images 0..n-1 of `seed`, drawn from per-image generators: the same noise at every curve point, and the
    training RNG untouched (so resuming and bit-for-bit repeats are unaffected)."""
    from .sample import image_generator, image_labels, to_uint8_nhwc

    indices = range(n)
    return to_uint8_nhwc(model.sample([image_generator(seed, i) for i in indices],
                                      image_labels(indices, model.num_classes)))


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


def _model_sampling_options(sampling: dict[str, Any]) -> dict[str, Any]:
    """A family's `sampling` section less `ema`, which picks weights rather than configuring the model."""
    return {k: v for k, v in sampling.items() if k != "ema"}


def _sampling_weights(model: GenerativeModel, ema: EMA) -> dict[str, torch.Tensor]:
    """The model's state with averaged tensors replaced by their EMA, plus the raw ones under `raw.`."""
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for name, shadow in ema.shadow.items():
        weights[f"raw.{name}"] = weights[name]
        weights[name] = shadow.detach().contiguous().cpu()
    return weights


def _to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC in [0, 255] → float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


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
    history = [(int(s), str(n), float(v)) for s, n, v in _read_history(checkpoint["history_csv"])]
    tqdm.write(f"{path}: resuming at step {checkpoint['step']}")
    return {"step": checkpoint["step"], "order": checkpoint["order"], "cursor": checkpoint["cursor"],
            "seconds": checkpoint["seconds"], "history": history}


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
        "history_csv": _history_text(history),
    }
    if torch.cuda.is_available():
        checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def _history_text(history: list[tuple[int, str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("step", "name", "value"))
    writer.writerows(history)
    return buffer.getvalue()


def _read_history(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))[1:]


def _write_history(path: Path, history: list[tuple[int, str, float]]) -> None:
    text = _history_text(history)
    atomic_write(path, lambda handle: handle.write(text.encode()))
