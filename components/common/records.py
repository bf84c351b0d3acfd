"""Records one stage writes and others read, each with its one reader: the sample record (beside the images) and
the provenance record every stage writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from genbench.components.common.io import read_json, require_file
from genbench.components.common.manifest import cached_digest


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


class Provenance(BaseModel):
    """provenance/<stage>/<instance>.json: what one run of a stage read, each part hashed, and one hash of all."""

    hash: str  # the first 12 hex digits of the sha256 of the other fields
    stage: str
    instance: str
    code: dict[str, str]  # code file → md5
    params: dict[str, Any]  # dotted params key → resolved value
    inputs: dict[str, str]  # input path → md5 (a folder's: of its listing, ending in .dir)


def read_provenance(path: Path) -> Provenance:
    """A provenance record as `Stage.run` wrote it."""
    path = Path(path)
    try:
        return Provenance.model_validate(read_json(require_file(path, f"genbench {path.parent.name}")))
    except ValidationError as exc:
        raise ValueError(f"{path}: not a provenance record ({exc.errors()[0]['msg']}); run its stage again") from None
