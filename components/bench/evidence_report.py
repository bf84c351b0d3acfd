"""The markdown `genbench bench --gpu-evidence` writes after every phase: the machine, the training run, the protocol
the FIDs were measured under, and one row per (sampler, NFE). A stopped run's file says how far it got."""

from __future__ import annotations

from genbench.components.bench.evidence import EvidenceResult, samplings


def _bytes(value: int | None) -> str:
    return "–" if value is None else f"{value / 2**30:.3g} GiB"


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _cells(values: list[str]) -> str:
    return "| " + " | ".join(value.replace("|", "\\|") for value in values) + " |"


def table(result: EvidenceResult, command: str) -> str:
    """The run as markdown: a heading with the machine, the state, then the phases' figures and every scored row."""
    settings = result.settings
    done, planned = len(result.rows), len(samplings(settings))
    state = "complete" if result.complete else f"stopped or still running: {done} of {planned} settings scored"
    model = f"profile {result.profile}'s ddpm" + ("" if result.parameters is None else
                                                  f" ({result.parameters:,} parameters)")
    lines = [f"### GPU evidence: {result.device_name}, torch {result.torch}, {result.date}", "",
             f"`{command}` ({state}); {model}.", ""]
    lines += [_cells(["phase", "what", "seconds", "images/s", "MFU", "peak memory"]), "|---|---|---:|---:|---:|---:|"]
    if result.peak is not None:
        p = result.peak
        measured = "" if p.kind == "measured" else (f"; a {p.matmul_dtype} {p.matmul_size}² product ran at "
                                                    f"{p.matmul_flops_per_s / 1e12:.3g} TFLOP/s here")
        lines.append(_cells(["peak", f"MFU against {p.flops_per_s / 1e12:.4g} TFLOP/s, {p.kind}: {p.source}{measured}",
                             "–", "–", "–", "–"]))
    if result.train is not None:
        t = result.train
        lines.append(_cells([
            "training", f"{t.minutes:g} min: {t.steps:,} steps of {t.batch_size}, {t.path}, "
                        f"{t.flops_per_step / t.batch_size / 1e9:.3g} GFLOP/image, final loss {t.final_loss:.4g}",
            f"{t.seconds:.0f}", f"{t.images_per_s:.4g}", _percent(t.mfu), _bytes(t.peak_memory)]))
    if result.reference_seconds is not None:
        reference = "" if result.protocol is None else f" ({result.protocol.reference_size:,} images)"
        lines.append(_cells(["FID reference", f"features of the reference{reference}, cached",
                             f"{result.reference_seconds:.0f}", "–", "–", "–"]))
    lines.append("")
    if result.protocol is not None:
        lines += [f"FID-{result.protocol.n_generated:,} ({result.protocol.n_generated:,} generated images per row), "
                  f"{result.protocol.describe()}; sampling in fp32.", ""]
    lines += [_cells(["sampler", "steps", "NFE", "FID", "precision", "recall", "sample img/s", "sample MFU",
                      "peak memory", "sample s", "score s"]), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result.rows:
        lines.append(_cells([row.sampler, str(row.steps), str(row.nfe), f"{row.fid:.2f}", f"{row.precision:.3f}",
                             f"{row.recall:.3f}", f"{row.images_per_s:.4g}", _percent(row.mfu),
                             _bytes(row.peak_memory), f"{row.sample_seconds:.0f}", f"{row.score_seconds:.0f}"]))
    warnings = sorted({warning for row in result.rows for warning in row.warnings})
    lines += [""] + [f"- note: {note}" for note in result.notes] + [f"- warning: {warning}" for warning in warnings]
    return "\n".join(lines).rstrip() + "\n"
