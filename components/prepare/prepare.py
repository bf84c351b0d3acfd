"""Stage 1: fetch the dataset and split it into training, validation, reference and holdout images.

Datasets: fashion_mnist and mnist (1×28×28), cifar10 (3×32×32). Data comes from `$GENBENCH_DATA_DIR/<folder>/`
when that is set (offline machines, CI) and from torchvision's download otherwise. Local Fashion-MNIST is checked
against the original md5s and its IDX files read directly; local CIFAR-10 is read and checked by torchvision.

`folder` is your own images at `data.path`: a folder of image files or a uint8 .npy, read by `load_folder`
into the same files as the built-in sets, so every later stage compares models on them unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from genbench.components.common.io import clean_leftovers, file_digest, load_npy, save_npy, write_json
from genbench.components.common.manifest import Manifest
from genbench.config import DataConfig

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
# What a `folder` dataset may hold, by extension (any case), and the only PIL decoders it opens them with.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
# The filter every `folder` image is resized with: PIL's bicubic, which widens its support when shrinking
# (antialiased), as clean-fid resizes; one fixed filter, so the prepared bytes depend only on the source.
RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class Source:
    """A `folder` dataset, read: the one pool all four sets are drawn from."""

    images: np.ndarray  # uint8 N×image_size×image_size×channels
    labels: np.ndarray  # int64, one per image; all 0 when the source has none
    classes: list[str] | None  # the name of each label id, or None when unlabelled
    md5: str  # md5 over "relative name\0file md5\n" of every file read, in reading order


def prepare(data: DataConfig, seed: int, out_dir: Path, download_dir: Path) -> Manifest:
    """Write the four image sets (uint8 NHWC) with labels, an md5 manifest and the config used (`seed`, `data`)
    to `out_dir`; return the manifest, written after the sets.

    train, validation and holdout are disjoint parts of the dataset's train split: models train on the first,
    are selected on the second, and the third, never seen by either, is the report's real-data row, scored
    against the reference like the samples. The reference is drawn from the test split, which nothing else
    reads, so the full profile compares 10 000 samples with 10 000 test images (the test split holds exactly
    that many, leaving none for a holdout; Fashion-MNIST's two splits come from one distribution).

    Your own images (dataset folder) have no test split: the reference is a fourth slice of the same seeded
    shuffle, after the other three, so it is disjoint from them and the training set still ignores the later sizes.
    """
    rng = np.random.default_rng(seed)
    source = None
    if data.dataset == "folder":
        source = load_folder(data)  # checks that the sets fit (DataConfig.check_sizes) before decoding any image
        train_images = test_images = source.images
        train_labels = test_labels = source.labels
        train_idx, validation_idx, holdout_idx, reference_idx = split_indices(
            len(source.images), (data.train_size, data.validation_size, data.holdout_size, data.reference_size), rng)
    else:
        train_images, train_labels, test_images, test_labels = load_dataset(data.dataset, download_dir)
        data.check_sizes(len(train_images), len(test_images))
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
    # The manifest stays until it is rewritten, last: after a stop, the new files differ from the md5s it holds,
    # which train and evaluate check (`manifest.verify_prepared`; a folder without one goes unchecked).
    clean_leftovers(out_dir)
    for name, array in arrays.items():
        save_npy(out_dir / name, array)
    manifest = Manifest(
        dataset=data.dataset, image_shape=list(train_images.shape[1:]),
        counts={name: len(array) for name, array in arrays.items()},
        files={name: file_digest(out_dir / name) for name in arrays},
        **({"source": data.path, "source_md5": source.md5, "classes": source.classes} if source else {}),
    )
    # exclude_none: a built-in set's manifest.json and config.json keep the bytes they had before `folder`
    write_json(out_dir / "manifest.json", manifest.model_dump(exclude_none=True))
    write_json(out_dir / "config.json", {"seed": seed, "data": data.model_dump(mode="json", exclude_none=True)})
    return manifest


def image_shape(data: DataConfig) -> tuple[int, int]:
    """(channels, size) of `data`'s prepared images, known before any data is prepared (`genbench models`)."""
    if data.dataset == "folder":
        assert data.channels is not None and data.image_size is not None  # DataConfig requires both for folder
        return data.channels, data.image_size
    return IMAGE_SHAPES[data.dataset]


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
    md5-checked and read directly, which spares each `prepare` process torchvision's import (docs/benchmarks.md,
    "Import costs"); without
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


def load_folder(data: DataConfig) -> Source:
    """Read dataset folder's images from `data.path` as uint8 `data.image_size`² × `data.channels`, checking
    that the four sets fit (`DataConfig.check_sizes`) before decoding anything; ValueError naming the file and the fix.

    A folder holds PNG/JPEG/BMP/WebP files (by extension, any case), either all at its top level (no labels)
    or all in sub-folders one level down (label = index of the sub-folder's name in sorted order); names
    starting with "." (.DS_Store, ._x.png, .ipynb_checkpoints/) are ignored, anything else is an error. Files
    are read sorted by (sub-folder, name), upright per their EXIF orientation, each through `fit_image`.
    A .npy holds N×H×W×C (C = data.channels) or N×H×W uint8 images; a sibling `<name>.labels.npy` (integers
    ≥ 0, one per image) gives labels, else there are none. Its images pass through untouched when already
    image_size², else through `fit_image`. Without labels every label is 0 (one class), as train reads them.
    """
    path = Path(str(data.path))
    if not path.exists():
        raise FileNotFoundError(f"data.path: {path} not found; point it at a folder of images or a uint8 .npy "
                                "(a relative path starts in the folder genbench runs in)")
    if path.is_dir():
        files, labels, classes = list_images(path)
        data.check_sizes(len(files))
        images, entries = _read_images(files, path, data)
    elif path.suffix == ".npy":
        images, labels, classes, entries = _read_npy(path, data)
        data.check_sizes(len(images))
        if images.shape[1:3] != (data.image_size, data.image_size):
            mode = "L" if images.shape[-1] == 1 else "RGB"
            images = np.stack([fit_image(Image.fromarray(image.squeeze(-1) if mode == "L" else image, mode),
                                         images.shape[-1], int(data.image_size)) for image in images])
    else:
        raise ValueError(f"data.path: {path} is neither a folder nor a .npy file; point it at a folder of "
                         "images or a uint8 .npy")
    digest = hashlib.md5("".join(f"{name}\0{md5}\n" for name, md5 in entries).encode()).hexdigest()
    return Source(images=images, labels=labels, classes=classes, md5=digest)


def fit_image(image: Image.Image, channels: int, size: int) -> np.ndarray:
    """`image` as uint8 size × size × channels: converted to L or RGB (alpha dropped), its centred square of
    the shorter side cropped out, resized with RESAMPLE (skipped when already size × size)."""
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), RESAMPLE)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def list_images(root: Path) -> tuple[list[Path], np.ndarray, list[str] | None]:
    """The image files under `root` in reading order, their int64 labels and the class names (None for a flat
    folder, whose labels are all 0); ValueError for an empty folder, a mixed or deeper layout, an empty class
    sub-folder or a file that is not an image. The layout rules are `load_folder`'s."""
    entries = _visible(root)
    folders = [entry for entry in entries if entry.is_dir()]
    files = [_image_name(entry, root) for entry in entries if not entry.is_dir()]
    if files and folders:
        raise ValueError(
            f"{root}: mixed layout: {files[0].name} sits at the top level but {folders[0].name}/ is a sub-folder; "
            "put every image in a class sub-folder (labelled) or every image at the top level (unlabelled)")
    if not folders:
        if not files:
            raise ValueError(f"{root}: no images; add PNG/JPEG/BMP/WebP files, at the top level or in one "
                             "sub-folder per class")
        return files, np.zeros(len(files), dtype=np.int64), None
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        inside = _visible(folder)
        for entry in inside:
            if entry.is_dir():
                raise ValueError(f"{entry}: a folder two levels down; images sit at the top level of {root} or "
                                 "in its class sub-folders, one level down (move them up)")
            _image_name(entry, root)
        if not inside:
            raise ValueError(f"{folder}: an empty class sub-folder; add images to it or remove it")
        paths += inside
        labels += [label] * len(inside)
    return paths, np.array(labels, dtype=np.int64), [folder.name for folder in folders]


def _visible(folder: Path) -> list[Path]:
    """`folder`'s entries sorted by name, hidden ones (a name starting with ".") left out."""
    return sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")), key=lambda e: e.name)


def _image_name(file: Path, root: Path) -> Path:
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{file}: not an image (genbench reads {', '.join(IMAGE_SUFFIXES)}); remove it or move "
                         f"it out of {root}")
    return file


def _read_images(files: list[Path], root: Path, data: DataConfig) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The images of `files` through `fit_image`, and (path relative to `root`, md5) of each file."""
    arrays, entries = [], []
    for file in files:
        try:
            raw = file.read_bytes()
            with Image.open(io.BytesIO(raw), formats=PIL_FORMATS) as image:
                arrays.append(fit_image(ImageOps.exif_transpose(image), int(data.channels), int(data.image_size)))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            reason = "no PNG/JPEG/BMP/WebP decoder recognises it" if isinstance(exc, UnidentifiedImageError) else exc
            raise ValueError(f"{file}: unreadable or corrupt image ({reason}); re-save it as PNG or JPEG, or "
                             "remove it") from None
        entries.append((file.relative_to(root).as_posix(), hashlib.md5(raw).hexdigest()))
    return np.stack(arrays), entries


def _read_npy(path: Path, data: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str] | None, list[tuple[str, str]]]:
    """A .npy source's NHWC images, labels (from `<name>.labels.npy` when present, else 0), class names and
    (file name, md5) of each file read; ValueError naming the file for a bad dtype, rank or channel count."""
    images = load_npy(path)
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: dtype {images.dtype}, expected uint8 (0-255); save it as "
                         "np.clip(images, 0, 255).astype(np.uint8)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not images.size:
        raise ValueError(f"{path}: shape {images.shape}; expected N×H×W×C (C 1 or 3) or N×H×W with N ≥ 1")
    if images.shape[-1] != data.channels:
        raise ValueError(f"{path}: {images.shape[-1]}-channel images, but data.channels is {data.channels}; set "
                         f"data.channels: {images.shape[-1]}")
    entries = [(path.name, file_digest(path))]
    labels_path = path.with_name(path.name.removesuffix(".npy") + ".labels.npy")
    if not labels_path.exists():
        return images, np.zeros(len(images), dtype=np.int64), None, entries
    labels = load_npy(labels_path)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),) or labels.min() < 0:
        raise ValueError(f"{labels_path}: {labels.dtype} labels of shape {labels.shape}; expected {len(images)} "
                         f"integers ≥ 0, one per image of {path.name} (or remove it: no labels)")
    entries.append((labels_path.name, file_digest(labels_path)))
    return images, labels.astype(np.int64), [str(k) for k in range(int(labels.max()) + 1)], entries

