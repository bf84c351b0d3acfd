"""Image arrays in and out of the metric stages: validation, folders of PNG/JPEG, content digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from genbench.components.common.io import load_npy

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def validate_images(images: np.ndarray, name: str) -> None:
    """Reject anything but uint8 NHWC images with 1 or 3 channels, naming the file and the problem."""
    if images.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8 with values in [0, 255], got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D NHWC array, got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected 1 or 3 channels in the last axis (NHWC), got shape {images.shape}")
    if images.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 images for a covariance, got {images.shape[0]}")


def array_digest(images: np.ndarray) -> str:
    """md5 of an image array's dtype, shape and bytes: the cache key of a reference that is not a file."""
    digest = hashlib.md5(f"{images.dtype.str}{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def load_images(path: Path) -> np.ndarray:
    """uint8 NHWC images from a `.npy` file or a folder of PNG/JPEG files (sorted by name, channels kept).

    Folder images must all be 8-bit greyscale ("L" → 1 channel) or RGB (3 channels) and share one size;
    anything else is an error naming the file, never a silent conversion.
    """
    from PIL import Image

    path = Path(path)
    if path.is_file() and path.suffix == ".npy":
        images = load_npy(path)
        validate_images(images, str(path))
        return images
    if not path.is_dir():
        raise ValueError(f"{path}: expected a .npy file (uint8 NHWC) or a folder of PNG/JPEG images")
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                mode = image.mode
                array = np.asarray(image, dtype=np.uint8) if mode in ("L", "RGB") else None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's decoding failures
            raise ValueError(f"{file}: unreadable or corrupt image ({type(exc).__name__}: {exc}); re-save it as PNG "
                             f"or remove it from {path}") from None
        if array is None:
            raise ValueError(f"{file}: image mode {mode!r}; only 8-bit greyscale (L) or RGB are read")
        array = array[..., None] if array.ndim == 2 else array
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(
                f"{file}: shape {array.shape} (HWC) differs from {files[0].name} {arrays[0].shape}; all images "
                "in a folder must share one size and channel count"
            )
        arrays.append(array)
    images = np.stack(arrays)
    validate_images(images, str(path))
    return images
