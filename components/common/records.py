"""Records one stage writes and others read, each with its one reader: the sample record (beside the images), the
metrics, a sweep's summary, the register record and the provenance record every stage writes. They live here, not
beside the stage that writes them, so a reader never imports that stage's code (torch, for most).

A record's params entry was called `name` before it was called `entry`: records written then (an MLflow registry
keeps a version's config.json for good) still read, and are written back with `entry`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from genbench.components.common.io import read_json, require_file
from genbench.components.common.manifest import cached_digest

Record = TypeVar("Record", bound=BaseModel)
# The params entry a record belongs to (a key of `models`); read from `name` in records written before the rename.
Entry = Annotated[str, Field(validation_alias=AliasChoices("entry", "name"))]


def read_record(model: type[Record], path: Path, command: str, what: str) -> Record:
    """`path` as `command` wrote it; ValueError naming the file, its first problem and the command to run again."""
    try:
        return model.model_validate(read_json(require_file(Path(path), command)))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(f"{path}: not {what} of `{command}` ({'.'.join(map(str, error['loc'])) or 'record'}: "
                         f"{error['msg']}); run `{command}` again") from None


class RegisteredSource(BaseModel):
    """The registry version a sample record's weights came from (`genbench sample --model`)."""

    model_uri: str  # as given: models:/genbench-<entry>@<alias> or models:/genbench-<entry>/<version>
    model_name: str  # genbench-<entry>
    version: int  # the alias resolved once, so the weights are this version's
    run_id: str  # the MLflow run that logged it
    fid: float | None = None  # its FID tag; None (left out of the file) when it has none
    tracking_uri: str


class SampleRecord(BaseModel):
    """samples/<entry>/seed-<s>.json, and what `sample` returns."""

    entry: Entry
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
    source: RegisteredSource | None = None  # the registry version the weights came from


def read_sample_record(path: Path) -> SampleRecord:
    """A sample record (`samples/<entry>/seed-<s>.json`) as `sample` wrote it."""
    return read_record(SampleRecord, path, "genbench sample", "a sample record")


def check_samples(images: Path, required: bool = True) -> SampleRecord | None:
    """The record beside `images` once it vouches for their bytes (`sample` writes it after them and deletes it
    before it writes anything); None when there is none and it is not `required` (images `genbench sample` did not
    draw, such as the prepared holdout)."""
    images = Path(images)
    record_path = images.with_suffix(".json")
    if not required and not record_path.exists():
        return None
    drawn = read_sample_record(record_path)
    resample = f"re-run `genbench sample {drawn.entry}`"
    require_file(images, f"genbench sample {drawn.entry}")
    if cached_digest(images) != drawn.samples_md5:
        raise ValueError(f"{images} is not the file {record_path} was written with (a sampling stopped between its "
                         f"writes, or an edit); {resample}")
    return drawn


class Network(BaseModel):
    """A feature or logits network, recorded beside every number it produced."""

    name: str
    sha256: str  # of its weights file ("unknown" where there is none)


class IntraClassFID(BaseModel):
    """FID within each class of a class-conditional entry's samples (`metrics.intra_class_fid`)."""

    classes: list[int]
    fid: list[float]  # one per class, in `classes` order
    mean: float
    n_samples: list[int]  # images per class on each side: FID's small-N bias applies to each
    n_reference: list[int]


PAPER_N = 50_000  # generated images of the published protocol (FID-50k)


class Protocol(BaseModel):
    """What a FID was measured under (`evaluate.protocol`; docs/usage.md, "Protocols"). Two FIDs are comparable
    only when their protocols are equal but for `n_generated`, which every table shows per row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # holdout | paper | given (`genbench metrics REAL FAKE`: whatever REAL is)
    dataset: str | None  # the params' data.dataset; None for images given on the command line
    n_generated: int
    reference_split: str  # test | train | folder | given
    reference_size: int  # images behind the reference mean and covariance
    feature_reference_size: int  # reference rows that precision/recall, density/coverage and KID compare against
    resize: str  # evaluate.resize
    network: str  # name@first 12 hex of the weights' sha256
    precision: str  # the Inception dtype that ran: fp32 | bf16

    def comparable(self) -> tuple[Any, ...]:
        """Everything but N: rows of one table must agree on it."""
        return tuple(value for key, value in self.model_dump().items() if key != "n_generated")

    def tag(self) -> str:
        """The whole protocol, N included, as one tag value: promotion compares FIDs only where it is equal."""
        return "|".join(str(value) for value in self.model_dump().values())

    def describe(self) -> str:
        """One line a table states under itself."""
        split = {"test": "test-split", "train": "training-split", "folder": "held-out", "given": "given"}
        where = f"{self.dataset} " if self.dataset else ""
        rows = ("" if self.feature_reference_size == self.reference_size else
                f" (precision/recall, density/coverage, KID: {self.feature_reference_size} of them)")
        return (f"protocol {self.name}: each row's N generated images against the statistics of "
                f"{self.reference_size} {where}{split.get(self.reference_split, self.reference_split)} images{rows}; "
                f"Inception pool3 {self.network}, {self.precision}, {self.resize} resize")


class Scores(BaseModel):
    """What `evaluate.score` measures of a set of images against the reference (`genbench metrics` prints it):
    every key it returns is a field, so a metric added there without one fails before any file is written."""

    model_config = ConfigDict(extra="forbid")

    fid: float
    k: int  # precision/recall neighbourhood
    density_k: int  # density/coverage neighbourhood
    precision: float
    recall: float
    density: float
    coverage: float
    kid_mean: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int  # clamped to the smaller set: compare KID only at equal subset sizes
    seed: int  # of the metrics' own randomness (KID subsets, bootstrap, IS splits)
    bootstrap_resamples: int
    # 95 % bootstrap intervals, present only with bootstrap resamples
    fid_ci95: list[float] | None = None
    precision_ci95: list[float] | None = None
    recall_ci95: list[float] | None = None
    inception_score: float | None
    inception_score_std: float | None
    inception_score_splits: int
    inception_score_unavailable: str | None  # why there is no Inception Score
    inception_score_extractor: Network | None = None  # present only when the score was computed
    n_samples: int
    n_reference: int
    reference_md5: str
    feature_extractor: Network
    preprocessing: dict[str, Any]
    inception_dtype: str
    reference_stats_key: str  # the reference features' cache key
    warnings: list[str]
    intra_class_fid: IntraClassFID | None = None  # class-conditional samples only, with reference labels
    protocol: Protocol


class MetricsRecord(Scores):
    """metrics/<entry>/seed-<s>.json and metrics/real.json (a sweep's <vary>-<value>.metrics.json too): the scores
    of a set of samples, written by `evaluate` with the md5 of the samples scored."""

    samples_md5: str


def read_metrics(path: Path) -> MetricsRecord:
    """A metrics record as `evaluate` wrote it."""
    return read_record(MetricsRecord, path, "genbench evaluate", "a metrics record")


class SweepRow(BaseModel):
    """One value of a sweep: its samples' scores and cost."""

    value: int | float  # of the swept sampling field; an FID-against-NFE sweep's (vary nfe): the NFE target
    # what drew the set: the sampler, its steps (None for one without) and network evaluations per image (the
    # tables' NFE); None in summaries written before they were recorded
    sampler: str | None = None
    sample_steps: int | None = None
    network_evaluations: int | None = None
    fid: float
    precision: float
    recall: float
    n_samples: int
    samples_md5: str
    sample_seconds: float
    seconds_per_image: float
    # 95 % bootstrap intervals, with `evaluate.bootstrap` resamples (none without): what a difference between
    # two values must exceed before it reads as more than noise at the sweep's small N
    fid_ci95: list[float] | None = None
    precision_ci95: list[float] | None = None
    recall_ci95: list[float] | None = None
    warnings: list[str] = []  # what its metrics file warned (none in summaries written before they were kept)


class SweepRecord(BaseModel):
    """metrics/sweeps/<sweep>.json, and what `sweep` returns: one row per value."""

    name: str  # the sweep's, a key of `sweeps`
    entry: str
    vary: str
    set: dict[str, Any]
    rows: list[SweepRow]
    # what every set was scored under, and the bootstrap resamples behind its intervals (None, 0: a summary
    # written before they were recorded)
    protocol: Protocol | None = None
    bootstrap: int = 0


def read_sweep(path: Path) -> SweepRecord:
    """A sweep's summary as `sweep` wrote it."""
    return read_record(SweepRecord, path, "genbench sweep", "a sweep summary")


class RegisterRecord(BaseModel):
    """registry/<entry>/seed-<s>.json, and what `register` returns."""

    entry: Entry
    family: str
    run_id: str
    model_name: str
    version: int
    fid: float
    champion_version: int
    promoted: bool
    tracking_uri: str


def read_register_record(path: Path) -> RegisterRecord:
    """A register record as `register` wrote it."""
    return read_record(RegisterRecord, path, "genbench register", "a register record")


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


class CurvePoint(BaseModel):
    step: int
    fid: float
    seconds: float  # drawing and scoring this point


class CurveRecord(BaseModel):
    """metrics/<entry>/seed-<s>.curve.json: the FID curve of a run's snapshots (`fid-curve`); no points when the
    entry trains without one (`train.fid_every: 0`)."""

    entry: Entry
    seed: int
    n: int  # images per point
    dtype: str  # the FID network's
    sampling: dict[str, Any]
    reference_md5: str  # of the validation images the points are scored against ("" without points)
    points: list[CurvePoint]

    def history_rows(self) -> list[tuple[int, str, float]]:
        """The points as training-history rows (`fid_curve`, `fid_curve_seconds` per step), as MLflow logs them."""
        return [row for p in self.points for row in ((p.step, "fid_curve", p.fid),
                                                     (p.step, "fid_curve_seconds", p.seconds))]


def read_curve(path: Path) -> CurveRecord:
    """An FID curve as `fid-curve` wrote it."""
    return read_record(CurveRecord, path, "genbench fid-curve", "an FID curve")


def curve_rows(path: Path, measured: bool) -> list[tuple[int, str, float]]:
    """The FID curve at `path` as history rows; a run trained without one (`measured` False: train.fid_every 0) may
    have no file, as when `fid-curve` was never run for it."""
    if not measured and not Path(path).exists():
        return []
    return read_curve(path).history_rows()
