"""params.yaml validation: profiles resolve, and bad params fail with the field named, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from genbench.cli import app
from genbench.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_profiles_resolve_beside_their_section() -> None:
    tiny = load_config(REPO / "params.yaml", "tiny")
    quick = load_config(REPO / "params.yaml", "quick")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert tiny.profile == "tiny" and quick.profile == "quick"
    assert tiny.models.ddpm.arch.timesteps == raw["models"]["ddpm"]["profiles"]["tiny"]["arch"]["timesteps"]
    assert quick.models.ddpm.arch.timesteps == raw["models"]["ddpm"]["profiles"]["quick"]["arch"]["timesteps"]
    # keys a profile does not override keep their base value
    assert tiny.models.ddpm.arch.schedule == raw["models"]["ddpm"]["arch"]["schedule"]
    assert tiny.models.vae.train.lr == raw["models"]["vae"]["train"]["lr"]


def _mutate(edit) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
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
    ("unknown family", lambda r: r.update(families=["vae", "gan"]), "families.1", "'ddpm' or 'ldm'"),
    ("ldm before its vae", lambda r: r.update(families=["ldm", "vae"]), "families", "vae must be listed before"),
    ("ddim steps above T", lambda r: r["models"]["ddpm"]["sampling"].update(sampler="ddim")
     or r["models"]["ddpm"]["profiles"]["quick"]["sampling"].update(sample_steps=5000),
     "models.ddpm", "exceeds arch.timesteps"),
    ("guidance without classes", lambda r: r["models"]["ddpm"]["sampling"].update(guidance_scale=3.0),
     "models.ddpm", "class-conditional"),
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


@pytest.mark.parametrize("command", [["prepare"], ["train", "vae"], ["sample", "vae"], ["report"], ["run"]])
def test_cli_exits_2_and_writes_nothing(project: Path, command: list[str]) -> None:
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump(_mutate(lambda r: r["models"]["vae"]["train"].update(lr="fast"))))
    before = sorted(p.name for p in project.rglob("*"))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "models.vae.train.lr" in result.output
    assert sorted(p.name for p in project.rglob("*")) == before


def test_cli_rejects_unknown_family(project: Path) -> None:
    result = CliRunner().invoke(app, ["train", "gan"])
    assert result.exit_code == 2
    assert "unknown family 'gan'" in result.output
