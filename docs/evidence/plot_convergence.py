"""The CPU convergence figure of docs/benchmarks.md: FID-curve points (validation split) of the runs trained with
docs/evidence/convergence.params.yaml, drawn by the report's own plotting function.

    uv run python docs/evidence/plot_convergence.py PROJECT_DIR docs/img/cpu-convergence.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from genbench.components.report import figures
from genbench.components.common.artifacts import curves, read_history


def main(project: Path, out: Path) -> None:
    runs = sorted(path.parent for path in (project / "runs").glob("*/seed-*/history.csv"))
    series: dict[str, list[figures.Curves]] = {}
    for run in runs:
        series.setdefault(run.parent.name, []).append(curves(read_history(run)))
        print(run.parent.name, run.name, [(step, round(fid, 2)) for step, fid in series[run.parent.name][-1]
                                          .get("fid_curve", [])])
    with tempfile.TemporaryDirectory() as folder:  # the report writes PNG and PDF; the docs keep the PNG
        if not figures.fid_curves(series, Path(folder) / "fid_curve"):
            raise SystemExit(f"no FID curve in {project / 'runs'}")
        shutil.copyfile(Path(folder) / "fid_curve.png", out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
