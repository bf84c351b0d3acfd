"""The report stage: every entry's files → results/ (tables, figures, index.html)."""

from __future__ import annotations

from typing import Any

from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage


def _call(run: Call) -> Any:
    from genbench.components.report.report import report

    return report(run.config, run.here, run.out)


STAGE = Stage(
    name="report",
    doc="results/: the comparison tables (CSV, markdown, LaTeX) over every entry and seed with the real-data "
        "floor, the cost table, every figure (PNG and PDF) and index.html, one offline page with all of them.",
    over="once",
    params=("entries", "seeds", "sweeps"),
    places=(
        Place("manifest", lambda here, at: here.manifest, "in", "Data manifest."),
        Place("samples", lambda here, at: here.samples_dir, "in", "Samples folder."),
        Place("metrics", lambda here, at: here.metrics_dir, "in", "Metrics folder."),
        Place("runs", lambda here, at: here.runs_dir, "in", "Runs folder."),
        Place("registry", lambda here, at: here.registry_dir, "in", "Registry records folder."),
        Place("provenance", lambda here, at: here.provenance_dir, "in", "Provenance records folder.",
              files=lambda path: tuple(path / stage for stage in ("train", "sample", "evaluate"))),
        Place("out", lambda here, at: here.results, "out", "Results folder.", cache=False),
    ),
    code=("components/report", *SHARED_CODE),
    call=_call,
    says=lambda page, run: f"results: {page}",
)
