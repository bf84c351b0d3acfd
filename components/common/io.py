"""Atomic file writes and content hashes shared by every stage.

A stage that dies mid-write must never leave a file that looks complete: everything is written to a
temporary file in the target folder (`.NAME.XXXX.tmp`) and renamed over the target in one step; a folder
(results/) is built beside its target and swapped in. A kill can still leave those temporary names behind:
the stage that owns the folder removes them on its next run (`clean_leftovers`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty folder beside `path`; swap it in as `path` only if the block succeeds: the old folder is
    renamed away, the new one renamed in, then the old one deleted. `path` is thus always the old set or the new
    one, never a mix (a stop between the two renames leaves neither under `path`, both under temporary names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    old = staging.with_name(f"{staging.name.removesuffix('.tmp')}.old.tmp")
    try:
        yield staging
        if path.exists():
            os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def clean_leftovers(folder: Path, *names: str) -> None:
    """Remove the temporary files and folders that killed atomic writes of `names` (all names when none are given)
    left in `folder`. Called by the stage that owns them before it writes: only it writes those names there, so
    nothing removed is still being written."""
    folder = Path(folder)
    for pattern in [f".{name}.*.tmp" for name in names] or [".*.tmp"]:
        for leftover in folder.glob(pattern):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(fileobj)` on a temporary file and publish it as `path` when it returns."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: Path, data: Any) -> None:
    """Write pretty, key-sorted JSON atomically (stable bytes, so DVC hashes only change with content)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: Path) -> Any:
    """A JSON file's data; ValueError naming the file when it is truncated or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); it is truncated or damaged: write it again with the "
                         "stage that made it") from None


def save_npy(path: Path, array: np.ndarray) -> None:
    """Save an array as .npy atomically."""
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def load_npy(path: Path) -> np.ndarray:
    """Load a .npy file without ever unpickling objects from it; ValueError naming the file, on one line, when it
    is truncated or not a .npy (numpy's own error names neither the file nor the fix)."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{path}: not a readable .npy file ({reason}); it is truncated or was not written by "
                         "numpy.save: write it again (data/prepared: `genbench prepare`; samples: `genbench "
                         "sample`)") from None


def require_file(path: Path, stage: str) -> Path:
    """`path`, or FileNotFoundError naming it and the command that makes it: every stage checks its inputs
    this way before doing any work."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found; run `{stage}` first")
    return Path(path)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(record: Any) -> str:
    """sha256 of a config's canonical JSON: equal configs, equal hashes."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
