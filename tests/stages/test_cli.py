"""The CLI's contract: bad params or an unknown family exit 2 naming the field, and write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from genbench.cli import app

from ..unit.test_config import _mutate


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
    assert "unknown entry 'gan'; known: vae, dcgan" in result.output
