"""The prepared data's md5 manifest, read back: a stage checks the prepared files it reads against
`data/prepared/manifest.json` first, so a damaged or edited file (a disk error, a half-finished copy, a truncated
download) stops it naming the file, instead of training or scoring on other images than `prepare` wrote."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from genbench.components.common.io import file_digest, read_json, require_file

MANIFEST = "manifest.json"
FIX = "re-run `genbench prepare` (or `dvc checkout data/prepared`)"
_digests: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) → md5, for this process


def labels_path(images: Path) -> Path:
    """The class labels `prepare` writes beside a prepared image set: `reference.npy` → `reference_labels.npy`."""
    images = Path(images)
    return images.with_name(f"{images.stem}_labels.npy")


class Manifest(BaseModel):
    """manifest.json, and what `prepare` returns."""

    dataset: str
    image_shape: list[int]
    counts: dict[str, int]
    files: dict[str, str]  # md5 of each written file
    # dataset folder only (a built-in set's manifest.json leaves them out):
    source: str | None = None  # data.path as written
    source_md5: str | None = None  # digest of every source file read (name and bytes): a changed source changes it
    classes: list[str] | None = None  # the name of each label id; None: the source has no labels (all are 0)


def read_manifest(path: Path) -> Manifest:
    """A manifest as `prepare` wrote it; ValueError naming the file and the fix when it is truncated, damaged or
    edited."""
    path = require_file(Path(path), "genbench prepare")
    try:
        return Manifest.model_validate(read_json(path))
    except ValidationError as exc:
        error = exc.errors()[0]
        reason = f"{'.'.join(map(str, error['loc'])) or 'record'}: {error['msg']}"
    except ValueError:  # read_json's: not JSON
        reason = "not JSON: the file is truncated or damaged"
    raise ValueError(f"{path}: not a manifest of `genbench prepare` ({reason}); {FIX}")


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
    recorded = read_manifest(manifest).files
    for name in names:
        expected = recorded.get(name)
        if expected is None:
            continue
        path = require_file(data_dir / name, "genbench prepare")
        actual = cached_digest(path)
        if actual != expected:
            raise ValueError(f"{path}: md5 {actual}, but {manifest} recorded {expected} when `genbench prepare` "
                             f"wrote it: the file changed or is damaged; {FIX}")
