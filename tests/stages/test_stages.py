"""Each stage on tiny data through the CLI, plus resume and sampling guarantees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
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


@pytest.mark.parametrize(("family", "precision"), [("vae", "fp32"), ("wgan_gp", "fp32"), ("dcgan", "fp16")])
def test_resume_gives_the_same_weights(
    prepared: Path, monkeypatch: pytest.MonkeyPatch, family: str, precision: str
) -> None:
    """Stop after the first checkpoint, rerun, and end with exactly the weights of an uninterrupted run: the
    EMA weights sampled from and the raw last iterate (`raw.*`), for a VAE, a GAN with n_critic > 1 and a GAN
    under fp16 autocast with its loss scalers."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["models"][family]["train"]["precision"] = precision
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    invoke("train", family, "--out", "straight")
    straight = load_file("straight/model.safetensors")

    real_save = train_module._save_checkpoint

    class Stopped(Exception):
        pass

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Stopped("simulated stop right after the first checkpoint")

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    result = CliRunner().invoke(app, ["train", family, "--out", "resumed"])
    assert isinstance(result.exception, Stopped)
    assert not Path("resumed/model.safetensors").exists()  # nothing looks complete after a crash
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    output = invoke("train", family, "--out", "resumed")
    assert "resuming at step" in output
    resumed = load_file("resumed/model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert (straight[key] == resumed[key]).all(), key
    raw = [key for key in straight if key.startswith("raw.")]
    assert raw and any(not torch.equal(straight[key], straight[key.removeprefix("raw.")]) for key in raw)
    assert Path("straight/history.csv").read_text() == Path("resumed/history.csv").read_text()
    scalers = torch.load("resumed/checkpoint.pt", weights_only=True)["scalers"]
    assert all(("scale" in state) == (precision == "fp16") for state in scalers.values()), scalers


def test_training_repeats_bit_for_bit(prepared: Path) -> None:
    invoke("train", "dcgan", "--out", "one")
    invoke("train", "dcgan", "--out", "two")
    one, two = load_file("one/model.safetensors"), load_file("two/model.safetensors")
    assert all((one[k] == two[k]).all() for k in one)


@pytest.mark.parametrize("family", ["wgan_gp", "wgan", "vae_gan", "ldm"])
def test_new_families_train_and_sample(prepared: Path, family: str) -> None:
    if family == "ldm":
        invoke("train", "vae")  # the ldm freezes runs/vae
    invoke("train", family)
    invoke("sample", family)
    images = np.load(prepared / "samples" / f"{family}.npy")
    assert images.dtype == np.uint8 and images.shape == (load_config("params.yaml").sample.n, 28, 28, 1)
    assert images.max() > images.min()


def test_conditional_ddpm_with_ddim_records_its_labels(prepared: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["models"]["ddpm"]["arch"]["num_classes"] = 10
    params["models"]["ddpm"]["sampling"].update(sampler="ddim", guidance_scale=2.0, eta=0.5)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    invoke("train", "ddpm")
    invoke("sample", "ddpm")
    record = json.loads((prepared / "samples" / "ddpm.json").read_text())
    assert record["num_classes"] == 10 and record["labels"] == "image i has class i % num_classes"
    assert record["weights"] == "ema" and record["sampling"]["sampler"] == "ddim"
    from genbench.components.sample import sample

    n = 4
    whole = sample(prepared / "runs" / "ddpm", prepared / "a.npy", n=n, batch_size=n, seed=5, device="cpu")
    split = sample(prepared / "runs" / "ddpm", prepared / "b.npy", n=n, batch_size=3, seed=5, device="cpu")
    assert whole["shape"] == split["shape"]
    assert np.abs(np.load(prepared / "a.npy").astype(int) - np.load(prepared / "b.npy").astype(int)).max() <= 1


def test_sampling_raw_weights_is_one_switch(prepared: Path) -> None:
    invoke("train", "vae")
    from genbench.components.train import load_trained

    ema_model, config = load_trained(prepared / "runs" / "vae")
    raw_model, _ = load_trained(prepared / "runs" / "vae", sampling=config["sampling"] | {"ema": False})
    stored = load_file(str(prepared / "runs" / "vae" / "model.safetensors"))
    for name, value in raw_model.state_dict().items():
        assert torch.equal(value, stored.get(f"raw.{name}", stored[name])), name
    assert any(not torch.equal(a, b) for a, b in zip(ema_model.state_dict().values(), raw_model.state_dict().values()))


def test_sampler_settings_come_from_params_without_retraining(prepared: Path) -> None:
    invoke("train", "ddpm")
    weights = (prepared / "runs" / "ddpm" / "model.safetensors").read_bytes()
    invoke("sample", "ddpm")
    ancestral = np.load(prepared / "samples" / "ddpm.npy")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["models"]["ddpm"]["sampling"].update(sampler="ddim", eta=0.0)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    invoke("sample", "ddpm")
    record = json.loads((prepared / "samples" / "ddpm.json").read_text())
    assert record["sampling"]["sampler"] == "ddim" and record["sampling"]["eta"] == 0.0
    assert not np.array_equal(np.load(prepared / "samples" / "ddpm.npy"), ancestral)
    assert (prepared / "runs" / "ddpm" / "model.safetensors").read_bytes() == weights


def test_sample_from_the_registry_champion(prepared: Path) -> None:
    for stage in ("train", "sample", "evaluate", "register"):
        invoke(stage, "ddpm")
    output = invoke("sample", "ddpm", "--model", "models:/genbench-ddpm@champion")
    assert "from genbench-ddpm v1" in output
    assert np.array_equal(np.load(prepared / "samples" / "ddpm-v1.npy"), np.load(prepared / "samples" / "ddpm.npy"))
    source = json.loads((prepared / "samples" / "ddpm-v1.json").read_text())["source"]
    assert source["model_uri"] == "models:/genbench-ddpm@champion" and source["version"] == 1
    assert source["fid"] == json.loads((prepared / "metrics" / "ddpm.json").read_text())["fid"]
    assert source["run_id"] == json.loads((prepared / "registry" / "ddpm.json").read_text())["run_id"]

    for args, message in [
        (["sample", "vae", "--model", "models:/genbench-ddpm/1"], "holds a ddpm model, not vae"),
        (["sample", "vae", "--run", "runs/ddpm"], "runs/ddpm holds a ddpm model, not vae"),
        (["sample", "ddpm", "--model", "models:/genbench-ddpm@nobody"], "not in the registry"),
        (["sample", "ddpm", "--model", "runs:/abc/model"], "expected models:/genbench-<family>@<alias>"),
        (["sample", "ddpm", "--model", "models:/genbench-ddpm/1", "--run", "runs/ddpm"], "not both"),
    ]:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_models_lists_every_family_with_its_size(project: Path) -> None:
    output = invoke("models")
    for family in ("vae", "dcgan", "wgan_gp", "wgan", "vae_gan", "ddpm", "ldm"):
        assert any(line.split()[0] == family for line in output.splitlines() if line.strip()), family
    assert "n/a" in output.splitlines()[-1]  # ldm: no trained vae in a fresh project


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (LeCun's MNIST format: magic 0x08 = ubyte, ndim, big-endian dims, data), gzipped."""
    import gzip
    import struct

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_prepare_reads_mnist_idx_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genbench.components.prepare import prepare

    rng = np.random.default_rng(0)
    splits = {"train": (rng.integers(0, 256, (12, 28, 28)), np.arange(12) % 10),
              "t10k": (rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10)}
    (tmp_path / "local" / "mnist").mkdir(parents=True)
    for split, (images, labels) in splits.items():
        _write_idx(tmp_path / "local" / "mnist" / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / "local" / "mnist" / f"{split}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("GENBENCH_DATA_DIR", str(tmp_path / "local"))
    manifest = prepare("mnist", 8, 4, 0, tmp_path / "out", tmp_path / "raw")
    assert manifest["image_shape"] == [28, 28, 1]
    train, labels = np.load(tmp_path / "out" / "train.npy"), np.load(tmp_path / "out" / "train_labels.npy")
    assert train.shape == (8, 28, 28, 1) and train.dtype == np.uint8
    originals = {splits["train"][0][i].astype(np.uint8).tobytes(): splits["train"][1][i] for i in range(12)}
    assert all(originals[image[..., 0].tobytes()] == label for image, label in zip(train, labels))


def test_prepare_reads_cifar10_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR-10's python format: pickled dicts with `data` (N, 3072) as R, G, B planes and `labels`."""
    import hashlib
    import pickle

    from torchvision.datasets import CIFAR10

    from genbench.components.prepare import prepare

    folder = tmp_path / "local" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    planes = {}
    for k, name in enumerate(names):
        data = rng.integers(0, 256, (2, 3 * 32 * 32), dtype=np.uint8)
        planes[name] = data
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": [k, (k + 1) % 10]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    # torchvision checks each file against the real CIFAR-10 md5s: point it at ours instead.
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5("batches.meta")})
    monkeypatch.setenv("GENBENCH_DATA_DIR", str(tmp_path / "local"))
    manifest = prepare("cifar10", 10, 2, 0, tmp_path / "out", tmp_path / "raw")
    assert manifest["image_shape"] == [32, 32, 3]
    reference = np.load(tmp_path / "out" / "reference.npy")
    expected = planes["test_batch"].reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    assert reference.dtype == np.uint8 and np.array_equal(reference, expected)
    assert sorted(np.load(tmp_path / "out" / "train_labels.npy").tolist()) == sorted(
        [k for k in range(5)] + [(k + 1) % 10 for k in range(5)])


def test_report_draws_the_vae_latent_interpolation(prepared: Path) -> None:
    invoke("train", "vae")
    from PIL import Image

    from genbench.components.report import save_interpolation

    reference = np.load(prepared / "data" / "prepared" / "reference.npy")
    save_interpolation(prepared / "runs" / "vae", reference, prepared / "interp.png", pairs=2, steps=5)
    width, height = Image.open(prepared / "interp.png").size
    assert (width, height) == (2 + 5 * (2 * 28 + 2), 2 + 2 * (2 * 28 + 2))  # 5 columns, 2 rows, zoom 2, padding 2


def test_fid_curve_goes_into_the_history(prepared: Path) -> None:
    """train.fid_every > 0: FID of the EMA weights every K steps lands in history.csv (register logs it)."""
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["models"]["vae"]["profiles"]["tiny"]["train"] |= {"fid_every": 2, "fid_n": 8}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    invoke("train", "vae")
    rows = [line.split(",") for line in Path("runs/vae/history.csv").read_text().splitlines()[1:]]
    curve = {int(step): float(value) for step, name, value in rows if name == "fid_curve"}
    steps = load_config("params.yaml").models.vae.train.steps
    assert sorted(curve) == list(range(2, steps + 1, 2))
    assert all(np.isfinite(v) and v > 0 for v in curve.values())
    assert any(name == "fid_curve_seconds" for _, name, _ in rows)
    from PIL import Image

    from genbench.components.report import plot_fid_curves, read_curves

    assert plot_fid_curves({"vae": read_curves(Path("runs/vae/history.csv"))}, Path("fid_curve.png"))
    assert Image.open("fid_curve.png").size == (600, 400)
    invoke("train", "dcgan")  # no curve: the report leaves the figure out
    assert not plot_fid_curves({"dcgan": read_curves(Path("runs/dcgan/history.csv"))}, Path("none.png"))
    assert not Path("none.png").exists()
