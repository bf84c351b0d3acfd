"""Stage 3: draw N images from a trained model into one uint8 NHWC `.npy` file.

Image i is generated from its own generator seeded by (seed, i) and, for a class-conditional model, as class
i % num_classes (every class equally often, in order), so any image can be regenerated alone and the file
does not depend on the batch size. The sampler and its options come from `sampling.<family>` at call time.
"""

from __future__ import annotations

import time
from pathlib import Path

from genbench.components.common.artifacts import WEIGHTS, load_trained
from genbench.components.common.devices import pick_device
from genbench.components.common.drawing import draw_samples
from genbench.components.common.io import clean_leftovers, file_digest, save_npy, write_json
from genbench.components.common.records import RegisteredSource, SampleRecord
from genbench.config import SampleConfig
from genbench.models import family as family_spec
from genbench.models.config import SamplingConfig


def sample(run_dir: Path, out_path: Path, entry: str, settings: SampleConfig, sampling: SamplingConfig,
           seed: int, source: RegisteredSource | None = None) -> SampleRecord:
    """Write `settings.n` samples of `entry`'s model in `run_dir` to `out_path`, its record beside it.

    `entry` is checked against the run: its sampling settings must not reach another entry's weights.
    `source` (the registry version the weights came from) is copied into the record; without it `run_dir` is a run
    folder, which must be complete (`artifacts.check_complete`).
    """
    device = pick_device(settings.device)
    model, record = load_trained(run_dir, device, ema=sampling.ema, verify=source is None)
    if record.entry != entry:
        where = source.model_uri if source else run_dir
        raise ValueError(f"{where} holds the {record.entry} model ({record.family}), not {entry}")
    model_arch = family_spec(record.family).arch.model_validate(record.arch)
    sampling.check(model_arch)
    n, batch_size = settings.n, settings.batch_size
    started = time.perf_counter()
    images = draw_samples(model, n, seed, batch_size, sampling, desc=f"sample {entry}")
    seconds = time.perf_counter() - started
    out_path, record_path = Path(out_path), Path(out_path).with_suffix(".json")
    clean_leftovers(out_path.parent, out_path.name, record_path.name)
    record_path.unlink(missing_ok=True)  # the completion record first: a stop below leaves no old-looking pair
    save_npy(out_path, images)
    result = SampleRecord(
        entry=entry, family=record.family, n=n, seed=seed, batch_size=batch_size, shape=list(images.shape),
        device=str(device),
        weights_sha256=file_digest(Path(run_dir) / WEIGHTS, "sha256"), weights="ema" if sampling.ema else "raw",
        num_classes=model.num_classes, labels="image i has class i % num_classes" if model.num_classes else None,
        network_evaluations=sampling.network_evaluations(model_arch), seconds=round(seconds, 3),
        sampling=sampling.model_dump(mode="json"), out=str(out_path), samples_md5=file_digest(out_path), source=source,
    )  # fmt: skip
    write_json(record_path, result.model_dump(mode="json", exclude_none=True))
    return result
