"""Which numbers moved between two `results/` folders, read from the `summary.json` each report writes.

A rerun never gives the same FID twice, so a bare difference says little: this reports a difference only as
"moved" when it is larger than both results' 95 % intervals together, and warns when the two were scored on
different data or a different number of images, where no interval makes them comparable.

Usage: `genbench compare results/ OTHER/` prints one line per (row, metric) with A, B, the change B − A and a
verdict, then "N numbers moved beyond their intervals"; either argument may be a results folder, its
summary.json, or a git revision whose tree holds `results/summary.json` (results/ is a DVC output kept out of
git; commit it, `git add -f results`, to compare revisions). `--json` prints the same as JSON, and `--fail-on-move` exits 1 when anything moved, so a CI job
can rerun the pipeline and fail when a change to the code shifted a number beyond its noise.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from genbench.components.report.results import METRICS, Metric

SUMMARY = "summary.json"
HINT = "run `genbench report` first"


@dataclass(frozen=True)
class Change:
    """One metric of one row in both results."""

    row: str
    metric: str  # key in components.report.results.METRICS
    a: float
    b: float
    difference: float  # b − a
    half_width_a: float | None  # 95 % half-width; None when that side has no interval
    half_width_b: float | None
    verdict: str  # "moved" | "within interval" | "changed (no interval)" | "same"
    direction: str | None  # "better" | "worse" by the metric's `better` arrow; None when b == a


@dataclass
class Comparison:
    """Everything `genbench compare` reports, in A's row order."""

    a: str  # the summary.json paths read
    b: str
    provenance_a: dict[str, Any]
    provenance_b: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # different data or N: read the changes with care
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    @property
    def moved(self) -> int:
        return sum(change.verdict == "moved" for change in self.changes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "moved": self.moved}


def read_summary(path: Path | str) -> tuple[Path, dict[str, Any]]:
    """The summary.json in folder `path` (or `path` itself) and its content; ValueError naming the path when it
    is missing or is not what `genbench report` writes, so a typo never reads as "nothing moved"."""
    path = Path(path)
    file = path / SUMMARY if path.is_dir() else path
    if not file.is_file():
        text = _at_revision(str(path))
        if text is None:
            raise ValueError(f"{file} not found (nor a git revision); {HINT}")
        file = Path(f"{path}:{COMMITTED}")
    else:
        text = file.read_text()
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not a genbench summary (not JSON: {exc}); {HINT}") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r and isinstance(r.get("metrics"), dict)
                                             for r in rows):
        raise ValueError(f"{file} is not a genbench summary (no rows with a name and metrics); {HINT}")
    return file, data


COMMITTED = "results/summary.json"  # where a revision's tree holds its summary


def _at_revision(revision: str) -> str | None:
    """results/summary.json as committed at `revision` of the git checkout here; None when `revision` is not a
    commit; ValueError when it is one that does not hold the file."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, check=False)

    try:
        if git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode != 0:
            return None
        shown = git("show", f"{revision}:{COMMITTED}")
    except (OSError, subprocess.SubprocessError):
        return None
    if shown.returncode != 0:
        raise ValueError(f"git revision {revision} has no {COMMITTED}: results/ is a DVC output kept out of git; "
                         "commit it there (git add -f results) or compare two results folders")
    return shown.stdout


def half_width(stat: dict[str, Any], seeds: int) -> float | None:
    """The 95 % half-width of one metric of one row: t_{0.975, n−1} · std / √n over n ≥ 2 seeds (the Student t
    interval of the mean), else the larger distance from the mean to an end of its bootstrap interval (one seed;
    the interval need not be symmetric), else None."""
    mean, std, interval = stat.get("mean"), stat.get("std"), stat.get("ci95")
    if std is not None and seeds >= 2:
        return float(student_t.ppf(0.975, seeds - 1)) * float(std) / math.sqrt(seeds)
    if interval is not None and mean is not None:
        low, high = interval
        return max(mean - low, high - mean, 0.0)
    return None


def judge(a: float, b: float, half_a: float | None, half_b: float | None, metric: Metric) -> tuple[str, str | None]:
    """(verdict, direction) of a change from `a` to `b`: "moved" when |b − a| exceeds half_a + half_b (the two
    95 % intervals do not overlap: conservative, since it asks more than a two-sample test would)."""
    difference = b - a
    arrow = "↑" if difference > 0 else "↓"
    direction = None if difference == 0 else "better" if arrow == metric.better else "worse"
    if half_a is None or half_b is None:
        return ("same" if difference == 0 else "changed (no interval)"), direction
    return ("moved" if abs(difference) > half_a + half_b else "within interval"), direction


def compare_summaries(a: Path | str, b: Path | str) -> Comparison:
    """Compare results B against results A, row by row (matched by name, the real-data row included).

    For every metric of `components.report.results.METRICS` with a value on both sides: the difference B − A, and
    whether it moved beyond the intervals. Each side's 95 % half-width is t_{0.975, n−1} · std / √n with n ≥ 2
    seeds (Student t), or, with one seed, the larger distance from the value to an end of its bootstrap
    interval. The number moved when |B − A| > half-width A + half-width B: the intervals do not overlap, a
    conservative test. Where either side has no interval the change is "changed (no interval)" if the values
    differ, else "same". Warns when the data manifest md5 or a row's N (samples, reference images) differ.
    """
    file_a, summary_a = read_summary(a)
    file_b, summary_b = read_summary(b)
    provenance_a, provenance_b = summary_a.get("provenance") or {}, summary_b.get("provenance") or {}
    result = Comparison(str(file_a), str(file_b), provenance_a, provenance_b)
    md5_a, md5_b = provenance_a.get("data_manifest_md5"), provenance_b.get("data_manifest_md5")
    if md5_a != md5_b:
        result.warnings.append(f"different data: manifest md5 {md5_a or 'unknown'} (A) vs {md5_b or 'unknown'} "
                               "(B); the numbers were scored on different images and are not comparable")
    rows_a = {row["name"]: row for row in summary_a["rows"]}
    rows_b = {row["name"]: row for row in summary_b["rows"]}
    result.only_in_a = [name for name in rows_a if name not in rows_b]
    result.only_in_b = [name for name in rows_b if name not in rows_a]
    for name, row_a in rows_a.items():
        row_b = rows_b.get(name)
        if row_b is None:
            continue
        for key, what in (("n_samples", "N (images scored)"), ("n_reference", "reference images")):
            if row_a.get(key) != row_b.get(key):
                result.warnings.append(f"{name}: {what} {row_a.get(key)} (A) vs {row_b.get(key)} (B); FID and "
                                       "KID are biased by N, so their changes are not comparable")
        for metric in METRICS:
            stat_a, stat_b = row_a["metrics"].get(metric.key) or {}, row_b["metrics"].get(metric.key) or {}
            value_a, value_b = stat_a.get("mean"), stat_b.get("mean")
            if not _finite(value_a) or not _finite(value_b):
                continue
            half_a = half_width(stat_a, len(row_a.get("seeds") or ()))
            half_b = half_width(stat_b, len(row_b.get("seeds") or ()))
            verdict, direction = judge(value_a, value_b, half_a, half_b, metric)
            result.changes.append(Change(name, metric.key, value_a, value_b, value_b - value_a, half_a, half_b,
                                         verdict, direction))
    return result


def format_comparison(result: Comparison) -> str:
    """An aligned plain-text table (row, metric, A, B, change, verdict) under the warnings, ending with the
    number that moved; values as the results tables show them (KID × 10³)."""
    metrics = {metric.key: metric for metric in METRICS}
    lines = [f"A: {result.a} ({_provenance(result.provenance_a)})",
             f"B: {result.b} ({_provenance(result.provenance_b)})"]
    lines += [f"warning: {warning}" for warning in result.warnings]
    lines += ["A, B: value ± 95 % half-width (Student t over seeds, or one seed's bootstrap interval); "
              "moved: |B − A| > the two half-widths summed", ""]
    table = [("row", "metric", "A", "B", "change", "verdict")]
    for change in result.changes:
        metric = metrics[change.metric]
        verdict = change.verdict
        if verdict == "moved":
            verdict = f"moved {'↑' if change.difference > 0 else '↓'} {change.direction}"
        table.append((change.row, metric.label, _value(change.a, change.half_width_a, metric),
                      _value(change.b, change.half_width_b, metric),
                      f"{change.difference * metric.scale:+.{metric.digits}f}", verdict))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = [cell.ljust(w) if i in (0, 1, 5) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(cells).rstrip())
    if result.only_in_a:
        lines.append(f"only in A: {', '.join(result.only_in_a)}")
    if result.only_in_b:
        lines.append(f"only in B: {', '.join(result.only_in_b)}")
    moved = result.moved
    lines.append(f"{moved} {'number' if moved == 1 else 'numbers'} moved beyond their intervals "
                 f"(of {len(result.changes)} compared)")
    return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _value(mean: float, half: float | None, metric: Metric) -> str:
    text = f"{mean * metric.scale:.{metric.digits}f}"
    return text if half is None else f"{text} ± {half * metric.scale:.{metric.digits}f}"


def _provenance(provenance: dict[str, Any]) -> str:
    md5, commit = provenance.get("data_manifest_md5"), provenance.get("git_commit")
    return f"data md5 {str(md5)[:12] if md5 else 'unknown'}, commit {str(commit)[:12] if commit else 'unknown'}"
