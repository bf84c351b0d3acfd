"""`params.yaml` → validated, profile-resolved configuration.

The schema is assembled from the model registry: `models.<family>` holds that family's `arch` and `train`
classes (declared beside its `nn.Module` in models/<family>.py), `sampling.<family>` its sampling class.
Only the sample stage reads `sampling`, so a sampler change never retrains. Every default lives in its class:
params.yaml holds only what a profile changes.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from .models import REGISTRY
from .models.config import PositiveInt, SamplingConfig, Strict, TrainConfig
from .profiles import PROFILES, ConfigError, describe, resolve_profiles

__all__ = ["Config", "ConfigError", "FamilySettings", "load_config", "schema", "PROFILES"]

Profile = Literal["tiny", "quick", "full"]


class DataConfig(Strict):
    dataset: Literal["fashion_mnist", "mnist", "cifar10"] = "fashion_mnist"  # 1×28×28, 1×28×28, 3×32×32
    train_size: PositiveInt = 48000  # training images taken from the train split (seeded subset)
    validation_size: PositiveInt = 2000  # held out from the train split, never trained on: what model selection
    # (the FID curve during training) measures against, so the test split stays unseen until evaluate
    holdout_size: PositiveInt = 10000  # also held out from the train split, never trained or selected on, scored
    # like samples (the report's real-data row); must equal sample.n, kept under `data` so that a sample.n change
    # does not re-run prepare
    reference_size: PositiveInt = 10000  # real images from the test split that final metrics compare against


class SampleConfig(Strict):
    n: PositiveInt = 10000  # images per family (data.holdout_size must match)
    batch_size: PositiveInt = 250
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where sampling runs


class EvaluateConfig(Strict):
    batch_size: PositiveInt = 50  # images per Inception forward pass
    k: PositiveInt = 3  # neighbourhood size of improved precision/recall
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where the Inception network runs
    # fp32 (exact, the published protocol) | bf16 (autocast; faster on AMX CPUs and GPUs, FID slightly off);
    # every metrics file records it as `inception_precision`
    precision: Literal["fp32", "bf16"] = "fp32"


class FamilySettings(Strict):
    """`models.<family>`: what training reads (the subclass per family narrows both types)."""

    arch: BaseModel
    train: TrainConfig


class Config(Strict):
    profile: Profile = "quick"  # tiny: tests (seconds); quick: README run (CPU minutes); full: GPU
    seed: Annotated[int, Field(ge=0)] = 0  # one seed fixes data split, init, training order and samples
    families: tuple[str, ...] = ("vae", "dcgan", "ddpm")  # what `genbench run` / `dvc repro` run
    data: DataConfig = DataConfig()
    models: Strict = Strict()  # models.<family>: arch and train (one field per registered family, see `schema`)
    sampling: Strict = Strict()  # sampling.<family>: what the sample stage reads
    sample: SampleConfig = SampleConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @field_validator("families")
    @classmethod
    def _known_once(cls, families: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in families if f not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown family {unknown[0]!r}; known: {', '.join(REGISTRY)}")
        if len(set(families)) != len(families):
            raise ValueError(f"lists a family twice: {list(families)}")
        return families

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        for name in self.families:
            for argument, needed in REGISTRY[name].frozen.items():
                run = getattr(self.family(name).arch, f"{argument}_run")
                if run == f"runs/{needed}" and (needed not in self.families
                                                or self.families.index(needed) > self.families.index(name)):
                    raise ValueError(f"families: {name} trains on {run}, so {needed} must be listed before it")
        for name in REGISTRY:
            try:
                self.sampling_for(name).check(self.family(name).arch)
            except ValueError as exc:
                raise ValueError(f"sampling.{name}: {exc} (models.{name}.arch)") from None
        if self.data.holdout_size != self.sample.n:
            raise ValueError(
                f"data.holdout_size: {self.data.holdout_size} real images, but sample.n is {self.sample.n}: the "
                "report's real-data row is the floor only at the samples' N; set data.holdout_size to sample.n"
            )
        return self

    def family(self, name: str) -> FamilySettings:
        """`models.<name>`: the family's arch and train settings."""
        return getattr(self.models, name)

    def sampling_for(self, name: str) -> SamplingConfig:
        """`sampling.<name>`: how the sample stage draws from the family."""
        return getattr(self.sampling, name)


def schema() -> type[Config]:
    """The params schema for the families registered now (a test may register a toy family)."""
    return _schema(tuple((name, id(spec)) for name, spec in REGISTRY.items()))


@cache
def _schema(registered: tuple[tuple[str, int], ...]) -> type[Config]:
    settings = {
        name: create_model(f"{spec.model.__name__}Settings", __base__=FamilySettings,
                           arch=(spec.arch, spec.arch()), train=(spec.train, spec.train()))
        for name, spec in REGISTRY.items()
    }
    models = create_model("ModelsConfig", __base__=Strict, **{n: (cls, cls()) for n, cls in settings.items()})
    sampling = create_model("SamplingSection", __base__=Strict,
                            **{n: (spec.sampling, spec.sampling()) for n, spec in REGISTRY.items()})
    return create_model("Config", __base__=Config, models=(models, models()), sampling=(sampling, sampling()))


def load_config(path: Path | str = "params.yaml", profile: str | None = None) -> Config:
    """Parse, resolve profiles and validate; raises ConfigError naming every bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the project folder or pass --params PATH") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    active = profile or raw.get("profile", "quick")
    if active not in PROFILES:
        raise ConfigError(f"{path}: profile: {active!r} is not a profile; allowed: {', '.join(PROFILES)}")
    raw["profile"] = active
    origins: dict[tuple[str, ...], tuple[str, ...]] = {}
    resolved: dict[str, Any] = resolve_profiles(raw, active, path, (), origins)
    try:
        return schema().model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(describe(exc, origins, path)) from None
