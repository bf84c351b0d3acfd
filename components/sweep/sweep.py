"""A sampling sweep: the same trained weights re-sampled once per value of one sampling setting (DDIM steps,
guidance scale), each set scored exactly as an entry's samples are. Nothing is retrained.

Writes `<vary>-<value>.npy` (and its sample record) and `<vary>-<value>.metrics.json` per value to `out_dir`,
and one summary, a row per value with its samples' md5, to `summary_path`: deleted before anything is written and
written last, so a sweep without its summary is unfinished. Every value is drawn from the same seeds, so the images
differ only by the setting swept.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from genbench.components.common.artifacts import check_complete
from genbench.components.common.io import clean_leftovers, require_file, write_json
from genbench.components.common.records import SweepRecord, SweepRow
from genbench.components.evaluate.evaluate import evaluate
from genbench.components.sample.sample import sample
from genbench.config import EvaluateConfig, SampleConfig, SweepConfig
from genbench.models.config import SamplingConfig


def sweep(name: str, config: SweepConfig, run_dir: Path, base: SamplingConfig, settings: SampleConfig, seed: int,
          reference_path: Path, out_dir: Path, summary_path: Path, *, cache_dir: Path,
          evaluate_settings: EvaluateConfig = EvaluateConfig()) -> SweepRecord:
    """Sample `config.n` (else `settings.n`) images from `run_dir` (entry `config.entry`) under `base` with `config.set` and each
    value of `config.vary`, score each set against `reference_path`, and write the per-value rows."""
    out_dir, summary_path = Path(out_dir), Path(summary_path)
    settings = settings.model_copy(update={"n": config.n}) if config.n else settings
    check_complete(run_dir)  # inputs first: a missing or unfinished run stops the sweep before anything is touched
    require_file(reference_path, "genbench prepare")
    clean_leftovers(summary_path.parent, summary_path.name)
    summary_path.unlink(missing_ok=True)  # the completion record first: a stop below leaves no old-looking sweep
    shutil.rmtree(out_dir, ignore_errors=True)  # the stage's own folder: no set of an earlier value list stays
    out_dir.mkdir(parents=True)
    rows = []
    for value in config.values:
        # Names are spelled out, not made with with_suffix: that would read the ".3" of 1.3 as a suffix.
        images, scores = out_dir / f"{config.vary}-{value}.npy", out_dir / f"{config.vary}-{value}.metrics.json"
        started = time.perf_counter()
        sample(run_dir, images, config.entry, settings, config.sampling(base, value), seed)
        seconds = time.perf_counter() - started
        metrics = evaluate(images, reference_path, scores, cache_dir=cache_dir, settings=evaluate_settings,
                           recorded=True)
        rows.append(SweepRow(value=value, fid=metrics["fid"], precision=metrics["precision"],
                             recall=metrics["recall"], n_samples=metrics["n_samples"],
                             samples_md5=metrics["samples_md5"],
                             sample_seconds=round(seconds, 3), seconds_per_image=seconds / settings.n,
                             **{key: metrics[key] for key in ("fid_ci95", "precision_ci95", "recall_ci95")
                                if metrics.get(key) is not None}))
    record = SweepRecord(name=name, entry=config.entry, vary=config.vary, set=config.set, rows=rows)
    write_json(summary_path, record.model_dump(mode="json"))
    return record

