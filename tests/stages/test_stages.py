"""Each stage on tiny data through the CLI and the components, plus resume and sampling guarantees.

The data and the trained vae, dcgan and ddpm runs come from one session fixture (tests/stages/conftest.py);
tests that need other settings train their own, on the same prepared data.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version as metadata_version
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.common.artifacts import load_trained
from genbench.components.sample.sample import sample
from genbench.components.train import train as train_module
from genbench.config import DataConfig, SampleConfig, load_config
from genbench.models.samplers import DiffusionSampling

from ..conftest import refresh_plan
from .conftest import FAMILIES

# A metrics record (components/common/records.py MetricsRecord) written by hand, where a test needs one but not the
# pass of the Inception network that measures it; a test sets the fields it reads (fid, samples_md5, ...)
STAND_IN_METRICS = {
    "fid": 300.0, "k": 3, "density_k": 5, "precision": 0.5, "recall": 0.5, "density": 0.5, "coverage": 0.5,
    "kid_mean": 0.01, "kid_std": 0.001, "kid_subsets": 10, "kid_subset_size": 12, "seed": 0, "bootstrap_resamples": 0,
    "inception_score": None, "inception_score_std": None, "inception_score_splits": 10,
    "inception_score_unavailable": "not requested", "n_samples": 12, "n_reference": 12, "reference_md5": "0" * 32,
    "feature_extractor": {"name": "pixel-stand-in", "sha256": "0" * 64}, "preprocessing": {},
    "inception_dtype": "fp32", "reference_stats_key": "stand-in", "warnings": [], "samples_md5": "0" * 32,
    # the tiny profile's, as `evaluate real` records it with the stand-in network: the report puts them in one table
    "protocol": {"name": "holdout", "dataset": "fashion_mnist", "n_generated": 12, "reference_split": "test",
                 "reference_size": 24, "feature_reference_size": 24, "resize": "legacy-tf",
                 "network": "pixel-stand-in@000000000000", "precision": "fp32"},
}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


def edit_params(edit) -> None:
    """Edit the project's params.yaml as data, then rewrite plan.yaml as `genbench use tiny` would."""
    params = yaml.load(Path("params.yaml").read_text(), Loader=yaml.CSafeLoader)
    edit(params)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refresh_plan(Path("."))


def test_prepare_writes_split_and_manifest(prepared: Path) -> None:
    config = load_config("params.yaml")
    data = prepared / "data" / "prepared"
    train, reference = np.load(data / "train.npy"), np.load(data / "reference.npy")
    assert train.dtype == np.uint8 and train.shape == (config.data.train_size, 28, 28, 1)
    assert reference.shape == (config.data.reference_size, 28, 28, 1)
    assert np.load(data / "validation.npy").shape == (config.data.validation_size, 28, 28, 1)
    assert np.load(data / "holdout.npy").shape == (config.data.holdout_size, 28, 28, 1) == (config.sample.n, 28, 28, 1)
    assert np.load(data / "train_labels.npy").shape == (config.data.train_size,)
    assert np.load(data / "validation_labels.npy").shape == (config.data.validation_size,)
    manifest = json.loads((data / "manifest.json").read_text())
    for name, md5 in manifest["files"].items():
        assert hashlib.md5((data / name).read_bytes()).hexdigest() == md5
    assert json.loads((data / "config.json").read_text())["data"]["train_size"] == config.data.train_size


def test_prepare_is_deterministic(prepared: Path) -> None:
    """The CLI in a second folder writes what the session fixture's component call wrote, byte for byte."""
    invoke("prepare", "--out", "again")
    written = sorted(p.name for p in (prepared / "data" / "prepared").iterdir())
    assert sorted(p.name for p in (prepared / "again").iterdir()) == written
    for name in written:
        assert (prepared / "again" / name).read_bytes() == (prepared / "data" / "prepared" / name).read_bytes()


def test_held_out_sets_share_no_image(prepared: Path) -> None:
    """Validation and holdout are disjoint from train and from each other (model selection and the real-data row
    never see a training image), and from the reference; compared pixel row by row."""
    data = prepared / "data" / "prepared"
    rows = {name: {image.tobytes() for image in np.load(data / f"{name}.npy")}
            for name in ("train", "validation", "reference", "holdout")}
    for name, images in rows.items():
        assert len(images) == len(np.load(data / f"{name}.npy")), f"{name} holds a repeated image"
    for first, second in [("validation", "train"), ("validation", "reference"), ("holdout", "reference"),
                          ("holdout", "train"), ("holdout", "validation"), ("train", "reference")]:
        assert not rows[first] & rows[second], (first, second)


def test_sets_that_do_not_fit_their_split_exit_2(project: Path) -> None:
    edit_params(lambda p: p["data"]["profiles"]["tiny"].update(validation_size=59800))
    result = CliRunner().invoke(app, ["prepare"])
    assert result.exit_code == 2, result.output
    assert ("data.train_size + data.validation_size + data.holdout_size = 256 + 59800 + 12 = 60068 exceeds the "
            "60000 images of fashion_mnist's train split; lower one of them") in result.output
    assert not (project / "data" / "prepared").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_train_writes_its_run_and_sample_reads_it(trained: Path, family: str) -> None:
    run = trained / "runs" / family / "seed-0"
    for name in ("model.safetensors", "config.json", "summary.json", "history.csv", "checkpoint.pt"):
        assert (run / name).exists(), name
        # every output gets the same permissions (the weights were once 0600: safetensors replaced the temp file)
        assert (run / name).stat().st_mode & 0o777 == (run / "config.json").stat().st_mode & 0o777, name
    settings = load_config("params.yaml").entry(family)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == settings.train.steps and summary["num_parameters"] > 0
    rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    assert rows[0] == ["step", "name", "value"]
    loss_steps = {name: [int(step) for step, n, _ in rows[1:] if n == name] for name in {n for _, n, _ in rows[1:]}}
    groups = {"dcgan": ["d", "g"]}.get(family, ["model"])
    for group in groups:  # log_every is 1 in the tiny profile: one loss row per group and step
        assert loss_steps[f"{group}/loss"] == list(range(1, settings.train.steps + 1)), group
    record = json.loads((run / "config.json").read_text())
    assert record["family"] == family and record["arch"] == settings.arch.model_dump(mode="json")

    invoke("sample", family)
    images = np.load(trained / "samples" / family / "seed-0.npy")
    n = load_config("params.yaml").sample.n
    assert images.dtype == np.uint8 and images.shape == (n, 28, 28, 1)
    assert images.max() > images.min()  # not a constant image
    written = json.loads((trained / "samples" / family / "seed-0.json").read_text())
    assert written["n"] == n and written["family"] == family


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_do_not_depend_on_batch_size(trained: Path, family: str, tmp_path: Path) -> None:
    sampling = load_config("params.yaml").sampling_for(family)
    run = trained / "runs" / family / "seed-0"

    def draw(name: str, batch_size: int, seed: int) -> np.ndarray:
        sample(run, tmp_path / f"{name}.npy", family, SampleConfig(n=5, batch_size=batch_size, device="cpu"),
               sampling, seed)
        return np.load(tmp_path / f"{name}.npy").astype(int)

    first, second, other = draw("a", 5, 3), draw("b", 2, 3), draw("c", 5, 4)
    assert np.abs(first - second).max() <= 1  # equal up to float rounding at a uint8 boundary
    assert np.abs(first - other).max() > 1  # another seed, other images


@pytest.mark.parametrize(("family", "precision", "arch"), [
    ("vae", "fp32", {}), ("wgan_gp", "fp32", {}), ("dcgan", "fp16", {}), ("ddpm", "fp32", {"dropout": 0.1}),
    ("ldm", "fp32", {}),
])
def test_resume_gives_the_same_weights(
    trained: Path, monkeypatch: pytest.MonkeyPatch, family: str, precision: str, arch: dict
) -> None:
    """Stop after the first checkpoint, rerun, and end with exactly the weights of an uninterrupted run: the
    EMA weights sampled from and the raw last iterate (`raw.*`), for a VAE, a GAN with n_critic > 1, a GAN
    under fp16 autocast with its loss scalers, a DDPM with dropout (its masks come from the checkpointed RNG)
    and the LDM on the trained runs/vae (its latent scale, measured once on a fresh run, comes back from the
    checkpoint)."""
    def edit(p: dict) -> None:
        p["models"][family].setdefault("train", {}).update(dtype=precision)
        p["models"][family]["profiles"]["tiny"].setdefault("arch", {}).update(arch)  # over the profile's own

    edit_params(edit)
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
    if family == "ldm":
        assert float(straight["latent_scale"]) != 1.0  # measured by fit_data on the fresh run
    raw = [key for key in straight if key.startswith("raw.")]
    assert raw and any(not torch.equal(straight[key], straight[key.removeprefix("raw.")]) for key in raw)
    assert Path("straight/history.csv").read_text() == Path("resumed/history.csv").read_text()
    scalers = torch.load("resumed/checkpoint.pt", weights_only=True)["scalers"]
    assert all(("scale" in state) == (precision == "fp16") for state in scalers.values()), scalers


def test_training_repeats_bit_for_bit(trained: Path) -> None:
    """The CLI retrains dcgan from the same seed and gets the session fixture's weights exactly."""
    invoke("train", "dcgan", "--out", "again")
    one, two = load_file("runs/dcgan/seed-0/model.safetensors"), load_file("again/model.safetensors")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def test_warmup_and_clipping_reach_the_optimizer(prepared: Path) -> None:
    """Four steps of an eight-step warmup end at half the learning rate, in the checkpoint's optimizer."""
    edit_params(lambda p: p["models"]["ddpm"]["profiles"]["tiny"]["train"].update(warmup_steps=8, grad_clip=0.5))
    invoke("train", "ddpm")
    lr = load_config("params.yaml").entry("ddpm").train.lr
    checkpoint = torch.load("runs/ddpm/seed-0/checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 4
    assert checkpoint["optimizers"]["model"]["param_groups"][0]["lr"] == pytest.approx(lr * 4 / 8)
    summary = json.loads(Path("runs/ddpm/seed-0/summary.json").read_text())
    assert (summary["dtype"], summary["channels_last"]) in {("fp32", False), ("bf16", True)}


@pytest.mark.parametrize("family", ["wgan_gp", "wgan", "vae_gan", "ldm"])
def test_other_families_train_and_sample(trained: Path, family: str) -> None:
    invoke("train", family)  # the ldm freezes the trained runs/vae
    invoke("sample", family)
    images = np.load(trained / "samples" / family / "seed-0.npy")
    assert images.dtype == np.uint8 and images.shape == (load_config("params.yaml").sample.n, 28, 28, 1)
    assert images.max() > images.min()


def test_ldm_needs_its_trained_vae(prepared: Path) -> None:
    result = CliRunner().invoke(app, ["train", "ldm"])
    assert result.exit_code == 2 and "runs/vae/seed-0/config.json not found" in result.output, result.output


def test_the_conditional_variant_is_its_own_entry(prepared: Path, pixel_network: list[int]) -> None:
    """params.yaml's ddpm_cfg (a named variant: family ddpm, 10 classes, guidance) trains, samples and registers
    under its own name, beside the unconditional ddpm, and records its labels."""
    edit_params(lambda p: p["sampling"]["ddpm_cfg"].update(sampler="ddim", sample_steps=2, guidance_scale=2.0, eta=0.5))
    invoke("train", "ddpm_cfg")
    invoke("sample", "ddpm_cfg")
    assert not (prepared / "runs" / "ddpm" / "seed-0").exists()
    assert json.loads((prepared / "runs" / "ddpm_cfg" / "seed-0" / "config.json").read_text())["family"] == "ddpm"
    record = json.loads((prepared / "samples" / "ddpm_cfg" / "seed-0.json").read_text())
    assert record["entry"] == "ddpm_cfg" and record["family"] == "ddpm"
    assert record["num_classes"] == 10 and record["labels"] == "image i has class i % num_classes"
    assert record["weights"] == "ema" and record["sampling"]["sampler"] == "ddim"
    assert record["sampling"]["guidance_scale"] == 2.0
    invoke("evaluate", "ddpm_cfg")
    assert "registered genbench-ddpm_cfg v1" in invoke("register", "ddpm_cfg")
    from mlflow.models import get_model_info

    signature = get_model_info("models:/genbench-ddpm_cfg/1").signature  # requests may send classes; the
    assert signature.inputs.input_names() == ["n", "seed", "labels"]  # sampling settings above are the defaults
    assert {p["name"]: p["default"] for p in signature.params.to_dict()} == {
        "sampler": "ddim", "sample_steps": 2, "eta": 0.5, "karras_sigmas": False, "guidance_scale": 2.0,
        "variance_type": "fixed_large"}
    result = CliRunner().invoke(app, ["sample", "ddpm", "--run", "runs/ddpm_cfg/seed-0"])
    assert result.exit_code == 2 and "holds the ddpm_cfg model (ddpm), not ddpm" in result.output
    sampling = load_config("params.yaml").sampling_for("ddpm_cfg")
    run = prepared / "runs" / "ddpm_cfg" / "seed-0"
    sample(run, prepared / "a.npy", "ddpm_cfg", SampleConfig(n=4, batch_size=4, device="cpu"), sampling, 5)
    sample(run, prepared / "b.npy", "ddpm_cfg", SampleConfig(n=4, batch_size=3, device="cpu"), sampling, 5)
    assert np.abs(np.load(prepared / "a.npy").astype(int) - np.load(prepared / "b.npy").astype(int)).max() <= 1


def test_sampling_raw_weights_is_one_switch(trained: Path) -> None:
    ema_model, _ = load_trained(trained / "runs" / "vae" / "seed-0")
    raw_model, _ = load_trained(trained / "runs" / "vae" / "seed-0", ema=False)
    stored = load_file(str(trained / "runs" / "vae" / "seed-0" / "model.safetensors"))
    for name, value in raw_model.state_dict().items():
        assert torch.equal(value, stored.get(f"raw.{name}", stored[name])), name
    assert any(not torch.equal(a, b) for a, b in zip(ema_model.state_dict().values(), raw_model.state_dict().values()))
    edit_params(lambda p: p["sampling"].setdefault("vae", {}).update(ema=False))
    invoke("sample", "vae")
    assert json.loads((trained / "samples" / "vae" / "seed-0.json").read_text())["weights"] == "raw"


def test_sampler_settings_come_from_params_without_retraining(trained: Path) -> None:
    weights = (trained / "runs" / "ddpm" / "seed-0" / "model.safetensors").read_bytes()
    invoke("sample", "ddpm")
    ancestral = np.load(trained / "samples" / "ddpm" / "seed-0.npy")
    edit_params(lambda p: p["sampling"]["ddpm"].update(sampler="ddim", sample_steps=2, eta=0.0))
    invoke("sample", "ddpm")
    record = json.loads((trained / "samples" / "ddpm" / "seed-0.json").read_text())
    assert record["sampling"]["sampler"] == "ddim" and record["sampling"]["eta"] == 0.0
    assert not np.array_equal(np.load(trained / "samples" / "ddpm" / "seed-0.npy"), ancestral)
    assert (trained / "runs" / "ddpm" / "seed-0" / "model.safetensors").read_bytes() == weights


def test_a_sweep_resamples_the_trained_weights(trained: Path, pixel_network: list[int]) -> None:
    """sweeps.ddim_steps (tiny: DDIM at 2 steps) draws from runs/ddpm exactly what `sample` draws under the same
    settings, scores the set as `evaluate` does, and leaves the run alone."""
    from genbench.components.evaluate.evaluate import evaluate
    from genbench.components.sample.sample import sample

    weights = (trained / "runs" / "ddpm" / "seed-0" / "model.safetensors").read_bytes()
    config = load_config("params.yaml")
    spec = config.sweeps["ddim_steps"]
    assert spec.values == (2,) and spec.set == {"sampler": "ddim", "eta": 0.0}
    assert "ddim_steps: sample_steps=2: FID" in invoke("sweep", "ddim_steps")
    summary = json.loads((trained / "metrics" / "sweeps" / "ddim_steps.json").read_text())
    assert [row["value"] for row in summary["rows"]] == [2] and summary["entry"] == "ddpm"
    swept = np.load(trained / "sweeps" / "ddim_steps" / "sample_steps-2.npy")
    direct = config.sampling_for("ddpm").model_copy(update={"sampler": "ddim", "eta": 0.0, "sample_steps": 2})
    sample(trained / "runs" / "ddpm" / "seed-0", trained / "direct.npy", "ddpm", config.sample, direct, config.seed)
    assert np.array_equal(swept, np.load(trained / "direct.npy"))
    scored = evaluate(trained / "direct.npy", trained / "data" / "prepared" / "reference.npy",
                      trained / "direct.json", cache_dir=trained / ".genbench" / "cache", settings=config.evaluate)
    assert summary["rows"][0]["fid"] == scored["fid"] and summary["rows"][0]["recall"] == scored["recall"]
    assert (trained / "runs" / "ddpm" / "seed-0" / "model.safetensors").read_bytes() == weights

    edit_params(lambda p: p["profiles"]["tiny"]["sweeps"]["ddim_steps"].update(values=[9]))
    result = CliRunner().invoke(app, ["sweep", "ddim_steps"])
    assert result.exit_code == 2 and "sweeps.ddim_steps: sample_steps=9: sample_steps=9 exceeds" in result.output
    assert CliRunner().invoke(app, ["sweep", "nope"]).exit_code == 2


def test_a_sweep_keeps_fractional_values_apart(trained: Path, pixel_network: list[int]) -> None:
    """Values 0.5 and 0.75 once both became eta-0.npy (Path.with_suffix read ".5" as a suffix), so the second
    set overwrote the first while the summary still listed two rows."""
    edit_params(lambda p: p["profiles"]["tiny"]["sweeps"].update(
        eta={"entry": "ddpm", "vary": "eta", "set": {"sampler": "ddim", "sample_steps": 2}, "values": [0.5, 0.75]}))
    assert "eta: eta=0.75: FID" in invoke("sweep", "eta")
    folder = trained / "sweeps" / "eta"
    assert sorted(p.name for p in folder.glob("*.npy")) == ["eta-0.5.npy", "eta-0.75.npy"]
    assert sorted(p.name for p in folder.glob("*.metrics.json")) == ["eta-0.5.metrics.json", "eta-0.75.metrics.json"]
    assert not np.array_equal(np.load(folder / "eta-0.5.npy"), np.load(folder / "eta-0.75.npy"))


def test_sample_from_the_registry_champion(trained: Path, pixel_network: list[int]) -> None:
    for stage in ("sample", "evaluate", "register"):
        invoke(stage, "ddpm")
    output = invoke("sample", "ddpm", "--model", "models:/genbench-ddpm@champion")
    assert "from genbench-ddpm v1" in output
    assert np.array_equal(np.load(trained / "samples" / "ddpm-v1.npy"),
                          np.load(trained / "samples" / "ddpm" / "seed-0.npy"))
    check_plain_mlflow_loads_the_champion(trained)
    source = json.loads((trained / "samples" / "ddpm-v1.json").read_text())["source"]
    assert source["model_uri"] == "models:/genbench-ddpm@champion" and source["version"] == 1
    assert source["fid"] == json.loads((trained / "metrics" / "ddpm" / "seed-0.json").read_text())["fid"]
    assert source["run_id"] == json.loads((trained / "registry" / "ddpm" / "seed-0.json").read_text())["run_id"]

    for args, message in [
        (["sample", "vae", "--model", "models:/genbench-ddpm/1"], "holds the ddpm model (ddpm), not vae"),
        (["sample", "vae", "--run", "runs/ddpm/seed-0"], "runs/ddpm/seed-0 holds the ddpm model (ddpm), not vae"),
        (["sample", "ddpm", "--model", "models:/genbench-ddpm@nobody"], "not in the registry"),
        (["sample", "ddpm", "--model", "runs:/abc/model"], "expected models:/genbench-<name>@<alias>"),
        (["sample", "ddpm", "--model", "models:/genbench-ddpm/1", "--run", "runs/ddpm/seed-0"], "not both"),
    ]:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def check_plain_mlflow_loads_the_champion(project: Path) -> None:
    """genbench-ddpm@champion is a standard pyfunc model logged from code (signature, input example, genbench
    pinned, no pickle), and `mlflow.pyfunc.load_model` samples in this process the bytes `genbench sample --model`
    wrote, and with a request's sampler options what `sample` draws with them (tests/services: a fresh process,
    and the REST server)."""
    import mlflow
    import pandas as pd
    from mlflow.models import Model

    uri = "models:/genbench-ddpm@champion"
    version = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(project / "version")))
    mlmodel = Model.load(version)
    assert mlmodel.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (version / "generator_model.py").is_file() and not list(version.rglob("*.pkl"))
    assert f"genbench=={metadata_version('genbench')}" in (version / "requirements.txt").read_text().split()
    # conda.yaml pins the pip that installed these (a venv without pip leaves it bare, and MLflow warns)
    conda = yaml.load((version / "conda.yaml").read_text(), Loader=yaml.CSafeLoader)
    assert f"pip<={metadata_version('pip')}" in conda["dependencies"]
    assert mlmodel.signature.inputs.to_dict() == [{"type": "long", "name": "n", "required": True},
                                                  {"type": "long", "name": "seed", "required": True}]
    assert mlmodel.signature.outputs.to_dict() == [{"name": "images", "type": "tensor",
                                                    "tensor-spec": {"dtype": "uint8", "shape": (-1, 28, 28, 1)}}]
    # params.yaml's sampling.ddpm under the tiny profile, which the samples behind the version's FID were drawn with
    assert {p["name"]: p["default"] for p in mlmodel.signature.params.to_dict()} == {
        "sampler": "ddpm", "sample_steps": 100, "eta": 0.0, "karras_sigmas": False, "guidance_scale": 1.0,
        "variance_type": "fixed_large"}
    assert mlmodel.load_input_example(version).to_dict("list") == {"n": [1], "seed": [0]}

    config = load_config("params.yaml")
    model = mlflow.pyfunc.load_model(uri)
    images = model.predict(pd.DataFrame({"n": [config.sample.n], "seed": [0]}))
    expected = np.load(project / "samples" / "ddpm-v1.npy")
    assert images.dtype == np.uint8 and images.shape == expected.shape and images.tobytes() == expected.tobytes()
    ddim = DiffusionSampling(sampler="ddim", sample_steps=2, eta=0.5)
    sample(project / "runs" / "ddpm" / "seed-0", project / "ddim.npy", "ddpm", config.sample, ddim, 3)
    requested = model.predict(pd.DataFrame({"n": [config.sample.n], "seed": [3]}),
                              params={"sampler": "ddim", "sample_steps": 2, "eta": 0.5})
    assert np.array_equal(requested, np.load(project / "ddim.npy"))


def test_a_registered_ldm_samples_in_an_empty_folder(trained: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered version carries the frozen vae it was trained on: no runs/ folder is needed."""
    invoke("train", "ldm")
    invoke("sample", "ldm")
    # What is tested is the registry round trip, not the FID it records: a hand-written metrics file saves a
    # pass of the Inception network.
    Path("metrics/ldm").mkdir(parents=True)
    samples_md5 = hashlib.md5(Path("samples/ldm/seed-0.npy").read_bytes()).hexdigest()
    Path("metrics/ldm/seed-0.json").write_text(json.dumps(STAND_IN_METRICS | {"fid": 321.0, "samples_md5": samples_md5}))
    invoke("register", "ldm")
    here = np.load(trained / "samples" / "ldm" / "seed-0.npy")
    # An empty folder, as on another machine that reaches the same tracking server.
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trained / 'mlflow.db'}")
    invoke("sample", "ldm", "--params", str(trained / "params.yaml"), "--model", "models:/genbench-ldm@champion")
    assert sorted(p.relative_to(empty).as_posix() for p in empty.rglob("*")) == [
        "samples", "samples/ldm-v1.json", "samples/ldm-v1.npy"]
    assert np.array_equal(np.load(empty / "samples" / "ldm-v1.npy"), here)


def test_models_lists_every_family_with_its_size(project: Path) -> None:
    lines = invoke("models").splitlines()
    assert lines[1].split() == ["entry", "model", "parameters"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == ["vae", "dcgan", "wgan_gp", "wgan", "vae_gan", "ddpm", "ldm", "ddpm_cfg", "ddpm_t4000"]
    assert rows["ldm"][1] == "n/a:"  # no trained vae in a fresh project
    # the variant is a DDPM with a class embedding on top of ddpm's own settings
    assert rows["ddpm_cfg"][0] == rows["ddpm"][0] == "DDPM"
    assert int(rows["ddpm_cfg"][1].replace(",", "")) > int(rows["ddpm"][1].replace(",", ""))
    assert rows["ddpm_t4000"][1] == rows["ddpm"][1]  # the same network over more timesteps


def test_params_prints_every_resolved_value_with_its_source(project: Path) -> None:
    lines = invoke("params").splitlines()
    printed = {key: [part.strip() for part in rest.rsplit("  # ", 1)]
               for key, rest in (line.split(": ", 1) for line in lines)}
    config = load_config("params.yaml").model_dump(mode="json")
    assert json.loads(printed["models.ddpm.arch.schedule"][0]) == config["models"]["ddpm"]["arch"]["schedule"]
    assert printed["models.ddpm.arch.schedule"][1] == "default"  # params.yaml does not set it
    assert printed["models.ddpm.arch.timesteps"] == ["4", "params.yaml: models.ddpm.profiles.tiny.arch.timesteps"]
    assert printed["profile"] == ['"tiny"', "plan.yaml"] and printed["seed"] == ["0", "params.yaml"]
    assert printed["entries"][1] == "params.yaml: profiles.tiny.entries"
    assert len(printed) == len(lines) > 100  # one line per resolved value


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (LeCun's MNIST format: magic 0x08 = ubyte, ndim, big-endian dims, data), gzipped."""
    import gzip
    import struct

    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())
def test_prepare_reads_mnist_idx_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genbench.components.prepare.prepare import prepare

    rng = np.random.default_rng(0)
    splits = {"train": (rng.integers(0, 256, (12, 28, 28)), np.arange(12) % 10),
              "t10k": (rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10)}
    (tmp_path / "local" / "mnist").mkdir(parents=True)
    for split, (images, labels) in splits.items():
        _write_idx(tmp_path / "local" / "mnist" / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / "local" / "mnist" / f"{split}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("GENBENCH_DATA_DIR", str(tmp_path / "local"))
    manifest = prepare(DataConfig(dataset="mnist", train_size=8, validation_size=2, reference_size=4,
                                  holdout_size=2), 0, tmp_path / "out", tmp_path / "raw")  # 8 + 2 + 2 = 12 train
    assert manifest.image_shape == [28, 28, 1]
    train, labels = np.load(tmp_path / "out" / "train.npy"), np.load(tmp_path / "out" / "train_labels.npy")
    assert train.shape == (8, 28, 28, 1) and train.dtype == np.uint8
    originals = {splits["train"][0][i].astype(np.uint8).tobytes(): splits["train"][1][i] for i in range(12)}
    assert all(originals[image[..., 0].tobytes()] == label for image, label in zip(train, labels))


def test_prepare_reads_cifar10_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR-10's python format: pickled dicts with `data` (N, 3072) as R, G, B planes and `labels`."""
    import hashlib
    import pickle

    from torchvision.datasets import CIFAR10

    from genbench.components.prepare.prepare import prepare

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
    manifest = prepare(DataConfig(dataset="cifar10", train_size=6, validation_size=2, reference_size=2,
                                  holdout_size=2), 0, tmp_path / "out", tmp_path / "raw")
    assert manifest.image_shape == [32, 32, 3]
    test_images = np.load(tmp_path / "out" / "reference.npy")
    expected = planes["test_batch"].reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    assert test_images.dtype == np.uint8 and sorted(i.tobytes() for i in test_images) == sorted(
        i.tobytes() for i in expected)
    labels = [np.load(tmp_path / "out" / f"{name}_labels.npy").tolist() for name in ("train", "validation")]
    assert len(labels[0] + labels[1]) == 8 and set(labels[0] + labels[1]) <= set(range(10))
    train_images = np.concatenate([np.load(tmp_path / "out" / f"{name}.npy") for name in ("train", "validation",
                                                                                          "holdout")])
    every_train = np.concatenate([planes[n] for n in names[:5]]).reshape(10, 3, 32, 32).transpose(0, 2, 3, 1)
    assert sorted(i.tobytes() for i in train_images) == sorted(i.tobytes() for i in every_train)




def test_fid_curve_scores_the_snapshots_train_saved(trained: Path, pixel_network: list[int]) -> None:
    """train.fid_every > 0: train saves the EMA weights every K steps without running the FID network; the fid-curve
    stage scores each snapshot, and register and the report read its points as history rows."""
    from PIL import Image
    from safetensors.torch import load_file

    from genbench.components.common.artifacts import curves
    from genbench.components.common.records import read_curve
    from genbench.components.report.figures import fid_curves

    edit_params(lambda p: p["models"]["vae"]["profiles"]["tiny"]["train"].update(fid_every=2, fid_n=8))
    invoke("train", "vae", "--out", "curve")
    assert pixel_network == []  # training never ran the network
    steps = load_config("params.yaml").entry("vae").train.steps
    snapshots = sorted(p.name for p in Path("curve/snapshots").iterdir())
    assert snapshots == [f"step-{step:08d}.safetensors" for step in range(2, steps + 1, 2)]
    last, final = load_file(f"curve/snapshots/{snapshots[-1]}"), load_file("curve/model.safetensors")
    assert last.keys() == final.keys() and [k for k in final if not torch.equal(last[k], final[k])] == []

    invoke("fid-curve", "vae", "--run", "curve", "--out", "curve.json")
    record = read_curve(Path("curve.json"))
    assert [p.step for p in record.points] == list(range(2, steps + 1, 2))
    assert all(np.isfinite(p.fid) and p.fid > 0 for p in record.points)
    assert pixel_network[1:] == [8] * len(record.points)  # the validation set once, then fid_n images per point
    rows = record.history_rows()
    assert {name for _, name, _ in rows} == {"fid_curve", "fid_curve_seconds"}

    assert fid_curves({"vae": [curves(rows)]}, Path("fid_curve"))
    width, height = Image.open("fid_curve.png").size
    assert width > 500 and height > 300 and Path("fid_curve.pdf").read_bytes().startswith(b"%PDF")
    # the fixture's dcgan trains without a curve: no snapshot, no point, and the report leaves the figure out
    assert list(Path("runs/dcgan/seed-0/snapshots").iterdir()) == []
    invoke("fid-curve", "dcgan", "--out", "none.json")
    assert read_curve(Path("none.json")).points == []
    assert not fid_curves({"dcgan": [curves(read_curve(Path("none.json")).history_rows())]}, Path("none"))
    assert not Path("none.png").exists()


def test_equal_weights_are_equal_bytes_on_every_save(tmp_path: Path) -> None:
    """model.safetensors is a DVC output: equal weights and metadata must give equal bytes. safetensors writes a
    metadata map in hash order, and every map gets fresh hash keys (Rust's RandomState), so several metadata
    keys would make repeated saves differ even within one process (20 saves of a 3-key map gave 5 different
    files, measured): 8 saves catch that with probability 1 - 6^-7."""
    from genbench.components.common.artifacts import save_weights

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    written = set()
    for k in range(8):
        folder = tmp_path / str(k)
        folder.mkdir()
        save_weights(folder, model, {"weight": model.weight * 0.5},
                     {"entry": "x", "family": "vae", "config_sha256": "c" * 64})
        written.add((folder / "model.safetensors").read_bytes())
    assert len(written) == 1
