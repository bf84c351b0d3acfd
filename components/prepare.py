"""Stage 1: fetch the dataset and split it into training images and a held-out reference set.

Data comes from `$GENBENCH_DATA_DIR/<dataset>/` when that is set (offline machines, CI) and from
torchvision's download otherwise. Local files are checked against the original md5s before use.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .io import file_digest, save_npy, write_json

# md5 of the *uncompressed* original IDX files (Debian recompresses the .gz, so those hashes differ).
FASHION_MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
LOCAL_FOLDERS = {"fashion_mnist": "fashion-mnist"}


def prepare(
    dataset: str, train_size: int, reference_size: int, seed: int, out_dir: Path, download_dir: Path
) -> dict[str, Any]:
    """Write train/reference images (uint8 NHWC) and labels plus an md5 manifest; return the manifest."""
    train_images, train_labels, test_images, test_labels = load_dataset(dataset, download_dir)
    for name, wanted, available in (
        ("data.train_size", train_size, len(train_images)),
        ("data.reference_size", reference_size, len(test_images)),
    ):
        if wanted > available:
            raise ValueError(f"{name}={wanted} exceeds the {available} images of {dataset}; lower it")
    rng = np.random.default_rng(seed)
    train_idx = np.sort(rng.permutation(len(train_images))[:train_size])
    ref_idx = np.sort(rng.permutation(len(test_images))[:reference_size])
    arrays = {
        "train.npy": train_images[train_idx],
        "train_labels.npy": train_labels[train_idx],
        "reference.npy": test_images[ref_idx],
        "reference_labels.npy": test_labels[ref_idx],
    }
    out_dir = Path(out_dir)
    for name, array in arrays.items():
        save_npy(out_dir / name, array)
    manifest = {
        "dataset": dataset,
        "image_shape": list(train_images.shape[1:]),
        "counts": {name: len(array) for name, array in arrays.items()},
        "files": {name: file_digest(out_dir / name) for name in arrays},
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def load_dataset(dataset: str, download_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images uint8 NHWC."""
    if dataset != "fashion_mnist":
        raise ValueError(f"data.dataset={dataset!r} is not supported; allowed: fashion_mnist")
    from torchvision.datasets import FashionMNIST

    root = Path(download_dir)
    local = os.environ.get("GENBENCH_DATA_DIR")
    if local:
        _stage_local_idx(Path(local) / LOCAL_FOLDERS[dataset], root / "FashionMNIST" / "raw")
    splits = [FashionMNIST(str(root), train=train, download=not local) for train in (True, False)]
    images = [split.data.numpy()[..., None] for split in splits]
    labels = [split.targets.numpy().astype(np.int64) for split in splits]
    return images[0], labels[0], images[1], labels[1]


def _stage_local_idx(source: Path, raw_dir: Path) -> None:
    """Decompress local IDX files where torchvision looks for them, verifying the original md5s."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, md5 in FASHION_MNIST_RAW_MD5.items():
        target = raw_dir / name
        if target.exists() and file_digest(target) == md5:
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
        if (actual := file_digest(partial)) != md5:
            partial.unlink()
            raise ValueError(f"{packed}: uncompressed md5 {actual} != {md5}; the file is corrupt or not {name}")
        partial.replace(target)
