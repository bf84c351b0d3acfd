"""A stage declared once: the component it calls, the params it reads, the files it reads and writes and the code
it runs. The CLI commands, the Prefect tasks, the Kubeflow components and dvc.yaml are all built from these
declarations (genbench/stages.py lists them), so adding an argument to a stage is one edit in its `call`.

A declaration imports its component inside `call`, so listing the stages (for `genbench --help`) loads no torch, numpy or pydantic.
Running one through `Stage.run` also writes its provenance: a hash of what DVC would hash for it (the code it
runs, the params values it reads, the bytes of its inputs), whichever driver ran it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from genbench.layout import Layout

if TYPE_CHECKING:
    from genbench.components.common.records import Provenance
    from genbench.config import Config

# A code path's first folder → the package it installs as (pyproject.toml's package-dir), so code is found the same
# in a checkout and in an installed image.
INSTALLED = {"components": "genbench.components", "models": "genbench.models", "genbench": "genbench",
             "flows": "genbench.flows"}
# What every stage runs besides its own package: the shared helpers, the params schema (built from the models'
# configs) and the layout.
SHARED_CODE = ("components/__init__.py", "components/common", "genbench/__init__.py", "genbench/config.py",
               "genbench/kubeflow_config.py", "genbench/profiles.py", "genbench/layout.py", "models")
Role = Literal["in", "out", "metrics", "scratch"]  # scratch: a cache or download folder no driver tracks
Over = Literal["once", "entries", "sweeps"]  # once; per (entry, seed) of the plan; per sweep of the plan


@dataclass(frozen=True)
class At:
    """Which instance of a stage: an (entry, seed) pair, a sweep (its entry, run on the plan's first seed), or
    neither. DVC's templates pass placeholders such as "${item.entry}" through the same path rules."""

    entry: str | None = None
    seed: int | str | None = None
    sweep: str | None = None

    @property
    def label(self) -> str:
        """The instance's name in task names and provenance files: `vae-seed-0`, `ddim_steps`, or ``."""
        if self.sweep is not None:
            return self.sweep
        return f"{self.entry}-seed-{self.seed}" if self.entry is not None else ""


def _itself(path: Path) -> tuple[Path, ...]:
    return (path,)


@dataclass(frozen=True)
class Place:
    """A file or folder a stage reads or writes, by name: `--NAME` on the command line, and the key a Kubeflow task
    uses to send it to one of its output artifacts."""

    name: str
    rule: Callable[[Layout, At], Path]  # where it lives in a project laid out by `Layout`
    role: Role
    help: str
    files: Callable[[Path], tuple[Path, ...]] = _itself  # the files DVC tracks of it (a run folder: a few)
    persist: tuple[str, ...] = ()  # file names DVC keeps between runs (a checkpoint to resume from)
    cache: bool = True  # False: DVC leaves it in the workspace, out of its cache

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Call:
    """What a stage's `call` gets: the validated params, which instance, and every place's path."""

    config: Config
    at: At
    here: Layout  # the project the stage reads
    paths: Mapping[str, Path]
    extra: Mapping[str, Any] = field(default_factory=dict)  # driver facts: run tags, a tracking URI

    def __getattr__(self, name: str) -> Path:
        try:
            return self.paths[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def entry(self) -> str:
        assert self.at.entry is not None, "a per-entry stage"
        return self.at.entry

    @property
    def seed(self) -> int:
        assert isinstance(self.at.seed, int), "a per-seed stage"
        return self.at.seed


@dataclass(frozen=True)
class Stage:
    """One pipeline stage. `params` are dotted keys of the resolved params ("{entry}" and "{sweep}" stand for the
    instance's); `code` the folders and files, relative to the repository, whose code it runs (a test walks its
    imports and fails on any module they miss); `says` the line a command prints when it is done."""

    name: str
    doc: str
    over: Over
    params: tuple[str, ...]
    places: tuple[Place, ...]
    code: tuple[str, ...]
    call: Callable[[Call], Any]
    says: Callable[[Any, Call], str]
    command: tuple[str, ...] = ()  # the `genbench` words that run it, when not just its name

    @property
    def words(self) -> tuple[str, ...]:
        return self.command or (self.name,)

    def place(self, name: str) -> Place:
        return next(place for place in self.places if place.name == name)

    def instances(self, config: Config) -> list[At]:
        """Every instance the plan in `config` runs, in the drivers' order."""
        if self.over == "entries":
            return [At(entry, seed) for entry in config.entries for seed in config.seeds]
        if self.over == "sweeps":
            return [At(config.sweeps[name].entry, config.seeds[0], name) for name in config.sweeps]
        return [At()]

    def paths(self, here: Layout, at: At, write: Mapping[str, Layout] | None = None,
              given: Mapping[str, Path | None] | None = None) -> dict[str, Path]:
        """Each place's path: `given` (a command's options) first, then outputs under `write[name]` (a Kubeflow
        output artifact) or `here`."""
        write, given = write or {}, given or {}
        return {place.name: Path(given[place.name]) if given.get(place.name) is not None
                else place.rule(write.get(place.name, here), at) for place in self.places}

    def bind(self, config: Config, here: Layout, at: At = At(), *, write: Mapping[str, Layout] | None = None,
             given: Mapping[str, Path | None] | None = None, **extra: Any) -> Call:
        """What `call` gets for instance `at`: every place's path (`paths`) and the driver's `extra` facts."""
        return Call(config, at, here, self.paths(here, at, write, given), extra)

    def execute(self, run: Call, write: Mapping[str, Layout] | None = None) -> Any:
        """Call the component, then record its provenance beside its first output (under `write` where given)."""
        from genbench.components.common.io import write_json

        result = self.call(run)
        first_out = next(place.name for place in self.places if place.role in ("out", "metrics"))
        target = (write or {}).get(first_out, run.here).provenance(self.name, run.at.label)
        write_json(target, self.provenance(run.config, run.at, run.paths).model_dump(mode="json"))
        return result

    def run(self, config: Config, here: Layout, at: At = At(), *, write: Mapping[str, Layout] | None = None,
            given: Mapping[str, Path | None] | None = None, **extra: Any) -> Any:
        """`bind`, then `execute`: the component for instance `at`, with its provenance recorded."""
        return self.execute(self.bind(config, here, at, write=write, given=given, **extra), write)

    def provenance(self, config: Config, at: At, paths: Mapping[str, Path]) -> Provenance:
        """{stage, instance, hash, code, params, inputs}: the code files, params values and input files this run
        of the stage read, each hashed, and one hash over all of them. A change to any of them changes `hash`."""
        from genbench.components.common.io import file_digest
        from genbench.components.common.records import Provenance

        code = {name: file_digest(path) for name, path in code_files(self.code).items()}
        resolved = config.model_dump(mode="json")
        params = {key: resolve_key(resolved, key) for key in self.param_keys(at)}
        inputs = {}
        for place in self.places:
            if place.role == "in":
                for path in place.files(paths[place.name]):
                    inputs[str(path)] = _digest(Path(path))
        record = {"stage": self.name, "instance": at.label, "code": code, "params": params, "inputs": inputs}
        text = json.dumps(record, sort_keys=True, default=str)
        return Provenance(hash=hashlib.sha256(text.encode()).hexdigest()[:12], **record)

    def param_keys(self, at: At) -> list[str]:
        return [key.format(entry=at.entry, sweep=at.sweep) for key in self.params]


def code_files(code: tuple[str, ...]) -> dict[str, Path]:
    """The Python files under `code` (folders or files as the repository spells them) by that spelling."""
    found: dict[str, Path] = {}
    for item in code:
        top, _, rest = item.partition("/")
        base = Path(importlib.import_module(INSTALLED[top]).__file__ or "").parent
        path = base / rest if rest else base
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            found[f"{top}/{file.relative_to(base)}"] = file
    return found


def resolve_key(resolved: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` in the resolved params (`Config.model_dump(mode="json")`)."""
    value: Any = resolved
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _digest(path: Path) -> str:
    from genbench.components.common.io import file_digest

    if path.is_dir():
        listing = {str(child.relative_to(path)): file_digest(child) for child in sorted(path.rglob("*"))
                   if child.is_file()}
        return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"
    return file_digest(path) if path.exists() else "missing"
