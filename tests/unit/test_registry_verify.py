"""A version is made, and `champion` moved, only once the artifact store lists the logged model's files; a store that
does not is a transient failure (Prefect retries the task), never a half-registered version."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from genbench.components.register.registry import apply_promotion, logged_model_id, verify_logged_model
from genbench.flows.retries import is_transient

STORED = {None: [("MLmodel", False, 900), ("artifacts", True, None)],
          "artifacts": [("artifacts/model.safetensors", False, 4096), ("artifacts/config.json", False, 300)]}
EXPECTED = {"MLmodel": None, "model.safetensors": 4096, "config.json": 300}


class Page(list):
    token = None  # MLflow's PagedList: the last page has no token


@dataclass
class Store:
    """The calls of MlflowClient that registry.py makes here, over an in-memory listing and one version."""

    listing: dict
    aliases: dict = field(default_factory=dict)

    def list_logged_model_artifacts(self, model_id: str, path: str | None = None) -> list[SimpleNamespace]:
        return [SimpleNamespace(path=p, is_dir=d, file_size=s) for p, d, s in self.listing.get(path, [])]

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        return SimpleNamespace(version=version, source="models:/m-1", tags={"fid": "1.0"})

    def search_model_versions(self, filter_string: str, page_token: str | None = None) -> Page:
        return Page([self.get_model_version("genbench-vae", "1")])

    def get_registered_model(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(tags={}, aliases=dict(self.aliases))

    def get_model_version_by_alias(self, name: str, alias: str) -> SimpleNamespace:
        from mlflow.exceptions import MlflowException

        if alias not in self.aliases:
            raise MlflowException("no champion yet")
        return self.get_model_version(name, self.aliases[alias])

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version


def test_a_complete_listing_passes_and_the_alias_moves() -> None:
    verify_logged_model(Store(STORED), "m-1", EXPECTED)
    store = Store(STORED)
    assert apply_promotion(store, "genbench-vae", 1).promoted and store.aliases == {"champion": "1"}


MISSING = {None: STORED[None], "artifacts": STORED["artifacts"][1:]}  # the weights never arrived
SHORT = {None: STORED[None], "artifacts": [("artifacts/model.safetensors", False, 17), STORED["artifacts"][1]]}


@pytest.mark.parametrize("listing", [MISSING, SHORT], ids=["missing", "cut short"])
def test_missing_or_short_files_are_a_transient_failure(listing: dict) -> None:
    with pytest.raises(Exception, match="does not list model.safetensors") as raised:
        verify_logged_model(Store(listing), "m-1", EXPECTED)
    assert is_transient(raised.value)


def test_the_alias_never_moves_to_a_version_without_its_weights() -> None:
    """`promote` knows no sizes (register checked them before making the version): it checks the files are there."""
    store = Store(MISSING)
    with pytest.raises(Exception, match="does not list model.safetensors"):
        apply_promotion(store, "genbench-vae", 1)
    assert store.aliases == {}


def test_the_logged_model_is_read_from_a_versions_source() -> None:
    assert logged_model_id("models:/m-0123abc") == "m-0123abc"
    assert logged_model_id("runs:/0123/model") is None and logged_model_id("models:/genbench-vae/3") is None
