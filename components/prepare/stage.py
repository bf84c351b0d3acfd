"""The prepare stage: params `data` and `seed` → data/prepared."""

from __future__ import annotations

from typing import Any

from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage


def _call(run: Call) -> Any:
    from genbench.components.prepare.prepare import prepare

    return prepare(run.config.data, run.config.seed, run.out, run.downloads)


STAGE = Stage(
    name="prepare",
    doc="Fetch the dataset and write train / validation / reference / holdout images with an md5 manifest.",
    over="once",
    params=("profile", "seed", "data"),
    places=(
        Place("out", lambda here, at: here.data, "out", "Prepared data folder."),
        Place("downloads", lambda here, at: here.downloads, "scratch", "Where the dataset is downloaded."),
    ),
    code=("components/prepare", *SHARED_CODE),
    call=_call,
    says=lambda manifest, run: f"prepared {manifest.counts} in {run.out}",
)
