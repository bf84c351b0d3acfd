"""Stage 6: `results/`, the comparison a thesis chapter cites, rebuilt from the files the other stages wrote.

    results.{csv,md,tex}, cost.{csv,md,tex}, runs.csv   the tables (components/report/results.py says which is which)
    summary.json                                        every row's statistics and provenance (`genbench compare`)
    figures/<name>.{png,pdf}                            samples, losses, fid_curve, precision_recall,
                                                        vae_interpolation, ddpm_trajectory, sweep_<name>
    grids/<name>.png                                    each entry's first 64 samples (its first seed), magnified twice
    index.html                                          one offline page: the tables and every figure, embedded

The folder is assembled beside the old one and swapped in whole (`io.atomic_dir`), so a killed report never leaves
a mix, and the next report removes what a kill left of its temporary folders.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from genbench.components.common.artifacts import curves as group_curves
from genbench.components.common.artifacts import load_trained, read_history, read_summary, to_model_range, to_uint8_nhwc
from genbench.components.common.drawing import image_labels
from genbench.components.common.io import (
    atomic_dir,
    clean_leftovers,
    file_digest,
    load_npy,
    require_file,
    write_json,
)
from genbench.components.common.records import (
    IntraClassFID,
    MetricsRecord,
    SampleRecord,
    SweepRecord,
    SweepRow,
    curve_rows,
    read_curve,
    read_metrics,
    read_provenance,
    read_register_record,
    read_sample_record,
    read_sweep,
)
from genbench.components.common.run_logging import git_commit
from genbench.components.common.stage import At
from genbench.components.report import figures
from genbench.components.report import results as tables
from genbench.config import NFE, Config
from genbench.layout import REAL, Layout
from genbench.models import family as family_spec

GRID_IMAGES = 64
CLASS_GRID_IMAGES = 8  # columns of the per-class grid of a class-conditional entry
TRAJECTORY_IMAGES = 3
TRAJECTORY_COLUMNS = 6
INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 4, 8


def report(config: Config, layout: Layout, out_dir: Path) -> Path:
    """Write results/ for `config.entries` × `config.seeds` and `config.sweeps` from `layout`'s files; returns
    index.html's path. Every input is checked before anything is written."""
    out_dir = Path(out_dir)
    rows = [_entry(entry, config, layout) for entry in config.entries]
    real_metrics = read_metrics(require_file(layout.real_metrics, f"genbench evaluate {REAL}"))
    rows.append(tables.real_row(real_metrics))
    swept = [read_sweep(require_file(layout.sweep_summary(name), f"genbench sweep {name}")) for name in config.sweeps]
    swept = [record for record in swept if record.rows]
    provenance = {"data_manifest_md5": file_digest(require_file(layout.manifest, "genbench prepare")),
                  "git_commit": git_commit(layout.root)}
    intra = {(entry, seed): scored.intra_class_fid for entry in config.entries for seed in config.seeds
             if (scored := read_metrics(layout.metrics(entry, seed))).intra_class_fid is not None}
    curves = {entry: [read_curve(path) for seed in config.seeds if (path := layout.curve(entry, seed)).exists()]
              for entry in config.entries}  # an entry trained without one may have none (`curve_rows`)
    tables.check_protocols({row.label: row.protocol for row in rows})  # one table, one protocol

    clean_leftovers(out_dir.parent, out_dir.name)
    with atomic_dir(out_dir) as staging:
        costs = tables.cost_rows(rows, curves)
        text = {
            "results.csv": tables.results_csv(rows, provenance),
            "results.md": tables.results_markdown(rows, provenance) + _sweep_markdown(swept)
            + _intra_class_markdown(intra, tables.protocol_line(rows)),
            "results.tex": tables.results_latex(rows, provenance),
            "cost.csv": tables.cost_csv(costs),
            "cost.md": tables.cost_markdown(costs),
            "cost.tex": tables.cost_latex(costs),
            "runs.csv": tables.runs_csv(rows),
        }
        for name, content in text.items():
            (staging / name).write_text(content)
        write_json(staging / "summary.json", _summary(rows, provenance, swept, costs))
        shown = _figures(config, layout, rows, real_metrics, swept, sorted({entry for entry, _ in intra}), staging)
        (staging / "index.html").write_text(_index(text, shown, staging))
    return out_dir / "index.html"


def _entry(entry: str, config: Config, layout: Layout) -> tables.Row:
    """An entry's row from its runs under every seed (each file checked, naming the command that makes it), with
    the provenance hash each of its stages recorded."""
    metrics, summaries, samples, runs = [], [], [], []
    for seed in config.seeds:
        where = f"{entry} --seed {seed}"
        summary = read_summary(layout.run(entry, seed))
        sample_path = require_file(layout.samples(entry, seed), f"genbench sample {where}")
        record = read_sample_record(require_file(sample_path.with_suffix(".json"), f"genbench sample {where}"))
        result = read_metrics(require_file(layout.metrics(entry, seed), f"genbench evaluate {where}"))
        registry = layout.registry(entry, seed)
        registered = read_register_record(registry) if registry.exists() else None
        metrics.append(result)
        summaries.append(summary)
        samples.append(record)
        hashes = {stage: _stage_hash(layout.provenance(stage, At(entry, seed).label))
                  for stage in ("train", "fid-curve", "sample", "evaluate")}
        runs.append({
            "name": entry, "seed": seed, "mlflow_run_id": registered.run_id if registered else "",
            "model_name": registered.model_name if registered else "",
            "model_version": registered.version if registered else "",
            "train_stage": hashes["train"], "fid_curve_stage": hashes["fid-curve"], "sample_stage": hashes["sample"],
            "evaluate_stage": hashes["evaluate"],
            "weights_sha256": record.weights_sha256, "samples_md5": result.samples_md5,
            "fid": result.fid, "train_seconds": summary.seconds, "train_steps": summary.steps,
            "device_name": summary.device_name or summary.device, "processes": summary.processes,
            "device_seconds": summary.device_seconds, "images_per_second": summary.images_per_second,
            "sample_seconds_per_image": record.seconds / record.n,
        })
    return tables.entry_row(entry, config.entry(entry).family, config.seeds, metrics, summaries, samples, runs,
                            _sampling_text(samples[0]))


def _sampling_text(record: SampleRecord) -> str:
    """How a sample record's images were drawn, in the words of its sampler: the options that sampler reads
    (those it ignores are left out), guidance included, and which weights."""
    written = {key: value for key, value in record.sampling.items() if key != "family"}  # the record's, not a setting
    settings = family_spec(record.family).sampling.model_validate(written)
    sampler, options = settings.sampler_call()
    shown = [f"{name} {value}" for name, value in options.items() if value is not None]
    weights = "EMA weights" if record.sampling.get("ema", True) else "raw weights"
    return ", ".join([f"sampler {sampler}", *shown, weights])


def _stage_hash(path: Path) -> str:
    """The hash a stage recorded of its code, params and inputs; "" where it was run outside any driver."""
    return read_provenance(path).hash if path.exists() else ""


def _summary(rows: list[tables.Row], provenance: dict[str, str], swept: list[SweepRecord],
             costs: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(value: tables.Stat) -> dict[str, Any]:
        return {"mean": value.mean, "std": value.std, "ci95": list(value.interval) if value.interval else None}

    return {
        "provenance": provenance,
        "rows": [{"name": row.name, "family": row.family, "seeds": list(row.seeds), "n_samples": row.n_samples,
                  "n_reference": row.n_reference, "num_parameters": row.num_parameters,
                  "network_evaluations": row.network_evaluations,
                  "metrics": {key: stat(value) for key, value in row.stats.items()},
                  "runs": row.runs} for row in rows],
        "cost": costs,
        "sweeps": [record.model_dump(mode="json") for record in swept],
    }


def _figures(config: Config, layout: Layout, rows: list[tables.Row], real: MetricsRecord,
             swept: list[SweepRecord], conditional: list[str], out: Path) -> list[tuple[str, str, str]]:
    """Every figure the inputs allow; returns (file stem, title, caption) of each, in reading order.
    `conditional`: the entries scored class by class, which get a grid per class."""
    shown: list[tuple[str, str, str]] = []
    fig_dir, grid_dir = out / "figures", out / "grids"
    fig_dir.mkdir()
    grid_dir.mkdir()
    first = config.seeds[0]
    reference = load_npy(layout.reference)
    grids = {"real (reference)": figures.tile(reference[:GRID_IMAGES])}
    figures.save_png(figures.tile(reference[:GRID_IMAGES], zoom=2), grid_dir / "reference.png")
    for name in config.entries:
        images = load_npy(layout.samples(name, first))[:GRID_IMAGES]
        grids[name] = figures.tile(images)
        figures.save_png(figures.tile(images, zoom=2), grid_dir / f"{name}.png")
    figures.samples(grids, fig_dir / "samples")
    shown.append(("samples", "Samples", f"The first {GRID_IMAGES} images of each entry (seed {first}; image i from "
                  "the same noise seed in every entry) beside real reference images."))

    for name in conditional:
        images = load_npy(layout.samples(name, first))
        classes = read_sample_record(layout.sample_record(name, first)).num_classes
        labels = image_labels(range(len(images)), classes).numpy()  # as `sample` drew them
        per_class = [images[labels == c][:CLASS_GRID_IMAGES] for c in range(classes)]
        if min(len(row) for row in per_class) == CLASS_GRID_IMAGES:
            figures.image_rows(per_class, [f"class {c}" for c in range(classes)],
                               [str(i) for i in range(CLASS_GRID_IMAGES)], f"{name}: samples per class",
                               fig_dir / f"classes_{name}")
            shown.append((f"classes_{name}", f"{name}: samples per class", f"The first {CLASS_GRID_IMAGES} images "
                          f"of each class (seed {first}; image i has class i % {classes}); the intra-class FID "
                          "table scores each row against the real images of its class."))

    points = {}
    for row in tables.ordered(rows):
        p, r = row.stats["precision"], row.stats["recall"]
        points[row.label] = {"precision": p.mean, "recall": r.mean, "real": row.family == "real",
                             "precision_err": _error_bar(p), "recall_err": _error_bar(r)}
    figures.precision_recall(points, fig_dir / "precision_recall")
    shown.append(("precision_recall", "Precision and recall",
                  "Each entry's improved precision and recall (k = "
                  f"{real.k}); bars: the spread the table gives. The star is real held-out data."))

    history = {name: [group_curves(read_history(layout.run(name, seed))
                                   + curve_rows(layout.curve(name, seed), bool(config.entry(name).train.fid_every)))
                      for seed in config.seeds] for name in config.entries}
    if figures.fid_curves(history, fig_dir / "fid_curve"):
        shown.append(("fid_curve", "FID during training", "EMA weights on fixed seeds against the validation "
                      "split (never the test split): what model selection sees. Comparable only within a curve."))

    vae = next((name for name in config.entries if config.entry(name).family == "vae"), None)
    if vae is not None:
        _interpolation(layout.run(vae, first), reference, fig_dir / "vae_interpolation")
        shown.append(("vae_interpolation", f"{vae}: latent interpolation", "Each row decodes the straight line "
                      "between the posterior means of two real reference images; the ends are reconstructions."))

    ddpm = next((name for name in config.entries if config.entry(name).family == "ddpm"), None)
    if ddpm is not None:
        _trajectory(ddpm, config, layout.run(ddpm, first), first, fig_dir / "ddpm_trajectory")
        shown.append(("ddpm_trajectory", f"{ddpm}: denoising trajectory", "Ancestral sampling of the first "
                      f"{TRAJECTORY_IMAGES} images: x_t (upper row of each pair) and the network's estimate of x0 "
                      "(lower row) at the timesteps shown."))

    for record in swept:
        if record.vary == NFE:
            figures.nfe_sweep(record, real, fig_dir / f"sweep_{record.name}")
            shown.append((f"sweep_{record.name}", f"Sweep {record.name}: FID against NFE", f"{record.entry}'s "
                          f"weights (seed {first}) re-sampled by each sampler at the most steps within each NFE "
                          "target (the ticks), nothing retrained; bars: 95 % bootstrap intervals; dashed: real data, "
                          "drawn only when the sweep scores as many images as the table (FID rises at small N)."))
            continue
        figures.sweep(record, real, fig_dir / f"sweep_{record.name}")
        shown.append((f"sweep_{record.name}", f"Sweep {record.name}", f"{record.entry}'s weights (seed "
                      f"{first}) re-sampled once per {record.vary}, nothing retrained; dashed: real data, drawn only when the "
                      "sweep scores as many images as the table (FID rises at small N)."))

    figures.losses(history, fig_dir / "losses")
    shown.append(("losses", "Training losses", "Per-step losses of each entry; the first seed bold, the others "
                  "thin."))
    return shown


def _error_bar(stat: tables.Stat) -> list[float] | None:
    """[below, above] the mean: the std, or the interval's distances."""
    if stat.mean is None:
        return None
    if stat.std is not None:
        return [stat.std, stat.std]
    if stat.interval is not None:
        return [max(stat.mean - stat.interval[0], 0.0), max(stat.interval[1] - stat.mean, 0.0)]
    return None


def _interpolation(run_dir: Path, reference: np.ndarray, stem: Path) -> None:
    import torch

    from genbench.models.vae import interpolate

    vae, _ = load_trained(run_dir)
    images = to_model_range(reference[: 2 * INTERPOLATION_PAIRS])
    with torch.no_grad():
        rows = [to_uint8_nhwc(interpolate(vae, images[2 * k], images[2 * k + 1], INTERPOLATION_STEPS))
                for k in range(INTERPOLATION_PAIRS)]
    weights = [f"{w:.2f}" for w in np.linspace(0, 1, INTERPOLATION_STEPS)]
    figures.image_rows(rows, [f"pair {k + 1}" for k in range(len(rows))], [f"α={w}" for w in weights],
                       "VAE latent interpolation", stem)


def _trajectory(entry: str, config: Config, run_dir: Path, seed: int, stem: Path) -> None:
    """x_t and the x0 estimate along the ancestral path, from the images' own sample generators."""
    from genbench.components.common.drawing import image_generator, image_labels
    from genbench.models.samplers import trajectory

    model, _ = load_trained(run_dir)
    steps = model.schedule.timesteps
    times = sorted({round(t) for t in np.linspace(steps - 1, 0, TRAJECTORY_COLUMNS)}, reverse=True)
    variance = getattr(config.sampling_for(entry), "variance_type", "fixed_large")
    indices = range(TRAJECTORY_IMAGES)
    path = trajectory(model, [image_generator(seed, i) for i in indices], times,
                      image_labels(indices, model.num_classes), variance)
    rows, labels = [], []
    for i in indices:
        rows += [np.stack([to_uint8_nhwc(x_t[i : i + 1])[0] for _, x_t, _ in path]),
                 np.stack([to_uint8_nhwc(x0[i : i + 1])[0] for _, _, x0 in path])]
        labels += [f"#{i} x_t", f"#{i} x0 est."]
    figures.image_rows(rows, labels, [f"t = {t}" for t, _, _ in path], f"{entry}: ancestral sampling, T = {steps}",
                       stem)


def _sweep_markdown(swept: list[SweepRecord]) -> str:
    """A table per sweep (FID, precision, recall per value); sampling times are in summary.json."""
    if not swept:
        return ""
    lines = ["", "## Sampling sweeps", "", "The same trained weights (first seed) re-sampled with the same seeds "
             "once per value; nothing retrained. In brackets, 95 % bootstrap intervals where `evaluate.bootstrap` "
             "is on: two values whose intervals overlap are not told apart at this N.", ""]

    def cell(value: float, interval: list[float] | None, digits: int) -> str:
        return f"{value:.{digits}f}" + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")

    for record in swept:
        held = ", ".join(f"{k}={v}" for k, v in record.set.items())
        warned = {id(row): "; ".join(w for w in row.warnings if "KID" not in w and "intra-class" not in w)
                  for row in record.rows}  # what qualifies the FID: the table has no KID column
        notes = list(dict.fromkeys(text for text in warned.values() if text))

        def fid(row: SweepRow) -> str:  # with the mark of what its metrics file warned
            text = warned[id(row)]
            return cell(row.fid, row.fid_ci95, 2) + (f" {notes.index(text) + 1}".translate(tables.SUPERSCRIPTS)
                                                      if text else "")

        if record.vary == NFE:
            lines += _nfe_markdown(record, held, cell, fid)
        else:
            lines += [f"### {record.name}: {record.entry}, {record.vary}" + (f" ({held})" if held else ""), "",
                      f"| {record.vary} | FID ↓ | precision ↑ | recall ↑ | samples |", "|---:|---:|---:|---:|---:|"]
            lines += [f"| {r.value} | {fid(r)} | {cell(r.precision, r.precision_ci95, 3)} | "
                      f"{cell(r.recall, r.recall_ci95, 3)} | {r.n_samples} |" for r in record.rows]
            lines.append("")
        lines += [_sweep_protocol(record), "", *(f"{number}. {text}" for number, text in enumerate(notes, 1))]
        lines += [""] if notes else []
    return "\n".join(lines)


def _sweep_protocol(record: SweepRecord) -> str:
    """What a sweep table's numbers were measured under, stated below it."""
    scored = (record.protocol.describe() if record.protocol is not None
              else "protocol not recorded (a summary from before it was)")
    scored = scored[0].upper() + scored[1:]
    intervals = (f"intervals from {record.bootstrap} bootstrap resamples" if record.bootstrap
                 else "no intervals (evaluate.bootstrap is 0)")
    return f"{scored}; {intervals}."


def _nfe_markdown(record: SweepRecord, held: str, cell: Callable[[float, list[float] | None, int], str],
                  fid: Callable[[SweepRow], str]) -> list[str]:
    """The table of an FID-against-NFE sweep: a row per sampler and NFE target, with the steps that fit it."""
    targets = ", ".join(f"{value:g}" for value in dict.fromkeys(row.value for row in record.rows))
    lines = [f"### {record.name}: {record.entry}, FID against NFE" + (f" ({held})" if held else ""), "",
             f"Each sampler at the most steps whose network evaluations per image (NFE) stay within each target "
             f"({targets}): Heun takes 2 per step but the last, and guidance at w other than 0 and 1 doubles them.",
             "", "| sampler | steps | NFE | FID ↓ | precision ↑ | recall ↑ | samples |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.sampler} | {r.sample_steps} | {r.network_evaluations} | {fid(r)} | "
              f"{cell(r.precision, r.precision_ci95, 3)} | {cell(r.recall, r.recall_ci95, 3)} | {r.n_samples} |"
              for r in record.rows]
    return [*lines, ""]


def _intra_class_markdown(intra: dict[tuple[str, int], IntraClassFID], protocol: str) -> str:
    """A table of FID within each class for the class-conditional entries, with the images per class it used."""
    if not intra:
        return ""
    classes = sorted({c for scored in intra.values() for c in scored.classes})
    lines = ["", "## Intra-class FID", "",
             "FID of each class's samples against the real reference images of that class (Miyato & Koyama 2018), "
             "and its mean over classes; lower is better. It exposes a model that ignores its label or drops a class "
             "while its pooled FID looks fine. Each class has far fewer images than the table above, so these FIDs "
             "sit well above the pooled one and compare only with each other at equal N: indicative, not a "
             f"measurement. Each class against that class's images of the reference; {protocol}.", "",
             "| entry | seed | " + " | ".join(f"class {c}" for c in classes) + " | mean ↓ | images per class |",
             "|---|---:|" + "---:|" * len(classes) + "---:|---|"]
    for (entry, seed), scored in sorted(intra.items()):
        by_class = dict(zip(scored.classes, scored.fid))
        cells = [f"{by_class[c]:.1f}" if c in by_class else "–" for c in classes]
        fake, real = scored.n_samples, scored.n_reference
        sizes = f"{min(fake)}–{max(fake)} vs {min(real)}–{max(real)}"
        lines.append(f"| {entry} | {seed} | " + " | ".join(cells) + f" | {scored.mean:.1f} | {sizes} |")
    return "\n".join(lines) + "\n"


def _index(text: dict[str, str], shown: list[tuple[str, str, str]], out: Path) -> str:
    """One self-contained page: the tables (from the markdown written beside it) and every figure inline."""
    def embedded(stem: str) -> str:
        data = base64.b64encode((out / "figures" / f"{stem}.png").read_bytes()).decode()
        return f'<img alt="{html.escape(stem)}" src="data:image/png;base64,{data}">'

    sections = [
        "<h2>Results</h2>", _markdown_html(text["results.md"]),
        "<h2>Cost</h2>", _markdown_html(text["cost.md"]),
    ]
    for stem, title, caption in shown:
        sections += [f'<figure id="{html.escape(stem)}"><h3>{html.escape(title)}</h3>{embedded(stem)}'
                     f"<figcaption>{html.escape(caption)} "
                     f'(<code>figures/{html.escape(stem)}.pdf</code> for print)</figcaption></figure>']
    return PAGE.format(body="\n".join(sections))


def _markdown_html(markdown: str) -> str:
    """The subset of markdown our tables use: pipe tables, ### headings, paragraphs, `code`."""
    out, table = [], []

    def inline(text: str) -> str:
        parts = html.escape(text).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    def flush() -> None:
        if table:
            head, body = table[0], table[2:]
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("### "):
            out.append(f"<h3>{inline(line[4:])}</h3>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genbench results</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }}
th, td {{ padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ border-bottom: 2px solid #444; }}
figure {{ margin: 2em 0; }} figure img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 13px; max-width: 60em; }}
code {{ background: #f3f3f3; padding: 0 0.25em; }}
</style></head>
<body><h1>genbench results</h1>
{body}
</body></html>
"""
