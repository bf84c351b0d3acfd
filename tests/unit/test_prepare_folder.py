"""dataset folder: a user's own images (a folder, with or without class sub-folders, or a uint8 .npy) prepared
into exactly the files of a built-in set, deterministically, with every bad input named. Sources are built in
tmp_path: image k of the folder is one flat grey value 6·k, so a prepared image tells which source image it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from genbench.components.common.io import file_digest
from genbench.components.prepare.prepare import fit_image, image_shape, prepare
from genbench.config import ConfigError, DataConfig, load_config

SIZES = {"train_size": 20, "validation_size": 4, "holdout_size": 6, "reference_size": 10}  # 40: every image
WRITTEN = {"train.npy", "train_labels.npy", "validation.npy", "validation_labels.npy", "reference.npy",
           "reference_labels.npy", "holdout.npy", "manifest.json", "config.json"}  # what a built-in set writes


def _folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 20) -> Path:
    """per_class images per class sub-folder (no sub-folders when `classes` is empty: 2·per_class flat), 10 wide
    and 12 high (cropped to 10×10, then resized), image k a flat grey 6·k; plus a .DS_Store to be ignored."""
    root.mkdir()
    for k in range(per_class * (len(classes) or 2)):
        folder = root / classes[k // per_class] if classes else root
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (10, 12), (6 * k,) * 3).save(folder / f"{k:02d}.png")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def _data(path: Path, channels: int = 3, size: int = 8, **sizes: int) -> DataConfig:
    return DataConfig(dataset="folder", path=str(path), image_size=size, channels=channels, **SIZES | sizes)


def _prepare(data: DataConfig, out: Path, seed: int = 0) -> dict:
    prepare(data, seed, out, out / "unused-downloads")
    return json.loads((out / "manifest.json").read_text())


def test_class_folders_give_the_files_of_a_builtin_set_with_labels(tmp_path: Path) -> None:
    source = _folder(tmp_path / "images")
    manifest = _prepare(_data(source), tmp_path / "out")
    assert {path.name for path in (tmp_path / "out").iterdir()} == WRITTEN
    assert manifest["dataset"] == "folder" and manifest["image_shape"] == [8, 8, 3]
    assert manifest["classes"] == ["cat", "dog"] and manifest["source"] == str(source)
    assert manifest["files"] == {name: file_digest(tmp_path / "out" / name) for name in manifest["files"]}
    seen = []
    for split in ("train", "validation", "reference", "holdout"):
        images = np.load(tmp_path / "out" / f"{split}.npy")
        assert images.dtype == np.uint8 and images.shape == (SIZES[f"{split}_size"], 8, 8, 3)
        assert np.all(images == images[:, :1, :1, :1])  # flat grey stays flat through crop and resize
        k = images[:, 0, 0, 0] // 6  # which source image each one is
        seen += k.tolist()
        if split != "holdout":  # the built-in sets have no holdout labels either
            labels = np.load(tmp_path / "out" / f"{split}_labels.npy")
            assert labels.dtype == np.int64 and labels.tolist() == (k // 20).tolist()  # cat 0..19, dog 20..39
    assert sorted(seen) == list(range(40))  # four disjoint sets covering the 40 images
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config == {"seed": 0, "data": _data(source).model_dump(mode="json")}


def test_prepare_is_deterministic_and_a_changed_source_changes_its_digest(tmp_path: Path) -> None:
    source = _folder(tmp_path / "images")
    first, second = (_prepare(_data(source), tmp_path / out) for out in ("a", "b"))
    assert first == second
    other_seed = _prepare(_data(source), tmp_path / "c", seed=1)
    assert other_seed["files"]["train.npy"] != first["files"]["train.npy"]
    assert other_seed["source_md5"] == first["source_md5"]
    Image.new("RGB", (10, 12), (1, 2, 3)).save(source / "dog" / "39.png")
    changed = _prepare(_data(source), tmp_path / "d")
    assert changed["source_md5"] != first["source_md5"]


def test_a_flat_folder_has_no_classes_and_converts_to_grayscale(tmp_path: Path) -> None:
    manifest = _prepare(_data(_folder(tmp_path / "flat", classes=()), channels=1, size=4), tmp_path / "out")
    assert "classes" not in manifest and manifest["image_shape"] == [4, 4, 1]
    train = np.load(tmp_path / "out" / "train.npy")
    assert train.shape == (20, 4, 4, 1) and train.dtype == np.uint8
    assert np.load(tmp_path / "out" / "train_labels.npy").tolist() == [0] * 20  # one class, as train reads labels


def test_fit_image_crops_the_centred_square_then_resizes() -> None:
    pixels = np.full((4, 8), 255, dtype=np.uint8)
    pixels[:, 2:6] = 7  # the centred 4×4 square of a 4-high, 8-wide image
    cropped = fit_image(Image.fromarray(pixels), channels=1, size=4)
    assert cropped.shape == (4, 4, 1) and np.all(cropped == 7)
    rgb = fit_image(Image.fromarray(pixels), channels=3, size=2)
    assert rgb.shape == (2, 2, 3) and np.all(rgb == 7)


def test_an_npy_source_with_sibling_labels(tmp_path: Path) -> None:
    images = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None] * 6, 8, axis=1).repeat(8, axis=2)  # N×H×W
    np.save(tmp_path / "faces.npy", images)
    np.save(tmp_path / "faces.labels.npy", np.arange(40) % 3)
    manifest = _prepare(_data(tmp_path / "faces.npy", channels=1), tmp_path / "out")
    assert manifest["classes"] == ["0", "1", "2"] and manifest["image_shape"] == [8, 8, 1]
    train = np.load(tmp_path / "out" / "train.npy")
    k = train[:, 0, 0, 0] // 6
    assert np.array_equal(train[..., 0], images[k])  # already 8×8: untouched
    assert np.load(tmp_path / "out" / "train_labels.npy").tolist() == (k % 3).tolist()
    rgb = np.zeros((40, 6, 10, 3), dtype=np.uint8)  # NHWC, not square: cropped and resized like a file
    np.save(tmp_path / "rgb.npy", rgb)
    manifest = _prepare(_data(tmp_path / "rgb.npy", size=4), tmp_path / "rgb")
    assert "classes" not in manifest and np.load(tmp_path / "rgb" / "holdout.npy").shape == (6, 4, 4, 3)


def _not_an_image(root: Path) -> Path:
    (_folder(root) / "cat" / "05.png").write_bytes(b"not a png")
    return root / "cat" / "05.png"


def _truncated(root: Path) -> Path:
    image = _folder(root) / "dog" / "30.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    image.write_bytes(image.read_bytes()[:500])
    return image


def _stray(root: Path) -> Path:
    (_folder(root) / "dog" / "notes.txt").write_text("hi")
    return root / "dog" / "notes.txt"


def _empty(root: Path) -> Path:
    root.mkdir()
    return root


def _mixed(root: Path) -> Path:
    Image.new("RGB", (4, 4)).save(_folder(root) / "loose.png")
    return root


def _nested(root: Path) -> Path:
    (_folder(root) / "cat" / "kittens").mkdir()
    return root / "cat" / "kittens"


def _empty_class(root: Path) -> Path:
    (_folder(root) / "eel").mkdir()
    return root / "eel"


def _npy(array: np.ndarray, labels: np.ndarray | None = None):
    def make(root: Path) -> Path:
        root.mkdir()
        np.save(root / "x.npy", array)
        if labels is not None:
            np.save(root / "x.labels.npy", labels)
            return root / "x.labels.npy"
        return root / "x.npy"
    return make


def _too_few(root: Path) -> Path:
    return _folder(root, per_class=15)


def _text_file(root: Path) -> Path:
    (_empty(root) / "x.txt").write_text("")
    return root / "x.txt"


BAD = [  # (case, make the source under a root and return what the error must name, path given, message)
    ("not an image inside", _not_an_image, "images", "unreadable or corrupt image (no PNG/JPEG/BMP/WebP decoder"),
    ("truncated image", _truncated, "images", "unreadable or corrupt image (image file is truncated)"),
    ("non-image file", _stray, "images", "not an image"),
    ("empty folder", _empty, "images", "no images; add PNG/JPEG/BMP/WebP files"),
    ("mixed layout", _mixed, "images", "mixed layout: loose.png sits at the top level but cat/ is a sub-folder"),
    ("folder two levels down", _nested, "images", "a folder two levels down"),
    ("empty class folder", _empty_class, "images", "an empty class sub-folder"),
    ("float npy", _npy(np.zeros((40, 8, 8), dtype=np.float32)), "images/x.npy", "dtype float32, expected uint8"),
    ("npy of rank 2", _npy(np.zeros((40, 8), dtype=np.uint8)), "images/x.npy", "shape (40, 8); expected N×H×W×C"),
    ("npy of 4 channels", _npy(np.zeros((40, 8, 8, 4), dtype=np.uint8)), "images/x.npy", "shape (40, 8, 8, 4)"),
    ("npy of other channels", _npy(np.zeros((40, 8, 8, 1), dtype=np.uint8)), "images/x.npy",
     "1-channel images, but data.channels is 3; set data.channels: 1"),
    ("npy labels too short", _npy(np.zeros((40, 8, 8, 3), dtype=np.uint8), np.zeros(39, dtype=np.int64)),
     "images/x.npy", "expected 40 integers ≥ 0, one per image of x.npy"),
    ("too few images", _too_few, "images",
     "data.train_size + data.validation_size + data.holdout_size + data.reference_size = 20 + 4 + 6 + 10 = 40 "
     "exceeds the 30 images in"),
    ("neither folder nor npy", _text_file, "images/x.txt", "is neither a folder nor a .npy file"),
]


@pytest.mark.parametrize(("case", "make", "path", "message"), BAD, ids=[case for case, *_ in BAD])
def test_bad_input_names_the_file_and_the_fix(tmp_path: Path, case: str, make, path: str, message: str) -> None:
    named = make(tmp_path / "images")
    with pytest.raises(ValueError) as info:
        prepare(_data(tmp_path / path), 0, tmp_path / "out", tmp_path)
    assert str(named) in str(info.value) and message in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"data.path: {tmp_path / 'nowhere'} not found"):
        prepare(_data(tmp_path / "nowhere"), 0, tmp_path / "out", tmp_path)


@pytest.mark.parametrize(("data", "field", "hint"), [
    ({"dataset": "folder"}, "data.path", "dataset folder needs a path to a folder of images or a uint8 .npy"),
    ({"dataset": "folder", "path": "x"}, "data.image_size", "dataset folder needs an image_size"),
    ({"dataset": "folder", "path": "x", "image_size": 8}, "data.channels",
     "dataset folder needs channels: 1 (grayscale) or 3 (RGB)"),
    ({"dataset": "mnist", "channels": 1}, "data.channels", "only dataset folder takes channels; mnist's images"),
])
def test_folder_fields_are_checked_by_name(tmp_path: Path, data: dict, field: str, hint: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": data}))
    with pytest.raises(ConfigError) as info:
        load_config(params, "full")
    assert f"{field}: {hint}" in str(info.value), str(info.value)


def test_builtin_sets_keep_their_config_and_shape() -> None:
    """config.json of a built-in set is written without the folder fields, so its bytes are as before."""
    assert set(DataConfig().model_dump(exclude_none=True)) == set(SIZES) | {"dataset"}
    assert image_shape(DataConfig(dataset="cifar10")) == (3, 32)
    assert image_shape(_data(Path("x"), channels=1, size=16)) == (1, 16)
