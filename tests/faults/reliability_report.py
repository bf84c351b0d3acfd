"""docs/reliability.md from the fault tests' own records, never by hand.

    GENBENCH_FAULTS_RECORD=/tmp/faults uv run pytest -m "faults or server"
    uv run python -m tests.faults.reliability_report --records /tmp/faults --out docs/reliability.md

The page says when, from which commit and from how many records it was made, totals what was tried and what
survived (an xfail case counts as not survived), and lists every record as the test wrote it: how the fault was
made, what was verified afterwards, what was lost.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from genbench.components.common.io import atomic_write

from .records import RECORD_ENV, FaultRecord, read_records

REPO = Path(__file__).resolve().parents[2]
COMMAND = "uv run python -m tests.faults.reliability_report --records DIR --out docs/reliability.md"
KIND_ORDER = ("crash", "outage", "hostile file", "secret", "auth", "bad input")  # the long table of inputs last


def cell(text: object) -> str:
    """A markdown table cell: one line, pipes escaped, terminal colour codes dropped."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(text)).split()).replace("|", "\\|")


def render(records: list[FaultRecord], generated: str, commit: str) -> str:
    """The page: header, totals, a row per kind, then a row per record, by kind (`KIND_ORDER`), as written."""
    if not records:
        raise ValueError("no fault records: run the faults tier with GENBENCH_FAULTS_RECORD set first")
    records = sorted(records, key=lambda r: KIND_ORDER.index(r.kind) if r.kind in KIND_ORDER else len(KIND_ORDER))
    tried, survived = sum(r.tried for r in records), sum(r.survived for r in records)
    kinds: dict[str, list[FaultRecord]] = defaultdict(list)
    for record in records:
        kinds[record.kind].append(record)
    lines = [
        "# Reliability",
        "",
        f"Generated {generated} at commit `{commit}` by `{COMMAND}` from {len(records)} records that the fault tests "
        f"wrote (`tests/faults/`, and the stack's authentication test in `tests/services/`; `{RECORD_ENV}` names "
        "their folder). Do not edit: run the tier and the command again. `tried` counts injected faults, "
        "`survived` those after which every promise held; a case that waits for another branch (xfail) counts as "
        "not survived.",
        "",
        f"**Total: {survived} of {tried} faults survived** ({tried - survived} not), in {len(records)} records.",
        "",
        "| kind | records | tried | survived |",
        "|---|---:|---:|---:|",
        *(f"| {cell(kind)} | {len(group)} | {sum(r.tried for r in group)} | {sum(r.survived for r in group)} |"
          for kind, group in kinds.items()),
        "",
        "Each fault below: how the test made it (which real process it killed, which input it planted), what it",
        "checked afterwards, what the tries lost, and what it saw.",
        "",
        "| fault | kind | made by | tried | survived | verified afterwards | lost | detail |",
        "|---|---|---|---:|---:|---|---|---|",
        *(f"| {cell(r.fault)} | {cell(r.kind)} | {cell(r.made_by or 'not recorded')} | {r.tried} | {r.survived} "
          f"| {cell(r.verified or 'not recorded')} | {cell(r.lost)} | {cell(r.detail)} |" for r in records),
    ]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, required=True, help=f"the folder {RECORD_ENV} named")
    parser.add_argument("--out", type=Path, required=True, help="the page to write, e.g. docs/reliability.md")
    args = parser.parse_args(argv)
    try:
        if not args.records.is_dir():
            raise FileNotFoundError(f"{args.records}: no such folder of fault records")
        generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        page = render(read_records(args.records), generated, _commit())
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write(args.out, lambda handle: handle.write(page.encode()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
