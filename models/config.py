"""The pydantic building blocks every family's config is made of.

Each family declares its own `Arch` and `Train` classes beside its `nn.Module` (models/<family>.py), with the
defaults of its `full` profile, i.e. the literature settings; `genbench/config.py` assembles the params schema
from the registry. A default therefore lives in exactly one place: its class here or in a family module.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# Integers are strict: YAML's true/false and numbers written with a decimal point (64.0, 1.0e+9) are errors, not
# 1 or a silent cast; a count is written as a whole number (64). Floats stay lax, since PyYAML reads `1e-3` (no
# decimal point) as a string that pydantic parses, but never infinite or NaN (`Strict.model_config`).
Int = Annotated[int, Field(strict=True)]
PositiveInt = Annotated[Int, Field(gt=0)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
UnitInterval = Annotated[float, Field(ge=0, lt=1)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default. `.inf` and `.nan` are errors
    wherever a float is read: no setting means anything with them, and they would train or score garbage."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's true would pass as 1.0 (`lr: true`) or as the 1 of a choice (`channels: true` for
        `Literal[1, 3]`): such a setting is written as a number. (Strict integers refuse booleans themselves.)"""
        if isinstance(value, bool) and _lax_number(cls.model_fields[info.field_name].annotation):
            raise ValueError("write a number, not true/false")
        return value


def _lax_number(annotation: Any) -> bool:
    """Whether a field reads a float or one of several numbers, and no boolean: where bool, an int subclass,
    would slip through as 0 or 1."""
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) is Literal:
        return not any(isinstance(arg, bool) for arg in args) and any(isinstance(arg, int | float) for arg in args)
    if args and get_origin(annotation) in (Union, UnionType):
        return not any(arg is bool for arg in args) and any(_lax_number(arg) for arg in args)
    return annotation is float


class NoArch(Strict):
    """For a family without architecture options."""


class TrainConfig(Strict):
    """The training recipe; a family subclasses it to change defaults (e.g. `steps`, `lr`, `betas`)."""

    steps: PositiveInt = 1000  # optimizer steps per group
    batch_size: PositiveInt = 128
    optimizer: Literal["adam", "rmsprop"] = "adam"  # one per group; rmsprop with torch's defaults (alpha 0.99)
    lr: PositiveFloat = 2e-4  # learning rate, shared by every optimizer group
    betas: tuple[UnitInterval, UnitInterval] = (0.9, 0.999)  # Adam's (beta1, beta2); unused by rmsprop
    warmup_steps: NonNegativeInt = 0  # lr rises linearly over these steps (step n: lr·n/warmup)
    grad_clip: Annotated[float, Field(ge=0)] = 0.0  # max global gradient norm per group; 0 = no clipping
    log_every: PositiveInt = 50  # steps between rows in history.csv
    checkpoint_every: PositiveInt = 2000  # steps between resumable checkpoints
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    # autocast dtype of the forward passes; auto = bf16 where the hardware runs it natively (CPUs with AMX or
    # avx512-bf16, GPUs with bf16), fp32 elsewhere; fp16 adds a loss scaler per optimizer group
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # NHWC activations and weights; auto = with a low-precision autocast (the CPU fast path), not with fp32
    channels_last: Literal["auto"] | bool = "auto"
    ema_decay: UnitInterval = 0.999  # EMA of the sampled weights; 0 = last iterate
    fid_every: NonNegativeInt = 5000  # steps between FID-curve points (EMA weights); 0 = no curve
    fid_n: Annotated[Int, Field(ge=6)] = 1000  # images per FID-curve point (small N: a trend, not a result)
    fid_dtype: Literal["fp32", "bf16", "auto"] = "fp32"  # the curve's Inception: bf16 is faster and slightly off
    # fp32's FID (docs/benchmarks.md); auto = bf16 where the hardware runs it natively (as evaluate.dtype)

    def curve_sampling(self, default: SamplingConfig) -> SamplingConfig:
        """How the FID curve samples, given the family's default sampling: the same (a diffusion family may
        choose a cheaper sampler for its curve)."""
        return default


class SamplingConfig(Strict):
    """How the sample stage draws from a trained model; never read by training.

    Families without a choice of sampler (VAE, GANs) draw z from their prior; the diffusion families use
    `samplers.DiffusionSampling`.
    """

    ema: bool = True  # sample from the EMA weights (else the last iterate)

    def sampler_call(self) -> tuple[str, dict[str, Any]]:
        """(name in `samplers.SAMPLERS`, its keyword options)."""
        return "prior", {}

    def updated(self, changes: Mapping[str, Any]) -> Self:
        """These settings with `changes` written over them, validated (a sweep's value over its entry's)."""
        return type(self).model_validate(self.model_dump() | dict(changes))

    def network_evaluations(self, arch: BaseModel) -> int:
        """Forward passes of the network per image (the report's cost column): one decode of z for a prior."""
        return 1

    def at_nfe(self, arch: BaseModel, nfe: int) -> Self:
        """These settings at the most sampler steps within `nfe` network evaluations per image (an FID-against-NFE
        sweep's point); a prior has no steps to choose, so it refuses."""
        raise ValueError("this family draws in one pass with no sampler steps; an NFE sweep needs a diffusion entry")

    def check(self, arch: BaseModel) -> None:
        """Raise ValueError naming the field when these settings cannot sample a model built from `arch`."""
