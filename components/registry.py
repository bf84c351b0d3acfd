"""Registered model versions in MLflow: create one from a logged run, fetch one's files, move `champion`.

A version of `genbench-<name>` holds exactly `model.safetensors` and `config.json` (no pickled module, no
MLmodel flavour): `create_model_version(source=<run artifact URI>/model)` points it at the run's `model/`
folder, the source `mlflow.register_model("runs:/<id>/model", ...)` would resolve to, and
`mlflow.artifacts.download_artifacts("models:/genbench-<name>@champion")` returns the two files.
MLflow is imported inside the functions (it takes seconds).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .promotion import decide, tag_fid
from .tracking import configure_tracking

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT_PATH = "model"
MODEL_FILES = ("model.safetensors", "config.json")


class PromotionRecord(BaseModel):
    model_name: str
    version: int
    promoted: bool
    champion_version: int
    reason: str


def model_name(entry: str) -> str:
    return f"genbench-{entry}"


def create_version(client: Any, entry: str, run_id: str, tags: dict[str, str], description: str) -> int:
    """A new version of `genbench-<name>` from run `run_id`'s `model/` artifacts; returns its number."""
    from mlflow.exceptions import MlflowException

    name = model_name(entry)
    try:
        client.create_registered_model(name, description=f"genbench {entry} generator (safetensors + config.json)")
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
    return int(client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                           description=description).version)


def apply_promotion(client: Any, name: str, version: int, force: bool = False) -> PromotionRecord:
    """Read the version's and the champion's tags, `decide`, and move the alias when it says so."""
    from mlflow.exceptions import MlflowException

    candidate = client.get_model_version(name, str(version))
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        champion = None
    decision = decide(candidate.tags, champion.tags if champion else None,
                      same_version=champion is not None and int(champion.version) == int(version), force=force)
    if decision.forced:
        client.set_model_version_tag(name, str(version), "promoted_by_force", f"true ({decision.reason})")
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
    current = int(version) if decision.promote else int(champion.version)
    return PromotionRecord(model_name=name, version=int(version), promoted=decision.promote,
                           champion_version=current, reason=decision.reason)


def promote(entry: str, *, project_dir: Path, version: int | None = None, force: bool = False) -> PromotionRecord:
    """`genbench promote`: consider the latest (or given) version of `genbench-<name>` for champion."""
    tracking_uri = configure_tracking(project_dir)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    name = model_name(entry)
    if version is None:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"no versions of {name} in {tracking_uri}; run `genbench register {entry}` first")
        version = max(int(v.version) for v in versions)
    return apply_promotion(client, name, version, force)


def fetch_registered(model_uri: str, dest: Path, *, project_dir: Path) -> dict[str, Any]:
    """Download a registered version's `model.safetensors` and `config.json` into `dest`, a run folder's shape.

    `model_uri` is `models:/<name>@<alias>` or `models:/<name>/<version>`. The alias is resolved once and that
    exact version is downloaded, so a promotion in between cannot mix two versions. Returns where the
    weights came from (name, version, run id, FID tag), for the samples' record.
    """
    if not model_uri.startswith("models:/"):
        raise ValueError(f"model URI {model_uri!r}: expected models:/genbench-<name>@<alias> "
                         "or models:/genbench-<name>/<version>")
    tracking_uri = configure_tracking(project_dir)
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        name, version = get_model_name_and_version(client, model_uri)
        found = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ValueError(f"{model_uri}: not in the registry at {tracking_uri} ({exc.message})") from None
    dest = Path(dest)
    mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest),
                                        tracking_uri=tracking_uri)
    missing = [f for f in MODEL_FILES if not (dest / f).is_file()]
    if missing:
        raise ValueError(f"{model_uri} (version {version}) lacks {', '.join(missing)}; "
                         "it was not registered by `genbench register`")
    fid = tag_fid(found.tags)
    return {"model_uri": model_uri, "model_name": name, "version": int(version), "run_id": found.run_id,
            "fid": fid if math.isfinite(fid) else None, "tracking_uri": tracking_uri}
