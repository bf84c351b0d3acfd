"""The evaluate stages: an entry's samples (or the held-out real images) → metrics/<entry>/seed-<s>.json
(metrics/real.json), every metric against the reference images."""

from __future__ import annotations

from typing import Any

from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage
from genbench.layout import REAL

CODE = ("components/evaluate", *SHARED_CODE)
REFERENCE = Place("reference", lambda here, at: here.reference, "in", "Real reference .npy.")
CACHE = Place("cache", lambda here, at: here.cache, "scratch", "Cache of the reference set's features.")


def _says(result: dict[str, Any], run: Call) -> str:
    return (f"{run.at.entry or REAL}: FID {result['fid']:.2f}, precision {result['precision']:.3f}, "
            f"recall {result['recall']:.3f}")


def _entry(run: Call) -> Any:
    from genbench.components.evaluate.evaluate import evaluate

    return evaluate(run.samples, run.reference, run.out, cache_dir=run.cache, settings=run.config.evaluate,
                    recorded=True)


def _real(run: Call) -> Any:
    from genbench.components.evaluate.evaluate import evaluate_real

    return evaluate_real(run.samples, run.reference, run.out, cache_dir=run.cache, settings=run.config.evaluate)


STAGE = Stage(
    name="evaluate",
    doc="FID, KID, precision/recall and more of an entry's samples versus the held-out reference set.",
    over="entries",
    params=("profile", "seed", "seeds", "evaluate"),
    places=(
        Place("samples", lambda here, at: here.samples(at.entry, at.seed), "in",
              "Images .npy, with the record `genbench sample` wrote beside it.",
              files=lambda path: (path, path.with_suffix(".json"))),
        REFERENCE,
        Place("out", lambda here, at: here.metrics(at.entry, at.seed), "metrics", "Metrics JSON."),
        CACHE,
    ),
    code=CODE,
    call=_entry,
    says=_says,
)

# The real-data row of the report: the held-out real images scored exactly as an entry's samples are.
REAL_STAGE = Stage(
    name="evaluate-real",
    doc="The held-out real images (data/prepared/holdout.npy) scored as samples are: the floor of the report.",
    over="once",
    params=("profile", "seed", "evaluate"),
    places=(
        Place("samples", lambda here, at: here.holdout, "in", "Held-out real images .npy."),
        REFERENCE,
        Place("out", lambda here, at: here.real_metrics, "metrics", "Metrics JSON."),
        CACHE,
    ),
    code=CODE,
    call=_real,
    says=_says,
    command=("evaluate", REAL),
)
