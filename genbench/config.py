"""`params.yaml` → validated, profile-resolved configuration.

The schema is assembled from the model registry: `models.<family>` holds that family's `arch` and `train`
classes (declared beside its `nn.Module` in models/<family>.py), `sampling.<family>` its sampling class.
Only the sample stage reads `sampling`, so a sampler change never retrains. Every default lives in its class:
params.yaml holds only what a profile changes.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from .kubeflow_config import KubeflowConfig
from .models import REGISTRY
from .models.config import Int, NonNegativeInt, PositiveInt, SamplingConfig, Strict, TrainConfig
from .models.samplers import ignores, takers
from .profiles import (
    PLAN_KEYS,
    PROFILES,
    ConfigError,
    Origins,
    check_plan,
    describe,
    load_yaml,
    plan_path,
    read_plan,
    resolve_profiles,
)

__all__ = ["Config", "ConfigError", "DistributedConfig", "EntrySettings", "NFE", "SweepConfig", "SweepPoint",
           "load_config", "schema", "PROFILES"]

Profile = Literal[PROFILES]  # type: ignore[valid-type]


# (train split, test split) images of each built-in dataset, so sets that cannot fit are found before `prepare`
# downloads anything (prepare checks again against what it read; a folder's size is known only there).
SPLIT_SIZES = {"fashion_mnist": (60000, 10000), "mnist": (60000, 10000), "cifar10": (50000, 10000)}
FOLDER_FIELDS = {  # what `dataset: folder` needs, as the error says it
    "path": "a path to a folder of images or a uint8 .npy",
    "image_size": "an image_size (images are centre-cropped to a square and resized to it)",
    "channels": "channels: 1 (grayscale) or 3 (RGB)",
}


class DataConfig(Strict):
    """`data`: which images, and how many go to each set. `folder` is your own images (at `path`), which have no
    test split: all four sets are disjoint slices of one seeded shuffle of them (components/prepare/prepare.py)."""

    # fashion_mnist, mnist: 1×28×28; cifar10: 3×32×32; folder: your images at `path`, channels×image_size²
    dataset: Literal["fashion_mnist", "mnist", "cifar10", "folder"] = "fashion_mnist"
    train_size: PositiveInt = 48000  # training images taken from the train split (seeded subset)
    validation_size: PositiveInt = 2000  # held out from the train split, never trained on: what model selection
    # (the FID curve during training) measures against, so the test split stays unseen until evaluate
    holdout_size: PositiveInt = 10000  # also held out from the train split, never trained or selected on, scored
    # like samples (the report's real-data row); must equal sample.n under protocol holdout, kept under `data` so
    # that a sample.n change does not re-run prepare
    reference_size: PositiveInt = 10000  # real images from the test split that final metrics compare against
    # (folder: from the same images as the other three sets, disjoint from them)
    # folder only: a folder of PNG/JPEG/BMP/WebP images (one sub-folder per class, or none), or a uint8 .npy of
    # N×H×W×C or N×H×W; relative to the folder genbench runs in
    path: str | None = Field(None, validate_default=True)
    image_size: PositiveInt | None = Field(None, validate_default=True)  # folder only: side after crop and resize
    channels: Literal[1, 3] | None = Field(None, validate_default=True)  # folder only: 1 grayscale, 3 RGB

    @field_validator("path", "image_size", "channels")
    @classmethod
    def _folder_only(cls, value: Any, info: ValidationInfo) -> Any:
        """A field validator (run on defaults too), not a model validator, so the error is located at
        `data.<field>` and every missing or stray field is reported at once."""
        dataset = info.data.get("dataset")  # absent when `dataset` itself was invalid
        if dataset == "folder" and value in (None, ""):
            raise ValueError(f"dataset folder needs {FOLDER_FIELDS[info.field_name]}")
        if dataset not in (None, "folder") and value is not None:
            raise ValueError(f"only dataset folder takes {info.field_name}; {dataset}'s images are fixed, so "
                             "remove it (or set dataset: folder for your own images)")
        return value

    def check_sizes(self, train_available: int, test_available: int | None = None) -> None:
        """ValueError naming the fields whose sets do not fit in their split, before anything is written. With no
        test split (`test_available` None: dataset folder) all four sets share the `train_available` images."""
        if test_available is None:
            groups = [(("train_size", "validation_size", "holdout_size", "reference_size"), train_available,
                       f"in {self.path}", " or add images")]
        else:
            groups = [(("train_size", "validation_size", "holdout_size"), train_available,
                       f"of {self.dataset}'s train split", ""),
                      (("reference_size",), test_available, f"of {self.dataset}'s test split", "")]
        for fields, available, where, more in groups:
            sizes = [getattr(self, field) for field in fields]
            for field, size in zip(fields, sizes):
                if size > available:
                    raise ValueError(f"data.{field}: {size} exceeds the {available} images {where}; lower it{more}")
            if sum(sizes) > available:
                names = " + ".join(f"data.{field}" for field in fields)
                raise ValueError(f"{names} = {' + '.join(map(str, sizes))} = {sum(sizes)} exceeds the {available} "
                                 f"images {where}; lower one of them{more}")


class SampleConfig(Strict):
    n: PositiveInt = 10000  # images per family (data.holdout_size must match under protocol holdout)
    batch_size: PositiveInt = 250
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where sampling runs


class EvaluateConfig(Strict):
    batch_size: PositiveInt = 50  # images per Inception forward pass
    k: PositiveInt = 3  # neighbourhood size of improved precision/recall
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where the Inception network runs
    # fp32 (exact, the published protocol) | bf16 (autocast; faster on AMX CPUs and GPUs, FID slightly off fp32's:
    # docs/benchmarks.md) | auto (bf16 where the hardware runs it natively, else fp32: emulated bf16 is slower than
    # fp32); every metrics file records what ran as `inception_dtype`
    dtype: Literal["fp32", "bf16", "auto"] = "fp32"
    # how images reach the network's 299×299: legacy-tf (TF1 bilinear: the original FID code and torch-fidelity,
    # so published tables before 2022) | clean (clean-fid's antialiased PIL bicubic, Parmar et al. 2022, whose
    # tables use it); FIDs of the two modes are not comparable, and every metrics file records its mode
    resize: Literal["legacy-tf", "clean"] = "legacy-tf"
    bootstrap: NonNegativeInt = 0  # resamples for 95 % intervals of FID, precision and recall (0: off);
    # the report shows them when there is one seed (with several, it shows mean ± std over the seeds)
    # what the samples are scored against (docs/usage.md, "Protocols"): holdout (N generated images against
    # data.reference_size test-split images: every profile's default, comparable only within genbench at equal N) |
    # paper (FID against the statistics of the dataset's whole training split, streamed and cached, as published
    # FID-50k: Heusel et al. 2017, Ho et al. 2020; set sample.n: 50000 to match them; fp32 only; the real-data
    # row is then the test split; precision/recall and KID use data.reference_size training rows)
    protocol: Literal["holdout", "paper"] = "holdout"

    @model_validator(mode="after")
    def _paper_is_fp32(self) -> EvaluateConfig:
        if self.protocol == "paper" and self.dtype != "fp32":
            raise ValueError(f"evaluate.dtype: {self.dtype} under evaluate.protocol paper, which scores in fp32 as "
                             "published FIDs are; set evaluate.dtype: fp32 (or evaluate.protocol: holdout)")
        return self


class DistributedConfig(Strict):
    """How long the processes of a torchrun training wait for each other (components/train/distributed.py). Neither
    limit changes what trains, so neither is part of a run's identity or a dependency of the train stage: raising
    one after a timeout resumes the same checkpoint."""

    timeout_seconds: PositiveInt = 1800  # the process group's timeout (torch's own default for gloo): how long a
    # collective waits for a rank that is hung or gone before the run fails
    main_wait_seconds: PositiveInt = 7200  # how long the other ranks wait while rank 0 alone saves a snapshot, a
    # checkpoint or the run (not in a process-group collective); a dead rank 0 fails them at once, this bounds a hang


NAME = re.compile(r"[a-z][a-z0-9_]*")  # an entry name is a folder, a DVC stage key and an MLflow model name


def _check_name(section: str, name: str) -> None:
    if not NAME.fullmatch(name):
        raise ValueError(f"{section}.{name}: a name is lower-case letters, digits and _, starting with a letter")


NFE = "nfe"  # `sweeps.<name>.vary: nfe`: sampler and step count swept together, FID against network evaluations


class SweepPoint(NamedTuple):
    """One sample set of a sweep."""

    value: int | float  # of `vary`; under vary nfe, the NFE target the set's steps fit within
    stem: str  # its files' name in the sweep's folder: <stem>.npy, <stem>.metrics.json
    sampling: SamplingConfig  # what draws it


class SweepConfig(Strict):
    """`sweeps.<name>`: re-sample an entry's trained weights once per value of one sampling field, each set
    scored like the entry's samples. Never retrains: DVC's sweep@<name> depends on the run, not on `models`.
    `vary: nfe` (FID against NFE) draws each of `samplers` once per NFE target of `values`, at the most steps whose
    network evaluations per image (the tables' NFE) stay within the target."""

    entry: str  # the trained entry (a family or a variant) whose weights are re-sampled
    vary: str  # the `sampling.<entry>` field swept, e.g. sample_steps or guidance_scale; or nfe (sampler and steps)
    values: tuple[Int | float, ...] = ()  # one sample set of sample.n images per value (none: the stage does nothing);
    # vary nfe: NFE targets, each drawn by every sampler of `samplers`
    set: dict[str, Any] = {}  # other sampling fields held for the whole sweep (e.g. sampler: ddim)
    n: PositiveInt | None = None  # images per value (default sample.n; fewer is cheaper, and only comparable
    # within the sweep: FID is biased upward at small N)
    samplers: tuple[str, ...] = ()  # vary nfe only: the samplers with a step count (ddim, dpmpp_2m, heun) compared

    def sampling(self, base: SamplingConfig, value: float) -> SamplingConfig:
        """`base` (the entry's sampling settings) with `set` and `vary = value`, validated."""
        return base.updated(self.set | {self.vary: value})

    def points(self, base: SamplingConfig, arch: BaseModel) -> list[SweepPoint]:
        """The sweep's sample sets in order, over `base` (the entry's sampling settings) for a model of `arch`: one
        per value, or under vary nfe one per sampler and NFE target (`SamplingConfig.at_nfe`: the step count comes
        from the same network-evaluation count the tables show). ValueError naming the sweep's field at fault."""
        if self.vary != NFE:
            # Stems are spelled out, not made with with_suffix: that would read the ".3" of 1.3 as a suffix.
            return [SweepPoint(value, f"{self.vary}-{value}", self.sampling(base, value)) for value in self.values]
        points = []
        for sampler in self.samplers:
            try:
                drawn = base.updated(self.set | {"sampler": sampler})
            except ValidationError as exc:
                error = exc.errors()[0]
                key, message = ".".join(map(str, error["loc"])), error["msg"].removeprefix("Value error, ")
                if key == "sampler":
                    raise ValueError(f"samplers: {sampler!r}: {message}") from None
                if ignores(sampler, key):
                    raise ValueError(f"set.{key}: sampler {sampler} of samplers does not take it (taken by "
                                     f"{', '.join(takers(key))}); set holds what every sampler listed takes, so "
                                     "remove it") from None
                raise ValueError(f"set.{key}: {message}") from None
            if "sample_steps" not in drawn.sampler_call()[1]:
                raise ValueError(f"samplers: {sampler} takes no sample_steps, so it has no step count to fit to an NFE "
                                 f"target; list samplers that take it ({', '.join(takers('sample_steps'))})")
            chosen: dict[int, int] = {}  # steps → the target that chose them
            for value in self.values:
                if isinstance(value, float) or value < 1:
                    raise ValueError(f"values: {value} is not an NFE target; under vary: nfe each value is a whole "
                                     "number of network evaluations per image, 1 or more")
                try:
                    point = drawn.at_nfe(arch, value)
                except ValueError as exc:
                    raise ValueError(f"values: NFE {value} with sampler {sampler}: {exc}; raise the target or drop "
                                     f"{sampler} from samplers") from None
                steps = getattr(point, "sample_steps")
                if steps in chosen:
                    raise ValueError(f"values: NFE targets {chosen[steps]} and {value} both give {sampler} {steps} "
                                     f"steps ({point.network_evaluations(arch)} network evaluations); drop one")
                chosen[steps] = value
                points.append(SweepPoint(value, f"{sampler}-{NFE}-{value}", point))
        return points


class EntrySettings(Strict):
    """`models.<name>`: what training reads (the subclass per family narrows all three types)."""

    family: str  # the registered family this entry trains; a variant names it, a family's own entry defaults to it
    arch: BaseModel
    train: TrainConfig


class Config(Strict):
    """The validated params. `models` and `sampling` map an entry name to its settings: every registered family
    has an entry under its own name, and a **named variant** (`models.ddpm_cfg: {family: ddpm, ...}`) is another
    entry of a registered family, with its own run folder, samples, metrics, registered model and report row."""

    profile: Profile = "quick"  # tiny: tests; quick: README run (CPU minutes); full, thesis-*: GPU (docs/profiles.md)
    seed: NonNegativeInt = 0  # fixes the data split and the metrics' own randomness (KID subsets,
    # bootstrap): every seed of `seeds` is scored against the same reference
    seeds: tuple[NonNegativeInt, ...] = (0, 1, 2)  # one run per entry and seed (initialisation,
    # batch order, samples); the report gives mean ± std over them
    entries: tuple[str, ...] = ("vae", "dcgan", "ddpm")  # entries `genbench run` / `dvc repro` run, in order
    data: DataConfig = DataConfig()
    models: dict[str, EntrySettings] = {}  # models.<name>: family, arch and train (typed per family, see `schema`)
    sampling: dict[str, SamplingConfig] = {}  # sampling.<name>: what the sample stage reads
    sample: SampleConfig = SampleConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    sweeps: dict[str, SweepConfig] = {}  # sweeps.<name>: sampling settings swept over trained weights
    distributed: DistributedConfig = DistributedConfig()  # how long torchrun's processes wait for each other
    kubeflow: KubeflowConfig = KubeflowConfig()  # image, namespace, secrets and resources on a cluster

    @model_validator(mode="before")
    @classmethod
    def _entries(cls, raw: Any) -> Any:
        """Give every registered family its entry and every entry its `family` (a variant's sampling entry is of
        its model's family). A variant inherits nothing: DVC's train@<name> depends on `models.<name>` alone, so
        every setting of an entry must be written under it (a YAML anchor and `<<:` shares them; see params.yaml)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("models", {}), dict) \
                or not isinstance(raw.get("sampling", {}), dict):
            return raw  # the field types report it
        written = {"models": raw.get("models", {}), "sampling": raw.get("sampling", {})}
        for section, entries in written.items():
            for name, entry in entries.items():
                if not isinstance(entry, dict):
                    raise ValueError(f"{section}.{name}: expected a mapping of settings, got {entry!r}")
                _check_name(section, name)
        families = {name: name for name in REGISTRY}
        families |= {name: entry.get("family", name) for name, entry in written["models"].items()}
        for name, family in families.items():
            if name in REGISTRY and family != name:
                raise ValueError(f"models.{name}.family: {name} is a registered family's own entry; give the "
                                 f"{family} variant another name")
            if family not in REGISTRY:
                raise ValueError(f"models.{name}.family: unknown family {family!r}; known: {', '.join(REGISTRY)}")
        for name, entry in written["sampling"].items():
            if name not in families:
                raise ValueError(f"sampling.{name}: there is no models.{name} to sample; declare the variant "
                                 f"there (models.{name}: {{family: ...}})")
            if "family" in entry:
                raise ValueError(f"sampling.{name}.family: the family is set once, under models.{name}")
        return {**raw, **{section: {name: entries.get(name, {}) | {"family": family}
                                    for name, family in families.items()}
                          for section, entries in written.items()}}

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        unknown = [name for name in self.entries if name not in self.models]
        if unknown:
            raise ValueError(f"entries: unknown entry {unknown[0]!r}; known: {', '.join(self.models)} (a variant "
                             "is declared under models with its family)")
        if len(set(self.entries)) != len(self.entries):
            raise ValueError(f"entries: lists an entry twice: {list(self.entries)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: needs one or more distinct seeds, got {list(self.seeds)}")
        for name in self.entries:
            for argument, needed in REGISTRY[self.entry(name).family].frozen.items():
                run = getattr(self.entry(name).arch, f"{argument}_run")
                if run == f"runs/{needed}" and (needed not in self.entries
                                                or self.entries.index(needed) > self.entries.index(name)):
                    raise ValueError(f"entries: {name} trains on {run}, so {needed} must be listed before it")
        for name in self.models:
            try:
                self.sampling_for(name).check(self.entry(name).arch)
            except ValueError as exc:
                raise ValueError(f"sampling.{name}: {exc} (models.{name}.arch)") from None
        for name, sweep in self.sweeps.items():
            _check_name("sweeps", name)
            if sweep.entry not in self.entries:
                raise ValueError(f"sweeps.{name}.entry: {sweep.entry!r} is not in entries, so nothing trains it; "
                                 f"entries: {', '.join(self.entries)}")
            fields = set(type(self.sampling_for(sweep.entry)).model_fields) - {"family"}
            if sweep.vary == NFE:
                self._check_nfe_sweep(name, sweep, fields)
                continue
            if sweep.samplers:
                raise ValueError(f"sweeps.{name}.samplers: only vary: {NFE} takes samplers (it sweeps sampler and "
                                 f"steps together); remove it or set vary: {NFE}")
            for key in (sweep.vary, *sweep.set):
                if key not in fields:
                    raise ValueError(f"sweeps.{name}: {key!r} is not a sampling field of {sweep.entry}; known: "
                                     f"{', '.join(sorted(fields))}")
            for value in sweep.values:
                try:
                    sweep.sampling(self.sampling_for(sweep.entry), value).check(self.entry(sweep.entry).arch)
                except ValidationError as exc:
                    raise ValueError(f"sweeps.{name}: {sweep.vary}={value}: {exc.errors()[0]['msg']}") from None
                except ValueError as exc:
                    raise ValueError(f"sweeps.{name}: {sweep.vary}={value}: {exc}") from None
        if self.data.dataset in SPLIT_SIZES:
            self.data.check_sizes(*SPLIT_SIZES[self.data.dataset])
        for name in self.entries:
            batch_size = self.entry(name).train.batch_size
            if batch_size > self.data.train_size:
                raise ValueError(f"models.{name}.train.batch_size: {batch_size} is more than data.train_size "
                                 f"({self.data.train_size}), so every batch would be the whole training set; lower "
                                 f"models.{name}.train.batch_size or raise data.train_size")
        # under protocol paper the floor is the test split's reference images, so N need not match the holdout
        if self.data.holdout_size != self.sample.n and self.evaluate.protocol == "holdout":
            raise ValueError(
                f"data.holdout_size: {self.data.holdout_size} real images, but sample.n is {self.sample.n}: the "
                "report's real-data row is the floor only at the samples' N; set data.holdout_size to sample.n"
            )
        return self

    def _check_nfe_sweep(self, name: str, sweep: SweepConfig, fields: set[str]) -> None:
        """ValueError naming the field of FID-against-NFE sweep `name` that cannot run, and the fix."""
        entry = self.entry(sweep.entry)
        if "sample_steps" not in fields:
            raise ValueError(f"sweeps.{name}.vary: {NFE} sweeps a sampler's steps, and {sweep.entry} ({entry.family}) "
                             "draws in one pass with none; sweep a diffusion entry")
        if not sweep.samplers:
            raise ValueError(f"sweeps.{name}.samplers: vary: {NFE} draws every NFE target of values with each sampler "
                             "listed here, and none is; add them, e.g. samplers: [ddim, dpmpp_2m, heun]")
        for key in sweep.set:
            if key in ("sampler", "sample_steps"):
                raise ValueError(f"sweeps.{name}.set.{key}: vary: {NFE} chooses the sampler (from samplers) and its "
                                 "steps (from each NFE target); remove it")
            if key not in fields:
                raise ValueError(f"sweeps.{name}: {key!r} is not a sampling field of {sweep.entry}; known: "
                                 f"{', '.join(sorted(fields))}")
        try:
            points = sweep.points(self.sampling_for(sweep.entry), entry.arch)
        except ValueError as exc:
            raise ValueError(f"sweeps.{name}.{exc}") from None
        for point in points:
            try:
                point.sampling.check(entry.arch)
            except ValueError as exc:
                raise ValueError(f"sweeps.{name}: {point.stem}: {exc}") from None

    def entry(self, entry: str) -> EntrySettings:
        """`models.<entry>`: the entry's family, arch and train settings."""
        if entry not in self.models:
            raise ValueError(f"unknown entry {entry!r}; known: {', '.join(self.models)} (a variant is declared "
                             "under models with its family)")
        return self.models[entry]

    def check_seed(self, seed: int | None) -> int:
        """`seed` if it is one of `seeds` (None: the first), else a clear error: the report aggregates `seeds`."""
        if seed is None:
            return self.seeds[0]
        if seed not in self.seeds:
            raise ValueError(f"seed {seed} is not in seeds {list(self.seeds)}; add it there (the report aggregates "
                             "exactly those seeds)")
        return seed

    def sampling_for(self, entry: str) -> SamplingConfig:
        """`sampling.<entry>`: how the sample stage draws from the entry."""
        self.entry(entry)
        return self.sampling[entry]


def _by_family(entry: Any) -> str | None:
    return entry.get("family") if isinstance(entry, dict) else getattr(entry, "family", None)


def schema() -> type[Config]:
    """The params schema for the families registered now (a test may register a toy family)."""
    return _schema(tuple((name, id(spec)) for name, spec in REGISTRY.items()))


@cache
def _schema(registered: tuple[tuple[str, int], ...]) -> type[Config]:
    settings, sampling = [], []
    for name, spec in REGISTRY.items():
        family = (Literal[name], name)  # type: ignore[valid-type]
        settings.append(Annotated[create_model(f"{spec.model.__name__}Settings", __base__=EntrySettings,
                                               family=family, arch=(spec.arch, spec.arch()),
                                               train=(spec.train, spec.train())), Tag(name)])
        sampling.append(Annotated[create_model(f"{spec.model.__name__}SamplingEntry", __base__=spec.sampling,
                                               family=family), Tag(name)])
    by_family = Discriminator(_by_family)
    return create_model("Config", __base__=Config,
                        models=(dict[str, Annotated[Union[tuple(settings)], by_family]], {}),
                        sampling=(dict[str, Annotated[Union[tuple(sampling)], by_family]], {}))


def load_config(path: Path | str = "params.yaml", profile: str | None = None, *, plan: bool = True) -> Config:
    """Parse, resolve profiles and validate; raises ConfigError naming every bad field. The active profile is
    `profile`, else plan.yaml's (beside `path`); with `plan`, a plan.yaml for that profile must match params."""
    return _load(Path(path), profile, plan)[0]


def origins(path: Path | str = "params.yaml", profile: str | None = None) -> list[tuple[str, Any, str]]:
    """(dotted key, resolved value, where it came from) for every leaf of the resolved params: the line of
    params.yaml that set it (a profile's override named as such), plan.yaml or --profile for the profile, or
    the default declared in its class."""
    path = Path(path)
    config, raw, overrides, source = _load(path, profile, True)
    rows = []
    for key, value in _leaves(config.model_dump(mode="json")):
        overridden = next((overrides[key[:i]] + key[i:] for i in range(len(key), 0, -1) if key[:i] in overrides),
                          None)
        overridden = overridden if overridden and _written(raw, overridden) else None
        if key == ("profile",):
            where = source
        elif overridden:
            where = f"{path.name}: {'.'.join(overridden)}"
        elif _written(raw, key):
            where = path.name
        else:
            where = "default"
        rows.append((".".join(key), value, where))
    return rows


def _known_keys(loc: tuple[str, ...], resolved: dict[str, Any]) -> list[str]:
    """The keys a params mapping at `loc` may hold, read off a config of defaults (an entry by its family's)."""
    node: Any = schema().model_validate({}).model_dump(mode="json")
    for depth, part in enumerate(loc):
        if depth == 1 and loc[0] in ("models", "sampling"):
            entry = (resolved.get("models") or {}).get(part)
            part = entry.get("family", part) if isinstance(entry, dict) else part
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    return list(node) if isinstance(node, dict) else []


def _leaves(node: Any, here: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*here, str(key)))]
    return [(here, node)]


def _written(raw: Any, key: tuple[str, ...]) -> bool:
    for part in key:
        if not isinstance(raw, dict) or part not in raw:
            return False
        raw = raw[part]
    return True


def _load(path: Path, profile: str | None, plan: bool) -> tuple[Config, dict[str, Any], Origins, str]:
    """The config, the params as written, the overridden keys' sources, and where the active profile came from."""
    try:
        raw = load_yaml(path.read_text(), path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the project folder or pass --params PATH") from None
    if raw is None or raw == {}:  # every default would run, and `prepare` rewrite data/prepared with them
        raise ConfigError(f"{path}: holds no parameters (the file is empty or only comments); restore it (`git "
                          f"checkout -- {path.name}`)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    misplaced = [key for key in ("profile", *PLAN_KEYS) if key in raw]
    if misplaced:
        raise ConfigError(f"{path}: {', '.join(misplaced)}: not top-level keys; each profile's plan (entries, "
                          "seeds, sweeps) lives under `profiles.<name>`, and `genbench use <name>` makes one active")
    written = read_plan(path) if plan or profile is None else None
    active = profile or (written or {}).get("profile")
    if active is None:
        raise ConfigError(f"{path}: no active profile: {plan_path(path)} is missing; run `genbench use quick` (or "
                          "another profile) or pass --profile")
    if active not in PROFILES:
        raise ConfigError(f"{path}: profile {active!r} is not a profile; profiles: {', '.join(PROFILES)}")
    if plan and written is not None and written["profile"] == active:
        check_plan(written, raw, path)
    overrides: Origins = {}
    resolved: dict[str, Any] = resolve_profiles({**raw, "profile": active}, active, path, (), overrides)
    try:
        config = schema().model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(describe(exc, overrides, path, lambda loc: _known_keys(loc, resolved))) from None
    return config, raw, overrides, "--profile" if profile else plan_path(path).name
