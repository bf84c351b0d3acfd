"""DVC's `prepare` stage as plain functions, so that the Prefect flow prepares data exactly as `dvc repro` does.

In a DVC project the flow's data step runs `dvc repro prepare` through DVC's Python API instead of calling
`prepare` directly: the prepared data is then content-addressed in DVC's cache, recorded in dvc.lock under the
same stage as `dvc repro` records it (and skipped when its params and code did not change), and pushed to the
default remote. `register` tags every MLflow run and model version with the dvc.lock md5 of that data
(`data_lock_hash`), whichever driver ran it.

With no default remote (the repository configures none) nothing is pushed and nothing is said. A failed push
warns in one line (`DataPushWarning`, naming the remote, the error and the command to push later) and does not fail
the run: the data and its dvc.lock entry are already in the local cache, while failing would stop every run on a
machine without the remote's keys.

DVC is imported only when a function needs it; nothing here imports Prefect.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import yaml

from genbench.components.register.dvc_lock import PREPARE_STAGE, PREPARED, data_lock_hash
from genbench.config import DataConfig, load_config


class DataPushWarning(UserWarning):
    """The prepared data could not be pushed to the DVC remote; it is still in the local cache."""


def in_dvc_project(root: Path) -> bool:
    """True where DVC can reproduce the `prepare` stage: a `.dvc` folder, a dvc.yaml with a `prepare` stage,
    and a git work tree (or `core.no_scm`), since DVC refuses to run without one. A copy of the code without
    git (the drivers tier's flow project) is then prepared directly, as before."""
    root = Path(root)
    dvc_yaml = root / "dvc.yaml"
    if not (root / ".dvc").is_dir() or not dvc_yaml.is_file():
        return False
    stages = (yaml.load(dvc_yaml.read_text(), Loader=yaml.CSafeLoader) or {}).get("stages") or {}
    if PREPARE_STAGE not in stages:
        return False
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import SCMError

    try:
        with Repo(str(root)) as repo:
            return Path(repo.root_dir).resolve() == root.resolve() and repo.scm is not None
    except (NotDvcRepoError, SCMError):
        return False


def reproduce_prepare(root: Path, *, data: DataConfig | None = None, seed: int | None = None,
                      push: bool = True) -> str:
    """`dvc repro prepare` in `root`, then `dvc push prepare` when a default remote is configured; return the md5
    that dvc.lock records for data/prepared.

    DVC's stage reads `root/params.yaml` as written; `data` and `seed`, when given (the flow passes its own
    resolved config), must equal what it resolves to, so that a flow run with another `--profile` or params file
    fails before anything is written instead of training on data it did not ask for. A push that fails warns
    with `DataPushWarning` and returns normally (module docstring)."""
    root = Path(root)
    _check_same_data(root, data, seed)
    from dvc.repo import Repo

    target = f"{root.resolve() / 'dvc.yaml'}:{PREPARE_STAGE}"  # DVC resolves a bare stage name from the cwd
    with Repo(str(root)) as repo:
        repo.scm_context.quiet = True  # no "git add dvc.lock" hint: the flow is not the user's shell
        repo.reproduce(target)
        remote = repo.config["core"].get("remote")
        if push and remote:
            try:
                repo.push(targets=[target], remote=remote)
            except Exception as exc:  # noqa: BLE001 - reported, not hidden: see the module docstring
                url = repo.config["remote"].get(remote, {}).get("url", "?")
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                warnings.warn(f"{PREPARED} kept in {root / '.dvc' / 'cache'} (dvc.lock records it): the push to remote "
                              f"{remote!r} ({url}) failed ({type(exc).__name__}: {reason}); run `dvc push` when it "
                              "answers", DataPushWarning, stacklevel=2)
    md5 = data_lock_hash(root)
    if md5 is None:
        raise RuntimeError(f"dvc repro {PREPARE_STAGE} finished but {root / 'dvc.lock'} records no md5 for {PREPARED}")
    return md5


def _check_same_data(root: Path, data: DataConfig | None, seed: int | None) -> None:
    if data is None and seed is None:
        return
    dvc_config = load_config(root / "params.yaml")
    wanted = {"data": data, "seed": seed}
    dvc_reads = {"data": dvc_config.data, "seed": dvc_config.seed}
    differ = [key for key, value in wanted.items() if value is not None and value != dvc_reads[key]]
    if differ:
        raise ValueError(
            f"DVC's {PREPARE_STAGE} stage reads {root / 'params.yaml'} (profile {dvc_config.profile}), whose "
            f"{' and '.join(differ)} differ from this run's; run without --profile/--params, or switch params.yaml "
            "with `genbench use PROFILE`. Nothing was written.")
