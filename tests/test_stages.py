"""Each stage on tiny data through the CLI, plus resume and sampling guarantees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components import train as train_module
from genbench.config import load_config

FAMILIES = ("vae", "dcgan", "ddpm")


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture()
def prepared(project: Path) -> Path:
    invoke("prepare")
    return project


def test_prepare_writes_split_and_manifest(prepared: Path) -> None:
    config = load_config("params.yaml")
    data = prepared / "data" / "prepared"
    train, reference = np.load(data / "train.npy"), np.load(data / "reference.npy")
    assert train.dtype == np.uint8 and train.shape == (config.data.train_size, 28, 28, 1)
    assert reference.shape == (config.data.reference_size, 28, 28, 1)
    assert np.load(data / "train_labels.npy").shape == (config.data.train_size,)
    manifest = json.loads((data / "manifest.json").read_text())
    import hashlib

    for name, md5 in manifest["files"].items():
        assert hashlib.md5((data / name).read_bytes()).hexdigest() == md5
    assert json.loads((data / "config.json").read_text())["data"]["train_size"] == config.data.train_size


def test_prepare_is_deterministic(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = (prepared / "data" / "prepared" / "manifest.json").read_text()
    invoke("prepare", "--out", str(tmp_path_factory.mktemp("again")))
    assert (tmp_path_factory.getbasetemp() / "again0" / "manifest.json").read_text() == first


@pytest.mark.parametrize("family", FAMILIES)
def test_train_then_sample(prepared: Path, family: str) -> None:
    invoke("train", family)
    run = prepared / "runs" / family
    for name in ("model.safetensors", "config.json", "summary.json", "history.csv", "checkpoint.pt"):
        assert (run / name).exists(), name
    steps = load_config("params.yaml").family(family).train.steps
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == steps and summary["num_parameters"] > 0
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0] == "step,name,value" and any(",loss" not in r and "/loss," in r for r in rows[1:])

    invoke("sample", family)
    images = np.load(prepared / "samples" / f"{family}.npy")
    n = load_config("params.yaml").sample.n
    assert images.dtype == np.uint8 and images.shape == (n, 28, 28, 1)
    assert images.max() > images.min()  # not a constant image
    record = json.loads((prepared / "samples" / f"{family}.json").read_text())
    assert record["n"] == n and record["family"] == family


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_do_not_depend_on_batch_size(prepared: Path, family: str, tmp_path: Path) -> None:
    invoke("train", family)
    from genbench.components.sample import sample

    a = sample(prepared / "runs" / family, tmp_path / "a.npy", n=5, batch_size=5, seed=3, device="cpu")
    b = sample(prepared / "runs" / family, tmp_path / "b.npy", n=5, batch_size=2, seed=3, device="cpu")
    c = sample(prepared / "runs" / family, tmp_path / "c.npy", n=5, batch_size=5, seed=4, device="cpu")
    assert a["shape"] == b["shape"]
    first, second, other = (np.load(tmp_path / f"{x}.npy").astype(int) for x in "abc")
    assert np.abs(first - second).max() <= 1  # equal up to float rounding at a uint8 boundary
    assert np.abs(first - other).max() > 1  # another seed, other images


def test_resume_gives_the_same_weights(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop after the first checkpoint, rerun, and end with exactly the weights of an uninterrupted run."""
    invoke("train", "vae", "--out", "straight")
    straight = load_file("straight/model.safetensors")

    real_save = train_module._save_checkpoint

    class Stopped(Exception):
        pass

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Stopped("simulated stop right after the first checkpoint")

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    result = CliRunner().invoke(app, ["train", "vae", "--out", "resumed"])
    assert isinstance(result.exception, Stopped)
    assert not Path("resumed/model.safetensors").exists()  # nothing looks complete after a crash
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    output = invoke("train", "vae", "--out", "resumed")
    assert "resuming at step" in output
    resumed = load_file("resumed/model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert (straight[key] == resumed[key]).all(), key
    assert Path("straight/history.csv").read_text() == Path("resumed/history.csv").read_text()


def test_training_repeats_bit_for_bit(prepared: Path) -> None:
    invoke("train", "dcgan", "--out", "one")
    invoke("train", "dcgan", "--out", "two")
    one, two = load_file("one/model.safetensors"), load_file("two/model.safetensors")
    assert all((one[k] == two[k]).all() for k in one)
