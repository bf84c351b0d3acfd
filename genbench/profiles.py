"""Profile resolution: any mapping in `params.yaml` may carry `profiles: {PROFILE: overrides}`, deep-merged
over its siblings when that profile is active. Overrides sit beside the values they change, so a DVC stage can
depend on `models.ddpm` alone and editing DDPM settings never retrains the VAE.

Pure functions over plain dicts; `genbench/config.py` validates what comes out.
"""

from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

PROFILES: tuple[str, ...] = ("tiny", "quick", "full", "thesis-cifar10", "thesis-keras")
Origins = dict[tuple[str, ...], tuple[str, ...]]  # resolved key path → where its value was written


class ConfigError(ValueError):
    """Bad parameters: the message names each offending field and what is allowed."""


class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader (on libyaml's parser where the wheel has it, as the pure-Python one is slow enough to
    show in every command), refusing a mapping key written twice: PyYAML keeps the last one silently, so an edit
    to the first would do nothing. Keys are compared as written, before merge keys are expanded: a key written
    beside `<<: *anchor` replaces the merged one, as YAML intends, and is not a duplicate."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._check_keys(node, (), set())
        return super().construct_document(node)

    def _check_keys(self, node: yaml.Node, here: tuple[str, ...], seen: set[int]) -> None:
        if id(node) in seen:  # an alias: checked where its anchor was written
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._check_keys(item, (*here, str(index)), seen)
        elif isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, Any], int] = {}
            for key_node, value_node in node.value:
                # by resolved tag and text: `1` and "1" are two keys, `<<` twice is a duplicate
                key = (key_node.tag, key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node))
                name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                if key in lines:
                    raise DuplicateKeyError(f"line {key_node.start_mark.line + 1}: {'.'.join((*here, name))}: given "
                                            f"twice (first on line {lines[key]}); YAML keeps only the last, so "
                                            "delete one of them")
                lines[key] = key_node.start_mark.line + 1
                self._check_keys(value_node, (*here, name), seen)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping key written twice (`UniqueKeyLoader`); the message names the line and the key's path."""


def load_yaml(text: str, path: Path) -> Any:
    """`text` (the contents of `path`) as Python data; ConfigError, on one line, for a duplicated key or bad YAML."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}not valid YAML: {exc.problem or exc.context}; fix the syntax there "
                          "(indentation, a missing colon or quote)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def resolve_profiles(node: Any, profile: str, path: Path, here: tuple[str, ...] = (),
                     origins: Origins | None = None) -> Any:
    """Deep-merge each mapping's `profiles[profile]` over it, recording in `origins` where overridden values
    came from (so an error names the line the user wrote)."""
    origins = {} if origins is None else origins
    if not isinstance(node, dict):
        return node
    node = dict(node)
    overrides = node.pop("profiles", None) or {}
    if not isinstance(overrides, dict) or not set(overrides) <= set(PROFILES):
        where = ".".join((*here, "profiles"))
        raise ConfigError(f"{path}: {where}: must map profile names ({', '.join(PROFILES)}) to overrides")
    chosen = overrides.get(profile) or {}
    if not isinstance(chosen, dict):
        raise ConfigError(f"{path}: {'.'.join((*here, 'profiles', profile))}: must be a mapping of overrides")
    merged = _deep_merge(node, chosen, here, (*here, "profiles", profile), origins)
    return {key: resolve_profiles(value, profile, path, (*here, key), origins) for key, value in merged.items()}


def _deep_merge(base: dict[str, Any], override: dict[str, Any], here: tuple[str, ...], source: tuple[str, ...],
                origins: Origins) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value, (*here, key), (*source, key), origins)
        else:
            merged[key] = value
            origins[(*here, key)] = (*source, key)
    return merged


def describe(exc: ValidationError, origins: Origins, path: Path,
             known: Callable[[tuple[str, ...]], list[str]] | None = None) -> str:
    """One line per bad field, named where the user wrote it, with what is allowed; `known(loc)` lists the keys
    allowed beside an unknown one, for a did-you-mean."""
    lines = [f"{path}: {exc.error_count()} invalid parameter(s):"]
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        if loc[:1] in (("models",), ("sampling",)) and len(loc) > 2:
            loc = loc[:2] + loc[3:]  # models.<name>.<family tag>.…: the tag is the entry's own `family`
        shown = next((origins[loc[:i]] + loc[i:] for i in range(len(loc), 0, -1) if loc[:i] in origins), loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            close = get_close_matches(loc[-1], known(loc[:-1]) if known else [], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            message = f"unknown key; {hint}remove it or fix its spelling (`genbench params` prints every key)"
        elif error["type"] == "int_type":  # strict integers (models/config.py): true, 64.0 and "64" are refused
            message += f"; write a whole number such as 64 (got {error['input']!r})"
        elif "input" in error and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
        # A check across sections (no location) names its fields itself.
        lines.append(f"  {'.'.join(shown)}: {message}" if shown else f"  {message}")
    lines.append(f"Nothing was written. Fix {path.name} and run again.")
    return "\n".join(lines)


PLAN_KEYS = ("entries", "seeds", "sweeps")  # a profile's plan: what runs, written under the root `profiles`
PLAN_FILE = "plan.yaml"  # the active profile and its plan, written by `genbench use` for dvc.yaml to iterate
PLAN_HEADER = """\
# GENERATED by `genbench use {profile}` from {params}'s profiles.{profile}: the active profile and its plan, which
# dvc.yaml iterates. Never edit it: change the plan in {params} (profiles.<name>) and run `genbench use <name>`.
"""


def plan_path(params: Path) -> Path:
    """The plan file beside a params file."""
    return Path(params).with_name(PLAN_FILE)


def written_plan(raw: dict[str, Any], profile: str) -> dict[str, Any]:
    """Profile `profile`'s plan as params.yaml writes it (its root `profiles.<profile>` keys of PLAN_KEYS)."""
    chosen = (raw.get("profiles") or {}).get(profile) or {}
    return {key: chosen[key] for key in PLAN_KEYS if isinstance(chosen, dict) and key in chosen}


def plan_text(raw: dict[str, Any], profile: str, params: Path) -> str:
    """plan.yaml's text for `profile`: the header, `profile:`, then each plan key on one line of flow YAML."""
    plan = written_plan(raw, profile)
    lines = [f"{key}: {yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip().removesuffix('...').strip()}"
             for key, value in {"profile": profile, **plan}.items()]
    return PLAN_HEADER.format(profile=profile, params=Path(params).name) + "\n".join(lines) + "\n"


def read_plan(params: Path) -> dict[str, Any] | None:
    """plan.yaml beside `params`, or None where there is none."""
    path = plan_path(params)
    if not path.exists():
        return None
    plan = load_yaml(path.read_text(), path)
    if not isinstance(plan, dict) or not isinstance(plan.get("profile"), str):
        raise ConfigError(f"{path}: not a plan file (no `profile:`); rewrite it with `genbench use PROFILE`")
    return plan


def check_plan(plan: dict[str, Any], raw: dict[str, Any], params: Path) -> None:
    """plan.yaml must hold what params.yaml plans for its profile: dvc.yaml iterates the file, the other drivers
    read params.yaml, and the two must never run different plans."""
    profile = plan["profile"]
    wanted = written_plan(raw, profile)
    stale = [key for key in PLAN_KEYS if plan.get(key) != wanted.get(key)]
    if stale:
        raise ConfigError(f"{plan_path(params)}: stale: {', '.join(stale)} differ from {Path(params).name}'s "
                          f"profiles.{profile}; run `genbench use {profile}` to rewrite it")
