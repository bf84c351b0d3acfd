"""The data split's index maths: disjoint sets, a training set that holding out more never changes, and sizes
checked against the split before anything is written; the IDX reader on hand-made files."""

from __future__ import annotations

import numpy as np
import pytest

from genbench.components.prepare.prepare import read_idx, split_indices
from genbench.config import DataConfig


def test_split_sets_are_disjoint_sorted_and_sized() -> None:
    train, validation = split_indices(60000, (55000, 5000), np.random.default_rng(0))
    assert (len(train), len(validation)) == (55000, 5000)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(validation) > 0)
    assert not np.intersect1d(train, validation).size
    assert np.array_equal(np.union1d(train, validation), np.arange(60000))


def test_the_first_set_ignores_the_later_sizes() -> None:
    """Holding out more images (or none) leaves the training set, and so its md5, as it was."""
    alone = split_indices(1000, (300,), np.random.default_rng(7))[0]
    for later in (1, 200, 700):
        assert np.array_equal(split_indices(1000, (300, later), np.random.default_rng(7))[0], alone)


def test_split_is_deterministic_per_seed() -> None:
    first, second = (split_indices(500, (40, 10), np.random.default_rng(3)) for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = split_indices(500, (40, 10), np.random.default_rng(4))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize(("sizes", "message"), [
    ({"train_size": 50000, "validation_size": 2000, "holdout_size": 10000},
     "data.train_size + data.validation_size + data.holdout_size = 50000 + 2000 + 10000 = 62000 exceeds the 60000 "
     "images of fashion_mnist's train split; lower one of them"),
    ({"reference_size": 10001},
     "data.reference_size: 10001 exceeds the 10000 images of fashion_mnist's test split; lower it"),
    ({"train_size": 60001}, "data.train_size: 60001 exceeds the 60000 images of fashion_mnist's train split; lower it"),
])
def test_sets_must_fit_their_split(sizes: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError) as info:
        DataConfig(**sizes).check_sizes(60000, 10000)
    assert str(info.value) == message


def test_the_defaults_fit_fashion_mnist() -> None:
    DataConfig().check_sizes(60000, 10000)


def test_idx_files_are_read_by_their_header_and_bad_ones_are_named(tmp_path) -> None:
    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + np.array([2, 3, 4], dtype=">i4").tobytes()  # written out by hand
    (tmp_path / "ok").write_bytes(header + values.tobytes())
    assert np.array_equal(read_idx(tmp_path / "ok"), values)
    (tmp_path / "labels").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    assert read_idx(tmp_path / "labels").tolist() == [7, 8, 9]
    (tmp_path / "short").write_bytes(header + values.tobytes()[:-1])
    with pytest.raises(ValueError, match="short: 23 bytes of values for shape"):
        read_idx(tmp_path / "short")
    (tmp_path / "float").write_bytes(bytes([0, 0, 0x0D, 1]) + np.array([1], dtype=">i4").tobytes() + bytes(4))
    with pytest.raises(ValueError, match="float: not an unsigned-byte IDX file"):
        read_idx(tmp_path / "float")
