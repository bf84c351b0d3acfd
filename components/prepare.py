"""Stage 1: fetch the dataset and split it into training, validation, reference and holdout images.

Datasets: fashion_mnist and mnist (1×28×28), cifar10 (3×32×32). Data comes from `$GENBENCH_DATA_DIR/<folder>/`
when that is set (offline machines, CI) and from torchvision's download otherwise. Local Fashion-MNIST is checked
against the original md5s and its IDX files read directly; local CIFAR-10 is read and checked by torchvision.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ..config import DataConfig
from .io import file_digest, save_npy, write_json

# md5 of the *uncompressed* original IDX files (Debian recompresses the .gz, so those hashes differ).
FASHION_MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
IDX_FILES = tuple(FASHION_MNIST_RAW_MD5)  # MNIST uses the same four names
# Folder under $GENBENCH_DATA_DIR per dataset: IDX .gz files for the MNISTs, cifar-10-batches-py/ for CIFAR-10.
LOCAL_FOLDERS = {"fashion_mnist": "fashion-mnist", "mnist": "mnist", "cifar10": "cifar10"}
# (channels, size) of each dataset's images, for sizing models before any data is prepared (`genbench models`).
IMAGE_SHAPES = {"fashion_mnist": (1, 28), "mnist": (1, 28), "cifar10": (3, 32)}


class Manifest(BaseModel):
    """manifest.json, and what `prepare` returns."""

    dataset: str
    image_shape: list[int]
    counts: dict[str, int]
    files: dict[str, str]  # md5 of each written file


def prepare(data: DataConfig, seed: int, out_dir: Path, download_dir: Path) -> Manifest:
    """Write the four image sets (uint8 NHWC) with labels, an md5 manifest and the config used (`seed`, `data`)
    to `out_dir`; return the manifest.

    train, validation and holdout are disjoint parts of the dataset's train split: models train on the first,
    are selected on the second, and the third, never seen by either, is the report's real-data row, scored
    against the reference like the samples. The reference is drawn from the test split, which nothing else
    reads, so the full profile compares 10 000 samples with 10 000 test images (the test split holds exactly
    that many, leaving none for a holdout; Fashion-MNIST's two splits come from one distribution).
    """
    train_images, train_labels, test_images, test_labels = load_dataset(data.dataset, download_dir)
    check_sizes(data, len(train_images), len(test_images))
    rng = np.random.default_rng(seed)
    train_idx, validation_idx, holdout_idx = split_indices(
        len(train_images), (data.train_size, data.validation_size, data.holdout_size), rng)
    (reference_idx,) = split_indices(len(test_images), (data.reference_size,), rng)
    arrays = {
        "train.npy": train_images[train_idx],
        "train_labels.npy": train_labels[train_idx],
        "validation.npy": train_images[validation_idx],
        "validation_labels.npy": train_labels[validation_idx],
        "reference.npy": test_images[reference_idx],
        "reference_labels.npy": test_labels[reference_idx],
        "holdout.npy": train_images[holdout_idx],
    }
    out_dir = Path(out_dir)
    for name, array in arrays.items():
        save_npy(out_dir / name, array)
    manifest = Manifest(
        dataset=data.dataset, image_shape=list(train_images.shape[1:]),
        counts={name: len(array) for name, array in arrays.items()},
        files={name: file_digest(out_dir / name) for name in arrays},
    )
    write_json(out_dir / "manifest.json", manifest.model_dump())
    write_json(out_dir / "config.json", {"seed": seed, "data": data.model_dump(mode="json")})
    return manifest


def check_sizes(data: DataConfig, train_available: int, test_available: int) -> None:
    """ValueError naming the `data` fields whose sets do not fit in their split, before anything is written."""
    for fields, split, available in (
        (("train_size", "validation_size", "holdout_size"), "train", train_available),
        (("reference_size",), "test", test_available),
    ):
        sizes = [getattr(data, field) for field in fields]
        if sum(sizes) > available:
            names = " + ".join(f"data.{field}" for field in fields)
            raise ValueError(
                f"{names} = {' + '.join(map(str, sizes))} = {sum(sizes)} exceeds the {available} images of "
                f"{data.dataset}'s {split} split; lower one of them"
            )


def split_indices(count: int, sizes: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint sorted index sets of `sizes`, consecutive slices of one seeded permutation of range(count): the
    first set does not depend on the later sizes, so holding out more images never changes the training set."""
    order = rng.permutation(count)
    bounds = np.cumsum((0, *sizes))
    return [np.sort(order[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


def load_dataset(dataset: str, download_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images uint8 NHWC, labels int64."""
    if dataset not in LOCAL_FOLDERS:
        raise ValueError(f"data.dataset={dataset!r} is not supported; allowed: {', '.join(LOCAL_FOLDERS)}")
    local = os.environ.get("GENBENCH_DATA_DIR")
    source = Path(local) / LOCAL_FOLDERS[dataset] if local else None
    if dataset == "cifar10":
        splits = _cifar10(Path(download_dir), source)
    else:
        splits = _idx_dataset(dataset, Path(download_dir), source)
    images = [array[..., None] if array.ndim == 3 else array for array, _ in splits]  # MNIST: NHW → NHW1
    labels = [np.asarray(targets, dtype=np.int64) for _, targets in splits]
    return images[0], labels[0], images[1], labels[1]


def _idx_dataset(dataset: str, root: Path, source: Path | None) -> list[tuple[np.ndarray, Any]]:
    """(images, labels) of the train and test splits of (Fashion-)MNIST. Local IDX files (`source`) are
    md5-checked and read directly, which spares each `prepare` process torchvision's ~9 s import; without
    them torchvision downloads and reads the same four files."""
    if source is not None:
        raw = root / ("FashionMNIST" if dataset == "fashion_mnist" else "MNIST") / "raw"
        _stage_local_idx(source, raw, FASHION_MNIST_RAW_MD5 if dataset == "fashion_mnist" else dict.fromkeys(IDX_FILES))
        arrays = [read_idx(raw / name) for name in IDX_FILES]  # train images, labels, test images, labels
        return [(arrays[0], arrays[1]), (arrays[2], arrays[3])]
    from torchvision.datasets import MNIST, FashionMNIST

    cls = FashionMNIST if dataset == "fashion_mnist" else MNIST
    return [(np.asarray(split.data), split.targets) for split in (cls(str(root), train=t, download=True)
                                                                 for t in (True, False))]


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (LeCun's MNIST format: two zero bytes, type 0x08, the number of dimensions,
    each dimension as a big-endian int32, then the values) as a numpy array; ValueError naming the file."""
    data = Path(path).read_bytes()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 4:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (header {data[:4].hex()})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=data[3], offset=4))
    offset = 4 + 4 * len(shape)
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: {len(data) - offset} bytes of values for shape {shape}; the file is truncated")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy()


def _cifar10(root: Path, source: Path | None) -> list[tuple[np.ndarray, Any]]:
    """torchvision's CIFAR-10 (python pickles, md5-checked by torchvision), read in place from `source`
    (which holds cifar-10-batches-py/) when given, else downloaded into `root`."""
    from torchvision.datasets import CIFAR10

    if source is not None and not (source / CIFAR10.base_folder).is_dir():
        raise FileNotFoundError(
            f"{source / CIFAR10.base_folder} not found: GENBENCH_DATA_DIR={source.parent} must hold "
            f"{source.name}/{CIFAR10.base_folder}/ (unset GENBENCH_DATA_DIR to download with torchvision instead)"
        )
    where = source if source is not None else root
    splits = [CIFAR10(str(where), train=train, download=source is None) for train in (True, False)]
    return [(np.asarray(split.data), split.targets) for split in splits]


def _stage_local_idx(source: Path, raw_dir: Path, md5s: dict[str, str | None]) -> None:
    """Decompress local IDX files where torchvision looks for them, verifying the original md5s where known
    (Fashion-MNIST; for MNIST only torchvision's download is checked, against the .gz files)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, md5 in md5s.items():
        target = raw_dir / name
        if target.exists() and md5 is not None and file_digest(target) == md5:
            continue
        packed = source / f"{name}.gz"
        if not packed.exists():
            raise FileNotFoundError(
                f"{packed} not found: GENBENCH_DATA_DIR={source.parent} must hold {source.name}/{name}.gz "
                "(unset GENBENCH_DATA_DIR to download with torchvision instead)"
            )
        partial = target.with_suffix(".partial")
        with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if md5 is not None and (actual := file_digest(partial)) != md5:
            partial.unlink()
            raise ValueError(f"{packed}: uncompressed md5 {actual} != {md5}; the file is corrupt or not {name}")
        partial.replace(target)
