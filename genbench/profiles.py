"""Profile resolution: any mapping in `params.yaml` may carry `profiles: {PROFILE: overrides}`, deep-merged
over its siblings when that profile is active. Overrides sit beside the values they change, so a DVC stage can
depend on `models.ddpm` alone and editing DDPM settings never retrains the VAE.

Pure functions over plain dicts; `genbench/config.py` validates what comes out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

PROFILES: tuple[str, ...] = ("tiny", "quick", "full", "thesis-cifar10", "thesis-keras")
Origins = dict[tuple[str, ...], tuple[str, ...]]  # resolved key path → where its value was written


class ConfigError(ValueError):
    """Bad parameters: the message names each offending field and what is allowed."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping key written twice: PyYAML keeps the last one silently, so an edit
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


def describe(exc: ValidationError, origins: Origins, path: Path) -> str:
    """One line per bad field, named where the user wrote it, with what is allowed."""
    lines = [f"{path}: {exc.error_count()} invalid parameter(s):"]
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        if loc[:1] in (("models",), ("sampling",)) and len(loc) > 2:
            loc = loc[:2] + loc[3:]  # models.<name>.<family tag>.…: the tag is the entry's own `family`
        shown = next((origins[loc[:i]] + loc[i:] for i in range(len(loc), 0, -1) if loc[:i] in origins), loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key; remove it or fix its spelling (`genbench params` prints every key)"
        elif error["type"] == "int_type":  # strict integers (models/config.py): true, 64.0 and "64" are refused
            message += f"; write a whole number such as 64 (got {error['input']!r})"
        elif "input" in error and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
        # A check across sections (no location) names its fields itself.
        lines.append(f"  {'.'.join(shown)}: {message}" if shown else f"  {message}")
    lines.append("Nothing was written. Fix params.yaml and run again.")
    return "\n".join(lines)


PLAN_START, PLAN_END = "# >>> plan", "# <<< plan"


def use_profile(text: str, profile: str, path: Path) -> str:
    """params.yaml's text switched to `profile`: its `profile:` line set, and the lines between the plan markers
    replaced by that profile's plan (`profiles.<profile>`: families, seeds, sweeps), one key per line in flow
    style. Comments and everything else stay as written."""
    raw = load_yaml(text, path) or {}
    plan = ((raw.get("profiles") or {}).get(profile) or {}) if isinstance(raw, dict) else {}
    keys = [key for key in ("families", "seeds", "sweeps") if key in plan]
    if not keys:
        raise ConfigError(f"{path}: profiles.{profile}: has no plan (families, seeds, sweeps) to switch to; set the "
                          f"top-level ones yourself and `profile: {profile}`")
    start, end = text.find(PLAN_START), text.find(PLAN_END)
    if start < 0 or end < start:
        raise ConfigError(f"{path}: no `{PLAN_START}` … `{PLAN_END}` lines around the top-level families, seeds and "
                          "sweeps; put them back (see the repository's params.yaml)")
    lines = [f"{key}: {yaml.safe_dump(plan[key], default_flow_style=True, sort_keys=False, width=10**6).strip()}"
             for key in keys]
    body = text[: start + len(PLAN_START)] + "\n" + "\n".join(lines) + "\n" + text[end:]
    switched, count = re.subn(r"^profile:[ \t]*\S+", f"profile: {profile}", body, count=1, flags=re.MULTILINE)
    if not count:
        raise ConfigError(f"{path}: no top-level `profile:` line to switch")
    return switched
