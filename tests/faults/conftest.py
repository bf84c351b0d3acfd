"""The faults tier: what genbench promises when it is killed, cut off, fed bad or hostile input, or handed secrets.

Every test takes the `fault` fixture and fills in what it injected; the fixture appends the record when the test
ends (tests/faults/records.py), `survived` decided by the test itself or, when it leaves it unset, by whether it
passed. A case that needs another branch's work is `xfail(strict=True)` with reason "needs branch inputs" or
"needs branch chain": its record says it did not survive until that branch is merged and the mark removed.

The tests share one tiny project per session (`faults_project`: the stages tier's prepared data and vae run,
sampled and evaluated, its plan cut to the vae alone), copied where a test changes it, and one warm launcher
that forks `genbench` processes for the kill tests (tests/faults/launcher.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from genbench.components.evaluate.evaluate import evaluate, evaluate_real
from genbench.components.sample.sample import sample
from genbench.config import load_config
from genbench.layout import Layout

from ..conftest import use_tiny
from ..stages.conftest import (
    swap_in_pixel_network,
    tiny_trained,  # noqa: F401 - the stages tier's session project, shared
)
from .launcher import Launcher
from .records import FaultRecord, append_record

VAE_ONLY = {"entries": ["vae"], "seeds": [0], "sweeps": {}}  # the vae alone: every stage in seconds


@pytest.fixture(scope="session")
def faults_project(tiny_trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Read-only: prepared data, runs/vae, its samples and metrics and the real-data floor (scored by the pixel
    stand-in: these tests are about files, not numbers), on the vae-only plan. Tests copy it (`project_copy`)."""
    root = tmp_path_factory.mktemp("faults-project")
    use_tiny(root, **VAE_ONLY)
    for part in ("data/prepared", "runs/vae"):
        shutil.copytree(tiny_trained / part, root / part)
    layout, config = Layout(root), load_config(root / "params.yaml")
    sample(layout.run("vae", 0), layout.samples("vae", 0), "vae", config.sample, config.sampling_for("vae"), 0)
    with pytest.MonkeyPatch.context() as patch:
        swap_in_pixel_network(patch.setattr)
        evaluate(layout.samples("vae", 0), layout.reference, layout.metrics("vae", 0), cache_dir=layout.cache,
                 settings=config.evaluate)
        evaluate_real(layout.holdout, layout.reference, layout.real_metrics, cache_dir=layout.cache,
                      settings=config.evaluate)
    return root


def project_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="session")
def launcher() -> Iterator[Launcher]:
    """One warm interpreter that forks `genbench` processes: embedded MLflow and Prefect, one torch thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
    env["OMP_NUM_THREADS"] = "1"
    started = Launcher(env)
    yield started
    started.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep the test body's exception (if any) on the item, for `fault` to record."""
    report = yield
    if call.when == "call":
        item.fault_error = call.excinfo  # type: ignore[attr-defined]
    return report


@pytest.fixture
def fault(request: pytest.FixtureRequest, faults_record_dir: Path) -> Iterator[FaultRecord]:
    """The test's fault record, appended when it ends; unset `survived` means: all tries if the test passed."""
    record = FaultRecord(fault=request.node.name, kind="")
    yield record
    error = getattr(request.node, "fault_error", "setup failed")
    if record.survived is None:
        record.survived = record.tried if error is None else 0
    if error is not None:
        xfail = request.node.get_closest_marker("xfail")
        why = f"xfail ({xfail.kwargs.get('reason', '')})" if xfail else "failed"
        message = error if isinstance(error, str) else str(error.value).strip().splitlines()[0][:200]
        record.detail = f"{record.detail}; {why}: {message}" if record.detail else f"{why}: {message}"
        record.lost = record.lost or "not survived: see detail"
    record.lost = record.lost or "nothing"
    append_record(faults_record_dir, record)
