"""Every `genbench …` command shown in README.md and docs/*.md names a command that exists.

Commands are taken from the shell code blocks (every line, its `# comment` cut off, wherever the word `genbench`
stands alone: after `uv run`, `torchrun …`, `VAR=value`, `&&`) and from inline code spans that start with
`genbench `. For each, the words after `genbench` are walked while they name a command or a group of commands,
and `genbench <that path> --help` must succeed. A word where a group expects a command (`genbench trian`,
`genbench stack upp`) fails, naming the file and line. Arguments and options are not checked: they are
placeholders (FAMILY, FOLDER) as often as values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from genbench.cli import app

REPO = Path(__file__).resolve().parents[2]
NOT_SHELL = {"python", "py", "yaml", "yml", "json", "toml", "ini"}  # code blocks whose lines are not commands
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")
WORD = re.compile(r"(?:^|(?<=[\s;&|]))genbench(?=\s|$)")
SEPARATOR = re.compile(r"&&|\|\||[;|&]")
LAUNCHERS = {"uv", "run", "torchrun", "timeout", "time", "env", "sudo", "exec", "nohup"}
STRIP = "`'\"()[]{},;:."


@dataclass(frozen=True)
class Shown:
    file: str
    line: int
    text: str  # the command as shown, from `genbench` on

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _cut_comment(line: str) -> str:
    """The line up to a shell comment (a `#` at its start or after a blank)."""
    match = re.search(r"(?:^|\s)#", line)
    return line[: match.start()] if match else line


def _in_command_position(before: str) -> bool:
    """Whether `genbench` right after `before` (the shell line up to it) is the command run: only launchers
    (`uv run`, `torchrun`, `timeout 1800`), their options and VAR=value assignments precede it since the last
    `&&`, `;`, `|` or `&`. Not in `kubectl -n genbench logs` or in an error message quoted in a block."""
    words = SEPARATOR.split(before)[-1].split()
    option_value = False
    for word in words:
        if word.startswith("-"):
            option_value = "=" not in word
        elif option_value or word in LAUNCHERS or word.isdigit() or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word):
            option_value = False
        else:
            return False
    return True


def shown_commands(path: Path, root: Path = REPO) -> list[Shown]:
    """The `genbench …` commands of one markdown file, in order, named relative to `root`."""
    name = str(path.relative_to(root))
    found: list[Shown] = []
    fence: str | None = None
    shell = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        opening = FENCE.match(line)
        if opening and fence is None:
            fence, shell = opening.group(1), opening.group(2).lower() not in NOT_SHELL
            continue
        if fence is not None:
            if line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
                fence = None
            elif shell:
                code = _cut_comment(line)
                found += [Shown(name, number, code[m.start():].strip()) for m in WORD.finditer(code)
                          if _in_command_position(code[: m.start()])]
                found += _spans(name, number, line)
            continue
        found += _spans(name, number, line)
    return found


def _spans(name: str, number: int, line: str) -> list[Shown]:
    found = []
    for span in SPAN.finditer(line):
        text = span.group(2).strip()
        if text == "genbench" or text.startswith("genbench "):
            found.append(Shown(name, number, text))
    return found


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@cache
def _root() -> Any:
    """The CLI as a click group, built once (typer rebuilds it from the signatures on every call)."""
    return typer.main.get_command(app)


def command_path(text: str) -> tuple[list[str], str | None]:
    """(the command path after `genbench`, the word that named no command where a group expected one or None)."""
    command = _root()  # typer's own click: a group is what has `commands`
    path: list[str] = []
    for raw in text.split()[1:]:
        word = raw.strip(STRIP)
        if not hasattr(command, "commands"):
            break
        if word in command.commands:
            command = command.commands[word]
            path.append(word)
            continue
        if not word or raw.startswith("-") or word.startswith("-") or not re.fullmatch(r"[a-z][a-z0-9_-]*", word):
            break  # an option, a placeholder (FAMILY), a redirection or the end of the shown command
        return path, word
    return path, None


def all_shown() -> list[Shown]:
    return [shown for path in documents() for shown in shown_commands(path)]


def problems(shown: list[Shown]) -> list[str]:
    """One message per shown command that genbench does not have, naming its file and line."""
    runner = CliRunner()
    found: list[str] = []
    checked: dict[tuple[str, ...], tuple[int, str]] = {}
    for one in shown:
        path, bad = command_path(one.text)
        if bad is not None:
            found.append(f"{one.where()}\n    `{bad}` is not a command of `{' '.join(['genbench', *path])}`")
            continue
        if tuple(path) not in checked:
            result = runner.invoke(app, [*path, "--help"])
            checked[tuple(path)] = (result.exit_code, result.output)
        code, output = checked[tuple(path)]
        if code != 0:
            found.append(f"{one.where()}\n    `genbench {' '.join([*path, '--help'])}` exited {code}: {output[-300:]}")
    return found


def test_the_docs_show_genbench_commands() -> None:
    shown = all_shown()
    assert "README.md" in {s.file for s in shown} and len(shown) >= 20, \
        "the extraction found too little; has the markdown changed?"


def test_every_command_shown_in_the_docs_exists() -> None:
    found = problems(all_shown())
    assert not found, "commands in the docs that genbench does not have:\n" + "\n".join(found)


@pytest.mark.parametrize(("markdown", "expected"), [
    ("```bash\nuv run genbench train ddpm --seed 1   # genbench nosuch in a comment\n```\n",
     [(2, "genbench train ddpm --seed 1")]),
    ("```\nA=1 uv run torchrun --nproc_per_node 2 genbench train ddpm && uv run genbench report\n```\n",
     [(2, "genbench train ddpm && uv run genbench report"), (2, "genbench report")]),
    ("```python\nimport genbench\ngenbench run\n```\n", []),
    ("```bash\nkubectl -n genbench logs -f x\nOMP_NUM_THREADS=1 timeout 1800 genbench train dcgan &\n```\n",
     [(3, "genbench train dcgan &")]),
    ("```\nerror: not an image (genbench reads .png); see `genbench params`\n```\n", [(2, "genbench params")]),
    ("Run `genbench use full`, then `uv run dvc repro`; `genbench-ddpm` is a model, `genbench` a word.\n",
     [(1, "genbench use full"), (1, "genbench")]),
    ("```bash\npython -m genbench.cli train ddpm\n```\n", []),
])
def test_commands_are_found_in_code_blocks_and_spans(tmp_path: Path, markdown: str,
                                                     expected: list[tuple[int, str]]) -> None:
    path = tmp_path / "page.md"
    path.write_text(markdown)
    assert [(s.line, s.text) for s in shown_commands(path, tmp_path)] == expected


@pytest.mark.parametrize(("text", "path", "bad"), [
    ("genbench train FAMILY [--seed S]", ["train"], None),
    ("genbench stack exec -- dvc push", ["stack", "exec"], None),
    ("genbench kfp compile pipeline.yaml", ["kfp", "compile"], None),
    ("genbench evaluate real", ["evaluate"], None),
    ("genbench --help", [], None),
    ("genbench trian ddpm", [], "trian"),
    ("genbench stack upp", ["stack"], "upp"),
])
def test_command_paths(text: str, path: list[str], bad: str | None) -> None:
    assert command_path(text) == (path, bad)


def test_an_unknown_command_fails_naming_the_file_and_line(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text("# x\n\n```bash\nuv run genbench trian ddpm\nuv run genbench train ddpm\n```\n")
    (message,) = problems(shown_commands(page, tmp_path))
    assert message.startswith("README.md:4: genbench trian ddpm") and "`trian` is not a command" in message
