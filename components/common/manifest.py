"""The prepared data's md5 manifest, read back: a stage checks the prepared files it reads against
`data/prepared/manifest.json` first, so a damaged or edited file (a disk error, a half-finished copy, a truncated
download) stops it naming the file, instead of training or scoring on other images than `prepare` wrote."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from genbench.components.common.io import file_digest, read_json, require_file

MANIFEST = "manifest.json"
FIX = "re-run `genbench prepare` (or `dvc checkout data/prepared`)"
_digests: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) → md5, for this process


def cached_digest(path: Path) -> str:
    """The md5 of `path`, hashed once per (path, size, mtime_ns) in this process: train and evaluate ask for the
    same large files more than once (the check, then the run record)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = file_digest(path)
    return _digests[key]


def verify_prepared(data_dir: Path, names: Iterable[str]) -> None:
    """Check each of `names` in `data_dir` against the md5 its manifest.json recorded; ValueError naming the file,
    both md5s and the fix. A folder without a manifest, or a file it does not list, is not checked: nothing
    recorded what it should hold (`genbench evaluate --reference` and `genbench metrics` read any .npy)."""
    data_dir = Path(data_dir)
    manifest = data_dir / MANIFEST
    if not manifest.is_file():
        return
    try:
        recorded = read_json(manifest).get("files")
    except (ValueError, AttributeError):  # not JSON, or not a JSON object
        recorded = None
    if not isinstance(recorded, dict):
        raise ValueError(f"{manifest}: not a manifest of `genbench prepare` (no `files` mapping of md5s: the file is "
                         f"truncated, damaged or edited); {FIX}")
    for name in names:
        expected = recorded.get(name)
        if expected is None:
            continue
        path = require_file(data_dir / name, "genbench prepare")
        actual = cached_digest(path)
        if actual != expected:
            raise ValueError(f"{path}: md5 {actual}, but {manifest} recorded {expected} when `genbench prepare` "
                             f"wrote it: the file changed or is damaged; {FIX}")
