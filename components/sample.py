"""Stage 3: draw N images from a trained model into one uint8 NHWC `.npy` file.

Image i is generated from its own generator seeded by (seed, i) and, for a class-conditional model, as class
i % num_classes (every class equally often, in order), so any image can be regenerated alone and the file
does not depend on the batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .devices import pick_device
from .io import file_digest, save_npy, write_json
from .train import load_trained


def image_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator that owns every random draw of image `index` under `seed`."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def image_labels(indices: range, num_classes: int) -> torch.Tensor | None:
    """Class i % num_classes for image i: balanced and a function of i alone; None for unconditional models."""
    return torch.tensor(list(indices), dtype=torch.long) % num_classes if num_classes else None


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] → uint8 NHWC in [0, 255] (round to nearest, clamp)."""
    scaled = ((images.float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample(
    run_dir: Path, out_path: Path, n: int, batch_size: int, seed: int, device: str = "auto",
    sampling: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `n` samples of the model in `run_dir` to `out_path` and its resolved config beside it.

    `sampling` overrides the sampler settings stored with the weights (None keeps them); `source` (e.g. the
    registry version the weights came from) is copied into the record.
    """
    target = pick_device(device)
    model, config = load_trained(run_dir, target, sampling)
    batches = []
    with torch.inference_mode():
        for start in tqdm(range(0, n, batch_size), desc=f"sample {config['family']}", unit="batch", disable=None):
            indices = range(start, min(start + batch_size, n))
            generators = [image_generator(seed, i) for i in indices]
            labels = image_labels(indices, model.num_classes)
            batches.append(to_uint8_nhwc(model.sample(generators, labels)))
    images = np.concatenate(batches)
    out_path = Path(out_path)
    save_npy(out_path, images)
    record = {
        "family": config["family"],
        "n": n,
        "seed": seed,
        "batch_size": batch_size,
        "weights_sha256": file_digest(Path(run_dir) / "model.safetensors", "sha256"),
        "shape": list(images.shape),
        "device": str(target),
        "num_classes": model.num_classes,
        "labels": "image i has class i % num_classes" if model.num_classes else None,
        "weights": "ema" if config.get("sampling", {}).get("ema", True) else "raw",
        "sampling": config.get("sampling", {}),
    }
    if source:
        record["source"] = source
    write_json(out_path.with_suffix(".json"), record)
    return record
