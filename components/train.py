"""Stage 2: train one model family on the prepared images.

One loop serves every family: it asks the model for its optimizer groups and, each step, for the loss of
each group in turn. A checkpoint (weights, optimizers, step, RNG states, history) is written every
`checkpoint_every` steps and resumed from when the config is unchanged, so a killed run continues where it
stopped and a CPU run repeats bit for bit.
"""

from __future__ import annotations

import csv
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
from ..models.base import GenerativeModel
from .devices import pick_device
from .io import atomic_path, atomic_write, config_hash, load_npy, write_json

CHECKPOINT = "checkpoint.pt"


def train(
    family: str, arch: dict[str, Any], train_cfg: dict[str, Any], record: dict[str, Any], seed: int,
    data_dir: Path, out_dir: Path,
) -> dict[str, Any]:
    """Train `family` and write model.safetensors, history.csv, config.json and summary.json to out_dir.

    `record` is the resolved config written beside the outputs; its hash decides whether an existing
    checkpoint may be resumed.
    """
    out_dir = Path(out_dir)
    images = _to_model_range(load_npy(Path(data_dir) / "train.npy"))
    channels, image_size = images.shape[1], images.shape[2]
    device = pick_device(train_cfg["device"])
    torch.manual_seed(seed)
    model = build_model(family, channels=channels, image_size=image_size, **arch).to(device)
    optimizers = {
        group: torch.optim.Adam(params, lr=train_cfg["lr"], betas=tuple(train_cfg["betas"]))
        for group, params in model.parameter_groups().items()
    }
    batches = torch.Generator().manual_seed(seed)
    record = record | {"image": {"channels": channels, "size": image_size}}
    fingerprint = config_hash(record)
    state = _resume(out_dir / CHECKPOINT, fingerprint, model, optimizers, batches)
    step, history, seconds = state["step"], state["history"], state["seconds"]

    steps, batch_size = train_cfg["steps"], train_cfg["batch_size"]
    order, cursor = state["order"], state["cursor"]
    model.train()
    started = time.perf_counter() - seconds
    bar = tqdm(total=steps, initial=step, desc=f"train {family}", unit="step", disable=None)
    while step < steps:
        if order is None or cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=batches), 0
        x = images[order[cursor : cursor + batch_size]].to(device)
        cursor += batch_size
        losses: dict[str, dict[str, torch.Tensor]] = {}
        for group, optimizer in optimizers.items():
            losses[group] = model.training_losses(x, group)
            optimizer.zero_grad(set_to_none=True)
            losses[group]["loss"].backward()
            optimizer.step()
        step += 1
        bar.update()
        if step % train_cfg["log_every"] == 0 or step == steps:
            logged = {f"{g}/{name}": v.detach().item() for g, group_losses in losses.items() for name, v in group_losses.items()}
            history.extend((step, name, value) for name, value in logged.items())
            bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items() if k.endswith("/loss")})
        if step % train_cfg["checkpoint_every"] == 0 or step == steps:
            elapsed = time.perf_counter() - started
            _save_checkpoint(out_dir / CHECKPOINT, fingerprint, model, optimizers, batches, step, order,
                             cursor, elapsed, history)
            _write_history(out_dir / "history.csv", history)
    bar.close()
    seconds = time.perf_counter() - started

    write_json(out_dir / "config.json", record)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"family": family, "config_sha256": fingerprint})
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


def load_trained(run_dir: Path, device: torch.device | str = "cpu") -> tuple[GenerativeModel, dict[str, Any]]:
    """Rebuild a trained model from a run folder's config.json and model.safetensors."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    for name in ("config.json", "model.safetensors"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found; run `genbench train` for this family first")
    config = json.loads((run_dir / "config.json").read_text())
    model = build_model(config["family"], channels=config["image"]["channels"],
                        image_size=config["image"]["size"], **config["arch"])
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    return model.to(device).eval(), config


def _to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC in [0, 255] → float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _resume(
    path: Path, fingerprint: str, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer],
    batches: torch.Generator,
) -> dict[str, Any]:
    fresh = {"step": 0, "order": None, "cursor": 0, "seconds": 0.0, "history": []}
    if not path.exists():
        return fresh
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint["config_sha256"] != fingerprint:
        tqdm.write(f"{path}: written for another config; starting from scratch")
        return fresh
    model.load_state_dict(checkpoint["model"])
    for group, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint["optimizers"][group])
    torch.set_rng_state(checkpoint["torch_rng"])
    batches.set_state(checkpoint["batch_rng"])
    if torch.cuda.is_available() and "cuda_rng" in checkpoint:
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    history = [(int(s), str(n), float(v)) for s, n, v in _read_history(checkpoint["history_csv"])]
    tqdm.write(f"{path}: resuming at step {checkpoint['step']}")
    return {"step": checkpoint["step"], "order": checkpoint["order"], "cursor": checkpoint["cursor"],
            "seconds": checkpoint["seconds"], "history": history}


def _save_checkpoint(
    path: Path, fingerprint: str, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer],
    batches: torch.Generator, step: int, order: torch.Tensor, cursor: int, seconds: float,
    history: list[tuple[int, str, float]],
) -> None:
    checkpoint: dict[str, Any] = {
        "config_sha256": fingerprint,
        "step": step,
        "order": order,
        "cursor": cursor,
        "seconds": seconds,
        "model": model.state_dict(),
        "optimizers": {group: opt.state_dict() for group, opt in optimizers.items()},
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
