"""The evaluate stages: an entry's samples (or the held-out real images) → metrics/<entry>/seed-<s>.json
(metrics/real.json), every metric against the reference images."""

from __future__ import annotations

from typing import Any

from genbench.components.common.manifest import labels_path
from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage
from genbench.layout import REAL

# components/prepare: the paper protocol reads the training split as `prepare` fetches it
CODE = ("components/evaluate", "components/prepare", *SHARED_CODE)
REFERENCE = Place("reference", lambda here, at: here.reference, "in", "Real reference .npy.")
CACHE = Place("cache", lambda here, at: here.cache, "scratch", "Cache of the reference set's features.")
# evaluate.protocol paper scores against the dataset's whole training split, read where `prepare` fetches it
DOWNLOADS = Place("downloads", lambda here, at: here.downloads, "scratch", "Where the dataset is downloaded.")


def _says(result: dict[str, Any], run: Call) -> str:
    return (f"{run.at.entry or REAL}: FID {result['fid']:.2f}, precision {result['precision']:.3f}, "
            f"recall {result['recall']:.3f}")


def _entry(run: Call) -> Any:
    from genbench.components.evaluate.evaluate import evaluate

    return evaluate(run.samples, run.reference, run.out, cache_dir=run.cache, settings=run.config.evaluate,
                    recorded=True, data=run.config.data, download_dir=run.downloads)


def _real(run: Call) -> Any:
    from genbench.components.evaluate.evaluate import evaluate_real

    return evaluate_real(run.samples, run.reference, run.out, cache_dir=run.cache, settings=run.config.evaluate,
                         data=run.config.data, download_dir=run.downloads)


STAGE = Stage(
    name="evaluate",
    doc="FID, KID, precision/recall and more of an entry's samples versus the held-out reference set.",
    over="entries",
    params=("profile", "seed", "seeds", "data", "evaluate"),
    places=(
        Place("samples", lambda here, at: here.samples(at.entry, at.seed), "in",
              "Images .npy, with the record `genbench sample` wrote beside it.",
              files=lambda path: (path, path.with_suffix(".json"))),
        # with its class labels: a class-conditional entry is also scored class by class
        Place("reference", lambda here, at: here.reference, "in", "Real reference .npy (and its labels).",
              files=lambda path: (path, labels_path(path))),
        Place("out", lambda here, at: here.metrics(at.entry, at.seed), "metrics", "Metrics JSON."),
        CACHE,
        DOWNLOADS,
    ),
    code=CODE,
    call=_entry,
    says=_says,
)


def _curve(run: Call) -> Any:
    from genbench.components.evaluate.fid_curve import fid_curve

    return fid_curve(run.run, run.validation, run.out, run.entry, run.config.entry(run.entry), run.seed,
                     cache_dir=run.cache)


def _curve_says(record: Any, run: Call) -> str:
    if not record.points:
        return f"{run.entry}: no FID curve (models.{run.entry}.train.fid_every is 0)"
    last = record.points[-1]
    return f"{run.entry}: FID curve of {len(record.points)} points, {last.fid:.2f} at step {last.step}"


# Scores the snapshots train saved: the FID network runs here, never in training (components/evaluate/fid_curve.py).
CURVE_STAGE = Stage(
    name="fid-curve",
    doc="FID of the EMA snapshots `train.fid_every` saved, `train.fid_n` images each, against the validation split: "
        "a trend during training, comparable only with itself.",
    over="entries",
    params=("profile", "seeds", "models.{entry}"),
    places=(
        Place("run", lambda here, at: here.run(at.entry, at.seed), "in", "Run folder.",
              files=lambda path: (path / "snapshots", path / "summary.json")),
        Place("validation", lambda here, at: here.validation, "in", "Validation images .npy."),
        Place("out", lambda here, at: here.curve(at.entry, at.seed), "out", "Curve JSON."),
        CACHE,
    ),
    code=CODE,
    call=_curve,
    says=_curve_says,
)

# The real-data row of the report: the held-out real images scored exactly as an entry's samples are.
REAL_STAGE = Stage(
    name="evaluate-real",
    doc="The held-out real images (data/prepared/holdout.npy) scored as samples are: the floor of the report.",
    over="once",
    params=("profile", "seed", "data", "evaluate"),
    places=(
        Place("samples", lambda here, at: here.holdout, "in", "Held-out real images .npy."),
        REFERENCE,
        Place("out", lambda here, at: here.real_metrics, "metrics", "Metrics JSON."),
        CACHE,
        DOWNLOADS,
    ),
    code=CODE,
    call=_real,
    says=_says,
    command=("evaluate", REAL),
)
