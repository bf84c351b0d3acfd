"""`genbench compare`: two hand-written summary.json files, the interval rule checked against numbers worked out
here (Student t quantiles from a printed table), and the command's table, JSON and exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.report.compare import compare_summaries, format_comparison, half_width
from genbench.components.report.results import REAL_LABEL

T_975 = {2: 4.303, 4: 2.776}  # t_{0.975, df} from a printed table, by degrees of freedom
MD5_A, MD5_B = "a" * 32, "b" * 32


def stat(mean: float | None, std: float | None = None, ci95: list[float] | None = None) -> dict[str, Any]:
    return {"mean": mean, "std": std, "ci95": ci95}


def row(name: str, seeds: list[int], metrics: dict[str, dict[str, Any]], n: int = 1000) -> dict[str, Any]:
    return {"name": name, "family": name, "seeds": seeds, "n_samples": n, "n_reference": 1000,
            "num_parameters": 10, "network_evaluations": 1, "metrics": metrics, "runs": []}


def write(folder: Path, rows: list[dict[str, Any]], md5: str = MD5_A) -> Path:
    folder.mkdir()
    summary = {"provenance": {"data_manifest_md5": md5, "git_commit": "c" * 40}, "rows": rows, "cost": [],
               "sweeps": []}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A and B: ddpm (3 seeds) whose FID moved and precision did not; vae (1 seed, bootstrap intervals) whose
    FID moved and recall did not, density without interval; the real row unchanged; gan only in A, dcgan in B."""
    real = row(REAL_LABEL, [], {"fid": stat(1.0)})
    a = write(tmp_path / "a", [
        row("ddpm", [0, 1, 2], {"fid": stat(10.0, 2.0), "precision": stat(0.50, 0.01)}),
        row("vae", [0], {"fid": stat(50.0, None, [48.0, 53.0]), "recall": stat(0.30, None, [0.28, 0.31]),
                         "density": stat(0.8), "coverage": stat(0.7)}),
        row("gan", [0], {"fid": stat(70.0)}),
        real,
    ])
    b = write(tmp_path / "b", [
        row("ddpm", [0, 1, 2], {"fid": stat(30.0, 2.0), "precision": stat(0.51, 0.01)}),
        row("vae", [0], {"fid": stat(40.0, None, [39.0, 42.0]), "recall": stat(0.32, None, [0.31, 0.35]),
                         "density": stat(0.9), "coverage": stat(0.7)}),
        row("dcgan", [0], {"fid": stat(60.0)}),
        real,
    ], md5=MD5_B)
    return a, b


def test_half_widths_are_student_t_over_seeds_and_the_wider_bootstrap_side_for_one_seed() -> None:
    assert half_width(stat(10.0, 2.0), 3) == pytest.approx(T_975[2] * 2.0 / math.sqrt(3), rel=1e-3)
    assert half_width(stat(10.0, 1.0), 5) == pytest.approx(T_975[4] * 1.0 / math.sqrt(5), rel=1e-3)
    assert half_width(stat(40.0, None, [39.0, 42.0]), 1) == pytest.approx(2.0)  # the upper side is wider
    assert half_width(stat(0.8), 1) is None


def test_changes_are_judged_against_both_intervals(pair: tuple[Path, Path]) -> None:
    result = compare_summaries(*pair)
    changes = {(c.row, c.metric): c for c in result.changes}
    fid = changes["ddpm", "fid"]  # 20 > 2 × 4.303 · 2 / √3 = 9.94
    assert (fid.difference, fid.verdict, fid.direction) == (20.0, "moved", "worse")
    assert fid.half_width_a == pytest.approx(4.303 * 2 / math.sqrt(3), rel=1e-3) == fid.half_width_b
    precision = changes["ddpm", "precision"]  # 0.01 < 2 × 4.303 · 0.01 / √3 = 0.0497
    assert (precision.verdict, precision.direction) == ("within interval", "better")
    vae = changes["vae", "fid"]  # |−10| > 3 + 2 (the wider sides of [48, 53] around 50 and [39, 42] around 40)
    assert (vae.half_width_a, vae.half_width_b) == pytest.approx((3.0, 2.0))
    assert (vae.verdict, vae.direction) == ("moved", "better")
    recall = changes["vae", "recall"]  # 0.02 < 0.02 + 0.03
    assert (recall.half_width_a, recall.half_width_b) == pytest.approx((0.02, 0.03))
    assert recall.verdict == "within interval"
    assert changes["vae", "density"].verdict == "changed (no interval)"
    assert changes["vae", "coverage"].verdict == "same"
    assert changes[REAL_LABEL, "fid"].verdict == "same"  # the real-data row is matched by name too
    assert ("ddpm", "recall") not in changes  # a metric missing on either side is not compared
    assert (result.only_in_a, result.only_in_b, result.moved) == (["gan"], ["dcgan"], 2)
    assert any("different data" in w and MD5_A in w and MD5_B in w for w in result.warnings)


def test_the_table_lists_every_change_and_ends_with_the_count(pair: tuple[Path, Path]) -> None:
    text = format_comparison(compare_summaries(*pair))
    lines = text.splitlines()
    assert lines[2].startswith("warning: different data")  # warned at the top
    ddpm_fid = next(line for line in lines if line.startswith("ddpm") and "FID" in line)
    assert "10.00 ± 4.97" in ddpm_fid and "+20.00" in ddpm_fid and ddpm_fid.endswith("moved ↑ worse")
    assert next(line for line in lines if line.startswith("vae") and "FID" in line).endswith("moved ↓ better")
    assert "only in A: gan" in lines and "only in B: dcgan" in lines
    assert lines[-1] == "2 numbers moved beyond their intervals (of 7 compared)"
    header = next(line for line in lines if line.startswith("row"))
    assert header.index("metric") == ddpm_fid.index("FID")  # aligned columns


def test_different_n_is_warned_and_the_same_data_is_not(tmp_path: Path) -> None:
    a = write(tmp_path / "a", [row("ddpm", [0], {"fid": stat(10.0)}, n=1000)])
    b = write(tmp_path / "b", [row("ddpm", [0], {"fid": stat(10.0)}, n=500)])
    (warning,) = compare_summaries(a, b / "summary.json").warnings  # a path to summary.json itself works too
    assert warning.startswith("ddpm: N (images scored) 1000 (A) vs 500 (B)")


def test_a_missing_or_foreign_summary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nowhere.*genbench report"):
        compare_summaries(tmp_path / "nowhere", tmp_path / "nowhere")
    (tmp_path / "other.json").write_text('{"fid": 3}')
    with pytest.raises(ValueError, match="other.json is not a genbench summary"):
        compare_summaries(tmp_path / "other.json", tmp_path / "other.json")


def test_cli_prints_the_table_json_and_exit_codes(pair: tuple[Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = map(str, pair)
    table = CliRunner().invoke(app, ["compare", a, b])
    assert table.exit_code == 0, table.output
    assert "moved ↑ worse" in table.stdout and "2 numbers moved beyond their intervals" in table.stdout
    as_json = CliRunner().invoke(app, ["compare", a, b, "--json"])
    record = json.loads(as_json.stdout)
    assert record["moved"] == 2 and record["only_in_b"] == ["dcgan"] and len(record["changes"]) == 7
    assert CliRunner().invoke(app, ["compare", a, b, "--fail-on-move"]).exit_code == 1
    assert CliRunner().invoke(app, ["compare", a, a, "--fail-on-move"]).exit_code == 0
    missing = CliRunner().invoke(app, ["compare", a, str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "missing" in missing.output and "genbench report" in missing.output


def test_git_revisions_with_committed_results_compare(pair: tuple[Path, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A revision stands for its committed results/summary.json; one without it is a clear error."""
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (repo / "README").write_text("no results yet\n")
    git("add", "README")
    git("commit", "-qm", "nothing")
    bare = git("rev-parse", "HEAD")
    for folder, message in zip(pair, ("a", "b")):
        shutil.copytree(folder, repo / "results", dirs_exist_ok=True)
        git("add", "-f", "results")
        git("commit", "-qm", message)
    result = compare_summaries("HEAD~1", "HEAD")
    assert result.moved == 2 and result.a == f"HEAD~1:{'results/summary.json'}"
    with pytest.raises(ValueError, match=f"revision {bare} has no results/summary.json"):
        compare_summaries(bare, "HEAD")
