"""What `genbench bench` prints, and its rows in docs/benchmarks.md: one markdown table under one heading, a
dated row per run.

The columns are defined once, here, so the header in the file and every row written later agree; a table under
the heading whose header differs (an older layout, a hand edit) is refused before a run starts rather than
extended with rows that no longer line up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from genbench.components.bench.bench import BenchResult, Rate
from genbench.components.common.io import atomic_path

HEADING = "## `genbench bench`"


def _number(value: float | None, digits: int = 3) -> str:
    """3 significant digits, or – for a figure this run did not measure."""
    return "–" if value is None else f"{value:.{digits}g}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _rate(rate: Rate | None) -> str:
    return "–" if rate is None else _number(rate.images_per_s)


def _sizes(r: BenchResult) -> str:
    s = r.sizes
    return (f"base {r.arch['base_channels']}, batch {s.batch_size}, T {r.sample.ddpm_steps}, DDIM "
            f"{r.sample.ddim_steps}, n {s.sample_n}, features {s.feature_n} by {s.feature_batch}, matmul "
            f"{s.matmul_size}, median of {s.repeats} after {s.warmup} warm-up")


def _peak_kind(r: BenchResult) -> str:
    return "vendor" if r.peak.kind == "vendor" else f"measured {r.peak.matmul_dtype}"


def _goals(r: BenchResult) -> str:
    judged = [goal for goal in r.goals if goal.judged]
    return f"{sum(goal.met for goal in judged)}/{len(judged)} met" if judged else "not judged here"


COLUMNS: list[tuple[str, Callable[[BenchResult], str]]] = [
    ("date", lambda r: r.date),
    ("device", lambda r: r.device_name),
    ("torch", lambda r: r.torch),
    ("fast path", lambda r: r.fast_path),
    ("train img/s eager fp32", lambda r: _rate(r.train.eager_fp32)),
    ("train img/s fast", lambda r: "= eager" if r.train.fast is None else _rate(r.train.fast)),
    ("fast ×", lambda r: _ratio(r.train.speedup)),
    ("train GFLOP/img", lambda r: _number(r.train.flops_per_step / r.sizes.batch_size / 1e9)),
    ("train MFU eager / fast", lambda r: f"{_percent(r.train.eager_fp32.mfu)} / "
                                         f"{_percent(None if r.train.fast is None else r.train.fast.mfu)}"),
    ("sample img/s DDPM", lambda r: _rate(r.sample.ddpm)),
    ("sample img/s DDIM", lambda r: _rate(r.sample.ddim)),
    ("DDIM ×", lambda r: _ratio(r.sample.speedup)),
    ("sample MFU DDPM / DDIM", lambda r: f"{_percent(r.sample.ddpm.mfu)} / {_percent(r.sample.ddim.mfu)}"),
    ("FID img/s peer", lambda r: _rate(r.features.peer)),
    ("FID img/s ours fp32", lambda r: _rate(r.features.ours_fp32)),
    ("ours ×", lambda r: _ratio(r.features.speedup_fp32)),
    ("FID img/s ours bf16", lambda r: "skipped: bf16 emulated" if "features_ours_bf16" in r.skipped
     else _rate(r.features.ours_bf16)),
    ("bf16 ×", lambda r: _ratio(r.features.speedup_bf16)),
    ("peak TFLOP/s", lambda r: f"{_number(r.peak.flops_per_s / 1e12)} ({_peak_kind(r)})"),
    ("H100 goals", _goals),
    ("sizes", _sizes),
]  # fmt: skip


def _cells(values: list[str]) -> str:
    return "| " + " | ".join(value.replace("|", "\\|") for value in values) + " |"


def header() -> list[str]:
    """The table's header and its alignment line (figures right-aligned)."""
    titles = [title for title, _ in COLUMNS]
    return [_cells(titles), "|" + "|".join("---" if i < 4 or i >= len(titles) - 2 else "---:"
                                          for i in range(len(titles))) + "|"]


def row(result: BenchResult) -> str:
    return _cells([cell(result) for _, cell in COLUMNS])


def _section(lines: list[str]) -> tuple[int, int] | None:
    """(heading index, end index) of the bench section, or None when the file has none."""
    if HEADING not in lines:
        return None
    start = lines.index(HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))), len(lines))
    return start, end


def _table_start(lines: list[str], section: tuple[int, int]) -> int | None:
    return next((i for i in range(*section) if lines[i].startswith("|")), None)


def check_table(path: Path) -> None:
    """ValueError when `path`'s bench section holds a table with other columns than `header()`."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    section = _section(lines)
    start = None if section is None else _table_start(lines, section)
    if start is not None and lines[start] != header()[0]:
        raise ValueError(f"{path}: the table under {HEADING} has other columns than this genbench writes; rename "
                         f"that heading to keep the old rows, or pass another file with --out. Expected: "
                         f"{header()[0]}")


def append_row(path: Path, result: BenchResult) -> None:
    """Add `result`'s row at the end of the bench table in `path` (heading and header first if missing),
    written atomically; every other line of the file is kept."""
    path = Path(path)
    check_table(path)
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    section = _section(lines)
    if section is None:
        block = ["", HEADING, "", *header(), row(result)] if lines else [HEADING, "", *header(), row(result)]
        lines += block
    else:
        start = _table_start(lines, section)
        if start is None:  # heading without a table: the table goes after the section's text
            end = section[1]
            while end > section[0] + 1 and not lines[end - 1].strip():
                end -= 1
            lines[end:end] = ["", *header(), row(result)]
        else:
            end = start
            while end < section[1] and lines[end].startswith("|"):
                end += 1
            lines.insert(end, row(result))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def summary(result: BenchResult) -> list[str]:
    """The run in a few lines, goals, skipped phases and notes last."""
    t, s, f, p = result.train, result.sample, result.features, result.peak
    peer = ("no peer" if f.peer is None else
            f"peer {_number(f.peer.images_per_s)} img/s, ours {_ratio(f.speedup_fp32)} (features differ by "
            f"{f.difference:.1e})")
    bf16 = "" if f.ours_bf16 is None else f", ours bf16 {_number(f.ours_bf16.images_per_s)} img/s"
    fast = ("the fast path is eager fp32 here" if t.fast is None else
            f"fast {_number(t.fast.images_per_s)} img/s ({_ratio(t.speedup)})")
    lines = [
        f"{result.device_name}, torch {result.torch}; DDPM of profile {result.profile} ({result.parameters:,} "
        f"parameters); fast path: {result.fast_path}",
        f"peak {_number(p.flops_per_s / 1e12)} TFLOP/s ({p.kind}: {p.source}); a {p.matmul_dtype} {p.matmul_size}-"
        f"matmul ran at {_number(p.matmul_flops_per_s / 1e12)} TFLOP/s here",
        f"train: eager fp32 {_number(t.eager_fp32.images_per_s)} img/s, {fast}; {_number(t.flops_per_step / 1e9)} "
        f"GFLOP/step; MFU {_percent(t.eager_fp32.mfu)} / {_percent(None if t.fast is None else t.fast.mfu)}",
        f"sample: DDPM {s.ddpm_steps} steps {_number(s.ddpm.images_per_s)} img/s, DDIM {s.ddim_steps} steps "
        f"{_number(s.ddim.images_per_s)} img/s ({_ratio(s.speedup)}); MFU {_percent(s.ddpm.mfu)} / "
        f"{_percent(s.ddim.mfu)}",
        f"FID features: ours fp32 {_number(f.ours_fp32.images_per_s)} img/s{bf16}; {peer}",
    ]
    lines += [f"goal: {g.goal}: {_number(g.value)} {'met' if g.met else 'not met'}"
              + ("" if g.judged else " (not judged here)") for g in result.goals]
    lines += [f"skipped: {phase}: {reason}" for phase, reason in result.skipped.items()]
    return lines + [f"note: {note}" for note in result.notes]
