"""params.yaml validation: profiles resolve, and bad params fail with the field named, exit 2, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml
from typer.testing import CliRunner

from genbench.cli import app
from genbench.config import ConfigError, load_config
from genbench.models.config import _lax_number
from genbench.models.ddpm import DDPMArch
from genbench.models.vae import VAETrain
from genbench.profiles import load_yaml

REPO = Path(__file__).resolve().parents[2]


def test_profiles_resolve_beside_their_section() -> None:
    tiny = load_config(REPO / "params.yaml", "tiny")
    quick = load_config(REPO / "params.yaml", "quick")
    raw = yaml.load((REPO / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    assert tiny.profile == "tiny" and quick.profile == "quick"
    assert tiny.entry("ddpm").arch.timesteps == raw["models"]["ddpm"]["profiles"]["tiny"]["arch"]["timesteps"]
    assert quick.entry("ddpm").arch.timesteps == raw["models"]["ddpm"]["profiles"]["quick"]["arch"]["timesteps"]
    # keys neither params.yaml nor the profile set keep the default declared beside the model
    assert "schedule" not in raw["models"]["ddpm"]["profiles"]["tiny"]["arch"]
    assert tiny.entry("ddpm").arch.schedule == DDPMArch.model_fields["schedule"].default == "linear"
    assert tiny.entry("vae").train.lr == VAETrain.model_fields["lr"].default == 1e-3
    full = load_config(REPO / "params.yaml", "full")
    assert full.entry("ddpm").arch == DDPMArch()  # the full profile is the defaults: the literature settings
    assert full.sampling_for("ldm").sampler == "ddim" and full.sampling_for("ddpm").sampler == "ddpm"


def test_a_named_variant_is_an_entry_of_its_family() -> None:
    """ddpm_cfg copies ddpm's keys with a YAML merge (`<<: *ddpm`), so every profile gives it ddpm's settings
    with 10 classes, and its sampling ddpm's with guidance."""
    for profile in ("tiny", "quick", "full"):
        config = load_config(REPO / "params.yaml", profile)
        variant, ddpm = config.entry("ddpm_cfg"), config.entry("ddpm")
        assert variant.family == ddpm.family == "ddpm" and variant.arch.num_classes == 10 and ddpm.arch.num_classes == 0
        assert variant.arch.model_copy(update={"num_classes": 0}) == ddpm.arch and variant.train == ddpm.train
        guided = config.sampling_for("ddpm_cfg")
        # quick samples its table row at w = 1 (one pass per step) and sweeps the scale instead
        assert guided.guidance_scale == (1.0 if profile == "quick" else 1.3)
        assert guided.model_copy(update={"guidance_scale": 1.0}) == config.sampling_for("ddpm")
    quick = load_config(REPO / "params.yaml", "quick")
    assert "ddpm_cfg" in quick.entries and quick.sweeps["guidance"].entry == "ddpm_cfg"  # quick's one DDPM


def test_sampling_lives_apart_from_training() -> None:
    config = load_config(REPO / "params.yaml", "tiny")
    assert "sampling" not in config.entry("ddpm").model_dump()
    assert config.sampling_for("ddpm").sampler_call() == ("ddpm", {"guidance_scale": 1.0,
                                                                   "variance_type": "fixed_large"})
    assert config.sampling_for("vae").sampler_call() == ("prior", {})


@dataclass(frozen=True)
class Text:
    """An edit of params.yaml's text, for what parsed params cannot hold (a key written twice, an empty file)."""

    edit: Callable[[str], str]


def _params_text(edit) -> str:
    """params.yaml after `edit`: a `Text` edit of the file as written, else an edit of its parsed params."""
    if isinstance(edit, Text):
        return edit.edit((REPO / "params.yaml").read_text())
    return yaml.safe_dump(_mutate(edit))


def _replace(old: str, new: str) -> Text:
    def edit(text: str) -> str:
        assert old in text, old  # the repository's params.yaml still holds the line this case edits
        return text.replace(old, new, 1)

    return Text(edit)


VAE_TINY_TRAIN = "steps: 4, batch_size: 16, log_every: 1"
VAE_QUICK_TRAIN = "steps: 800, batch_size: 32"


def _mutate(edit) -> dict:
    raw = yaml.load((REPO / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    for family in ("vae", "dcgan", "ddpm"):  # the sections params.yaml leaves to the defaults
        raw["models"][family].setdefault("train", {})
        raw["models"][family].setdefault("arch", {})
    edit(raw)
    return raw


BAD = [
    ("unknown top-level key", lambda r: r.update(seeed=1), "seeed", "unknown key"),
    ("unknown nested key", lambda r: r["models"]["vae"]["train"].update(stepz=3), "models.vae.train.stepz",
     "unknown key"),
    ("unknown key in a profile", lambda r: r["sample"]["profiles"]["quick"].update(m=3),
     "sample.profiles.quick.m", "unknown key"),
    ("wrong type", lambda r: r["models"]["dcgan"]["train"].update(lr="fast"), "models.dcgan.train.lr",
     "valid number"),
    ("boolean for a float", lambda r: r["models"]["dcgan"]["train"].update(lr=True), "models.dcgan.train.lr",
     "write a number, not true/false"),
    ("wrong type in a profile", lambda r: r["models"]["dcgan"]["profiles"]["quick"]["train"].update(batch_size="big"),
     "models.dcgan.profiles.quick.train.batch_size", "valid integer"),
    ("out of range", lambda r: r["models"]["vae"]["train"].update(lr=-1), "models.vae.train.lr", "greater than 0"),
    ("out of range in a profile", lambda r: r["data"]["profiles"]["quick"].update(reference_size=0),
     "data.profiles.quick.reference_size", "greater than 0"),
    ("bad choice", lambda r: r["models"]["ddpm"]["arch"].update(schedule="quadratic"),
     "models.ddpm.arch.schedule", "'linear' or 'cosine'"),
    ("unknown family", lambda r: r["profiles"]["quick"].update(entries=["vae", "gan"]), "entries",
     "unknown entry 'gan'; known: vae"),
    ("family twice", lambda r: r["profiles"]["quick"].update(entries=["vae", "vae"]), "entries",
     "lists an entry twice"),
    ("variant of an unknown family", lambda r: r["models"].update(ddpm_x={"family": "diffusion"}),
     "models.ddpm_x.family", "unknown family 'diffusion'; known: vae"),
    ("a family's entry as a variant", lambda r: r["models"]["ddpm"].update(family="vae"), "models.ddpm.family",
     "give the vae variant another name"),
    ("variant name unusable as a folder", lambda r: r["models"].update({"DDPM-cfg": {"family": "ddpm"}}),
     "models.DDPM-cfg", "lower-case letters"),
    ("sampling without a model", lambda r: r["sampling"].update(ddpm_x={}), "sampling.ddpm_x",
     "no models.ddpm_x to sample"),
    ("family set under sampling", lambda r: r["models"].update(ddpm_x={"family": "ddpm"})
     or r["sampling"].update(ddpm_x={"family": "ddpm"}), "sampling.ddpm_x.family", "set once, under models"),
    ("a variant's bad key", lambda r: r["models"].update(ddpm_x={"family": "ddpm", "arch": {"width": 3}}),
     "models.ddpm_x.arch.width", "unknown key"),
    ("guidance on an unconditional variant", lambda r: r["models"].update(ddpm_x={"family": "ddpm"})
     or r["sampling"].update(ddpm_x={"guidance_scale": 2.0}), "sampling.ddpm_x", "needs a class-conditional"),
    ("ldm before its vae", lambda r: r["profiles"]["quick"].update(entries=["ldm", "vae"]), "entries",
     "vae must be listed before"),
    ("ddim steps above T", lambda r: r["sampling"]["ddpm"]["profiles"].update(quick={"sampler": "ddim",
                                                                                      "sample_steps": 5000}),
     "sampling.ddpm", "sample_steps=5000 exceeds the model's timesteps=100"),
    ("a ddim option under ddpm", lambda r: r["sampling"]["ddpm_cfg"]["profiles"]["quick"].update(eta=0.5),
     "sampling.ddpm_cfg.profiles.quick.eta", "only sampler ddim takes eta; remove it or set sampler: ddim"),
    ("a ddpm option under the ldm's ddim", lambda r: r["sampling"]["ldm"].update(variance_type="fixed_small"),
     "sampling.ldm.variance_type", "only sampler ddpm takes variance_type; remove it or set sampler: ddpm"),
    ("guidance without classes", lambda r: r["sampling"]["ddpm"].update(guidance_scale=3.0),
     "sampling.ddpm", "needs a class-conditional model"),
    ("unknown sampler", lambda r: r["sampling"]["ddpm"].update(sampler="euler"), "sampling.ddpm.sampler",
     "'ddpm', 'ddim', 'dpmpp_2m' or 'heun'"),
    ("a sampler option in training", lambda r: r["models"]["ddpm"]["arch"].update(guidance_scale=2.0),
     "models.ddpm.arch.guidance_scale", "unknown key"),
    ("holdout unlike sample.n", lambda r: r["data"]["profiles"]["quick"].update(holdout_size=200),
     "data.holdout_size", "200 real images, but sample.n is 300"),
    # quick scores with dtype auto (bf16 on AMX hosts); the paper protocol is fp32 only
    ("paper protocol in bf16", lambda r: r["evaluate"].update(protocol="paper"), "evaluate.dtype",
     "auto under evaluate.protocol paper, which scores in fp32"),
    ("a profile at the top level", lambda r: r.update(profile="quick"), "profile", "not top-level keys"),
    ("a plan at the top level", lambda r: r.update(entries=["vae"]), "entries", "lives under `profiles.<name>`"),
    ("profiles not a mapping", lambda r: r["sample"].update(profiles=["tiny"]), "sample.profiles",
     "must map profile names"),
    ("empty file", Text(lambda text: ""), "params.yaml", "holds no parameters"),
    ("only comments", Text(lambda text: "# every default\n"), "params.yaml", "holds no parameters"),
    ("top-level key twice", _replace("seed: 0 ", "seed: 1\nseed: 0 "), "seed", "given twice (first on line"),
    ("key twice in a flow mapping", _replace(VAE_TINY_TRAIN, VAE_TINY_TRAIN.replace("4,", "4, steps: 8,")),
     "models.vae.profiles.tiny.train.steps", "given twice"),
    ("key twice beside a merge key", _replace("    arch: {num_classes: 10}\n",
                                              "    arch: {num_classes: 10}\n    arch: {num_classes: 5}\n"),
     "models.ddpm_cfg.arch", "given twice"),
    ("infinite float", lambda r: r["models"]["vae"]["train"].update(lr=float("inf")), "models.vae.train.lr",
     "finite number"),
    ("nan in a profile", lambda r: r["models"]["ddpm"]["profiles"]["quick"]["train"].update(grad_clip=float("nan")),
     "models.ddpm.profiles.quick.train.grad_clip", "finite number"),
    ("nan sampling setting", lambda r: r["sampling"]["ddpm"].update(eta=float("nan")), "sampling.ddpm.eta",
     "finite number"),
    ("boolean for an integer", lambda r: r["models"]["vae"]["profiles"]["quick"]["train"].update(steps=True),
     "models.vae.profiles.quick.train.steps", "valid integer; write a whole number"),
    ("boolean seed", lambda r: r["profiles"]["quick"].update(seeds=[True]), "profiles.quick.seeds.0",
     "valid integer"),
    ("boolean channels", lambda r: r["data"].update(dataset="folder", path="images", image_size=8, channels=True),
     "data.channels", "not true/false"),
    ("float for an integer", lambda r: r["models"]["vae"]["profiles"]["quick"]["train"].update(batch_size=1e9),
     "models.vae.profiles.quick.train.batch_size", "valid integer; write a whole number"),
    ("integral float for an integer", lambda r: r["sample"]["profiles"]["quick"].update(batch_size=150.0),
     "sample.profiles.quick.batch_size", "(got 150.0)"),
    ("1e9 as written (PyYAML: a string)", _replace(VAE_QUICK_TRAIN, "steps: 800, batch_size: 1e9"),
     "models.vae.profiles.quick.train.batch_size", "(got '1e9')"),
    ("train_size above the train split", lambda r: r["data"]["profiles"]["quick"].update(train_size=70000),
     "data.train_size", "70000 exceeds the 60000 images of fashion_mnist's train split; lower it"),
    ("train_size above cifar10's", lambda r: r["data"].update(dataset="cifar10"), "data.train_size",
     "55000 exceeds the 50000 images of cifar10's train split"),
    ("reference_size above the test split", lambda r: r["data"]["profiles"]["quick"].update(reference_size=10001),
     "data.reference_size", "exceeds the 10000 images of fashion_mnist's test split"),
    ("no UNet level", lambda r: r["models"]["ddpm"]["arch"].update(channel_mults=[]),
     "models.ddpm.arch.channel_mults", "needs at least one level"),
    ("batch above train_size", lambda r: r["data"]["profiles"]["quick"].update(train_size=16),
     "models.vae.train.batch_size", "32 is more than data.train_size (16)"),
]


@pytest.mark.parametrize(("case", "edit", "field", "hint"), BAD, ids=[case for case, *_ in BAD])
def test_bad_params_name_the_field(tmp_path: Path, case: str, edit, field: str, hint: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(_params_text(edit))
    with pytest.raises(ConfigError) as info:
        load_config(params, "quick")
    message = str(info.value)
    assert f"{field}:" in message and hint in message, message


def test_the_paper_protocol_takes_any_n_against_its_test_split_floor(tmp_path: Path) -> None:
    """Under protocol paper the floor is the test split, so sample.n (50 000 in published FIDs) need not equal
    data.holdout_size, which the holdout protocol requires."""
    params = tmp_path / "params.yaml"

    def paper(raw: dict[str, Any]) -> None:
        raw["evaluate"].update(protocol="paper")
        raw["evaluate"]["profiles"]["quick"].update(dtype="fp32")
        raw["sample"]["profiles"]["quick"].update(n=500)

    params.write_text(_params_text(paper))
    config = load_config(params, "quick")
    assert (config.evaluate.protocol, config.sample.n, config.data.holdout_size) == ("paper", 500, 300)


def test_an_unknown_profile_is_named_with_the_profiles() -> None:
    with pytest.raises(ConfigError, match="profile 'huge' is not a profile; profiles: tiny, quick, full"):
        load_config(REPO / "params.yaml", "huge")
    result = CliRunner().invoke(app, ["use", "quik"])
    assert result.exit_code == 2 and "'quik' is not a profile (did you mean quick?)" in result.output


def test_use_writes_the_plan_file_and_never_params(tmp_path: Path) -> None:
    """`genbench use` writes plan.yaml (marked generated) from params' profiles.<name>; an edit to a plan in
    params.yaml survives it, and until it runs again every command stops on the stale plan, naming the fix."""
    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text().replace("    entries: [vae, dcgan, ddpm_cfg]",
                                                      "    entries: [vae, ddpm_cfg]", 1)
    params.write_text(text)
    with pytest.raises(ConfigError, match="no active profile.*genbench use quick"):
        load_config(params)
    result = CliRunner().invoke(app, ["use", "quick", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert params.read_text() == text  # the user's file, edit and comments included, as written
    plan = (tmp_path / "plan.yaml").read_text()
    assert plan.startswith("# GENERATED by `genbench use quick`")
    written = yaml.load(plan, Loader=yaml.CSafeLoader)
    assert written["entries"] == ["vae", "ddpm_cfg"] and written["profile"] == "quick"
    assert load_config(params).entries == ("vae", "ddpm_cfg")
    params.write_text(text.replace("    entries: [vae, ddpm_cfg]", "    entries: [vae]", 1))
    with pytest.raises(ConfigError, match=r"plan.yaml: stale: entries differ .*run `genbench use quick`"):
        load_config(params)
    assert load_config(params, "tiny").profile == "tiny"  # another profile for one command: its own plan
    result = CliRunner().invoke(app, ["train", "vae", "--params", str(params)])
    assert result.exit_code == 2 and "stale" in result.output


def test_a_sampler_option_the_sampler_ignores_is_refused_naming_it(tmp_path: Path) -> None:
    """Once accepted and ignored: the ancestral sampler walks all T steps whatever sample_steps says."""
    params = tmp_path / "params.yaml"
    params.write_text("sampling: {ddpm: {sampler: ddpm, sample_steps: 10}}\n")
    result = CliRunner().invoke(app, ["params", "--params", str(params), "--profile", "quick"])
    message = ("sampling.ddpm.sample_steps: only samplers ddim, dpmpp_2m and heun take sample_steps; remove it or "
               "set sampler: ddim, dpmpp_2m or heun")
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("profile", ["quick", "full"])  # tiny's T = 4 takes fewer steps
def test_the_solver_samplers_are_accepted_in_params(tmp_path: Path, profile: str) -> None:
    """sampling.<entry>.sampler may name either ODE solver, with its steps and Karras σ (the entries replaced
    whole: their profiles set ddpm's variance_type, which the solvers would refuse)."""
    def edit(raw: dict[str, Any]) -> None:
        raw["sampling"]["ddpm"] = {"sampler": "dpmpp_2m", "sample_steps": 20}
        raw["sampling"]["ldm"] = {"sampler": "heun", "sample_steps": 3, "karras_sigmas": True}

    params = tmp_path / "params.yaml"
    params.write_text(_params_text(edit))
    config = load_config(params, profile)
    assert config.sampling_for("ddpm").sampler_call() == (
        "dpmpp_2m", {"guidance_scale": 1.0, "sample_steps": 20, "karras_sigmas": False})
    assert config.sampling_for("ldm").sampler_call() == (
        "heun", {"guidance_scale": 1.0, "sample_steps": 3, "karras_sigmas": True})


def test_a_sweep_to_ddim_leaves_the_entrys_ddpm_options_behind() -> None:
    """quick's ddpm_cfg samples with ddpm at fixed_small; its DDIM sweeps keep the entry's guidance, not that."""
    config = load_config(REPO / "params.yaml", "quick")
    assert config.sampling_for("ddpm_cfg").variance_type == "fixed_small"
    sweep = config.sweeps["ddim_steps"]
    swept = sweep.sampling(config.sampling_for("ddpm_cfg"), 10)
    assert swept.sampler_call() == ("ddim", {"guidance_scale": 1.0, "sample_steps": 10, "eta": 0.0})


def test_a_key_beside_a_merge_key_replaces_the_merged_one() -> None:
    """YAML's merge: `<<: *anchor` copies the anchor's keys and a key written beside it wins; not a duplicate."""
    loaded = load_yaml("base: &base {k: 1, j: 2}\nvariant:\n  <<: *base\n  k: 3\n", Path("p.yaml"))
    assert loaded["variant"] == {"k": 3, "j": 2} and loaded["base"] == {"k": 1, "j": 2}


def test_every_profile_loads() -> None:
    for profile in ("tiny", "quick", "full", "thesis-cifar10", "thesis-keras"):
        assert load_config(REPO / "params.yaml", profile).profile == profile


@pytest.mark.parametrize(("annotation", "refused"), [
    (float, True), (float | None, True), (Optional[float], True), (Literal[1, 3], True),  # noqa: UP045
    (Literal[1, 3] | None, True), (bool, False), (bool | float, False), (Literal[True, 1], False),
    (int, False), (str, False), (Literal["auto"], False), (Literal["auto"] | bool, False),
])  # fmt: skip
def test_a_boolean_is_refused_wherever_it_would_pass_as_a_number(annotation: Any, refused: bool) -> None:
    """Strict integers refuse booleans themselves; floats and numeric choices need the check, and it must leave
    a field that takes true/false (or only words) alone."""
    assert _lax_number(annotation) is refused
