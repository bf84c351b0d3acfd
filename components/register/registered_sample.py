"""`genbench sample --model`: sample a registry version instead of a run folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from genbench.components.common.records import SampleRecord
from genbench.components.register.registry import fetch_registered
from genbench.components.sample.sample import sample
from genbench.config import SampleConfig
from genbench.models.config import SamplingConfig


def sample_registered(model_uri: str, entry: str, settings: SampleConfig, sampling: SamplingConfig, seed: int,
                      samples_dir: Path, project_dir: Path, out_path: Path | None = None) -> SampleRecord:
    """`sample` a registry version (`models:/genbench-<entry>@<alias>` or `.../<version>`) into
    `out_path` or `samples_dir/<entry>-v<version>.npy`; needs nothing of the run folders."""
    with tempfile.TemporaryDirectory(prefix="genbench-model-") as downloaded:
        run_dir, source = fetch_registered(model_uri, Path(downloaded), project_dir=project_dir)
        target = out_path or Path(samples_dir) / f"{entry}-v{source.version}.npy"
        return sample(run_dir, target, entry, settings, sampling, seed, source=source)
