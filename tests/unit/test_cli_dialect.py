"""The CLI speaks one dialect: every command's help names an ENTRY (never a FAMILY argument), shows its defaults
whole (rich markup once ate `[default: …]` and left holes such as "Run folder ."), and the profile lists come from
genbench.profiles.PROFILES."""

from __future__ import annotations

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from genbench.cli import app
from genbench.profiles import PROFILES

HOLE = re.compile(r"[A-Za-z] +[.;,)](?=\s|$)")  # a word, spaces, then punctuation: text was cut out between them


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(words) for words in COMMANDS])
def test_help_has_no_holes_and_one_vocabulary(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*words, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = re.sub(r"[│╭╮╰╯─]", " ", result.output)
    assert not HOLE.search(text), f"a hole in `genbench {' '.join(words)} --help`: {HOLE.search(text)}"
    assert "FAMILY" not in text, f"`genbench {' '.join(words)}` still calls its argument FAMILY"


def test_the_stage_commands_take_an_entry_and_list_every_profile() -> None:
    for command in ("train", "sample", "evaluate", "register", "promote"):
        output = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert "ENTRY" in output, command
    output = CliRunner().invoke(app, ["use", "--help"], terminal_width=200).output
    assert all(profile in output for profile in PROFILES)


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and re.fullmatch(r"genbench \d+\.\d+\.\d+\S*\n", result.output)
