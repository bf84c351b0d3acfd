"""The comparison tables: one row per entry (mean ± std over its seeds, or the bootstrap interval of one seed),
the real-data floor first, written as CSV, markdown and booktabs LaTeX.

Two kinds of file, so that a rerun is byte-identical where it can be:
  results.{csv,md,tex}  quality and what is fixed by the params: metrics, parameter count, network evaluations
                        per image, the data manifest's md5 and the git commit. Identical for identical runs.
  cost.{csv,md,tex}     what was measured: training time and throughput, device-hours and the device(s), sampling
                        time per image, FID per device-hour. Differs run to run, as wall time does.
  runs.csv              one row per (entry, seed): its MLflow run id and registered version, the dvc.lock hash
                        of its train/sample/evaluate stages, weights sha256, samples md5 and timings.
Spread: with several seeds, the sample standard deviation (numpy's std with ddof=1) of the per-seed values;
with one seed, the 95 % bootstrap interval of FID, precision and recall (`evaluate.bootstrap`), when computed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the tables are plain functions of the records report.py reads
    from genbench.components.common.artifacts import TrainSummary
    from genbench.components.common.records import MetricsRecord, SampleRecord

REAL_LABEL = "real data (held-out images)"


@dataclass(frozen=True)
class Metric:
    key: str  # in metrics/<entry>/seed-<s>.json
    label: str
    better: str  # ↓ or ↑
    digits: int
    scale: float = 1.0  # shown × scale (KID × 10³)


METRICS = (
    Metric("fid", "FID", "↓", 2),
    Metric("kid_mean", "KID ×10³", "↓", 2, 1e3),
    Metric("precision", "precision", "↑", 3),
    Metric("recall", "recall", "↑", 3),
    Metric("density", "density", "↑", 3),
    Metric("coverage", "coverage", "↑", 3),
    Metric("inception_score", "IS", "↑", 2),
)
INTERVALS = {"fid": "fid_ci95", "precision": "precision_ci95", "recall": "recall_ci95"}


@dataclass
class Stat:
    """One metric of one entry over its seeds: the mean, and std (several seeds) or a 95 % interval (one)."""

    mean: float | None
    std: float | None = None
    interval: tuple[float, float] | None = None

    @classmethod
    def of(cls, records: list[MetricsRecord], key: str) -> Stat:
        values = [getattr(record, key) for record in records]
        if any(value is None for value in values):
            return cls(None)
        array = np.asarray(values, dtype=np.float64)
        if len(array) > 1:
            return cls(float(array.mean()), float(array.std(ddof=1)))
        interval = getattr(records[0], INTERVALS[key]) if key in INTERVALS else None
        return cls(float(array[0]), None, tuple(interval) if interval else None)


@dataclass
class Row:
    """One line of the tables: an entry over its seeds, or the real-data floor (`family` "real")."""

    name: str
    family: str
    seeds: tuple[int, ...]
    stats: dict[str, Stat]
    n_samples: int
    n_reference: int
    num_parameters: int | None = None
    network_evaluations: int | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)  # per seed: ids, hashes, timings

    @property
    def label(self) -> str:
        return self.name if self.family in (self.name, "real") else f"{self.name} ({self.family})"


def entry_row(entry: str, family: str, seeds: tuple[int, ...], metrics: list[MetricsRecord],
              summaries: list[TrainSummary], samples: list[SampleRecord], runs: list[dict[str, Any]]) -> Row:
    """An entry's row from its per-seed metrics, training summaries, sample records and run provenance."""
    return Row(entry, family, seeds, {m.key: Stat.of(metrics, m.key) for m in METRICS},
               metrics[0].n_samples, metrics[0].n_reference, summaries[0].num_parameters,
               samples[0].network_evaluations, runs)


def real_row(metrics: MetricsRecord) -> Row:
    return Row(REAL_LABEL, "real", (), {m.key: Stat.of([metrics], m.key) for m in METRICS}, metrics.n_samples,
               metrics.n_reference)


# ------------------------------------------------------------------------------------------------ writing

def results_csv(rows: list[Row], provenance: dict[str, str]) -> str:
    """Full-precision values (repr round-trips), one column per statistic; empty where not defined."""
    header = ["name", "family", "seeds", "n_samples", "n_reference"]
    for m in METRICS:
        header += [f"{m.key}", f"{m.key}_std", f"{m.key}_ci95_low", f"{m.key}_ci95_high"]
    header += ["num_parameters", "network_evaluations", *provenance]
    lines = [header]
    for row in rows:
        cells: list[Any] = [row.name, row.family, " ".join(map(str, row.seeds)), row.n_samples, row.n_reference]
        for m in METRICS:
            stat = row.stats[m.key]
            low, high = stat.interval or (None, None)
            cells += [stat.mean, stat.std, low, high]
        cells += [row.num_parameters, row.network_evaluations, *provenance.values()]
        lines.append(["" if cell is None else repr(cell) if isinstance(cell, float) else cell for cell in cells])
    return _csv(lines)


def _cell(stat: Stat, metric: Metric, tex: bool = False) -> str:
    if stat.mean is None:
        return "–"
    digits, scale = metric.digits, metric.scale
    text = f"{stat.mean * scale:.{digits}f}"
    pm = r"$\pm$" if tex else "±"
    if stat.std is not None:
        text += f" {pm} {stat.std * scale:.{digits}f}"
    elif stat.interval is not None:
        text += f" [{stat.interval[0] * scale:.{digits}f}, {stat.interval[1] * scale:.{digits}f}]"
    return text


def ordered(rows: list[Row]) -> list[Row]:
    """The real-data floor first, then the entries by mean FID."""
    real = [row for row in rows if row.family == "real"]
    models = sorted((row for row in rows if row.family != "real"),
                    key=lambda row: (row.stats["fid"].mean is None, row.stats["fid"].mean or 0.0, row.name))
    return real + models


def spread_note(rows: list[Row]) -> str:
    seeds = {len(row.seeds) for row in rows if row.family != "real"}
    if seeds == {1}:
        return ("One seed: a value is shown with its 95 % bootstrap interval [low, high] over the samples and the "
                "reference (FID, precision, recall; centred on the value), where `evaluate.bootstrap` > 0.")
    return ("Mean ± sample standard deviation (ddof = 1) over the seeds listed; a one-seed row shows its "
            "bootstrap interval.")


def results_markdown(rows: list[Row], provenance: dict[str, str], extractor: str) -> str:
    header = ["model", "seeds", *(f"{m.label} {m.better}" for m in METRICS), "parameters", "NFE"]
    lines = [_md_row(header), "|" + "---|" * 2 + "---:|" * (len(METRICS) + 2)]
    for row in ordered(rows):
        lines.append(_md_row([
            row.label, ", ".join(map(str, row.seeds)) or "–", *(_cell(row.stats[m.key], m) for m in METRICS),
            f"{row.num_parameters:,}" if row.num_parameters is not None else "not a model",
            str(row.network_evaluations) if row.network_evaluations is not None else "–",
        ]))
    n = rows[0].n_samples if rows else 0
    reference = rows[0].n_reference if rows else 0
    lines += ["", f"N = {n} images per set against {reference} reference images (test split); features: {extractor}. "
              f"{spread_note(rows)} NFE: network evaluations per image. The first row is real images held out "
              "of training and model selection, scored like the samples: the floor at this N. Data manifest md5 "
              f"`{provenance['data_manifest_md5']}`, git commit `{provenance['git_commit']}`."]
    return "\n".join(lines) + "\n"


def results_latex(rows: list[Row], provenance: dict[str, str]) -> str:
    """A booktabs table float, ready for `\\input` (needs `\\usepackage{booktabs}`)."""
    columns = "l" + "r" * (len(METRICS) + 2)
    arrows = {"↓": r"$\downarrow$", "↑": r"$\uparrow$"}
    header = ["Model", *(f"{_tex(m.label)} {arrows[m.better]}" for m in METRICS), "Params", "NFE"]
    body = []
    for row in ordered(rows):
        params = f"{row.num_parameters / 1e6:.2f}M" if row.num_parameters is not None else "--"
        body.append(" & ".join([_tex(row.label), *(_cell(row.stats[m.key], m, tex=True).replace("–", "--")
                                                   for m in METRICS),
                                params, str(row.network_evaluations or "--")]) + r" \\")
        if row.family == "real":
            body.append(r"\midrule")
    n = rows[0].n_samples if rows else 0
    caption = (f"Sample quality at N = {n}. {spread_note(rows)} First row: held-out real images, the floor. "
               f"Data manifest md5 {provenance['data_manifest_md5'][:12]}, commit {provenance['git_commit'][:12]}.")
    return "\n".join([
        "% genbench results; needs \\usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small",
        f"\\caption{{{_tex(caption)}}}", r"\label{tab:genbench-results}",
        f"\\begin{{tabular}}{{{columns}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])


COST_HEADER = ["name", "device", "train_steps", "train_seconds", "images_per_second", "device_hours",
               "sample_seconds_per_image", "network_evaluations", "fid_per_device_hour"]


def cost_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """Measured cost per entry: mean training seconds and images per second, device-hours (wall time × processes)
    summed over its seeds, mean sampling time per image, and FID ÷ device-hours of one run (the quality a unit of
    compute bought: read beside FID). Runs from before images/s was recorded leave that cell empty."""
    out = []
    for row in ordered(rows):
        if row.family == "real":
            continue
        seconds = [run["train_seconds"] for run in row.runs]
        device_seconds = [run["device_seconds"] for run in row.runs]
        throughput = [run["images_per_second"] for run in row.runs]
        per_run_hours = float(np.mean(device_seconds)) / 3600
        fid = row.stats["fid"].mean
        processes = row.runs[0]["processes"]
        out.append({
            "name": row.name,
            "device": row.runs[0]["device_name"] if processes == 1 else f"{processes} × {row.runs[0]['device_name']}",
            "train_steps": row.runs[0]["train_steps"], "train_seconds": float(np.mean(seconds)),
            "images_per_second": float(np.mean(throughput)) if None not in throughput else None,
            "device_hours": float(np.sum(device_seconds)) / 3600,
            "sample_seconds_per_image": float(np.mean([run["sample_seconds_per_image"] for run in row.runs])),
            "network_evaluations": row.network_evaluations,
            "fid_per_device_hour": fid / per_run_hours if fid is not None and per_run_hours > 0 else None,
        })
    return out


def cost_csv(costs: list[dict[str, Any]]) -> str:
    return _csv([COST_HEADER, *([("" if c[k] is None else c[k]) for k in COST_HEADER] for c in costs)])


def cost_markdown(costs: list[dict[str, Any]]) -> str:
    lines = ["| model | device | steps | train time | images/s | device-hours (all seeds) | sampling s/image | NFE "
             "| FID per device-hour |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in costs:
        per_hour = f"{c['fid_per_device_hour']:.1f}" if c["fid_per_device_hour"] is not None else "–"
        throughput = f"{c['images_per_second']:.0f}" if c["images_per_second"] is not None else "–"
        lines.append(f"| {c['name']} | {c['device']} | {c['train_steps']} | {c['train_seconds']:.0f} s "
                     f"| {throughput} | {c['device_hours']:.4f} | {c['sample_seconds_per_image']:.4f} "
                     f"| {c['network_evaluations']} | {per_hour} |")
    lines += ["", "Measured wall time: it differs from run to run and machine to machine (the quality table above "
              "does not). Images/s: training images per second of training, FID-curve measurements excluded. "
              "Device-hours: wall time × processes (`N × device` under torchrun), summed over the seeds; FID per "
              "device-hour divides the mean FID by one run's device-hours."]
    return "\n".join(lines) + "\n"


def cost_latex(costs: list[dict[str, Any]]) -> str:
    body = [" & ".join([_tex(c["name"]), _tex(c["device"]), str(c["train_steps"]), f"{c['device_hours']:.3f}",
                        f"{c['sample_seconds_per_image'] * 1e3:.1f}", str(c["network_evaluations"])]) + r" \\"
            for c in costs]
    return "\n".join([
        "% genbench cost (measured wall time); needs \\usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small", r"\caption{Training and sampling cost.}",
        r"\label{tab:genbench-cost}", r"\begin{tabular}{llrrrr}", r"\toprule",
        r"Model & Device & Steps & Device-hours & ms/image & NFE \\", r"\midrule", *body, r"\bottomrule",
        r"\end{tabular}", r"\end{table}", "",
    ])


RUNS_HEADER = ["name", "seed", "mlflow_run_id", "model_name", "model_version", "train_stage", "fid_curve_stage",
               "sample_stage", "evaluate_stage", "weights_sha256", "samples_md5", "fid", "train_seconds", "device_name",
               "sample_seconds_per_image"]


def runs_csv(rows: list[Row]) -> str:
    return _csv([RUNS_HEADER, *([run.get(k, "") for k in RUNS_HEADER] for row in rows for run in row.runs)])


def _csv(lines: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "×": r"$\times$",
               "³": r"$^3$", "±": r"$\pm$", "–": "--", "÷": r"$\div$"}


def _tex(text: str) -> str:
    return "".join(TEX_ESCAPES.get(char, char) for char in text)
