"""`genbench models`: every params entry (each registered family, and any named variant) with its size under the
active settings, before any training."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from genbench.components.common.artifacts import load_frozen
from genbench.components.prepare.prepare import image_shape
from genbench.config import DataConfig, EntrySettings
from genbench.models import REGISTRY, build_model


@dataclass(frozen=True)
class FamilyRow:
    entry: str
    model_class: str
    num_parameters: int | None
    unavailable: str | None = None  # why the size is unknown (the ldm before its vae is trained)


def describe_families(models: Mapping[str, EntrySettings], data: DataConfig, seed: int) -> list[FamilyRow]:
    """One row per entry of the `models` section: its class and trainable parameter count for `data`'s image
    shape under its settings (an entry built on trained models counts with `seed`'s run of them)."""
    channels, size = image_shape(data)
    rows = []
    for entry, settings in models.items():
        family, arch = settings.family, settings.arch
        model_class = REGISTRY[family].model.__name__
        try:
            loaded = load_frozen(entry, family, arch, channels, size, seed)
            frozen = {argument: model for argument, (model, _) in loaded.items()}
            count: int | None = build_model(family, channels, size, arch, **frozen).num_parameters()
            rows.append(FamilyRow(entry, model_class, count))
        except (FileNotFoundError, ValueError) as exc:
            rows.append(FamilyRow(entry, model_class, None, str(exc)))
    return rows
