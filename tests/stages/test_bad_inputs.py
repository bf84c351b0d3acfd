"""Bad input found inside a stage (a damaged prepared file, run file or image, a missing frozen run): exit code 2
and one line naming the file and the fix, never a traceback, and every file of the project as it was."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from genbench.cli import app

Damage = Callable[[Path], None]


def _truncate(name: str) -> Damage:
    def damage(root: Path) -> None:
        raw = (root / name).read_bytes()
        (root / name).write_bytes(raw[: len(raw) // 2])

    return damage


def _zero_second_half(name: str) -> Damage:
    """Same size, other bytes: only the manifest's md5 can tell."""
    def damage(root: Path) -> None:
        raw = (root / name).read_bytes()
        half = len(raw) // 2
        (root / name).write_bytes(raw[:half] + bytes(len(raw) - half))

    return damage


def _garbage(name: str) -> Damage:
    def damage(root: Path) -> None:
        (root / name).write_bytes(b"not what genbench wrote\n" * 4)

    return damage


def _edit_params(root: Path, edit: Callable[[dict], None]) -> None:
    params = yaml.load((root / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _png_folder(folder: Path, count: int, corrupt: int | None = None, size: int = 8) -> None:
    """`count` grayscale PNGs, the `corrupt`-th cut in half (its header intact: PIL opens it, then fails)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(count)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(folder / f"{index:02d}.png")
    if corrupt is not None:
        _truncate(f"{corrupt:02d}.png")(folder)


def _folder_dataset(count: int, corrupt: int | None = None) -> Damage:
    """params.yaml on `dataset: folder` over `count` images, for sets of 16 + 4 + 12 + 4 = 36."""
    def damage(root: Path) -> None:
        _png_folder(root / "images", count, corrupt)
        _edit_params(root, lambda p: p["data"].update(
            dataset="folder", path="images", image_size=8, channels=1,
            profiles={"tiny": {"train_size": 16, "validation_size": 4, "holdout_size": 12, "reference_size": 4}}))

    return damage


def _metrics_folders(root: Path) -> None:
    _png_folder(root / "real", 12)
    _png_folder(root / "fake", 12, corrupt=3)


def _without_vae(root: Path) -> None:
    shutil.rmtree(root / "runs" / "vae")


def _fid_curve_on(damage: Damage) -> Damage:
    def both(root: Path) -> None:
        _edit_params(root, lambda p: p["models"]["vae"]["profiles"]["tiny"]["train"].update(fid_every=2, fid_n=12))
        damage(root)

    return both


def _truncated_samples(root: Path) -> None:
    path = root / "samples" / "vae" / "seed-0.npy"
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((12, 28, 28, 1), dtype=np.uint8))
    _truncate("samples/vae/seed-0.npy")(root)


def _edited_weights(root: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = root / RUN / "model.safetensors"
    weights = load_file(path)
    save_file({key: value + 1 if value.is_floating_point() else value for key, value in weights.items()}, path)


PREPARED = "data/prepared"
RUN = "runs/vae/seed-0"
# (case, command, damage, what the one line names, the fix it gives)
CASES = [
    ("train.npy zeroed (same size)", ["train", "vae"], _zero_second_half(f"{PREPARED}/train.npy"),
     f"{PREPARED}/train.npy: md5 ", "re-run `genbench prepare` (or `dvc checkout data/prepared`)"),
    ("train.npy truncated", ["train", "vae"], _truncate(f"{PREPARED}/train.npy"), f"{PREPARED}/train.npy",
     "re-run `genbench prepare`"),
    ("train_labels.npy zeroed", ["train", "vae"], _zero_second_half(f"{PREPARED}/train_labels.npy"),
     f"{PREPARED}/train_labels.npy", "re-run `genbench prepare`"),
    ("validation.npy zeroed, FID curve on", ["fid-curve", "vae"],
     _fid_curve_on(_zero_second_half(f"{PREPARED}/validation.npy")), f"{PREPARED}/validation.npy",
     "re-run `genbench prepare`"),
    ("holdout.npy zeroed", ["evaluate", "real"], _zero_second_half(f"{PREPARED}/holdout.npy"),
     f"{PREPARED}/holdout.npy", "re-run `genbench prepare`"),
    ("reference.npy truncated", ["evaluate", "real"], _truncate(f"{PREPARED}/reference.npy"),
     f"{PREPARED}/reference.npy", "re-run `genbench prepare`"),
    ("manifest.json truncated", ["train", "vae"], _truncate(f"{PREPARED}/manifest.json"),
     f"{PREPARED}/manifest.json: not a manifest of `genbench prepare`", "re-run `genbench prepare`"),
    ("samples truncated (no manifest)", ["evaluate", "vae"], _truncated_samples, "samples/vae/seed-0.npy",
     "not a readable .npy file"),
    ("batch above the prepared images (an entry not in families)", ["train", "wgan"],
     lambda root: _edit_params(root, lambda p: p["models"]["wgan"]["profiles"]["tiny"]["train"].update(batch_size=300)),
     f"models.wgan.train.batch_size: 300 is more than the 256 images of {PREPARED}/train.npy",
     "lower models.wgan.train.batch_size or raise data.train_size"),
    ("ldm without its vae run", ["train", "ldm"], _without_vae, "runs/vae/seed-0/config.json not found",
     "set models.ldm.arch.vae_run"),
    ("model.safetensors truncated", ["sample", "vae"], _truncate(f"{RUN}/model.safetensors"),
     f"{RUN}/model.safetensors: unreadable weights", "re-run `genbench train`"),
    ("model.safetensors garbage", ["sample", "vae"], _garbage(f"{RUN}/model.safetensors"),
     f"{RUN}/model.safetensors: unreadable weights", "re-run `genbench train`"),
    ("config.json truncated", ["sample", "vae"], _truncate(f"{RUN}/config.json"), f"{RUN}/config.json",
     "not valid JSON"),
    ("summary.json truncated", ["sample", "vae"], _truncate(f"{RUN}/summary.json"), f"{RUN}/summary.json",
     "not valid JSON"),
    ("model.safetensors edited (loads, but not what summary.json signs)", ["sample", "vae"], _edited_weights,
     f"{RUN}/model.safetensors is not the file summary.json was written with", "re-run `genbench train vae`"),
    ("checkpoint.pt truncated", ["train", "vae"], _truncate(f"{RUN}/checkpoint.pt"),
     f"{RUN}/checkpoint.pt: unreadable checkpoint", "delete it to start again"),
    ("checkpoint.pt garbage", ["train", "vae"], _garbage(f"{RUN}/checkpoint.pt"),
     f"{RUN}/checkpoint.pt: unreadable checkpoint", "delete it to start again"),
    ("corrupt PNG in a metrics folder", ["metrics", "real", "fake"], _metrics_folders, "fake/03.png",
     "re-save it as PNG or remove it"),
    ("corrupt PNG in dataset folder", ["prepare"], _folder_dataset(36, corrupt=5), "images/05.png",
     "re-save it as PNG or JPEG, or remove it"),
    ("train_size above a folder's images", ["prepare"], _folder_dataset(30),
     "data.train_size + data.validation_size + data.holdout_size + data.reference_size = 16 + 4 + 12 + 4 = 36 "
     "exceeds the 30 images in images", "lower one of them or add images"),
]


def _snapshot(root: Path) -> dict[str, tuple[str, int] | None]:
    """Every path under `root`: a file's sha256 and mtime, a folder's None."""
    return {str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            if path.is_file() else None for path in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("case", "command", "damage", "named", "fix"), CASES, ids=[case for case, *_ in CASES])
def test_a_stage_stops_on_bad_input_with_one_line(trained: Path, case: str, command: list[str], damage: Damage,
                                                  named: str, fix: str) -> None:
    damage(trained)
    before = _snapshot(trained)
    result = CliRunner().invoke(app, command)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and named in lines[0] and fix in lines[0], lines[0]
    assert _snapshot(trained) == before


def test_a_checkpoint_of_another_config_restarts_with_a_message(trained: Path) -> None:
    """Not an error: a changed config trains anew (the old checkpoint is replaced only by the new run's)."""
    _edit_params(trained, lambda p: p["models"]["vae"]["profiles"]["tiny"]["train"].update(steps=5))
    result = CliRunner().invoke(app, ["train", "vae"])
    assert result.exit_code == 0, result.output
    assert f"{RUN}/checkpoint.pt: written for another config; starting from scratch" in result.output
    assert "trained vae: 5 steps" in result.output
