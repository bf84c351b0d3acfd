"""Stage 6: the comparison people read — a markdown table, a sample grid per family and the loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..layout import REAL, Layout
from .artifacts import curves as group_curves
from .artifacts import load_trained, read_history, read_summary, to_model_range, to_uint8_nhwc
from .io import atomic_path, load_npy, read_json, require_file, write_json

GRID_IMAGES = 64
REAL_LABEL = "real data (held-out images)"
LOSS_PANELS_PER_ROW = 4


def report(families: list[str], layout: Layout, out_dir: Path, sweeps: list[str] | None = None) -> Path:
    """Write report.md, summary.json, grids/<family>.png, grids/reference.png and losses.png to out_dir from the
    project `layout`'s samples, metrics and runs, with the real-data row (metrics/real.json) as the floor the
    families are read against; grids/vae_interpolation.png when the vae is among `families`, fid_curve.png
    when a run measured an FID curve (`train.fid_every`), and a table and sweeps.png for the `sweeps` that
    sampled any value. Returns report.md's path."""
    out_dir = Path(out_dir)
    swept = [read_json(require_file(layout.sweep_summary(name), f"genbench sweep {name}")) for name in sweeps or []]
    swept = [record for record in swept if record["rows"]]
    for family in families:
        require_file(layout.samples(family), f"genbench sample {family}")
        require_file(layout.metrics(family), f"genbench evaluate {family}")
    real = _real_row(read_json(require_file(layout.metrics(REAL), f"genbench evaluate {REAL}")))
    metrics = {family: read_json(layout.metrics(family)) for family in families}
    rows = [_row(family, metrics[family], read_summary(layout.run(family)).model_dump()) for family in families]
    reference = load_npy(layout.reference)
    save_grid(reference, out_dir / "grids" / "reference.png")
    for family in families:
        save_grid(load_npy(layout.samples(family)), out_dir / "grids" / f"{family}.png")
    curves = {family: group_curves(read_history(layout.run(family))) for family in families}
    _plot_losses(curves, out_dir / "losses.png")
    fid_curves = plot_fid_curves(curves, out_dir / "fid_curve.png")
    if "vae" in families:
        save_interpolation(layout.run("vae"), reference, out_dir / "grids" / "vae_interpolation.png")
    if swept:
        _plot_sweeps(swept, real, out_dir / "sweeps.png")
    write_json(out_dir / "summary.json", {"real_data": real, "families": rows, "sweeps": swept})
    text = _markdown(rows, real, metrics[families[0]] if families else {}, fid_curves) + _sweep_markdown(swept)
    path = out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def save_grid(images: np.ndarray, path: Path, count: int = GRID_IMAGES, zoom: int = 2, nrow: int = 8,
              padding: int = 2) -> None:
    """Tile the first `count` uint8 NHWC images into an `nrow`-wide RGB PNG on white, `padding` pixels apart,
    each pixel shown as zoom×zoom: torchvision's `save_image` layout, in numpy, because importing torchvision
    costs a report process ~10 s on 2 cores."""
    from PIL import Image

    tiles = images[:count].repeat(zoom, axis=1).repeat(zoom, axis=2)
    tiles = np.repeat(tiles, 3, axis=3) if tiles.shape[3] == 1 else tiles
    n, h, w, _ = tiles.shape
    cols, rows = min(nrow, n), -(-n // min(nrow, n))
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[top : top + h, left : left + w] = tile
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="png")


def save_interpolation(run_dir: Path, real: np.ndarray, path: Path, pairs: int = 4, steps: int = 8) -> None:
    """Rows of `steps` images from the trained VAE's latent path between real images 2k and 2k+1, so whether
    the latent space is smooth (every point decodes to a plausible garment) can be seen at a glance."""
    import torch

    from ..models.vae import interpolate

    vae, _ = load_trained(run_dir)
    images = to_model_range(real[: 2 * pairs])
    rows = [interpolate(vae, images[2 * k], images[2 * k + 1], steps) for k in range(len(images) // 2)]
    save_grid(to_uint8_nhwc(torch.cat(rows)), path, count=steps * len(rows), nrow=steps)


def _row(name: str, metrics: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "family": summary["family"],
        "fid": metrics["fid"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "n_samples": metrics["n_samples"],
        "n_reference": metrics["n_reference"],
        "num_parameters": summary["num_parameters"],
        "steps": summary["steps"],
        "train_seconds": summary["seconds"],
        "device": summary["device"],
    }


def _real_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """The real-data row: its metrics, and no model columns (it is not a model)."""
    keys = ("fid", "precision", "recall", "n_samples", "n_reference")
    return {"name": REAL_LABEL, **{key: metrics[key] for key in keys}}


def _label(row: dict[str, Any]) -> str:
    """The entry's name, with its family when it is a named variant."""
    return row["name"] if row["name"] == row["family"] else f"{row['name']} ({row['family']})"


def _markdown(rows: list[dict[str, Any]], real: dict[str, Any], metrics: dict[str, Any], fid_curves: bool) -> str:
    lines = [
        "# genbench report",
        "",
        "| model | FID ↓ | precision ↑ | recall ↑ | samples | reference | parameters | steps | train time | device |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {real['name']} | {real['fid']:.2f} | {real['precision']:.3f} | {real['recall']:.3f} "
        f"| {real['n_samples']} | {real['n_reference']} | not a model | – | – | – |",
    ]
    for r in sorted(rows, key=lambda r: r["fid"]):
        lines.append(
            f"| {_label(r)} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['n_samples']} "
            f"| {r['n_reference']} | {r['num_parameters']:,} | {r['steps']} | {r['train_seconds']:.0f} s "
            f"| {r['device']} |"
        )
    extractor = metrics.get("feature_extractor", {})
    lines += [
        "",
        f"Features: {extractor.get('name', '?')} (sha256 `{extractor.get('sha256', '?')[:16]}…`), "
        f"preprocessing {metrics.get('preprocessing', {})}.",
        "",
        f"The first row is not a model: {real['n_samples']} real images held out from training and model "
        "selection (`data/prepared/holdout.npy`), scored exactly as the samples are. It is what real data scores "
        "at this N, the floor to read every family's numbers against (small N biases FID upward for real data too).",
        "Final numbers are measured against the test-split reference (`data/prepared/reference.npy`); model "
        "selection (the FID curve during training) measures against the validation split held out from the "
        "training images (`data/prepared/validation.npy`).",
    ]
    lines += [f"> {warning}" for warning in metrics.get("warnings", [])]
    lines += ["", "## Samples", "", "Real (reference set):", "", "![reference](grids/reference.png)", ""]
    for r in rows:
        lines += [f"### {_label(r)}", "", f"![{r['name']}](grids/{r['name']}.png)", ""]
    if any(r["name"] == "vae" for r in rows):
        lines += ["### vae: latent interpolation", "",
                  "Each row decodes the straight line between two real images' posterior means.", "",
                  "![vae interpolation](grids/vae_interpolation.png)", ""]
    lines += ["## Training losses", "", "![losses](losses.png)", ""]
    if fid_curves:
        lines += ["## FID during training", "",
                  "EMA weights on fixed seeds (`train.fid_every`, `train.fid_n` images): a trend, comparable only "
                  "within a curve.", "", "![FID curve](fid_curve.png)", ""]
    return "\n".join(lines)


Curves = dict[str, list[tuple[int, float]]]  # history name → [(step, value)]


def _plot_losses(curves: dict[str, Curves], path: Path) -> None:
    """One panel per family with its groups' losses, four panels to a row."""
    plt = _pyplot()
    cols = min(LOSS_PANELS_PER_ROW, len(curves))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (family, series) in zip(axes.flat, curves.items()):
        for name, points in series.items():
            if name.endswith("/loss"):
                ax.plot(*zip(*points), label=name)
        ax.set(title=family, xlabel="step", ylabel="loss")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    _save_figure(plt, fig, path)


def plot_fid_curves(curves: dict[str, Curves], path: Path) -> bool:
    """One FID-vs-step line per family that measured a curve; False (and no file) when none did."""
    measured = {family: series["fid_curve"] for family, series in curves.items() if series.get("fid_curve")}
    if not measured:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for family, points in measured.items():
        ax.plot(*zip(*points), marker="o", label=family)
    ax.set(xlabel="step", ylabel="FID (curve points)", title="FID during training")
    ax.legend(fontsize="small")
    _save_figure(plt, fig, path)
    return True


def _sweep_markdown(swept: list[dict[str, Any]]) -> str:
    """A table per sweep: FID, precision, recall and sampling time per value of the swept setting."""
    if not swept:
        return ""
    lines = ["## Sampling sweeps", "", "The same trained weights re-sampled (same seeds) once per value; "
             "nothing retrained.", ""]
    for record in swept:
        held = ", ".join(f"{k}={v}" for k, v in record["set"].items())
        lines += [f"### {record['name']}: {record['entry']}, {record['vary']}" + (f" ({held})" if held else ""), "",
                  f"| {record['vary']} | FID ↓ | precision ↑ | recall ↑ | samples | sampling s/image |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['value']} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['n_samples']} "
                  f"| {r['seconds_per_image']:.4f} |" for r in record["rows"]]
        lines.append("")
    return "\n".join([*lines, "![sweeps](sweeps.png)", ""])


def _plot_sweeps(swept: list[dict[str, Any]], real: dict[str, Any], path: Path) -> None:
    """FID against the swept value, one panel per sweep, with the real-data floor as a dashed line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(swept), figsize=(4.5 * len(swept), 3.4), squeeze=False)
    for ax, record in zip(axes.flat, swept):
        values = [r["value"] for r in record["rows"]]
        ax.plot(values, [r["fid"] for r in record["rows"]], marker="o", label=record["entry"])
        ax.axhline(real["fid"], linestyle="--", color="grey", label="real data")
        ax.set(title=record["name"], xlabel=record["vary"], ylabel="FID")
        if record["vary"] == "sample_steps" and len(values) > 1:
            ax.set_xscale("log")
        ax.legend(fontsize="small")
    _save_figure(plt, fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
