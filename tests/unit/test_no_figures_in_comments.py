"""No measured figure in a comment or docstring: comments say why, figures live in docs/benchmarks.md.

A figure quoted in code drifts: the same bf16 FID deviation was once quoted four ways in four files. This test
reads the `#` comments (tokenize) and docstrings (ast) of the Python packages, and the comments of
params.yaml, dvc.yaml and infra/, and fails listing file:line for every phrase that reads as a measurement: a
percentage, a duration, a speed ratio, a throughput, an FID value, a before → after change or an interval of
decimals. Run it as a script to list the hits:

    uv run python -m tests.unit.test_no_figures_in_comments
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_ROOTS = ("components", "models", "flows", "genbench")
COMMENTED_FILES = ("params.yaml", "dvc.yaml")
INFRA = "infra"
INFRA_COMMENTS = {".yml": "#", ".yaml": "#", ".sh": "#", ".Dockerfile": "#", ".example": "#", ".sql": "--"}

NUMBER = r"(?<![\w.])(?<!\w-)\d+(?:[.,]\d+)?"  # not the 10 of CIFAR-10 or of v1.10
PATTERNS: dict[str, re.Pattern[str]] = {
    "percentage": re.compile(rf"{NUMBER}\s?%"),
    "duration": re.compile(rf"{NUMBER}\s?(?:ms|µs|us|s|sec|secs|seconds?|min|mins|minutes?|h|hours?)\b"),
    # 2.4× or 2.4x, but not a size (28×28, 1024 x 10000), a hex literal (0x1F) or a product (3 × 64)
    "speed ratio": re.compile(rf"{NUMBER}\s?[×x](?![\w×*])(?!\s?\d)|{NUMBER} times (?:faster|slower|as fast)"),
    "throughput": re.compile(rf"{NUMBER}\s?(?:img|images?|samples?|it|steps?)\s?(?:/\s?s\b|per second)"),
    "FID value": re.compile(rf"\bFID(?: of| =| ≈| ~|:)?\s?\d+(?:\.\d+)?(?![\w.])(?!\s?%)|{NUMBER}\s?FID\b"),
    # a measured change or interval: 170.8 → 147.3, [107.8, 119.5]
    "before → after": re.compile(r"\d+\.\d+\s?→\s?\d+\.\d+"),
    "interval": re.compile(r"\[\s?\d+\.\d+,\s?\d+\.\d+\s?\]"),
}

# Phrases that match a pattern without being a measurement, as regular expressions over the comment or the
# whole docstring (so a phrase may wrap onto the next line). A hit is let through only where it lies inside one
# of them; the patterns themselves stay as strict as they are. Keep this list short, each with its reason.
ALLOWED: dict[str, str] = {
    # the confidence level of an interval: a property of the method, not a measured figure
    r"95\s?%\s+(?:bootstrap\s+)?(?:interval|half-width)": "the confidence level of an interval",
}


def _python_texts(path: Path) -> list[tuple[int, str]]:
    """(first line, text) of every `#` comment and every docstring (whole) in a Python file."""
    source = path.read_text()
    texts = [(token.start[0], token.string)
             for token in tokenize.generate_tokens(io.StringIO(source).readline)
             if token.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                texts.append((body[0].lineno, body[0].value.value))
    return sorted(texts)


def _line_comments(path: Path, marker: str = "#") -> list[tuple[int, str]]:
    """(line, text) of the comments of a YAML, shell, SQL or Dockerfile: from `marker` at the start of a line or
    after a blank, outside quotes, to the end of the line."""
    texts = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        quote = None
        for i, char in enumerate(line):
            if quote:
                quote = None if char == quote else quote
            elif char in "'\"":
                quote = char
            elif line.startswith(marker, i) and (i == 0 or line[i - 1] in " \t"):
                texts.append((number, line[i:]))
                break
    return texts


def sources() -> list[tuple[Path, list[tuple[int, str]]]]:
    found = []
    for root in PYTHON_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            found.append((path, _python_texts(path)))
    for name in COMMENTED_FILES:
        found.append((REPO / name, _line_comments(REPO / name)))
    for path in sorted((REPO / INFRA).rglob("*")):
        marker = next((m for suffix, m in INFRA_COMMENTS.items() if path.name.endswith(suffix)), None)
        if path.is_file() and marker:
            found.append((path, _line_comments(path, marker)))
    return found


def _allowed(text: str, start: int, end: int) -> bool:
    return any(match.start() <= start and end <= match.end()
               for phrase in ALLOWED for match in re.finditer(phrase, text, re.IGNORECASE))


def figures(text: str) -> list[tuple[int, str, str]]:
    """(offset, kind, matched text) of each measured-looking figure in a comment or docstring."""
    hits = []
    for kind, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            if not _allowed(text, match.start(), match.end()):
                hits.append((match.start(), kind, match.group()))
    return sorted(hits)


def hits() -> list[str]:
    """`file:line: [kind 'figure'] the line` for every hit in the repository."""
    found = []
    for path, texts in sources():
        for first, text in texts:
            lines = text.splitlines()
            for offset, kind, figure in figures(text):
                at = text.count("\n", 0, offset)
                found.append(f"{path.relative_to(REPO)}:{first + at}: [{kind} {figure!r}] {lines[at].strip()}")
    return found


@pytest.mark.parametrize(("text", "kind"), [
    ("bf16 moves FID by -1.01 % here", "percentage"),
    ("a curve point costs 13 s on CPU", "duration"),
    ("takes 213 ms/step", "duration"),
    ("3 minutes on 2 cores", "duration"),
    ("the rebuilt network is 1.5× the peer", "speed ratio"),
    ("about 2.4x faster", "speed ratio"),
    ("runs at 10.7 img/s", "throughput"),
    ("33 images/s in bf16", "throughput"),
    ("quick run: FID 93.49", "FID value"),
    ("costs a DCGAN ~14 FID points", "FID value"),
    ("vae 600 → 2400 steps: 170.8 → 147.3", "before → after"),
    ("ddpm 95.4, raw [107.8, 119.5]", "interval"),
])
def test_the_patterns_catch_measurements(text: str, kind: str) -> None:
    assert kind in [found for _, found, _ in figures(text)]


@pytest.mark.parametrize("text", [
    "each value carries its 95 % interval",
    "moved beyond both 95 %\n    intervals",
    "images 28×28, a 3x3 kernel, 0x1F, a 1024 x 10000 block",
    "N × H × W × C uint8",
    "seed 0, 300 steps, batch 64",
    "the FID network, FID of the samples",
    "every 2000 steps; 10 000 samples",
    "Ho et al.'s best CIFAR-10 FID",
])
def test_the_patterns_leave_other_numbers_alone(text: str) -> None:
    assert figures(text) == []


def test_no_measured_figure_in_comments_or_docstrings() -> None:
    found = hits()
    assert not found, ("measured figures in comments or docstrings (put them in docs/benchmarks.md and say why "
                       "instead):\n" + "\n".join(found))


if __name__ == "__main__":
    print("\n".join(hits()) or "no measured figures in comments")
