"""The write primitives every stage commits through: a folder swapped in whole or not at all, and the leftovers of
killed writes removed by name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from genbench.components.common.io import atomic_dir, atomic_write, clean_leftovers


class Stopped(Exception):
    pass


def test_a_folder_is_swapped_in_whole(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".results.") and staging.name.endswith(".tmp")
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").read_text() == "old"  # untouched until the block succeeds
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask  # a folder's usual mode, not mkdtemp's 0700


def test_a_stopped_folder_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.mkdir()
    (target / "index.html").write_text("old")
    with pytest.raises(Stopped), atomic_dir(target) as staging:
        (staging / "index.html").write_text("half")
        raise Stopped
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert (target / "index.html").read_text() == "old"


def test_leftovers_are_removed_by_name_or_all(tmp_path: Path) -> None:
    names = [".seed-0.npy.a1b2.tmp", ".seed-0.json.c3d4.tmp", ".seed-1.npy.e5f6.tmp", "seed-0.npy", ".hidden"]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / ".results.g7h8.tmp").mkdir()
    (tmp_path / ".results.g7h8.tmp" / "index.html").write_text("x")
    clean_leftovers(tmp_path, "seed-0.npy", "seed-0.json")  # another writer's seed-1 stays
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".results.g7h8.tmp", ".seed-1.npy.e5f6.tmp",
                                                          "seed-0.npy"]
    clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "seed-0.npy"]
    clean_leftovers(tmp_path / "missing")  # nothing written yet: nothing to do


def test_an_atomic_write_names_its_temporary_file_for_clean_leftovers(tmp_path: Path) -> None:
    seen = []

    def write(handle) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())
        raise Stopped

    with pytest.raises(Stopped):
        atomic_write(tmp_path / "model.safetensors", write)
    (name,) = seen
    assert name.startswith(".model.safetensors.") and name.endswith(".tmp")
