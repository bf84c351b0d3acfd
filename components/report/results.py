"""The comparison tables: one row per entry (mean ± std over its seeds, or the bootstrap interval of one seed),
the real-data floor first, written as CSV, markdown and booktabs LaTeX.

Two kinds of file, so that a rerun is byte-identical where it can be:
  results.{csv,md,tex}  quality and what is fixed by the params: metrics, parameter count, network evaluations
                        per image, the data manifest's md5 and the git commit. Identical for identical runs.
  cost.{csv,md,tex}     what was measured: training time and throughput, device-hours and the device(s), sampling
                        time per image and throughput, device-hours to reach an FID on the FID curve. Differs run
                        to run, as wall time does.
  runs.csv              one row per (entry, seed): its MLflow run id and registered version, the dvc.lock hash
                        of its train/sample/evaluate stages, weights sha256, samples md5 and timings.
Spread: with several seeds, the sample standard deviation (numpy's std with ddof=1) of the per-seed values;
with one seed, the 95 % bootstrap interval of FID, precision and recall (`evaluate.bootstrap`), when computed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the tables are plain functions of the records report.py reads
    from genbench.components.common.artifacts import TrainSummary
    from genbench.components.common.records import CurveRecord, MetricsRecord, Protocol, SampleRecord

REAL_LABEL = "real data (held-out images)"
REAL_TEST_LABEL = "real data (test split)"  # the paper protocol's floor: its reference is the whole training split


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
    protocol: Protocol | None = None  # what every number of the row was measured under (all its seeds agree)
    sampling: str = ""  # the sampler settings its samples were drawn with
    warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)  # metric key → what its metrics file warned

    @property
    def label(self) -> str:
        return self.name if self.family in (self.name, "real") else f"{self.name} ({self.family})"


def entry_row(entry: str, family: str, seeds: tuple[int, ...], metrics: list[MetricsRecord],
              summaries: list[TrainSummary], samples: list[SampleRecord], runs: list[dict[str, Any]],
              sampling: str = "") -> Row:
    """An entry's row from its per-seed metrics, training summaries, sample records and run provenance;
    `sampling` says how its samples were drawn."""
    check_protocols({f"{entry} seed {seed}": record.protocol for seed, record in zip(seeds, metrics)})
    return Row(entry, family, seeds, {m.key: Stat.of(metrics, m.key) for m in METRICS},
               metrics[0].n_samples, metrics[0].n_reference, summaries[0].num_parameters,
               samples[0].network_evaluations, runs, metrics[0].protocol, sampling, metric_warnings(metrics))


def real_row(metrics: MetricsRecord) -> Row:
    label = REAL_TEST_LABEL if metrics.protocol.name == "paper" else REAL_LABEL
    return Row(label, "real", (), {m.key: Stat.of([metrics], m.key) for m in METRICS}, metrics.n_samples,
               metrics.n_reference, protocol=metrics.protocol, warnings=metric_warnings([metrics]))


def metric_warnings(metrics: list[MetricsRecord]) -> dict[str, tuple[str, ...]]:
    """What the metrics files warned, by the table column it qualifies (KID's own, the rest FID's), and why IS is
    missing where it is: shown beside those numbers."""
    found: dict[str, dict[str, None]] = {}  # ordered sets
    for record in metrics:
        for text in record.warnings:
            if "intra-class" not in text:  # those go beside the intra-class table
                found.setdefault("kid_mean" if "KID" in text else "fid", {})[text] = None
        if record.inception_score is None and record.inception_score_unavailable:
            found.setdefault("inception_score", {})[f"IS: {record.inception_score_unavailable}"] = None
    return {key: tuple(texts) for key, texts in found.items()}


def check_protocols(protocols: Mapping[str, Protocol | None]) -> None:
    """ValueError naming the rows unless all were measured under one protocol (N aside): FIDs of two protocols
    differ by more than most gaps between models, so one table must never hold both."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    described: dict[tuple[Any, ...], str] = {}
    for name, protocol in protocols.items():
        key = protocol.comparable() if protocol is not None else ("not recorded",)
        groups.setdefault(key, []).append(name)
        described[key] = protocol.describe() if protocol is not None else "no protocol recorded (an older record)"
    if len(groups) > 1:
        lines = "; ".join(f"{', '.join(names)}: {described[key]}" for key, names in groups.items())
        raise ValueError(f"rows scored under different protocols cannot share a table ({lines}); score them all "
                         "under one evaluate.protocol (re-run `genbench evaluate` for the odd ones)")


SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def numbered_notes(rows: list[Row]) -> tuple[dict[tuple[str, str], int], list[str]]:
    """A note number per (row name, metric key) whose metrics file warned, and the notes in number order: rows
    that share a warning share its number."""
    notes: list[str] = []
    marks: dict[tuple[str, str], int] = {}
    for row in ordered(rows):
        for key, texts in row.warnings.items():
            text = "; ".join(texts)
            if text not in notes:
                notes.append(text)
            marks[(row.name, key)] = notes.index(text) + 1
    return marks, notes


def protocol_line(rows: list[Row]) -> str:
    """The protocol every row shares (`check_protocols` has held), stated under each table."""
    protocol = next((row.protocol for row in rows if row.protocol is not None), None)
    return protocol.describe() if protocol is not None else "protocol not recorded"


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


def _marked(text: str, mark: int | None, tex: bool = False) -> str:
    if mark is None:
        return text
    return f"{text}$^{{{mark}}}$" if tex else f"{text} {str(mark).translate(SUPERSCRIPTS)}"


def _floor(rows: list[Row]) -> str:
    paper = any(row.protocol is not None and row.protocol.name == "paper" for row in rows)
    return ("The first row is the test split's real images against the same reference: the floor of this protocol."
            if paper else "The first row is real images held out of training and model selection, scored like the "
            "samples: the floor at this N.")


def _sizes(rows: list[Row]) -> str:
    models = sorted({row.n_samples for row in rows if row.family != "real"})
    real = [row.n_samples for row in rows if row.family == "real"]
    text = f"N = {', '.join(map(str, models)) or '–'} generated images per model row"
    return text + (f", {real[0]} real images in the first" if real else "")


def results_markdown(rows: list[Row], provenance: dict[str, str]) -> str:
    marks, notes = numbered_notes(rows)
    header = ["model", "seeds", *(f"{m.label} {m.better}" for m in METRICS), "parameters", "NFE"]
    lines = [_md_row(header), "|" + "---|" * 2 + "---:|" * (len(METRICS) + 2)]
    for row in ordered(rows):
        lines.append(_md_row([
            row.label, ", ".join(map(str, row.seeds)) or "–",
            *(_marked(_cell(row.stats[m.key], m), marks.get((row.name, m.key))) for m in METRICS),
            f"{row.num_parameters:,}" if row.num_parameters is not None else "not a model",
            str(row.network_evaluations) if row.network_evaluations is not None else "–",
        ]))
    protocol = protocol_line(rows)
    lines += ["", f"{protocol[0].upper()}{protocol[1:]}. {_sizes(rows)}. {spread_note(rows)} NFE: network evaluations "
              f"per image. {_floor(rows)} Data manifest md5 `{provenance['data_manifest_md5']}`, git commit "
              f"`{provenance['git_commit']}`."]
    sampled = [row for row in ordered(rows) if row.family != "real"]
    if sampled:
        lines += ["", "Sampling, per model row:", "", *(f"- {row.label}: {row.sampling}" for row in sampled)]
    if notes:
        lines += ["", "What the metrics warned, by the mark beside each number:", "",
                  *(f"{number}. {text}" for number, text in enumerate(notes, 1))]
    return "\n".join(lines) + "\n"


def results_latex(rows: list[Row], provenance: dict[str, str]) -> str:
    """A booktabs table float, ready for `\\input` (needs `\\usepackage{booktabs}`)."""
    marks, notes = numbered_notes(rows)
    columns = "l" + "r" * (len(METRICS) + 2)
    arrows = {"↓": r"$\downarrow$", "↑": r"$\uparrow$"}
    header = ["Model", *(f"{_tex(m.label)} {arrows[m.better]}" for m in METRICS), "Params", "NFE"]
    body = []
    for row in ordered(rows):
        params = f"{row.num_parameters / 1e6:.2f}M" if row.num_parameters is not None else "--"
        body.append(" & ".join([_tex(row.label), *(_marked(_cell(row.stats[m.key], m, tex=True).replace("–", "--"),
                                                           marks.get((row.name, m.key)), tex=True)
                                                   for m in METRICS),
                                params, str(row.network_evaluations or "--")]) + r" \\")
        if row.family == "real":
            body.append(r"\midrule")
    sampling = "; ".join(f"{row.label}: {row.sampling}" for row in ordered(rows) if row.family != "real")
    caption = (f"Sample quality, {_sizes(rows)}; {protocol_line(rows)}. {spread_note(rows)} {_floor(rows)} "
               f"Sampling: {sampling}. " + " ".join(f"{number}: {text}" for number, text in enumerate(notes, 1))
               + f" Data manifest md5 {provenance['data_manifest_md5'][:12]}, commit {provenance['git_commit'][:12]}.")
    return "\n".join([
        "% genbench results; needs \\usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small",
        f"\\caption{{{_tex(caption.replace('`', ''))}}}", r"\label{tab:genbench-results}",
        f"\\begin{{tabular}}{{{columns}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])


COST_HEADER = ["name", "device", "train_steps", "train_seconds", "images_per_second", "device_hours",
               "sample_seconds_per_image", "sample_images_per_second", "network_evaluations", "fid_target",
               "fid_target_n", "device_hours_to_fid_target"]


def fid_targets(curves: Mapping[str, Sequence[CurveRecord]]) -> dict[tuple[int, str, str], float]:
    """The FID each group of comparable FID curves is timed to: per protocol (images per point, the validation
    images' md5, the FID network's dtype), the highest FID any of its curves ends at. Every curve then reaches it
    within its run, so each entry's time to it compares how soon the entries got to one quality; no number has to be
    chosen by hand per profile and dataset (one set too low leaves cells empty), and none of a curve at another N is
    compared with it (FID is biased in N)."""
    targets: dict[tuple[int, str, str], float] = {}
    for runs in curves.values():
        for curve in runs:
            if curve.points:
                key = (curve.n, curve.reference_md5, curve.dtype)
                targets[key] = max(targets.get(key, curve.points[-1].fid), curve.points[-1].fid)
    return targets


def cost_rows(rows: list[Row], curves: Mapping[str, Sequence[CurveRecord]] | None = None) -> list[dict[str, Any]]:
    """Measured cost per entry: mean training seconds and images per second, device-hours (wall time × processes)
    summed over its seeds, mean sampling time per image and images per second, and from `curves` (entry → the FID
    curve of each seed, as `fid-curve` wrote them) one run's device-hours to reach the FID target of `fid_targets`
    (mean over the seeds): the compute a quality cost, as papers report it, which grows with a slower run. The run's
    device-hours × the first step whose curve point is at or under the target ÷ its steps (training runs at a steady
    rate; the curve itself is a stage of its own, not in them). Empty cells: no curve, or runs from before images/s
    was recorded."""
    curves = curves or {}
    targets = fid_targets(curves)
    out = []
    for row in ordered(rows):
        if row.family == "real":
            continue
        seconds = [run["train_seconds"] for run in row.runs]
        device_seconds = [run["device_seconds"] for run in row.runs]
        throughput = [run["images_per_second"] for run in row.runs]
        per_image = float(np.mean([run["sample_seconds_per_image"] for run in row.runs]))
        processes = row.runs[0]["processes"]
        measured = [curve for curve in curves.get(row.name, ()) if curve.points]
        target = n = to_target = None
        if measured and len(measured) == len(row.runs):
            target, n = targets[(measured[0].n, measured[0].reference_md5, measured[0].dtype)], measured[0].n
            reached = [next((point.step for point in curve.points if point.fid <= target), None) for curve in measured]
            if None not in reached:  # a curve of another protocol than its seeds' first is not timed to its target
                to_target = float(np.mean([run["device_seconds"] * step / run["train_steps"]
                                           for run, step in zip(row.runs, reached)])) / 3600
        out.append({
            "name": row.name,
            "device": row.runs[0]["device_name"] if processes == 1 else f"{processes} × {row.runs[0]['device_name']}",
            "train_steps": row.runs[0]["train_steps"], "train_seconds": float(np.mean(seconds)),
            "images_per_second": float(np.mean(throughput)) if None not in throughput else None,
            "device_hours": float(np.sum(device_seconds)) / 3600,
            "sample_seconds_per_image": per_image,
            "sample_images_per_second": 1.0 / per_image if per_image > 0 else None,
            "network_evaluations": row.network_evaluations,
            "fid_target": target, "fid_target_n": n, "device_hours_to_fid_target": to_target,
        })
    return out


def cost_csv(costs: list[dict[str, Any]]) -> str:
    return _csv([COST_HEADER, *([("" if c[k] is None else c[k]) for k in COST_HEADER] for c in costs)])


def _target_header(costs: list[dict[str, Any]], tex: bool = False) -> tuple[str, bool]:
    """The time-to-FID column's title, and whether each cell must name its own target (curves at several N)."""
    targets = {(c["fid_target"], c["fid_target_n"]) for c in costs if c["fid_target"] is not None}
    le = r"$\leq$" if tex else "≤"
    if len(targets) == 1:
        ((fid, n),) = targets
        return f"device-hours to FID {le} {fid:.1f} (curve, N = {n})", False
    return "device-hours to the curve's FID target", len(targets) > 1


def _to_target(c: dict[str, Any], own: bool, digits: int, tex: bool = False) -> str:
    if c["device_hours_to_fid_target"] is None:
        return "--" if tex else "–"
    le = r"$\leq$" if tex else "≤"
    text = f"{c['device_hours_to_fid_target']:.{digits}f}"
    return text + (f" ({le} {c['fid_target']:.1f}, N = {c['fid_target_n']})" if own else "")


def _rate(value: float | None, tex: bool = False) -> str:
    """Images per second: whole numbers from 100 up, else three significant digits (a DDPM samples a few a second)."""
    if value is None:
        return "--" if tex else "–"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def cost_notes(costs: list[dict[str, Any]]) -> list[str]:
    """What the cost table's columns mean, and how to fill an empty time-to-FID cell."""
    notes = ["Measured wall time: it differs from run to run and machine to machine. So can the quality table, where "
             "`evaluate.dtype: auto` scores in bf16 on hosts with native bf16 (AMX, avx512-bf16) and fp32 elsewhere "
             "(each metrics file records its `inception_dtype`). Images/s: training images per second of training "
             "(the FID curve is a stage of its own, not in it), and images per second of the sample stage at the NFE "
             "shown. Device-hours: wall time × processes (`N × device` under torchrun), summed over the seeds.",
             "Device-hours to FID ≤ X: one run's device-hours (mean over the seeds) until its FID curve first "
             "reached X, taken as the run's device-hours × that step ÷ its steps. The curve scores the EMA weights "
             "against the validation split at its own N, not the quality table's protocol, so X compares only "
             "between curves at that N; X is the highest FID a curve of that N ends at, so every such entry reaches "
             "it within its run."]
    missing = [c["name"] for c in costs if c["fid_target"] is None]
    if missing:
        notes.append(f"–: no FID curve for {', '.join(missing)}; set `models.<entry>.train.fid_every` (training "
                     "steps between curve points, each of `train.fid_n` images) above 0 and run its `fid-curve` "
                     "stage to time it.")
    return notes


def cost_markdown(costs: list[dict[str, Any]]) -> str:
    header, own = _target_header(costs)
    lines = ["| model | device | steps | train time | train images/s | sampling images/s | device-hours (all seeds) "
             f"| NFE | {header} |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in costs:
        lines.append(f"| {c['name']} | {c['device']} | {c['train_steps']} | {c['train_seconds']:.0f} s "
                     f"| {_rate(c['images_per_second'])} | {_rate(c['sample_images_per_second'])} "
                     f"| {c['device_hours']:.4f} | {c['network_evaluations']} | {_to_target(c, own, 4)} |")
    for note in cost_notes(costs):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def cost_latex(costs: list[dict[str, Any]]) -> str:
    header, own = _target_header(costs, tex=True)
    body = [" & ".join([_tex(c["name"]), _tex(c["device"]), str(c["train_steps"]), f"{c['device_hours']:.3f}",
                        _rate(c["images_per_second"], tex=True), _rate(c["sample_images_per_second"], tex=True),
                        str(c["network_evaluations"]), _to_target(c, own, 3, tex=True)]) + r" \\"
            for c in costs]
    caption = ("Training and sampling cost (measured wall time; device-hours summed over the seeds). Images/s: "
               "training and sampling throughput. Device-hours to a FID: one run's, until its FID curve (EMA "
               "weights against the validation split) first reached the highest FID any curve at that N ends at; "
               "-- where the entry has no curve (train.fid_every).")
    return "\n".join([
        "% genbench cost (measured wall time); needs \\usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{_tex(caption)}}}",
        r"\label{tab:genbench-cost}", r"\begin{tabular}{llrrrrrr}", r"\toprule",
        f"Model & Device & Steps & Device-hours & Train img/s & Sample img/s & NFE & {_cap(header)} \\\\",
        r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


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
