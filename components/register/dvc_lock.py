"""Reading dvc.lock, DVC's record of what each stage ran on: plain YAML, no DVC import (components never
import a driver). `register` tags MLflow with the prepared data's hash there, which `dvc pull` fetches by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PREPARE_STAGE = "prepare"  # the stage in dvc.yaml that writes PREPARED
PREPARED = "data/prepared"  # its output folder, as dvc.yaml and dvc.lock spell it


def read_lock(root: Path) -> dict[str, Any]:
    """dvc.lock of the project at `root`, or {} where DVC never ran."""
    path = Path(root) / "dvc.lock"
    return (yaml.load(path.read_text(), Loader=yaml.CSafeLoader) or {}) if path.is_file() else {}


def data_lock_hash(root: Path) -> str | None:
    """The md5 dvc.lock records for data/prepared (stage `prepare`; a folder's ends in `.dir`), or None when
    there is no dvc.lock or it has no such entry (DVC never ran `prepare` here)."""
    stage = (read_lock(root).get("stages") or {}).get(PREPARE_STAGE) or {}
    for out in stage.get("outs") or []:
        if out.get("path") == PREPARED and out.get("md5"):
            return str(out["md5"])
    return None
