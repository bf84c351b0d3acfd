"""The report's figures, each written as PNG (screens, index.html) and PDF (print), in one style: 9-point type,
light grids, the tab10 palette, every seed drawn (thin) with its mean (bold) where a curve has several.

Pure plotting over numbers and uint8 images; report.py gathers them from the project. matplotlib is imported
inside (Agg backend), so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genbench.components.common.io import atomic_path

if TYPE_CHECKING:
    from genbench.components.common.records import MetricsRecord, SweepRecord

Curves = dict[str, list[tuple[int, float]]]  # history name → [(step, value)]
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42,
}
DPI = 150
REAL_COLOUR = "0.35"


def tile(images: np.ndarray, nrow: int = 8, zoom: int = 1, padding: int = 2) -> np.ndarray:
    """uint8 NHWC images tiled `nrow` wide on white, `padding` pixels apart, as one RGB array (torchvision's
    `make_grid` layout, in numpy: a report process then never pays torchvision's import)."""
    tiles = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    tiles = np.repeat(tiles, 3, axis=3) if tiles.shape[3] == 1 else tiles
    n, h, w, _ = tiles.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), 255, dtype=np.uint8)
    for i, image in enumerate(tiles):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[top : top + h, left : left + w] = image
    return grid


def save_png(array: np.ndarray, path: Path) -> None:
    """An RGB uint8 array as a PNG (a sample grid at its own pixels, for zooming in)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="png")


@contextmanager
def figure(stem: Path, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """`plt.subplots(*args, **kwargs)` in the house style, saved as stem.png and stem.pdf on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(*args, **kwargs)
        try:
            yield fig, axes
            for suffix, options in ((".png", {"dpi": DPI, "metadata": {"Software": None}}),
                                    (".pdf", {"metadata": {"CreationDate": None, "Creator": None, "Producer": None}})):
                with atomic_path(stem.with_suffix(suffix)) as tmp:
                    fig.savefig(tmp, format=suffix[1:], **options)
        finally:
            plt.close(fig)


def samples(grids: dict[str, np.ndarray], stem: Path) -> None:
    """One panel per set (the real reference first), each a tiled grid of the same seeds' images."""
    cols = min(4, len(grids))
    rows = -(-len(grids) // cols)
    with figure(stem, rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False) as (_, axes):
        for ax, (label, grid) in zip(axes.flat, grids.items()):
            ax.imshow(grid, interpolation="nearest")
            ax.set_title(label)
            ax.axis("off")
        for ax in list(axes.flat)[len(grids):]:
            ax.set_visible(False)


def losses(curves: dict[str, list[Curves]], stem: Path) -> None:
    """One panel per entry: each loss of its history, the first seed bold, the other seeds thin."""
    cols = min(4, len(curves))
    rows = -(-len(curves) // cols)
    with figure(stem, rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False) as (_, axes):
        for ax, (name, per_seed) in zip(axes.flat, curves.items()):
            names = sorted({key for series in per_seed for key in series if key.endswith("/loss")})
            for colour, key in enumerate(names):
                for i, series in enumerate(per_seed):
                    if series.get(key):
                        ax.plot(*zip(*series[key]), color=f"C{colour}", lw=1.2 if i == 0 else 0.5,
                                alpha=1.0 if i == 0 else 0.5, label=key if i == 0 else None)
            ax.set(title=name, xlabel="step", ylabel="loss")
            ax.legend()
        for ax in list(axes.flat)[len(curves):]:
            ax.set_visible(False)


def fid_curves(curves: dict[str, list[Curves]], stem: Path) -> bool:
    """FID on the validation split against training step, per entry (seeds thin, their mean bold); False and no
    file when no run measured a curve."""
    measured = {name: [s["fid_curve"] for s in per_seed if s.get("fid_curve")] for name, per_seed in curves.items()}
    measured = {name: series for name, series in measured.items() if series}
    if not measured:
        return False
    with figure(stem, figsize=(5, 3.4)) as (_, ax):
        for colour, (name, series) in enumerate(measured.items()):
            for points in series:
                ax.plot(*zip(*points), color=f"C{colour}", lw=0.6, alpha=0.5)
            steps = sorted(set.intersection(*(set(step for step, _ in points) for points in series)))
            mean = [np.mean([dict(points)[step] for points in series]) for step in steps]
            ax.plot(steps, mean, color=f"C{colour}", marker="o", ms=3, label=name)
        ax.set(xlabel="training step", ylabel="FID (validation split)", title="FID during training")
        ax.legend()
    return True


def precision_recall(points: dict[str, dict[str, Any]], stem: Path) -> None:
    """Precision against recall, an entry per marker with its spread as error bars, the real floor as a star.
    `points`: label → {precision, recall, precision_err, recall_err (each None or [below, above]), real}."""
    with figure(stem, figsize=(4.4, 3.8)) as (_, ax):
        colour = 0
        for label, p in points.items():
            if p["real"]:
                ax.plot(p["recall"], p["precision"], marker="*", ms=12, color=REAL_COLOUR, ls="none", label=label)
                continue
            xerr = None if p["recall_err"] is None else np.array(p["recall_err"]).reshape(2, 1)
            yerr = None if p["precision_err"] is None else np.array(p["precision_err"]).reshape(2, 1)
            ax.errorbar(p["recall"], p["precision"], xerr=xerr, yerr=yerr, marker="o", ms=6, capsize=3,
                        color=f"C{colour}", ls="none", label=label)
            colour += 1
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="recall (coverage of the real data)",
               ylabel="precision (realism of the samples)", title="Precision and recall (k-NN manifolds)")
        ax.legend(loc="best")


def image_rows(rows: Sequence[np.ndarray], row_labels: Sequence[str], col_labels: Sequence[str], title: str,
               stem: Path) -> None:
    """A table of images: `rows[r]` is uint8 NHWC with one image per column."""
    n_rows, n_cols = len(rows), len(col_labels)
    with figure(stem, n_rows, n_cols, figsize=(0.95 * n_cols + 0.8, 1.0 * n_rows + 0.5), squeeze=False) as (fig, axes):
        for r, images in enumerate(rows):
            for c in range(n_cols):
                ax = axes[r, c]
                image = images[c]
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                          interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if r == 0:
                    ax.set_title(col_labels[c], fontsize=8)
                if c == 0:
                    ax.set_ylabel(row_labels[r], fontsize=8)
        fig.suptitle(title)


def sweep(record: SweepRecord, real: MetricsRecord, stem: Path) -> None:
    """A sampling sweep: FID (left) and precision and recall (right) against the swept value, with their 95 %
    bootstrap intervals as bars where the sweep has them, each value marked on the axis (log-spaced for step
    counts). The real-data floor is drawn only at the real row's N: FID is biased upward at small N, so a sweep at
    fewer images compares only within itself."""
    values = [row.value for row in record.rows]
    n = record.rows[0].n_samples

    with figure(stem, 1, 2, figsize=(7.4, 3.2)) as (fig, (left, right)):
        fids = [row.fid for row in record.rows]
        left.errorbar(values, fids, yerr=_bars(fids, [row.fid_ci95 for row in record.rows]), marker="o",
                      capsize=3, color="C0", label=record.entry)
        if n == real.n_samples:
            left.axhline(real.fid, ls="--", color=REAL_COLOUR, label="real data")
        left.set(xlabel=record.vary, ylabel=f"FID (N = {n})")
        for key, marker, colour in (("precision", "o", "C1"), ("recall", "s", "C2")):
            points = [getattr(row, key) for row in record.rows]
            intervals = [getattr(row, f"{key}_ci95") for row in record.rows]
            right.errorbar(values, points, yerr=_bars(points, intervals), marker=marker, capsize=3, color=colour,
                           label=key)
        right.set(xlabel=record.vary, ylabel="precision, recall", ylim=(-0.02, 1.02))
        for ax in (left, right):
            if record.vary == "sample_steps" and len(values) > 1:
                ax.set_xscale("log")
                ax.minorticks_off()
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.legend()
        held = ", ".join(f"{k}={v}" for k, v in record.set.items())
        fig.suptitle(f"{record.name}: {record.entry} re-sampled over {record.vary}"
                     + (f" ({held})" if held else "") + f", N = {n}")


def nfe_sweep(record: SweepRecord, real: MetricsRecord, stem: Path) -> None:
    """FID against network evaluations per image (an NFE sweep, `vary: nfe`): one line per sampler through its
    points at their own NFE (at or under each target), log-x, with 95 % bootstrap intervals as bars where the
    sweep has them. The real-data floor only at the real row's N, as in `sweep`."""
    n = record.rows[0].n_samples
    samplers = list(dict.fromkeys(str(row.sampler) for row in record.rows))
    with figure(stem, figsize=(5.2, 3.6)) as (_, ax):
        for colour, (sampler, marker) in enumerate(zip(samplers, "os^Dv<>p")):
            rows = sorted((row for row in record.rows if row.sampler == sampler), key=lambda row: row.value)
            fids = [row.fid for row in rows]
            ax.errorbar([row.network_evaluations for row in rows], fids,
                        yerr=_bars(fids, [row.fid_ci95 for row in rows]), marker=marker, capsize=3,
                        color=f"C{colour}", label=sampler)
        if n == real.n_samples:
            ax.axhline(real.fid, ls="--", color=REAL_COLOUR, label="real data")
        ax.set_xscale("log")
        ax.minorticks_off()
        targets = sorted({row.value for row in record.rows})
        ax.set_xticks(targets, [f"{v:g}" for v in targets])
        ax.set(xlabel="network evaluations per image (NFE)", ylabel=f"FID (N = {n})")
        ax.legend()
        held = ", ".join(f"{k}={v}" for k, v in record.set.items())
        ax.set_title(f"{record.name}: {record.entry}, FID against NFE" + (f" ({held})" if held else ""))


def _bars(points: list[float], intervals: list[list[float] | None]) -> np.ndarray | None:
    """Error bars [below; above] from the 95 % intervals, or None when a row has none."""
    if any(interval is None for interval in intervals):
        return None
    return np.array([[max(p - lo, 0.0), max(hi - p, 0.0)] for p, (lo, hi) in zip(points, intervals)]).T
