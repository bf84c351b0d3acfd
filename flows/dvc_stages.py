"""dvc.yaml, generated from the stage declarations (genbench/stages.py): each stage's command, its code and input
files as deps, the params keys it reads, its outputs and the provenance record it writes. A test fails when the
committed dvc.yaml differs from what this writes; `uv run python -m genbench.flows.dvc_stages` rewrites it.

Per-entry stages are DVC matrices over the plan's `entries` and `seeds` (from plan.yaml, DVC `vars`), sweeps a
`foreach` over `sweeps`; the
path rules of the declarations are applied to DVC's placeholders, so the paths are the ones every driver uses.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from genbench.components.common.io import atomic_path
from genbench.layout import Layout
from genbench.profiles import PLAN_FILE, PLAN_KEYS
from genbench.stages import STAGES, At, Stage

HEADER = """\
# GENERATED from the stage declarations (components/*/stage.py) by `uv run python -m genbench.flows.dvc_stages`:
# edit a declaration and run that, never this file (tests/unit/test_dvc_yaml.py checks the two agree).
#
# The plan (the active profile, families, seeds, sweeps) comes from plan.yaml, which `genbench use PROFILE` writes.
# The DVC driver: each stage is one `genbench` command running one stage declaration, as the Prefect flow's and
# the Kubeflow pipeline's tasks do. deps are the code folders a stage runs (its import closure, checked by
# tests/unit/test_stage_deps.py) and the input files it reads; params the keys it reads, so editing one entry's
# `models.<entry>` retrains only that entry, and a sampler change re-samples without retraining. Per-entry stages
# run once per entry of `entries` and seed of `seeds` (train@ddpm-0, ...); sweeps once per `sweeps` key.
#
# ldm trains on the frozen vae of runs/vae (models.ldm.arch.vae_run), but a matrix item cannot get a dep of its
# own (treeverse/dvc#5167, #7151): genbench refuses `entries` that list ldm before vae, and the ldm's checkpoint
# fingerprint includes the frozen vae weights. After retraining the vae, run `dvc repro -f train@ldm`.
"""
MATRIX = At("${item.entry}", "${item.seed}")
SWEEP = At("${item.entry}", "${seeds.0}", "${key}")


def render() -> str:
    """The text of dvc.yaml."""
    stages = {name: _stage(stage) for name, stage in STAGES.items()}
    body = yaml.safe_dump({"vars": [PLAN_FILE], "stages": stages}, sort_keys=False, width=120,
                          default_flow_style=False)
    return HEADER + body


def _stage(stage: Stage) -> dict[str, Any]:
    at = {"once": At(), "entries": MATRIX, "sweeps": SWEEP}[stage.over]
    paths = stage.paths(Layout(), at)
    words = list(stage.words)
    if stage.over == "entries":
        words += [at.entry, "--seed", str(at.seed)]
    elif stage.over == "sweeps":
        words.append(str(at.sweep))
    deps = [f"{path}" for path in stage.code]
    outs: list[Any] = []
    metrics: list[Any] = []
    for place in stage.places:
        files = [str(path) for path in place.files(paths[place.name])]
        if place.role == "in":
            deps += files
        elif place.role in ("out", "metrics"):
            target = metrics if place.role == "metrics" else outs
            for file in files:
                options = {"persist": True} if Path(file).name in place.persist else {}
                options |= {} if place.cache else {"cache": False}
                target.append({file: options} if options else file)
    outs.append(str(Layout().provenance(stage.name, at.label)))
    keys = [key.replace("{entry}", "${item.entry}").replace("{sweep}", "${key}") for key in stage.params]
    planned = [key for key in keys if key.split(".")[0] in ("profile", *PLAN_KEYS)]
    params: list[Any] = [key for key in keys if key not in planned] + ([{PLAN_FILE: planned}] if planned else [])
    body: dict[str, Any] = {"cmd": " ".join(["genbench", *words]), "deps": deps, "params": params, "outs": outs}
    if metrics:
        body["metrics"] = metrics
    if stage.over == "entries":
        return {"matrix": {"entry": "${entries}", "seed": "${seeds}"}, **body}
    if stage.over == "sweeps":
        return {"foreach": "${sweeps}", "do": body}
    return body


def main(argv: list[str]) -> int:
    """Write dvc.yaml in the current folder (or print it with `-`)."""
    text = render()
    if argv[1:] == ["-"]:
        sys.stdout.write(text)
        return 0
    with atomic_path(Path("dvc.yaml")) as tmp:
        tmp.write_text(text)
    print("wrote dvc.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
