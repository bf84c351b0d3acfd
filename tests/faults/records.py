"""Fault records: one JSON line per fault a test injected, for docs/reliability.md (`reliability_report.py`).

A record says what was done to the system and how it came out: {fault, kind, tried, survived, lost, detail, made_by,
verified}.
`tried` counts the injections, `survived` those after which every promise held (a resume gave the same weights,
a bad input left every file as it was, no secret leaked); `lost` says what a try lost even when it survived
(the step in flight, a half-written temporary file). The folder is $GENBENCH_FAULTS_RECORD, else one under
pytest's session tmp (tests/conftest.py `faults_record_dir`), so a test run never writes into tracked files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD_ENV = "GENBENCH_FAULTS_RECORD"
RECORD_FILE = "faults.jsonl"


@dataclass
class FaultRecord:
    fault: str  # what was injected, e.g. "kill -9 during genbench train"
    kind: str  # crash | outage | bad input | hostile file | secret | auth
    tried: int = 1
    survived: int | None = None  # None: decided by the test's outcome (tests/faults/conftest.py)
    lost: str = ""
    detail: str = ""
    made_by: str = ""  # how the fault was made, e.g. "kill -9 of weed (SeaweedFS) at the first PUT of the weights"
    verified: str = ""  # what was checked afterwards, with its counts, e.g. "N objects before, N after, md5 equal"


def append_record(folder: Path, record: FaultRecord) -> Path:
    """Append `record` as one JSON line (a single O_APPEND write, so concurrent writers never interleave)."""
    if record.survived is None or not 0 <= record.survived <= record.tried:
        raise ValueError(f"fault record {record.fault!r}: survived={record.survived} must lie in 0..{record.tried}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(record), sort_keys=True) + "\n"
    descriptor = os.open(folder / RECORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
    return folder / RECORD_FILE


def read_records(folder: Path) -> list[FaultRecord]:
    """Every record under `folder` (each *.jsonl file), in file and line order."""
    records = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(FaultRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a fault record ({exc})") from None
    return records
