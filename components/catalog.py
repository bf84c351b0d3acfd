"""`genbench models`: every registered family with its size under the active settings, before any training."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DataConfig
from ..models import REGISTRY, build_model
from .artifacts import load_frozen
from .prepare import IMAGE_SHAPES


@dataclass(frozen=True)
class FamilyRow:
    family: str
    model_class: str
    num_parameters: int | None
    unavailable: str | None = None  # why the size is unknown (the ldm before its vae is trained)


def describe_families(models: object, data: DataConfig) -> list[FamilyRow]:
    """One row per registered family: its class and trainable parameter count for `data`'s image shape
    under the `models` section's settings."""
    channels, size = IMAGE_SHAPES[data.dataset]
    rows = []
    for name, spec in REGISTRY.items():
        arch = getattr(models, name).arch
        try:
            frozen = {argument: model for argument, (model, _) in load_frozen(name, arch, channels, size).items()}
            count: int | None = build_model(name, channels, size, arch, **frozen).num_parameters()
            rows.append(FamilyRow(name, spec.model.__name__, count))
        except (FileNotFoundError, ValueError) as exc:
            rows.append(FamilyRow(name, spec.model.__name__, None, str(exc)))
    return rows
