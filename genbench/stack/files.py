"""Where the stack keeps its state under a project (`.genbench/stack/`, git-ignored) and how it writes the files
that hold secrets: owner-only from the first byte."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def stack_dir(root: Path) -> Path:
    return Path(root) / ".genbench" / "stack"


def stack_file(root: Path) -> Path:
    """The running stack: pids, URLs and the clients' environment (credentials included); gone after `down`."""
    return stack_dir(root) / "stack.json"


def keys_file(folder: Path) -> Path:
    """The generated S3 keys and PostgreSQL passwords, kept across `down`/`up` with the data they guard."""
    return folder / "keys.json"


def read_stack(root: Path) -> dict[str, Any] | None:
    path = stack_file(root)
    return json.loads(path.read_text()) if path.exists() else None


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, from the first byte (chmod after writing leaves a gap), and
    atomically: a reader sees the old file or the new one."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    partial.replace(path)


def stack_keys(folder: Path) -> dict[str, str]:
    """The stack's generated secrets, made on the first start and read back on every later one: the data on disk
    (buckets, databases) stays readable with the keys that wrote it."""
    path = keys_file(folder)
    keys = json.loads(path.read_text()) if path.exists() else {}
    wanted = {  # hex: safe in URLs and config files without quoting
        "s3_access_key": lambda: f"genbench{secrets.token_hex(6)}",
        "s3_secret_key": lambda: secrets.token_hex(24),
        "postgres_password": lambda: secrets.token_hex(24),  # the cluster's superuser, `postgres`
        "mlflow_db_password": lambda: secrets.token_hex(24),
        "prefect_db_password": lambda: secrets.token_hex(24),
    }
    missing = {name: make() for name, make in wanted.items() if name not in keys}
    if missing or not path.exists():
        keys |= missing
        write_private(path, json.dumps(keys, indent=2))
    return keys
