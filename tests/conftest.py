"""Shared fixtures and the test tiers.

Each folder is a tier, marked automatically: unit (maths, config, models; seconds, no files), stages (each
component on tiny data, sharing one prepared-and-trained project), drivers (dvc and the Prefect flow end to
end, started in the background at collection and run last; the flow's tests start Prefect's ephemeral
server, so they are also `server`), services (real MLflow / Prefect / S3 servers: marker `server`; the
headless-Chromium test also `browser`), faults (kills, outages, bad and hostile input, secrets: each test records
what it injected and how it came out for docs/reliability.md). The fast loop is `uv run pytest -m "unit or
stages" -n 2` (pytest-xdist, one torch thread per worker); the drivers and faults run only in the full suite
(README command 2).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TIER_MARKERS = {"unit": "unit", "stages": "stages", "drivers": "drivers", "services": "server", "faults": "faults"}


# The order tests are handed out in: the tiers that mostly wait on servers and outages first, so their waits
# overlap the CPU-bound tiers; within them the longest serial chains first (one module-scoped stack each); the
# drivers' tests last, by when their background runs are done. Under `--dist loadfile` each file goes to one worker
# in this order (README command 2).
TIER_ORDER = ("services", "faults", "stages", "unit", "drivers")
LONGEST_FIRST = ("services/test_stack.py", "faults/test_server_kills.py", "services/test_dvc_remote.py")


def _order(item: pytest.Item) -> tuple[int, int]:
    path = Path(str(item.fspath)).relative_to(Path(__file__).parent).as_posix()
    tier = path.split("/")[0]
    first = LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
    return TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER), first


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets its tier's marker, and in the tiers that wait on whole runs a longer time limit than
    pyproject's `timeout` (unless it names its own): a drivers test may wait for its background driver and then
    run a command in its project, the services start real servers (the DVC remote's round trip runs eight
    genbench processes), and the faults kill and rerun stages after building a project of their own. Then the
    tests are put in TIER_ORDER (a stable sort: within a file, the file's order)."""
    from .drivers.conftest import WAIT

    limits = {"drivers": 2 * WAIT, "services": 900, "faults": 600}  # seconds
    tests = Path(__file__).parent
    for item in items:
        tier = Path(str(item.fspath)).relative_to(tests).parts[0]
        if tier in TIER_MARKERS:
            item.add_marker(TIER_MARKERS[tier])
        if tier in limits and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(limits[tier]))
    items.sort(key=_order)


def pytest_runtest_setup(item: pytest.Item) -> None:
    from .drivers.conftest import restore_threads

    restore_threads()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reports its collection to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the drivers the collected tests need (tests/drivers/conftest.py): here in a plain run; in an xdist
    worker, only name them in the drivers' folder for the controller to start once."""
    from .drivers import conftest as drivers

    names = drivers.wanted(session.items)
    if session.config.option.collectonly or not names:
        return
    folder = drivers.drivers_folder(session.config)
    if hasattr(session.config, "workerinput"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"wanted.{os.getpid()}").write_text(json.dumps(names))
        (folder / f"wanted.{os.getpid()}").replace(folder / "wanted.json")
    else:
        drivers.start(folder, names, one_thread_here=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's controller: every worker learns the one folder the drivers run in."""
    from .drivers import conftest as drivers

    node.workerinput[drivers.FOLDER_KEY] = str(drivers.drivers_folder(node.config))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """pytest-xdist's controller, when a worker has collected: start the drivers it named (once)."""
    from .drivers import conftest as drivers

    folder = drivers.drivers_folder(node.config)
    if (folder / "wanted.json").exists():
        drivers.start(folder, json.loads((folder / "wanted.json").read_text()), one_thread_here=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not hasattr(session.config, "workerinput"):
        from .drivers import conftest as drivers

        drivers.stop(exitstatus)


def pytest_configure(config: pytest.Config) -> None:
    """Point GENBENCH_DATA_DIR at local Fashion-MNIST and FID weights before collection, when the drivers
    start (tests/drivers/conftest.py) and inherit it; fail loudly if the data is missing."""
    data_dir = Path(os.environ.get("GENBENCH_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    for needed in ("fashion-mnist/t10k-images-idx3-ubyte.gz", "fid/inception-2015-12-05-pool3.torchscript.pt"):
        if not (data_dir / needed).exists():
            raise pytest.UsageError(f"{data_dir / needed} missing: set GENBENCH_DATA_DIR to a folder with the "
                                    "offline data")
    os.environ["GENBENCH_DATA_DIR"] = str(data_dir)
    # README command 2 installs the venv without .pyc: compiling all of its files costs more than compiling the
    # modules the tests import. Where PYTHONDONTWRITEBYTECODE is set (CI, this project's machines) every test
    # process would then compile torch, MLflow and Prefect anew, so here they write what they compile (into
    # __pycache__ folders, which git ignores).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One thread per worker, here and in the processes tests start: with more threads than cores, torch's
        # OpenMP workers spin waiting for a descheduled peer and every worker slows down several-fold.
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def tiny_params(**plan: Any) -> str:
    """The repository's params.yaml, with the tiny profile's plan keys replaced by `plan` (families, seeds,
    sweeps) where given; the rest of the file as written."""
    text = (REPO / "params.yaml").read_text()
    start = text.index("\nprofiles:\n  tiny:")
    for key, value in plan.items():
        line = re.compile(rf"^    {key}: .*$", re.MULTILINE)
        found = line.search(text, start)
        assert found, f"params.yaml's profiles.tiny has no `{key}:` line"
        flow = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
        text = text[:found.start()] + f"    {key}: {flow}" + text[found.end():]
    return text


def use_tiny(root: Path, **plan: Any) -> Path:
    """`root` as a tiny project: params.yaml (`tiny_params(**plan)`) and the plan.yaml `genbench use tiny` writes."""
    (root / "params.yaml").write_text(tiny_params(**plan))
    refresh_plan(root)
    return root


def refresh_plan(root: Path, profile: str = "tiny") -> None:
    """plan.yaml for `profile` from root/params.yaml as it is now, as `genbench use` writes it."""
    from genbench.profiles import load_yaml, plan_text

    params = root / "params.yaml"
    (root / "plan.yaml").write_text(plan_text(load_yaml(params.read_text(), params), profile, params))


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project folder with the repo's params.yaml on the tiny profile, as the cwd."""
    use_tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """Folder `name`, made by `build(folder)` and shared by every pytest-xdist worker that comes for it after it
    is made (xdist's recipe: the workers' base temp folders share a parent). A worker that finds another one
    building it builds its own rather than wait idle: on two cores the two builds cost what one build and a wait
    cost, and the next workers find it made. For session fixtures the tests only read or copy."""
    from filelock import FileLock, Timeout

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder, done = base / name, base / f"{name}.done"
    if done.exists():
        return folder
    try:
        with FileLock(str(base / f"{name}.lock"), timeout=0):
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                build(folder)
                done.touch()
            return folder
    except Timeout:  # another worker is building it
        own = tmp_path_factory.mktemp(name)
        build(own)
        return own


@pytest.fixture(scope="session")
def faults_record_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where fault records go (tests/faults/records.py): $GENBENCH_FAULTS_RECORD, else a session tmp folder."""
    from .faults.records import RECORD_ENV

    chosen = os.environ.get(RECORD_ENV)
    return Path(chosen) if chosen else tmp_path_factory.mktemp("faults-records")


@pytest.fixture(scope="session", autouse=True)
def _kfp_names_its_caller_cheaply() -> Any:
    """KFP's task setters (`set_cpu_request`, `set_env_variable`, ...) each call `inspect.stack()` only to name
    themselves in an error message; that reads the source of every frame and scans `sys.modules` for each one. Under
    a pytest-xdist worker (deep stacks, frames of exec'd code, thousands of modules loaded) it costs seconds per
    compile and was most of the Kubeflow tests' time. Here it walks the frames without source: the compiled
    pipeline does not depend on it (tests/stages/test_kubeflow.py compares it as written)."""
    import inspect

    from kfp.dsl import pipeline_task

    class _Inspect:
        def __getattr__(self, name: str) -> Any:
            return getattr(inspect, name)

        @staticmethod
        def stack(context: int = 1) -> list[tuple[Any, str, int, str]]:
            frame, frames = sys._getframe(1), []
            while frame is not None:
                frames.append((frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
                frame = frame.f_back
            return frames

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_task, "inspect", _Inspect())
        yield
