"""Registered model versions in MLflow: create one from a logged run, fetch one's files, move `champion`.

A version of `genbench-<entry>` is the pyfunc model its run logged (`generator_contract`, models-from-code):
`create_model_version(source="models:/<model id>")` makes it from the run's logged model, so
`mlflow.pyfunc.load_model("models:/genbench-<entry>@champion")` loads and serves it, and its artifacts hold the
run folder's `model.safetensors` and `config.json`, which `fetch_registered` gives `genbench sample --model`.
A version is created, and the alias moved, only once the artifact store lists the model's files
(`verify_logged_model`): an upload that failed half-way, or storage that lost it, never becomes the champion.
Concurrent registrations of one entry end with `champion` on the best comparable version (`settle_champion`).
MLflow is imported inside the functions (it takes seconds).
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel

from genbench.components.common.artifacts import CONFIG, WEIGHTS
from genbench.components.common.records import RegisteredSource
from genbench.components.register.promotion import Floor, decide, read_floor, settled_champion, tag_fid
from genbench.components.register.tracking import configure_tracking, require_registry

CHAMPION_ALIAS = "champion"
FLOOR_TAG = "genbench.champion_floor"  # a registered-model tag: the last forced promotion (`promotion.Floor`)


class PromotionRecord(BaseModel):
    model_name: str
    version: int
    promoted: bool
    champion_version: int
    reason: str


def model_name(entry: str) -> str:
    return f"genbench-{entry}"


def logged_models(client: Any, run_id: str) -> list[str]:
    """The ids of the models run `run_id` logged."""
    outputs = client.get_run(run_id).outputs
    return [output.model_id for output in (outputs.model_outputs if outputs else [])]


def logged_model_id(source: str) -> str | None:
    """The logged model a version was made from (its source `models:/<model id>`); None for any other source."""
    model_id = source.removeprefix("models:/")
    return model_id if model_id != source and "/" not in model_id and "@" not in model_id else None


def verify_logged_model(client: Any, model_id: str, expected: dict[str, int | None]) -> None:
    """Raise unless the artifact store lists every `expected` file (by name; at its size where given) under the
    logged model. The error is MLflow's TEMPORARILY_UNAVAILABLE, which Prefect's task retries (flows/retries.py):
    the store acknowledged an upload it does not show, which a later attempt may get right."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    listed: dict[str, int | None] = {}
    folders: list[str | None] = [None]
    while folders:
        for info in client.list_logged_model_artifacts(model_id, folders.pop()):
            if info.is_dir:
                folders.append(info.path)
            else:
                listed[PurePosixPath(info.path).name] = info.file_size
    wrong = [name for name, size in expected.items() if name not in listed or size not in (None, listed[name])]
    if wrong:
        raise MlflowException(f"logged model {model_id}: the artifact store does not list {', '.join(wrong)} as "
                              f"uploaded (it lists {sorted(listed)}); nothing was registered",
                              error_code=TEMPORARILY_UNAVAILABLE)


def create_version(client: Any, entry: str, run_id: str, tags: dict[str, str], description: str) -> int:
    """A new version of `genbench-<entry>` from the model run `run_id` logged; returns its number."""
    from mlflow.exceptions import MlflowException

    name = model_name(entry)
    models = logged_models(client, run_id)
    if len(models) != 1:
        raise ValueError(f"MLflow run {run_id} logged {len(models)} models; a version is made from exactly one")
    try:
        client.create_registered_model(name, description=f"genbench {entry} generator (MLflow pyfunc model)")
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return int(client.create_model_version(name, source=f"models:/{models[0]}", run_id=run_id, tags=tags,
                                           description=description, model_id=models[0]).version)


def all_versions(client: Any, name: str) -> dict[int, Any]:
    """Every version of `name`, with its tags, by number (every page of the search)."""
    found: dict[int, Any] = {}
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        found |= {int(version.version): version for version in page}
        if not (token := page.token):
            return found


def settle_champion(client: Any, name: str, own: int) -> int:
    """Move `champion` to the version the whole registry says (`promotion.settled_champion`) until a fresh read
    finds it there; return that version. `own` is the caller's version: the alias's stand-in if it is missing.

    Why concurrent registrations converge without a lock (MLflow's REST API has no compare-and-set): every writer
    of the alias runs this after its write, and this ends only on a read, made after the writer's last write,
    that finds the alias already on the best version it lists. Take the last write of all: its writer then read
    the alias unchanged and listed every version created before that read, and none was better; a version created
    later was created before its own registration ran this, which read the same alias and wrote nothing, so it was
    no better either. The best version depends only on the registry's contents, so writers never fight: each
    write is one every later reader agrees with, or is replaced by one. A version whose files the artifact store
    no longer lists is passed over (the caller's own raises, as before it was registered)."""
    from mlflow.exceptions import MlflowException

    passed_over: set[int] = set()
    while True:
        registered = client.get_registered_model(name)  # the alias and the floor, read together
        current = int(registered.aliases[CHAMPION_ALIAS]) if CHAMPION_ALIAS in registered.aliases else None
        versions = all_versions(client, name)
        best = settled_champion(own if current is None else current,
                                {number: version.tags for number, version in versions.items()},
                                read_floor(registered.tags.get(FLOOR_TAG)), frozenset(passed_over))
        if best == current:
            return best
        if (model_id := logged_model_id(versions[best].source or "")) is not None:
            try:
                verify_logged_model(client, model_id, {"MLmodel": None, WEIGHTS: None, CONFIG: None})
            except MlflowException:
                if best == own:
                    raise
                passed_over.add(best)
                continue
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(best))


def apply_promotion(client: Any, name: str, version: int, force: bool = False) -> PromotionRecord:
    """Read the version's and the champion's tags, `decide`, move the alias when it says so, then
    `settle_champion` (a registration running beside this one may have read the same champion)."""
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
        newest = max(all_versions(client, name))  # written before the alias: whoever reads the alias then sees it
        client.set_registered_model_tag(name, FLOOR_TAG, Floor(int(version), newest).tag())
    if decision.promote:
        if (model_id := logged_model_id(candidate.source or "")) is not None:
            verify_logged_model(client, model_id, {"MLmodel": None, WEIGHTS: None, CONFIG: None})
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
    current = settle_champion(client, name, int(version))
    reason = decision.reason
    if current != (int(version) if decision.promote else int(champion.version)):
        settled = client.get_model_version(name, str(current))
        reason += f"; with the versions registered meanwhile, v{current} (FID {tag_fid(settled.tags):.4f}) is champion"
    return PromotionRecord(model_name=name, version=int(version), promoted=current == int(version),
                           champion_version=current, reason=reason)


def register_version(client: Any, entry: str, run_id: str, tags: dict[str, str], description: str
                     ) -> PromotionRecord:
    """What the register stage does once the run is logged: a new version of `genbench-<entry>` from the run's
    model, then its promotion."""
    version = create_version(client, entry, run_id, tags, description)
    return apply_promotion(client, model_name(entry), version)


def promote(entry: str, *, project_dir: Path, version: int | None = None, force: bool = False) -> PromotionRecord:
    """`genbench promote`: consider the latest (or given) version of `genbench-<entry>` for champion."""
    require_registry(project_dir, model_name(entry))
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


def fetch_registered(model_uri: str, dest: Path, *, project_dir: Path) -> tuple[Path, RegisteredSource]:
    """Download a registered version into `dest`; return the run folder inside it (its `model.safetensors` and
    `config.json`, where the version's MLmodel says MLflow put them) and where the weights came from.

    `model_uri` is `models:/<name>@<alias>` or `models:/<name>/<version>`. The alias is resolved once and that
    exact version is downloaded, so a promotion in between cannot mix two versions. The origin (name, version,
    run id, FID tag) goes into the samples' record.
    """
    if not model_uri.startswith("models:/"):
        raise ValueError(f"model URI {model_uri!r}: expected models:/genbench-<name>@<alias> "
                         "or models:/genbench-<name>/<version>")
    require_registry(project_dir, model_uri)
    tracking_uri = configure_tracking(project_dir)
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        name, version = get_model_name_and_version(client, model_uri)
        found = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ValueError(f"{model_uri}: not in the registry at {tracking_uri} ({exc.message})") from None
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest),
                                                     tracking_uri=tracking_uri))
    try:  # the version's MLmodel lists its artifacts: the run folder is where MLflow put the weights
        recorded = Model.load(local).flavors["python_function"]["artifacts"].values()
        folder = next((local / item["path"]).parent for item in recorded if Path(item["path"]).name == WEIGHTS)
    except (OSError, KeyError, StopIteration, MlflowException):
        folder = None
    if folder is None or not all((folder / file).is_file() for file in (WEIGHTS, CONFIG)):
        raise ValueError(f"{model_uri} (version {version}) is no genbench pyfunc model with {WEIGHTS} and {CONFIG}; "
                         "it was not registered by `genbench register` (register its run again)")
    fid = tag_fid(found.tags)
    return folder, RegisteredSource(model_uri=model_uri, model_name=name, version=int(version), run_id=found.run_id,
                                    fid=fid if math.isfinite(fid) else None, tracking_uri=tracking_uri)
