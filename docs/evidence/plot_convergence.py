"""The CPU convergence figure of docs/benchmarks.md: FID-curve points (validation split) of the runs trained with
docs/evidence/convergence.params.yaml, drawn by the report's own plotting function.

    uv run python docs/evidence/plot_convergence.py PROJECT_DIR docs/img/cpu-convergence.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from genbench.components.artifacts import curves, read_history
from genbench.components.report import plot_fid_curves


def main(project: Path, out: Path) -> None:
    runs = sorted(path for path in (project / "runs").iterdir() if (path / "history.csv").exists())
    series = {run.name: curves(read_history(run)) for run in runs}
    for name, named in series.items():
        print(name, [(step, round(fid, 2)) for step, fid in named.get("fid_curve", [])])
    if not plot_fid_curves(series, out):
        raise SystemExit(f"no FID curve in {project / 'runs'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
