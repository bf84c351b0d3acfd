"""Concurrent registrations of one entry against a real MLflow server end with `champion` on the best FID.

Each round registers a first champion, then eight versions at once (threads released together), through the
register stage's own call (`registry.register_version`): six measured under the champion's protocol and two under
another protocol with lower FIDs, which must never win. Every version is made from one small logged model, so a
round costs registry calls, not model logging. The server fixture takes the backend store's URI (SQLite here).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from genbench.components.register.promotion import TAG_DATA_MD5, TAG_EXTRACTOR_SHA, TAG_FID, TAG_PROTOCOL
from genbench.components.register.registry import CHAMPION_ALIAS, PromotionRecord, model_name, register_version
from genbench.components.register.tracking import TRANSIENT_RETRIES

from ..mlflow_server import MlflowServer, mlflow_server

pytestmark = pytest.mark.server
# Rounds per suite run: the code before the re-check left the wrong champion in most rounds, so six rounds all passing
# by luck is unlikely; GENBENCH_RACE_ROUNDS=20 repeats it as the acceptance check does.
ROUNDS, AT_ONCE = int(os.environ.get("GENBENCH_RACE_ROUNDS", "6")), 8
PROTOCOL, OTHER_PROTOCOL = "holdout|fashion_mnist|300|test|300|300|legacy-tf|inception@7ff4a85c|fp32", "other"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as running:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in running.login().items() | TRANSIENT_RETRIES.items():
                patch.setenv(key, value)
            yield running


@pytest.fixture(scope="module")
def run_id(server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished run with one logged model holding the files a version's promotion checks for."""
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelOutput

    client = MlflowClient(server.url)
    experiment = client.create_experiment("promotion-race")
    run = client.create_run(experiment).info.run_id
    model = client.create_logged_model(experiment, name="model", source_run_id=run).model_id
    files = tmp_path_factory.mktemp("model")
    for name in ("MLmodel", "model.safetensors", "config.json"):
        (files / name).write_text(name)
    client.log_model_artifacts(model, str(files))
    client.finalize_logged_model(model, "READY")
    client.log_outputs(run, [LoggedModelOutput(model, step=0)])
    client.set_terminated(run)
    return run


def tags(fid: float, protocol: str = PROTOCOL) -> dict[str, str]:
    return {TAG_FID: repr(fid), TAG_DATA_MD5: "d" * 32, TAG_EXTRACTOR_SHA: "f" * 64, TAG_PROTOCOL: protocol}


def race(url: str, entry: str, run_id: str, contenders: list[dict[str, str]]) -> list[PromotionRecord]:
    """Register each of `contenders` at once, one thread and one client each."""
    from mlflow import MlflowClient

    start = threading.Barrier(len(contenders))

    def one(version_tags: dict[str, str]) -> PromotionRecord:
        client = MlflowClient(url)
        start.wait()
        return register_version(client, entry, run_id, version_tags, description=f"FID {version_tags[TAG_FID]}")

    with ThreadPoolExecutor(len(contenders)) as pool:
        return list(pool.map(one, contenders))


def test_concurrent_registrations_leave_the_best_comparable_fid_champion(server: MlflowServer, run_id: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    for round_ in range(ROUNDS):
        entry, rng = f"race-{round_}", random.Random(round_)
        first = register_version(client, entry, run_id, tags(50.0), description="the first champion")
        assert first.promoted and first.version == 1
        fids = rng.sample(range(100, 4000), AT_ONCE - 2)
        contenders = [tags(fid / 100) for fid in fids] + [tags(0.5, OTHER_PROTOCOL), tags(0.25, OTHER_PROTOCOL)]
        rng.shuffle(contenders)
        records = race(server.url, entry, run_id, contenders)

        name = model_name(entry)
        stored = {int(v.version): v.tags for v in client.search_model_versions(f"name = '{name}'")}
        assert sorted(stored) == list(range(1, AT_ONCE + 2)), f"round {round_}: versions {sorted(stored)}"
        assert sorted(stored.values(), key=repr) == sorted([tags(50.0), *contenders], key=repr)  # every one tagged
        best = min(fids) / 100
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        assert champion.tags == tags(best), f"round {round_}: champion v{champion.version} {champion.tags[TAG_FID]}"
        winner = next(record for record in records if stored[record.version] == tags(best))
        assert winner.promoted and winner.champion_version == winner.version
