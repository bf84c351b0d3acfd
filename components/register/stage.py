"""The register stage: a run, its samples' record and its metrics → an MLflow version of genbench-<entry>, the
`champion` alias moved only on a better FID, and registry/<entry>/seed-<s>.json."""

from __future__ import annotations

from typing import Any

from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage

UPSTREAM = ("train", "fid-curve", "sample", "evaluate")  # the stages whose provenance hashes the version is tagged with


def _call(run: Call) -> Any:
    from genbench.components.register.register import register

    hashes = {stage: run.provenance.parents[1] / stage / run.provenance.name for stage in UPSTREAM}
    return register(run.entry, run.run, run.metrics, run.manifest, run.out, sample_record=run.sample_record,
                    project_dir=run.here.root.resolve(), curve=run.curve, provenance=hashes,
                    tags=dict(run.extra.get("tags") or {}))


def _says(result: Any, run: Call) -> str:
    moved = "now champion" if result.promoted else f"champion stays v{result.champion_version}"
    return f"registered {result.model_name} v{result.version} (FID {result.fid:.2f}; {moved})"


STAGE = Stage(
    name="register",
    doc="Log the run and its MLflow pyfunc model, register that as a new version and move `champion` if its FID "
        "is lower.",
    over="entries",
    params=("seeds",),
    places=(
        Place("run", lambda here, at: here.run(at.entry, at.seed), "in", "Run folder.",
              files=lambda path: (path / "model.safetensors", path / "history.csv", path / "summary.json")),
        # the sampling settings the registered model serves with; its samples are checked against it
        Place("sample_record", lambda here, at: here.sample_record(at.entry, at.seed), "in",
              "The samples' record, whose sampling settings the version serves with.",
              files=lambda path: (path, path.with_suffix(".npy"))),
        Place("metrics", lambda here, at: here.metrics(at.entry, at.seed), "in", "Metrics JSON."),
        Place("curve", lambda here, at: here.curve(at.entry, at.seed), "in", "FID-curve JSON (`genbench fid-curve`)."),
        Place("manifest", lambda here, at: here.manifest, "in", "Data manifest."),
        Place("provenance", lambda here, at: here.provenance("train", at.label), "in",
              "The train stage's provenance record (the sample and evaluate ones are found beside it).",
              files=lambda path: tuple(path.parents[1] / stage / path.name for stage in UPSTREAM)),
        Place("out", lambda here, at: here.registry(at.entry, at.seed), "out", "Result JSON."),
    ),
    code=("components/register", "components/sample", *SHARED_CODE),
    call=_call,
    says=_says,
)
