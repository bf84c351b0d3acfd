"""The sample stage: a run folder and `sampling.<entry>` → samples/<entry>/seed-<s>.npy and its record."""

from __future__ import annotations

from typing import Any

from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage


def _call(run: Call) -> Any:
    from genbench.components.sample.sample import sample

    return sample(run.run, run.out, run.entry, run.config.sample, run.config.sampling_for(run.entry), run.seed)


STAGE = Stage(
    name="sample",
    doc="Draw `sample.n` images (uint8 NHWC) from a trained entry with the `sampling.ENTRY` settings; image i "
        "depends on (SEED, i) only.",
    over="entries",
    params=("profile", "seeds", "sample", "sampling.{entry}"),
    places=(
        Place("run", lambda here, at: here.run(at.entry, at.seed), "in", "Run folder.",
              files=lambda path: (path / "model.safetensors", path / "config.json")),
        Place("out", lambda here, at: here.samples(at.entry, at.seed), "out", "Output .npy (its record beside it).",
              files=lambda path: (path, path.with_suffix(".json"))),
    ),
    code=("components/sample", *SHARED_CODE),
    call=_call,
    says=lambda record, run: f"wrote {record.shape} to {record.out}",
)
