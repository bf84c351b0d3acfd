"""params.yaml validation: profiles resolve, and bad params fail with the field named, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genbench.config import ConfigError, load_config
from genbench.models.ddpm import DDPMArch
from genbench.models.vae import VAETrain

REPO = Path(__file__).resolve().parents[2]


def test_profiles_resolve_beside_their_section() -> None:
    tiny = load_config(REPO / "params.yaml", "tiny")
    quick = load_config(REPO / "params.yaml", "quick")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert tiny.profile == "tiny" and quick.profile == "quick"
    assert tiny.models.ddpm.arch.timesteps == raw["models"]["ddpm"]["profiles"]["tiny"]["arch"]["timesteps"]
    assert quick.models.ddpm.arch.timesteps == raw["models"]["ddpm"]["profiles"]["quick"]["arch"]["timesteps"]
    # keys neither params.yaml nor the profile set keep the default declared beside the model
    assert "schedule" not in raw["models"]["ddpm"]["profiles"]["tiny"]["arch"]
    assert tiny.models.ddpm.arch.schedule == DDPMArch.model_fields["schedule"].default == "linear"
    assert tiny.models.vae.train.lr == VAETrain.model_fields["lr"].default == 1e-3
    full = load_config(REPO / "params.yaml", "full")
    assert full.models.ddpm.arch == DDPMArch()  # the full profile is the defaults: the literature settings
    assert full.sampling.ldm.sampler == "ddim" and full.sampling.ddpm.sampler == "ddpm"


def test_sampling_lives_apart_from_training() -> None:
    config = load_config(REPO / "params.yaml", "tiny")
    assert "sampling" not in config.family("ddpm").model_dump()
    assert config.sampling_for("ddpm").sampler_call() == ("ddpm", {"guidance_scale": 1.0,
                                                                   "variance_type": "fixed_large"})
    assert config.sampling_for("vae").sampler_call() == ("prior", {})


def _mutate(edit) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
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
    ("wrong type", lambda r: r["models"]["dcgan"]["train"].update(batch_size="big"),
     "models.dcgan.train.batch_size", "valid integer"),
    ("out of range", lambda r: r["models"]["vae"]["train"].update(lr=-1), "models.vae.train.lr", "greater than 0"),
    ("out of range in a profile", lambda r: r["data"]["profiles"]["quick"].update(reference_size=0),
     "data.profiles.quick.reference_size", "greater than 0"),
    ("bad choice", lambda r: r["models"]["ddpm"]["arch"].update(schedule="quadratic"),
     "models.ddpm.arch.schedule", "'linear' or 'cosine'"),
    ("unknown family", lambda r: r.update(families=["vae", "gan"]), "families", "unknown family 'gan'; known: vae"),
    ("family twice", lambda r: r.update(families=["vae", "vae"]), "families", "lists a family twice"),
    ("ldm before its vae", lambda r: r.update(families=["ldm", "vae"]), "families", "vae must be listed before"),
    ("ddim steps above T", lambda r: r["sampling"]["ddpm"].update(sampler="ddim")
     or r["sampling"]["ddpm"]["profiles"]["quick"].update(sample_steps=5000),
     "sampling.ddpm", "sample_steps=5000 exceeds the model's timesteps=100"),
    ("guidance without classes", lambda r: r["sampling"]["ddpm"].update(guidance_scale=3.0),
     "sampling.ddpm", "needs a class-conditional model"),
    ("unknown sampler", lambda r: r["sampling"]["ddpm"].update(sampler="euler"), "sampling.ddpm.sampler",
     "'ddpm' or 'ddim'"),
    ("a sampler option in training", lambda r: r["models"]["ddpm"]["arch"].update(guidance_scale=2.0),
     "models.ddpm.arch.guidance_scale", "unknown key"),
    ("holdout unlike sample.n", lambda r: r["data"]["profiles"]["quick"].update(holdout_size=200),
     "data.holdout_size", "200 real images, but sample.n is 300"),
    ("unknown profile", lambda r: r.update(profile="huge"), "profile", "allowed: tiny, quick, full"),
    ("profiles not a mapping", lambda r: r["sample"].update(profiles=["tiny"]), "sample.profiles",
     "must map profile names"),
]


@pytest.mark.parametrize(("case", "edit", "field", "hint"), BAD, ids=[case for case, *_ in BAD])
def test_bad_params_name_the_field(tmp_path: Path, case: str, edit, field: str, hint: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_mutate(edit)))
    with pytest.raises(ConfigError) as info:
        load_config(params)
    message = str(info.value)
    assert f"{field}:" in message and hint in message, message
