"""A sampling sweep: the same trained weights re-sampled once per value of one sampling setting (DDIM steps,
guidance scale), or once per sampler and NFE target (`vary: nfe`, FID against NFE), each set scored exactly as an
entry's samples are. Nothing is retrained.

Writes `<vary>-<value>.npy` (`<sampler>-nfe-<target>.npy` under vary nfe; its sample record beside it) and
`<stem>.metrics.json` per set to `out_dir`, and one summary, a row per set with its samples' md5, to
`summary_path`: deleted before anything is written and written last, so a sweep without its summary is
unfinished. Every set is drawn from the same seeds, so the images differ only by the settings swept.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from genbench.components.common.artifacts import check_complete, read_run_record
from genbench.components.common.io import clean_leftovers, require_file, write_json
from genbench.components.common.records import SweepRecord, SweepRow
from genbench.components.evaluate.evaluate import evaluate
from genbench.components.sample.sample import sample
from genbench.config import DataConfig, EvaluateConfig, SampleConfig, SweepConfig
from genbench.models import family as family_spec
from genbench.models.config import SamplingConfig


def sweep(name: str, config: SweepConfig, run_dir: Path, base: SamplingConfig, settings: SampleConfig, seed: int,
          reference_path: Path, out_dir: Path, summary_path: Path, *, cache_dir: Path,
          evaluate_settings: EvaluateConfig = EvaluateConfig(), data: DataConfig | None = None,
          download_dir: Path | None = None) -> SweepRecord:
    """Sample `config.n` (else `settings.n`) images from `run_dir` (entry `config.entry`) under `base` with
    `config.set` and each value of `config.vary` (or each sampler and NFE target: `SweepConfig.points`, for the
    run's own arch), score each set against `reference_path` (or under `evaluate_settings.protocol` paper, against
    `data`'s training split in `download_dir`), and write the per-set rows. A set's features are cached by its
    bytes, so a set another sweep drew alike is not run through the network again."""
    out_dir, summary_path = Path(out_dir), Path(summary_path)
    settings = settings.model_copy(update={"n": config.n}) if config.n else settings
    check_complete(run_dir)  # inputs first: a missing or unfinished run stops the sweep before anything is touched
    require_file(reference_path, "genbench prepare")
    run = read_run_record(run_dir)
    points = config.points(base, family_spec(run.family).arch.model_validate(run.arch))
    clean_leftovers(summary_path.parent, summary_path.name)
    summary_path.unlink(missing_ok=True)  # the completion record first: a stop below leaves no old-looking sweep
    shutil.rmtree(out_dir, ignore_errors=True)  # the stage's own folder: no set of an earlier value list stays
    out_dir.mkdir(parents=True)
    rows, protocol = [], None  # no values: nothing scored
    for value, stem, sampling in points:
        images, scores = out_dir / f"{stem}.npy", out_dir / f"{stem}.metrics.json"
        started = time.perf_counter()
        drawn = sample(run_dir, images, config.entry, settings, sampling, seed)
        seconds = time.perf_counter() - started
        metrics = evaluate(images, reference_path, scores, cache_dir=cache_dir, settings=evaluate_settings,
                           recorded=True, data=data, download_dir=download_dir, cache_samples=True)
        protocol = metrics["protocol"]
        sampler, options = sampling.sampler_call()
        rows.append(SweepRow(value=value, sampler=sampler, sample_steps=options.get("sample_steps"),
                             network_evaluations=drawn.network_evaluations, fid=metrics["fid"],
                             precision=metrics["precision"], recall=metrics["recall"], n_samples=metrics["n_samples"],
                             samples_md5=metrics["samples_md5"],
                             sample_seconds=round(seconds, 3), seconds_per_image=seconds / settings.n,
                             warnings=metrics["warnings"],
                             **{key: metrics[key] for key in ("fid_ci95", "precision_ci95", "recall_ci95")
                                if metrics.get(key) is not None}))
    record = SweepRecord(name=name, entry=config.entry, vary=config.vary, set=config.set, rows=rows,
                         protocol=protocol, bootstrap=evaluate_settings.bootstrap)
    write_json(summary_path, record.model_dump(mode="json"))
    return record

