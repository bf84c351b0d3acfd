"""Reading dvc.lock, DVC's record of what each stage ran on: plain YAML, no DVC import (components never
import a driver). The report cites each run's stage hashes; `register` tags MLflow with the data's hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

PREPARE_STAGE = "prepare"  # the stage in dvc.yaml that writes PREPARED
PREPARED = "data/prepared"  # its output folder, as dvc.yaml and dvc.lock spell it


def read_lock(root: Path) -> dict[str, Any]:
    """dvc.lock of the project at `root`, or {} where DVC never ran."""
    path = Path(root) / "dvc.lock"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def stage_hash(lock: dict[str, Any], stage: str) -> str:
    """The first 12 hex digits of the sha256 of `stage`'s dvc.lock entry (its command, dep and param values and
    output hashes); "" when DVC did not run it (the Prefect flow)."""
    entry = (lock.get("stages") or {}).get(stage)
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12] if entry else ""


def data_lock_hash(root: Path) -> str | None:
    """The md5 dvc.lock records for data/prepared (stage `prepare`; a folder's ends in `.dir`), or None when
    there is no dvc.lock or it has no such entry (DVC never ran `prepare` here)."""
    stage = (read_lock(root).get("stages") or {}).get(PREPARE_STAGE) or {}
    for out in stage.get("outs") or []:
        if out.get("path") == PREPARED and out.get("md5"):
            return str(out["md5"])
    return None
