"""The services tier's shared servers: one SeaweedFS and one PostgreSQL per test run (backing.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .backing import Backing, shared_backing, shared_folder


@pytest.fixture(scope="session")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backing]:
    with shared_backing(shared_folder(tmp_path_factory.getbasetemp())) as started:
        yield started
