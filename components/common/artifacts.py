"""Run artifacts: the one module that writes and reads a run folder, and converts images between ranges.

A run folder (`runs/<family>/`, or a registry download) holds:
  model.safetensors  the weights to sample from (the EMA where the model averages) under the model's
                     state_dict keys, the last iterate of every averaged tensor under `raw.<key>`
  config.json        the run record: family, seed, image shape, arch, train, the training images' md5, and the
                     records of the frozen models it was built on (the ldm's vae), so it rebuilds anywhere
                     with no other folder
  history.csv        step,name,value rows (per-step losses, the FID curve)
  summary.json       steps, seconds, processes, device-seconds, images/s, parameter count, device, config hash,
                     and the sha256 of the three files above: written last, it is the run's completion record
                     (`check_complete`), so a training stopped between its writes never passes for a finished run
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, computed_field

from genbench.components.common.io import atomic_write, file_digest, read_json, require_file, write_json
from genbench.components.common.records import Entry

if TYPE_CHECKING:  # torch and the models load inside the functions that need them: `register` needs neither
    import numpy as np
    import torch

    from genbench.models.base import GenerativeModel

WEIGHTS, CONFIG, HISTORY, SUMMARY = "model.safetensors", "config.json", "history.csv", "summary.json"
SNAPSHOTS = "snapshots"  # the EMA weights every train.fid_every steps, for the fid-curve stage
SIGNED = (WEIGHTS, CONFIG, HISTORY)  # what summary.json, written after them, records the sha256 of
RAW_PREFIX = "raw."
# How a damaged run file is replaced: `train` rewrites every run file from its checkpoint when the run is complete
RETRAIN = "re-run `genbench train` (or restore the run folder with `dvc checkout`)"

HistoryRow = tuple[int, str, float]  # (step, name, value)


class ImageShape(BaseModel):
    channels: int
    size: int


class RunRecord(BaseModel):
    """config.json: what rebuilds the model (family, image, arch, frozen) and what trained it (seed, train)."""

    model_config = ConfigDict(extra="forbid")

    entry: Entry  # the params entry (a family, or a named variant of one: runs/<entry>, genbench-<entry>)
    family: str  # the registered family that rebuilds it
    seed: int
    image: ImageShape
    arch: dict[str, Any]
    train: dict[str, Any]
    train_data_md5: str  # the training images it saw
    frozen: dict[str, RunRecord] = {}  # constructor argument → the frozen model's own record


class TrainSummary(BaseModel):
    """summary.json, and what `components.train.train.train` returns."""

    entry: Entry
    family: str
    steps: int
    seconds: float
    num_parameters: int
    device: str
    device_name: str = ""  # the GPU or CPU model (components/common/devices.py), for the report's device-hours
    dtype: str = "fp32"  # train.dtype as resolved on the device (auto → bf16 or fp32)
    channels_last: bool = False
    config_sha256: str
    processes: int = 1  # processes that trained it (torchrun's world size), each holding one device
    # global training images (batch_size × batches per step × steps) per second of training, the FID curve's
    # measurements excluded; None in summaries written before it was recorded
    images_per_second: float | None = None
    sha256: dict[str, str] = {}  # sha256 of each SIGNED file, written before this record; {} in older summaries

    @computed_field  # in summary.json, and derived for summaries older than `processes` (one process each)
    @property
    def device_seconds(self) -> float:
        """Wall time × processes: the device time the run held (every process holds its device throughout)."""
        return round(self.seconds * self.processes, 3)


# ---------------------------------------------------------------------------------------------- images


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC in [0, 255] → float NCHW in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] → uint8 NHWC in [0, 255] (round to nearest, clamp)."""
    import torch

    scaled = ((images.float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------- files


def require(run_dir: Path, *names: str) -> None:
    """FileNotFoundError naming the first missing file and the stage that makes it."""
    for name in names:
        require_file(Path(run_dir) / name, "genbench train")


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.json as written (the one reader of it)."""
    require(run_dir, CONFIG)
    return read_json(Path(run_dir) / CONFIG)


def read_run_record(run_dir: Path) -> RunRecord:
    """A run folder's config.json as the run record `train` wrote."""
    try:
        return RunRecord.model_validate(read_config(run_dir))
    except ValidationError as exc:
        raise ValueError(f"{Path(run_dir) / CONFIG}: not a run record of `genbench train` ({_first_error(exc)}); "
                         f"{RETRAIN}") from None


def write_config(run_dir: Path, record: RunRecord) -> None:
    write_json(Path(run_dir) / CONFIG, record.model_dump(mode="json"))


def write_summary(run_dir: Path, summary: TrainSummary) -> None:
    write_json(Path(run_dir) / SUMMARY, summary.model_dump(mode="json"))


def read_summary(run_dir: Path) -> TrainSummary:
    require(run_dir, SUMMARY)
    try:
        return TrainSummary.model_validate(read_json(Path(run_dir) / SUMMARY))
    except ValidationError as exc:
        raise ValueError(f"{Path(run_dir) / SUMMARY}: not a summary of `genbench train` ({_first_error(exc)}); "
                         f"{RETRAIN}") from None


def signed_digests(run_dir: Path) -> dict[str, str]:
    """The sha256 of each SIGNED file of a run folder, for its summary.json."""
    return {name: file_digest(Path(run_dir) / name, "sha256") for name in SIGNED}


def check_complete(run_dir: Path) -> TrainSummary:
    """The run's summary.json once every file it signs is checked against it: a run stopped between its writes
    (train deletes summary.json before it writes anything) or edited since fails here, naming the stage to re-run."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    retrain = f"re-run `genbench train {summary.entry}` (or restore the run folder with `dvc checkout`)"
    if set(summary.sha256) != set(SIGNED):
        raise ValueError(f"{run_dir / SUMMARY} records no sha256 of {', '.join(SIGNED)} (an older genbench wrote it), "
                         f"so the run cannot be checked; {retrain}")
    require(run_dir, *SIGNED)
    for name, digest in signed_digests(run_dir).items():
        if digest != summary.sha256[name]:
            raise ValueError(f"{run_dir / name} is not the file {SUMMARY} was written with (a training stopped "
                             f"between its writes, or an edit); {retrain}")
    return summary


def history_text(rows: list[HistoryRow]) -> str:
    """history.csv's bytes (also kept inside checkpoints, so a resumed run writes the same file)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("step", "name", "value"))
    writer.writerows(rows)
    return buffer.getvalue()


def parse_history(text: str, source: str = "history.csv") -> list[HistoryRow]:
    """`step,name,value` rows in file order; rows with an empty value are skipped; a bad row is an error
    naming its line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"step", "name", "value"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"{source}: header must contain step,name,value (missing {sorted(missing)})")
    rows = []
    for lineno, row in enumerate(reader, start=2):
        value = (row["value"] or "").strip()
        if not value:
            continue
        try:
            rows.append((int(float(row["step"])), row["name"], float(value)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}:{lineno}: bad row {row!r}: {exc}") from exc
    return rows


def write_history(run_dir: Path, rows: list[HistoryRow]) -> None:
    text = history_text(rows)
    atomic_write(Path(run_dir) / HISTORY, lambda handle: handle.write(text.encode()))


def read_history(run_dir: Path) -> list[HistoryRow]:
    """A run's history.csv (the one reader of it)."""
    require(run_dir, HISTORY)
    path = Path(run_dir) / HISTORY
    return parse_history(path.read_text(), str(path))


def curves(rows: list[HistoryRow]) -> dict[str, list[tuple[int, float]]]:
    """History rows grouped by name: {name: [(step, value), ...]}."""
    grouped: dict[str, list[tuple[int, float]]] = {}
    for step, name, value in rows:
        grouped.setdefault(name, []).append((step, value))
    return grouped


# ---------------------------------------------------------------------------------------------- weights


def snapshot_name(step: int) -> str:
    """The EMA weights at `step` of a run with an FID curve, relative to its folder (zero-padded: sorted by step)."""
    return f"{SNAPSHOTS}/step-{step:08d}.safetensors"


def snapshot_steps(run_dir: Path) -> list[tuple[int, str]]:
    """(step, `snapshot_name(step)`) of every snapshot in the run folder, by step."""
    found = [(int(path.stem.removeprefix("step-")), f"{SNAPSHOTS}/{path.name}")
             for path in (Path(run_dir) / SNAPSHOTS).glob("step-*.safetensors")]
    return sorted(found)


def save_weights(run_dir: Path, model: GenerativeModel, averaged: dict[str, torch.Tensor],
                 metadata: dict[str, str], file: str = WEIGHTS) -> None:
    """model.safetensors (or `file`, a snapshot): the state with averaged tensors replaced by `averaged`, the raw
    ones under `raw.`.

    `metadata` goes in as one JSON string under the key `genbench`: safetensors writes its metadata map in hash
    order, which changes from process to process, so several keys would make equal weights differ in bytes
    (and DVC see a new output)."""
    import json

    from safetensors.torch import save

    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for name, shadow in averaged.items():
        weights[f"{RAW_PREFIX}{name}"] = weights[name]
        weights[name] = shadow.detach().contiguous().cpu()
    # Bytes through atomic_write (fsync, the usual 0644): safetensors' save_file replaces the file it is given,
    # which left the weights mode 0600 unlike every other output.
    data = save(weights, metadata={"genbench": json.dumps(metadata, sort_keys=True)})
    atomic_write(Path(run_dir) / file, lambda handle: handle.write(data))


def build(record: RunRecord) -> GenerativeModel:
    """An untrained model shaped as `record` says, with untrained frozen models of the recorded shapes
    (the weights of all of them come from one model.safetensors)."""
    from genbench.models import build_model

    frozen = {argument: build(sub) for argument, sub in record.frozen.items()}
    return build_model(record.family, record.image.channels, record.image.size, record.arch, **frozen)


def load_trained(run_dir: Path, device: torch.device | str = "cpu", ema: bool = True, verify: bool = True,
                 weights: str = "") -> tuple[GenerativeModel, RunRecord]:
    """The trained model of a run folder (EMA weights, or the last iterate with `ema=False`), in eval mode, once
    `check_complete` vouches for it; ValueError naming the file when config.json or model.safetensors is damaged or
    the two do not belong together. `verify=False` is for a registered version's two files, which MLflow keeps
    without the summary.json they were checked against when registered. `weights` names another weights file of
    the folder (a snapshot) to load instead of model.safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from genbench.models import family

    run_dir = Path(run_dir)
    require(run_dir, CONFIG, weights or WEIGHTS)
    record = read_run_record(run_dir)
    family(record.family)  # a clear error for a family this version does not know
    model = build(record)
    path = run_dir / (weights or WEIGHTS)
    try:
        stored = load_file(str(path))
    except SafetensorError as exc:
        raise ValueError(f"{path}: unreadable weights ({exc}); the file is truncated or damaged: {RETRAIN}") from None
    weights = {k: v for k, v in stored.items() if not k.startswith(RAW_PREFIX)}
    if not ema:
        weights |= {k.removeprefix(RAW_PREFIX): v for k, v in stored.items() if k.startswith(RAW_PREFIX)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:  # missing, unexpected or misshapen tensors
        reason = " ".join(str(exc).split())
        raise ValueError(f"{path}: its tensors do not fit the model {run_dir / CONFIG} describes "
                         f"({reason[:300]}); the two files come from different runs: {RETRAIN}") from None
    if verify:  # after the reads above, which name a damaged file more precisely
        check_complete(run_dir)
    return model.to(device).eval(), record


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(map(str, error['loc'])) or 'record'}: {error['msg']}"


def load_frozen(entry: str, family: str, arch: BaseModel, channels: int, image_size: int, seed: int
                 ) -> dict[str, tuple[GenerativeModel, RunRecord]]:
    """The trained models that `entry` of `family` is built on (`Family.frozen`), from the run folders its
    arch names (`arch.<argument>_run`), checked to be that family and image shape. An entry's folder (runs/vae,
    holding a run per seed) gives the run of the same `seed`: the ldm of seed 1 diffuses in the vae of seed 1."""
    from genbench.models import family as family_spec

    loaded = {}
    for argument, needed in family_spec(family).frozen.items():
        run = Path(getattr(arch, f"{argument}_run"))
        run = run / f"seed-{seed}" if (run / f"seed-{seed}").is_dir() or not (run / CONFIG).exists() else run
        try:
            model, record = load_trained(run)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{entry} is built on a trained {needed}: {exc} (or set "
                                    f"models.{entry}.arch.{argument}_run)") from None
        if record.family != needed:
            raise ValueError(f"models.{entry}.arch.{argument}_run={run} holds a {record.family} run, not a {needed}")
        if (record.image.channels, record.image.size) != (channels, image_size):
            raise ValueError(f"{run}: {needed} trained on {record.image.channels}×{record.image.size} images, "
                             f"{entry} on {channels}×{image_size}")
        loaded[argument] = (model, record)
    return loaded
