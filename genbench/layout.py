"""Where each stage reads and writes inside a project folder.

An entry trained under several seeds (`seeds` in params) has one run per seed: `runs/<entry>/seed-<s>/`,
`samples/<entry>/seed-<s>.npy`, `metrics/<entry>/seed-<s>.json`, `registry/<entry>/seed-<s>.json`; the report
aggregates them. Every driver takes them from here through the stage declarations (components/*/stage.py),
dvc.yaml included: it is generated from them, with DVC's placeholders in place of the entry and seed.
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

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, entry: str, seed: int | str) -> Path:
        return self.runs_dir / entry / _seed(seed)

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    def samples(self, entry: str, seed: int | str) -> Path:
        return self.samples_dir / entry / f"{_seed(seed)}.npy"

    def sample_record(self, entry: str, seed: int | str) -> Path:
        """The sampling settings, weights hash and cost of `samples(entry, seed)`, written beside it."""
        return self.samples(entry, seed).with_suffix(".json")

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def metrics(self, entry: str, seed: int | str) -> Path:
        return self.metrics_dir / entry / f"{_seed(seed)}.json"

    def curve(self, entry: str, seed: int | str) -> Path:
        """The FID curve of run (entry, seed) during training, beside its metrics."""
        return self.metrics_dir / entry / f"{_seed(seed)}.curve.json"

    @property
    def real_metrics(self) -> Path:
        """The held-out real images scored like samples: the report's floor (one set, whatever the seeds)."""
        return self.root / "metrics" / f"{REAL}.json"

    def sweep(self, name: str) -> Path:
        """The sample sets and per-value metrics of sweep `name`."""
        return self.root / "sweeps" / name

    def sweep_summary(self, name: str) -> Path:
        return self.root / "metrics" / "sweeps" / f"{name}.json"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    def registry(self, entry: str, seed: int | str) -> Path:
        return self.registry_dir / entry / f"{_seed(seed)}.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def cache(self) -> Path:
        return self.root / ".genbench" / "cache"

    @property
    def provenance_dir(self) -> Path:
        return self.root / "provenance"

    def provenance(self, stage: str, instance: str) -> Path:
        """What one run of `stage` read (code, params and inputs, each hashed), written by the stage itself."""
        return self.provenance_dir / stage / f"{instance or stage}.json"

    @property
    def benchmarks(self) -> Path:
        """Where `genbench bench` appends its dated rows."""
        return self.root / "docs" / "benchmarks.md"


def _seed(seed: int | str) -> str:
    return f"seed-{seed}"
