"""Stage 3: draw N images from a trained model into one uint8 NHWC `.npy` file.

Image i is generated from its own generator seeded by (seed, i) and, for a class-conditional model, as class
i % num_classes (every class equally often, in order), so any image can be regenerated alone and the file
does not depend on the batch size. The sampler and its options come from `sampling.<family>` at call time.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from ..config import SampleConfig
from ..models import family as family_spec
from ..models.base import GenerativeModel
from ..models.config import SamplingConfig
from ..models.samplers import draw
from .artifacts import WEIGHTS, load_trained, to_uint8_nhwc
from .devices import pick_device
from .io import clean_leftovers, file_digest, read_json, require_file, save_npy, write_json
from .manifest import cached_digest


class SampleRecord(BaseModel):
    """samples/<name>.json, and what `sample` returns."""

    name: str
    family: str
    n: int
    seed: int
    batch_size: int
    shape: list[int]
    device: str
    weights_sha256: str
    weights: str  # ema | raw
    num_classes: int
    network_evaluations: int  # forward passes of the network per image (the report's cost column)
    seconds: float  # wall time of the sampling loop (not in any file compared across runs)
    labels: str | None = None  # how images get classes (conditional models); omitted from the file when None
    sampling: dict[str, Any]
    out: str
    samples_md5: str  # md5 of the .npy beside this record, which is written after it: the pair's completion record
    source: dict[str, Any] | None = None  # the registry version the weights came from


def read_sample_record(path: Path) -> SampleRecord:
    """A sample record (`samples/<name>/seed-<s>.json`) as `sample` wrote it."""
    try:
        return SampleRecord.model_validate(read_json(require_file(Path(path), "genbench sample")))
    except ValidationError as exc:
        raise ValueError(f"{path}: not a sample record of `genbench sample` ({exc.errors()[0]['loc'][0]}: "
                         f"{exc.errors()[0]['msg']}); run `genbench sample` again") from None


def check_samples(images: Path, required: bool = True) -> SampleRecord | None:
    """The record beside `images` once it vouches for their bytes (`sample` writes it after them and deletes it
    before it writes anything); None when there is none and it is not `required` (images `genbench sample` did not
    draw, such as the prepared holdout)."""
    images = Path(images)
    record_path = images.with_suffix(".json")
    if not required and not record_path.exists():
        return None
    drawn = read_sample_record(record_path)
    resample = f"re-run `genbench sample {drawn.name}`"
    require_file(images, f"genbench sample {drawn.name}")
    if cached_digest(images) != drawn.samples_md5:
        raise ValueError(f"{images} is not the file {record_path} was written with (a sampling stopped between its "
                         f"writes, or an edit); {resample}")
    return drawn


def image_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator that owns every random draw of image `index` under `seed`."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def image_labels(indices: Sequence[int], num_classes: int) -> torch.Tensor | None:
    """Class i % num_classes for image i: balanced and a function of i alone; None for unconditional models."""
    return torch.tensor(list(indices), dtype=torch.long) % num_classes if num_classes else None


@torch.no_grad()
def draw_images(model: GenerativeModel, indices: Sequence[int], seed: int, sampling: SamplingConfig,
                labels: torch.Tensor | None = None) -> np.ndarray:
    """Images `indices` of `seed` as uint8 NHWC, each from its own generator: the training RNG is untouched.
    `labels` (one class per index) replace the default classes `image_labels` gives."""
    generators = [image_generator(seed, i) for i in indices]
    labels = image_labels(indices, model.num_classes) if labels is None else labels
    return to_uint8_nhwc(draw(model, generators, labels, sampling))


def draw_samples(model: GenerativeModel, n: int, seed: int, batch_size: int, sampling: SamplingConfig,
                 labels: torch.Tensor | None = None, desc: str = "sample") -> np.ndarray:
    """Images 0..n-1 of `seed` (uint8 NHWC) in batches of `batch_size`: the one loop behind `genbench sample` and a
    registered version's pyfunc `predict`. Image i depends on (seed, i) and its label alone; another batch split
    moves only float rounding, so two callers agree bit for bit at the same `batch_size`."""
    with torch.inference_mode():
        batches = [draw_images(model, range(start, min(start + batch_size, n)), seed, sampling,
                               None if labels is None else labels[start:start + batch_size])
                   for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=None)]
    return np.concatenate(batches)


def sample(run_dir: Path, out_path: Path, name: str, settings: SampleConfig, sampling: SamplingConfig,
           seed: int, source: dict[str, Any] | None = None) -> SampleRecord:
    """Write `settings.n` samples of entry `name`'s model in `run_dir` to `out_path`, its record beside it.

    `name` is checked against the run: its sampling settings must not reach another entry's weights.
    `source` (the registry version the weights came from) is copied into the record; without it `run_dir` is a run
    folder, which must be complete (`artifacts.check_complete`).
    """
    device = pick_device(settings.device)
    model, record = load_trained(run_dir, device, ema=sampling.ema, verify=source is None)
    if record.name != name:
        where = source["model_uri"] if source else run_dir
        raise ValueError(f"{where} holds the {record.name} model ({record.family}), not {name}")
    model_arch = family_spec(record.family).arch.model_validate(record.arch)
    sampling.check(model_arch)
    n, batch_size = settings.n, settings.batch_size
    started = time.perf_counter()
    images = draw_samples(model, n, seed, batch_size, sampling, desc=f"sample {name}")
    seconds = time.perf_counter() - started
    out_path, record_path = Path(out_path), Path(out_path).with_suffix(".json")
    clean_leftovers(out_path.parent, out_path.name, record_path.name)
    record_path.unlink(missing_ok=True)  # the completion record first: a stop below leaves no old-looking pair
    save_npy(out_path, images)
    result = SampleRecord(
        name=name, family=record.family, n=n, seed=seed, batch_size=batch_size, shape=list(images.shape),
        device=str(device),
        weights_sha256=file_digest(Path(run_dir) / WEIGHTS, "sha256"), weights="ema" if sampling.ema else "raw",
        num_classes=model.num_classes, labels="image i has class i % num_classes" if model.num_classes else None,
        network_evaluations=sampling.network_evaluations(model_arch), seconds=round(seconds, 3),
        sampling=sampling.model_dump(mode="json"), out=str(out_path), samples_md5=file_digest(out_path), source=source,
    )  # fmt: skip
    write_json(record_path, result.model_dump(mode="json", exclude_none=True))
    return result


def sample_registered(model_uri: str, name: str, settings: SampleConfig, sampling: SamplingConfig, seed: int,
                      samples_dir: Path, project_dir: Path, out_path: Path | None = None) -> SampleRecord:
    """`sample` a registry version (`models:/genbench-<name>@<alias>` or `.../<version>`) into
    `out_path` or `samples_dir/<name>-v<version>.npy`; needs nothing of the run folders."""
    from .registry import fetch_registered

    with tempfile.TemporaryDirectory(prefix="genbench-model-") as downloaded:
        run_dir, source = fetch_registered(model_uri, Path(downloaded), project_dir=project_dir)
        target = out_path or Path(samples_dir) / f"{name}-v{source['version']}.npy"
        return sample(run_dir, target, name, settings, sampling, seed, source=source)
