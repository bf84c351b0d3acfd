"""dvc.yaml is generated from the stage declarations: the committed file must be exactly what they give, so a
stage's command, deps, params and outputs cannot drift from what the CLI, the flow and the pipeline run."""

from __future__ import annotations

import yaml

from genbench.flows.dvc_stages import render
from genbench.stages import STAGES

from ..conftest import REPO


def test_the_committed_dvc_yaml_is_the_generated_one() -> None:
    assert (REPO / "dvc.yaml").read_text() == render(), (
        "dvc.yaml differs from the stage declarations: run `uv run python -m genbench.flows.dvc_stages`")


def test_every_stage_appears_with_the_command_the_cli_builds() -> None:
    stages = yaml.load(render(), Loader=yaml.CSafeLoader)["stages"]
    assert list(stages) == list(STAGES)
    assert stages["train"]["cmd"] == "genbench train ${item.entry} --seed ${item.seed}"
    assert stages["evaluate-real"]["cmd"] == "genbench evaluate real"
    assert stages["sweep"]["do"]["cmd"] == "genbench sweep ${key}"
    assert {"runs/${item.entry}/seed-${item.seed}/checkpoint.pt": {"persist": True}} in stages["train"]["outs"]
    assert "provenance/train/${item.entry}-seed-${item.seed}.json" in stages["train"]["outs"]
