"""Where each stage reads and writes inside a project folder.

`dvc.yaml` spells the same paths out literally (DVC must see them); the CLI and the Prefect flow take them
from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REAL = "real"  # the name `evaluate` and the report give the held-out real images: metrics/real.json


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def downloads(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def validation(self) -> Path:
        return self.data / "validation.npy"

    @property
    def reference(self) -> Path:
        return self.data / "reference.npy"

    @property
    def holdout(self) -> Path:
        return self.data / "holdout.npy"

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.json"

    def run(self, family: str) -> Path:
        return self.root / "runs" / family

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    def samples(self, family: str) -> Path:
        return self.samples_dir / f"{family}.npy"

    def metrics(self, family: str) -> Path:
        return self.root / "metrics" / f"{family}.json"

    def sweep(self, name: str) -> Path:
        """The sample sets and per-value metrics of sweep `name`."""
        return self.root / "sweeps" / name

    def sweep_summary(self, name: str) -> Path:
        return self.root / "metrics" / "sweeps" / f"{name}.json"

    def registry(self, family: str) -> Path:
        return self.root / "registry" / f"{family}.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def cache(self) -> Path:
        return self.root / ".genbench" / "cache"
