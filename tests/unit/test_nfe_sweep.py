"""The FID-against-NFE sweep's rule: each sampler at the most steps whose network evaluations per image (the
tables' NFE count) stay within a target; and a sweep that cannot run is refused at load, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genbench.config import ConfigError, SweepConfig, load_config
from genbench.models.config import SamplingConfig
from genbench.models.ddpm import DDPMArch
from genbench.models.samplers import DiffusionSampling

REPO = Path(__file__).resolve().parents[2]
CONDITIONAL = DDPMArch(timesteps=100, num_classes=10)


@pytest.mark.parametrize(("sampler", "guidance", "nfe", "steps", "evaluations"), [
    ("ddim", 1.0, 5, 5, 5),
    ("dpmpp_2m", 1.0, 50, 50, 50),
    ("heun", 1.0, 5, 3, 5),  # 2 per step but the last: 2·3 - 1
    ("heun", 1.0, 10, 5, 9),  # 6 steps would take 11
    ("heun", 0.0, 50, 25, 49),  # w = 0 is one (unconditional) pass, as w = 1
    ("ddim", 2.0, 10, 5, 10),  # guided: two passes a step
    ("ddim", 2.0, 11, 5, 10),
    ("heun", 3.0, 20, 5, 18),  # 2·(2·5 - 1)
    ("ddim", 1.0, 1000, 100, 100),  # no more steps than timesteps
    ("dpmpp_2m", 1.0, 100, 99, 99),  # its linspace grid refuses steps = T
])
def test_the_most_steps_within_a_target(sampler: str, guidance: float, nfe: int, steps: int,
                                        evaluations: int) -> None:
    chosen = DiffusionSampling(sampler=sampler, guidance_scale=guidance).at_nfe(CONDITIONAL, nfe)
    assert (chosen.sample_steps, chosen.network_evaluations(CONDITIONAL)) == (steps, evaluations)
    assert (chosen.sampler, chosen.guidance_scale) == (sampler, guidance)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun"])
@pytest.mark.parametrize("guidance", [1.0, 1.5])
def test_no_more_steps_fit_the_target(sampler: str, guidance: float) -> None:
    """For every target the choice fits and one more step would not (or the sampler cannot run it)."""
    arch = DDPMArch(timesteps=12, num_classes=10)
    for nfe in range(6, 40):
        chosen = DiffusionSampling(sampler=sampler, guidance_scale=guidance).at_nfe(arch, nfe)
        assert chosen.network_evaluations(arch) <= nfe
        more = chosen.model_copy(update={"sample_steps": chosen.sample_steps + 1})
        try:
            more.check(arch)
        except ValueError:
            continue
        assert more.network_evaluations(arch) > nfe, (sampler, guidance, nfe)


def test_what_has_no_steps_to_choose_refuses() -> None:
    with pytest.raises(ValueError, match="2 network evaluations are too few for heun: its fewest steps \\(2\\) take 3"):
        DiffusionSampling(sampler="heun").at_nfe(CONDITIONAL, 2)
    with pytest.raises(ValueError, match="too few for ddim: its fewest steps \\(1\\) take 2"):
        DiffusionSampling(sampler="ddim", guidance_scale=2.0).at_nfe(CONDITIONAL, 1)
    with pytest.raises(ValueError, match="sampler ddpm runs all 100 timesteps.*use ddim, dpmpp_2m, heun"):
        DiffusionSampling(sampler="ddpm").at_nfe(CONDITIONAL, 50)
    with pytest.raises(ValueError, match="draws in one pass"):
        SamplingConfig().at_nfe(CONDITIONAL, 5)


def test_the_quick_sweep_points() -> None:
    config = load_config(REPO / "params.yaml", "quick", plan=False)
    sweep = config.sweeps["nfe"]
    points = sweep.points(config.sampling_for(sweep.entry), config.entry(sweep.entry).arch)
    arch = config.entry(sweep.entry).arch
    assert [(p.stem, p.sampling.sample_steps, p.sampling.network_evaluations(arch)) for p in points] == [
        ("ddim-nfe-5", 5, 5), ("ddim-nfe-10", 10, 10), ("ddim-nfe-20", 20, 20), ("ddim-nfe-50", 50, 50),
        ("dpmpp_2m-nfe-5", 5, 5), ("dpmpp_2m-nfe-10", 10, 10), ("dpmpp_2m-nfe-20", 20, 20),
        ("dpmpp_2m-nfe-50", 50, 50),
        ("heun-nfe-5", 3, 5), ("heun-nfe-10", 5, 9), ("heun-nfe-20", 10, 19), ("heun-nfe-50", 25, 49)]
    # the entry's own ddpm option (fixed_small) is left behind, its guidance kept
    assert all(p.sampling.variance_type == "fixed_large" and p.sampling.guidance_scale == 1.0 for p in points)
    other = SweepConfig(entry="ddpm_cfg", vary="guidance_scale", set={"sampler": "ddim"}, values=(0.0, 1.3))
    assert [p.stem for p in other.points(config.sampling_for("ddpm_cfg"), arch)] == ["guidance_scale-0.0",
                                                                                    "guidance_scale-1.3"]


BAD = [
    ("no samplers", {"samplers": []}, "sweeps.nfe.samplers", "add them, e.g. samplers: [ddim, dpmpp_2m, heun]"),
    ("a target too small", {"values": [2, 5]}, "sweeps.nfe.values",
     "NFE 2 with sampler heun: 2 network evaluations are too few for heun: its fewest steps (2) take 3 here; raise "
     "the target or drop heun from samplers"),
    ("guided, a target too small", {"set": {"guidance_scale": 2.0}}, "sweeps.nfe.values",
     "NFE 5 with sampler heun: 5 network evaluations are too few for heun: its fewest steps (2) take 6 here"),
    ("two targets, one set", {"values": [5, 6]}, "sweeps.nfe.values",
     "NFE targets 5 and 6 both give heun 3 steps (5 network evaluations); drop one"),
    ("a fractional target", {"values": [5.5]}, "sweeps.nfe.values", "5.5 is not an NFE target"),
    ("the sampler in set", {"set": {"sampler": "ddim"}}, "sweeps.nfe.set.sampler", "remove it"),
    ("the steps in set", {"set": {"sample_steps": 10}}, "sweeps.nfe.set.sample_steps", "remove it"),
    ("an option one sampler ignores", {"set": {"eta": 0.5}}, "sweeps.nfe.set.eta",
     "sampler dpmpp_2m of samplers does not take it (taken by ddim)"),
    ("an unknown sampler", {"samplers": ["ddim", "euler"]}, "sweeps.nfe.samplers", "'euler': Input should be"),
    ("a sampler without steps", {"samplers": ["ddpm"]}, "sweeps.nfe.samplers",
     "ddpm takes no sample_steps, so it has no step count to fit to an NFE target; list samplers that take it "
     "(ddim, dpmpp_2m, heun)"),
    ("an entry without a sampler", {"entry": "vae"}, "sweeps.nfe.vary", "sweep a diffusion entry"),
]


@pytest.mark.parametrize(("case", "change", "field", "hint"), BAD, ids=[case for case, *_ in BAD])
def test_a_bad_nfe_sweep_names_the_field(tmp_path: Path, case: str, change: dict, field: str, hint: str) -> None:
    raw = yaml.load((REPO / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    raw["profiles"]["quick"]["sweeps"]["nfe"].update(change)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "params.yaml", "quick", plan=False)
    assert f"{field}: " in str(info.value) and hint in str(info.value), str(info.value)


def test_samplers_belong_to_an_nfe_sweep(tmp_path: Path) -> None:
    raw = yaml.load((REPO / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
    raw["profiles"]["quick"]["sweeps"]["ddim_steps"]["samplers"] = ["ddim"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="sweeps.ddim_steps.samplers: only vary: nfe takes samplers"):
        load_config(tmp_path / "params.yaml", "quick", plan=False)
