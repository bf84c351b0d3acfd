"""The prepared data's manifest is read back: a changed file is named with both md5s, each file is hashed once per
(path, size, mtime) in a process, and a folder without a manifest is not checked."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from genbench.components.common import manifest
from genbench.components.common.io import file_digest, load_npy, write_json
from genbench.components.common.manifest import verify_prepared


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    np.save(tmp_path / "train.npy", np.arange(64, dtype=np.uint8).reshape(4, 4, 4, 1))
    (tmp_path / "notes.txt").write_text("not listed")
    write_json(tmp_path / "manifest.json", {"dataset": "toy", "image_shape": [4, 4, 1], "counts": {"train.npy": 4},
                                            "files": {"train.npy": file_digest(tmp_path / "train.npy")}})
    return tmp_path


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file `manifest` hashes, in order."""
    calls: list[Path] = []

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return file_digest(path)

    monkeypatch.setattr(manifest, "file_digest", counting)
    return calls


def test_intact_files_pass_and_each_is_hashed_once(prepared: Path, hashed: list[Path]) -> None:
    verify_prepared(prepared, ["train.npy", "notes.txt"])  # notes.txt is not in the manifest: nothing to check
    verify_prepared(prepared, ["train.npy"])
    assert hashed == [prepared / "train.npy"]


def test_a_changed_file_of_the_same_size_is_named_with_both_md5s(prepared: Path, hashed: list[Path]) -> None:
    path = prepared / "train.npy"
    expected = file_digest(path)
    verify_prepared(prepared, ["train.npy"])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] + bytes(len(raw) - len(raw) // 2))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new mtime however coarse the clock
    with pytest.raises(ValueError) as info:
        verify_prepared(prepared, ["train.npy"])
    assert str(info.value) == (
        f"{path}: md5 {file_digest(path)}, but {prepared / 'manifest.json'} recorded {expected} when `genbench "
        "prepare` wrote it: the file changed or is damaged; re-run `genbench prepare` (or `dvc checkout "
        "data/prepared`)")
    assert len(hashed) == 2


def test_a_folder_without_a_manifest_is_not_checked(tmp_path: Path, hashed: list[Path]) -> None:
    np.save(tmp_path / "reference.npy", np.zeros((4, 2, 2, 1), dtype=np.uint8))
    verify_prepared(tmp_path, ["reference.npy"])
    assert hashed == []


def test_a_listed_file_that_is_missing_names_the_stage(prepared: Path) -> None:
    (prepared / "train.npy").unlink()
    with pytest.raises(FileNotFoundError, match="train.npy not found; run `genbench prepare` first"):
        verify_prepared(prepared, ["train.npy"])


def test_a_damaged_manifest_is_named(prepared: Path) -> None:
    (prepared / "manifest.json").write_text('{"files": ["train.npy"]}')
    with pytest.raises(ValueError, match=r"manifest.json: not a manifest of `genbench prepare` .*re-run `genbench"):
        verify_prepared(prepared, ["train.npy"])


@pytest.mark.parametrize("keep", [0, 5, 60, 100])
def test_a_truncated_npy_is_one_line_naming_the_file(prepared: Path, keep: int) -> None:
    """Cut in the magic, the header or the data: numpy's EOFError or ValueError becomes one line with the fix."""
    path = prepared / "train.npy"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ValueError) as info:
        load_npy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable .npy file (") and "\n" not in message
    assert "write it again (data/prepared: `genbench prepare`" in message
