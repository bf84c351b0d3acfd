"""The sweep stage: an entry's trained weights (first seed) re-sampled once per value of `sweeps.<name>` (or per
sampler and NFE target under `vary: nfe`), each set scored like the entry's samples. It depends on the run and on
sampling settings, never on `models`: no retraining."""

from __future__ import annotations

from typing import Any

from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage


def _call(run: Call) -> Any:
    from genbench.components.sweep.sweep import sweep

    config, name = run.config, run.at.sweep
    assert name is not None, "a sweep instance"
    return sweep(name, config.sweeps[name], run.run, config.sampling_for(run.entry), config.sample, run.seed,
                 run.reference, run.sets, run.out, cache_dir=run.cache, evaluate_settings=config.evaluate,
                 data=config.data, download_dir=run.downloads)


def _says(record: Any, run: Call) -> str:
    from genbench.config import NFE

    def point(row: Any) -> str:
        if record.vary == NFE:
            return (f"{row.sampler} {row.sample_steps} steps, NFE {row.network_evaluations} (target "
                    f"{row.value})")
        return f"{record.vary}={row.value}"

    lines = [f"{record.name}: {point(row)}: FID {row.fid:.2f}, precision {row.precision:.3f}, "
             f"recall {row.recall:.3f}" for row in record.rows]
    return "\n".join([*lines, f"wrote {run.out} ({len(record.rows)} values)"])


STAGE = Stage(
    name="sweep",
    doc="Re-sample an entry's trained weights once per value of `sweeps.NAME` (per sampler and NFE target under "
        "vary: nfe) and score each set (no retraining).",
    over="sweeps",
    params=("profile", "seed", "seeds", "data", "sample", "evaluate", "sampling.{entry}", "sweeps.{sweep}"),
    places=(
        Place("run", lambda here, at: here.run(at.entry, at.seed), "in", "Run folder of the sweep's entry.",
              files=lambda path: (path / "model.safetensors", path / "config.json")),
        Place("reference", lambda here, at: here.reference, "in", "Real reference .npy."),
        Place("sets", lambda here, at: here.sweep(at.sweep), "out", "Folder of the sample sets and their metrics."),
        Place("out", lambda here, at: here.sweep_summary(at.sweep), "metrics", "Summary JSON."),
        Place("cache", lambda here, at: here.cache, "scratch", "Cache of the reference's and the sets' features."),
        Place("downloads", lambda here, at: here.downloads, "scratch", "Where the dataset is downloaded."),
    ),
    code=("components/sweep", "components/sample", "components/evaluate", "components/prepare", *SHARED_CODE),
    call=_call,
    says=_says,
)
