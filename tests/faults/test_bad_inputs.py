"""Bad and hostile input through the CLI: a clear `error:` naming the field or file, exit code 2, no traceback,
and every file of the project exactly as it was (bytes and mtimes), nothing created.

The params cases are tests/unit/test_config.py's BAD table, here run through `genbench sample vae` in a project
whose outputs all exist; the others corrupt, replace or point at one input of one command.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from genbench.cli import app
from genbench.components.common.artifacts import WEIGHTS
from genbench.components.evaluate.inception import FID_WEIGHTS_ENV
from genbench.components.train.train import CHECKPOINT
from genbench.layout import Layout
from genbench.profiles import plan_text

from ..conftest import REPO
from ..stages.conftest import swap_in_pixel_network
from ..unit.test_config import BAD, _params_text
from .conftest import project_copy
from .records import FaultRecord

HERE = Layout()
RUN, METRICS = HERE.run("vae", 0), HERE.metrics("vae", 0)


@dataclass
class Case:
    args: list[str]
    names: list[str]  # each must appear in the error
    setup: Callable[[Path], None] = lambda root: None
    env: dict[str, str | None] = field(default_factory=dict)
    network: bool = False  # the FID network itself is the input; other cases get the pixel stand-in


def _params(edit: object) -> Callable[[Path], None]:
    """The repository's params.yaml with one of test_config.py's edits (of the text, or of the parsed params), made
    active on the quick profile as test_config.py checks it: plan.yaml as `genbench use quick` writes it from the
    edited params where they still parse, else from the repository's."""
    def setup(root: Path) -> None:
        text = _params_text(edit)
        (root / "params.yaml").write_text(text)
        try:
            raw = yaml.load(text, Loader=yaml.CSafeLoader)
        except yaml.YAMLError:
            raw = None
        if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), dict):
            raw = yaml.load((REPO / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
        (root / "plan.yaml").write_text(plan_text(raw, "quick", root / "params.yaml"))
    return setup


def _tiny_params(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the project's own (tiny, vae-only) params."""
    def setup(root: Path) -> None:
        raw = yaml.load((root / "params.yaml").read_text(), Loader=yaml.CSafeLoader)
        edit(raw)
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return setup


def _npy(name: str, array: np.ndarray, **save: bool) -> Callable[[Path], None]:
    return lambda root: np.save(root / name, array, **save)


def _truncate(relative: Path | str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        data = (root / relative).read_bytes()
        (root / relative).write_bytes(data[: len(data) // 2])
    return setup


def _flip_byte(relative: Path | str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        data = bytearray((root / relative).read_bytes())
        data[-1] ^= 0xFF
        (root / relative).write_bytes(bytes(data))
    return setup


def _edit_json(relative: Path | str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        data = json.loads((root / relative).read_text())
        edit(data)
        (root / relative).write_text(json.dumps(data))
    return setup


def _remove(relative: Path | str) -> Callable[[Path], None]:
    return lambda root: (root / relative).unlink()


def _pngs(folder: str, *images: tuple[str, np.ndarray | bytes]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        from PIL import Image

        (root / folder).mkdir()
        for name, image in images:
            if isinstance(image, bytes):
                (root / folder / name).write_bytes(image)
            else:
                Image.fromarray(image).save(root / folder / name)
    return setup


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for each in setups:
            each(root)
    return setup


class Pickled:
    """A checkpoint entry whose unpickling would create `marker`: what a hostile checkpoint.pt carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _pickled_checkpoint(marker: Path) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        torch.save({"config_sha256": "0" * 64, "step": 1, "payload": Pickled(marker)}, root / RUN / CHECKPOINT)
    return setup


GRAY = np.zeros((28, 28), np.uint8)
IMAGES = np.zeros((12, 28, 28, 1), np.uint8)
REAL = str(HERE.reference)
# a folder of 34 images: the tiny sizes cut down to fit it (train_size ≥ the batch, holdout_size = sample.n)
FOLDER_DATA = {"dataset": "folder", "path": "imgs", "image_size": 28, "channels": 1,
               "profiles": {"tiny": {"train_size": 16, "validation_size": 2, "reference_size": 4, "holdout_size": 12}}}
FOLDER = [(f"{i:02d}.png", GRAY) for i in range(33)]
CASES: dict[str, Case] = {
    **{f"params: {case}": Case(["sample", "vae"], [f"{name}:"], _params(edit))
       for case, edit, name, _ in BAD},
    # data files
    "train.npy missing": Case(["train", "vae", "--out", "runs/new"], ["train.npy"], _remove(HERE.data / "train.npy")),
    "train.npy truncated": Case(["train", "vae", "--out", "runs/new"], ["train.npy"],
                                _truncate(HERE.data / "train.npy")),
    "train.npy edited after prepare (md5 differs from the manifest)": Case(
        ["train", "vae", "--out", "runs/new"], ["train.npy"], _flip_byte(HERE.data / "train.npy")),
    "reference.npy edited after prepare": Case(["evaluate", "vae"], ["reference.npy"], _flip_byte(HERE.reference)),
    "manifest missing at register": Case(["register", "vae"], ["manifest.json"], _remove(HERE.manifest)),
    "metrics without a FID at register": Case(["register", "vae"], [str(METRICS), "fid"],
                                              _edit_json(METRICS, lambda m: m.pop("fid"))),
    "metrics of other samples at register": Case(["register", "vae"], [str(METRICS), "samples_md5"],
                                                 _edit_json(METRICS, lambda m: m.update(samples_md5="0"))),
    "samples edited after sampling": Case(["evaluate", "vae"], [str(HERE.samples("vae", 0))],
                                          _flip_byte(HERE.samples("vae", 0))),
    "sample record missing at register": Case(["register", "vae"], [str(HERE.sample_record("vae", 0))],
                                              _remove(HERE.sample_record("vae", 0))),
    # image folders (prepare)
    "folder dataset with a text file": Case(["prepare"], ["notes.txt"], _both(
        _tiny_params(lambda r: r["data"].update(FOLDER_DATA)), _pngs("imgs", *FOLDER, ("notes.txt", b"not an image")))),
    "folder dataset with a corrupt PNG": Case(["prepare"], ["bad.png"], _both(
        _tiny_params(lambda r: r["data"].update(FOLDER_DATA)), _pngs("imgs", *FOLDER, ("bad.png", b"\x89PNG no")))),
    # .npy samples (evaluate; dtypes and shapes: genbench metrics below)
    "samples .npy without its record": Case(["evaluate", "vae", "--samples", "x.npy"], ["x.json"],
                                            _npy("x.npy", IMAGES)),
    "samples .npy of pickled objects": Case(["evaluate", "vae", "--samples", "x.npy"], ["x.npy"],
                                            _npy("x.npy", np.array([{}] * 12, dtype=object), allow_pickle=True)),
    "samples .npy truncated": Case(["evaluate", "vae", "--samples", "x.npy"], ["x.npy"],
                                   _both(_npy("x.npy", IMAGES), _truncate("x.npy"))),
    "samples .npy missing": Case(["evaluate", "vae", "--samples", "x.npy"], ["x.npy"]),
    # genbench metrics
    "metrics: wrong dtype": Case(["metrics", REAL, "x.npy"], ["x.npy", "uint8"], _npy("x.npy", IMAGES.astype(float))),
    "metrics: wrong shape": Case(["metrics", REAL, "x.npy"], ["x.npy", "4-D"], _npy("x.npy", IMAGES[..., 0])),
    "metrics: values out of range": Case(["metrics", REAL, "x.npy"], ["x.npy", "[0, 255]"],
                                         _npy("x.npy", np.full((12, 28, 28, 1), 300, np.int32))),
    "metrics: 4 channels": Case(["metrics", REAL, "x.npy"], ["x.npy", "channels"],
                                _npy("x.npy", np.zeros((12, 28, 28, 4), np.uint8))),
    "metrics: empty set": Case(["metrics", REAL, "x.npy"], ["x.npy", "at least 2"], _npy("x.npy", IMAGES[:0])),
    "metrics: empty folder": Case(["metrics", REAL, "imgs"], ["imgs", "no "], _pngs("imgs")),
    "metrics: folder of mixed sizes": Case(["metrics", REAL, "imgs"], ["b.png", "share one size"],
                                           _pngs("imgs", ("a.png", GRAY), ("b.png", np.zeros((30, 30), np.uint8)))),
    "metrics: RGBA image": Case(["metrics", REAL, "imgs"], ["a.png", "RGBA"],
                                _pngs("imgs", ("a.png", np.zeros((28, 28, 4), np.uint8)))),
    "metrics: sets of different image sizes": Case(["metrics", REAL, "x.npy"], ["x.npy", "differs"],
                                                   _npy("x.npy", np.zeros((12, 32, 32, 1), np.uint8))),
    "metrics: a text file": Case(["metrics", REAL, "x.txt"], ["x.txt"],
                                 lambda root: (root / "x.txt").write_text("images")),
    "metrics: corrupt PNG": Case(["metrics", REAL, "imgs"], ["a.png"], _pngs("imgs", ("a.png", b"\x89PNG no"))),
    # checkpoints and run folders
    "model.safetensors truncated": Case(["sample", "vae"], [WEIGHTS], _truncate(RUN / WEIGHTS)),
    "checkpoint.pt truncated": Case(["train", "vae"], [CHECKPOINT], _truncate(RUN / CHECKPOINT)),
    "checkpoint.pt with a pickled payload": Case(["train", "vae"], [CHECKPOINT],
                                                 _pickled_checkpoint(Path("payload-ran"))),
    "run folder without config.json": Case(["sample", "vae"], ["config.json"], _remove(RUN / "config.json")),
    "ldm on a vae run that does not exist": Case(["train", "ldm"], ["vae_run"], _tiny_params(
        lambda r: r["models"]["ldm"].update(arch={"vae_run": "runs/nope"}))),
    # environment
    f"{FID_WEIGHTS_ENV} names a missing file": Case(["evaluate", "vae"], [FID_WEIGHTS_ENV],
                                                    env={FID_WEIGHTS_ENV: "/nonexistent/fid.pt"}, network=True),
    "MLFLOW_TRACKING_URI of an unknown scheme": Case(["sample", "vae", "--model", "models:/genbench-vae@champion"],
                                                     ["MLFLOW_TRACKING_URI"], env={"MLFLOW_TRACKING_URI": "foo://bar"}),
    "KFP_HOST unset for kfp submit": Case(["kfp", "submit", "--mlflow-uri", "http://127.0.0.1:5000"], ["KFP_HOST"],
                                          env={"KFP_HOST": None}),
    "PREFECT_API_URL unset for deploy": Case(["deploy"], ["PREFECT_API_URL"], env={"PREFECT_API_URL": None}),
    # registry URIs
    "a model that is not registered": Case(["sample", "vae", "--model", "models:/genbench-nope@champion"],
                                           ["models:/genbench-nope@champion"]),
    "a version that does not exist": Case(["sample", "vae", "--model", "models:/genbench-vae/7"],
                                          ["models:/genbench-vae/7"]),
    "a runs:/ URI": Case(["sample", "vae", "--model", "runs:/0123/model"], ["runs:/0123/model", "models:/"]),
    "promote with nothing registered": Case(["promote", "vae"], ["genbench-vae"]),
}


def snapshot(root: Path) -> dict[str, tuple[int, str] | None]:
    """Every path under root: a file's mtime and sha256, a folder as None."""
    return {str(path.relative_to(root)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            if path.is_file() else None for path in root.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_names_the_culprit_exits_2_and_touches_nothing(
    name: str, faults_project: Path, fault: FaultRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    if not case.network:  # a case the stage does not catch goes on to score: with the stand-in, in no minute
        swap_in_pixel_network(monkeypatch.setattr)
    fault.fault, fault.kind = f"bad input: {name}", "bad input"
    project = project_copy(faults_project, tmp_path / "project")
    case.setup(project)
    monkeypatch.chdir(project)
    for key, value in case.env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    before = snapshot(project)
    result = CliRunner().invoke(app, case.args)
    lines = result.output.splitlines()
    error = next((line for line in lines if line.startswith("error:")), "")
    naming = next((line.strip() for line in lines if case.names[0] in line), error)  # params: the field's own line
    naming = naming.replace(f"{project.resolve()}/", "")  # the record reads the same from run to run
    fault.detail = f"`genbench {' '.join(case.args)}`: {naming or 'no error line'}"[:300]
    fault.made_by = "the input planted in a copy of the project or its environment, then the command in detail"
    fault.verified = "exit 2, an error line naming the culprit, no traceback; every file unchanged (mtime, sha256)"
    uncaught = result.exception if isinstance(result.exception, Exception) else None
    assert "Traceback" not in result.output and uncaught is None, (
        f"uncaught {type(uncaught).__name__}: {str(uncaught).strip().splitlines()[0][:200]}")
    assert result.exit_code == 2, result.output
    assert error and all(culprit in result.output for culprit in case.names), result.output
    assert snapshot(project) == before, "the command changed or created files"


def test_a_pickled_checkpoint_is_refused_and_its_payload_never_runs(
    faults_project: Path, fault: FaultRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`genbench train` resumes from checkpoint.pt: one whose pickle would create a file if unpickled must stop the
    command before that happens, leaving the run's weights as they were."""
    fault.fault, fault.kind = "checkpoint.pt whose pickle runs code when loaded", "hostile file"
    project = project_copy(faults_project, tmp_path / "project")
    marker = tmp_path / "payload-ran"
    _pickled_checkpoint(marker)(project)
    weights = (project / RUN / WEIGHTS).read_bytes()
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["train", "vae"])
    error = next((line for line in result.output.splitlines() if line.startswith("error:")), "")
    if not error and isinstance(result.exception, Exception):
        error = f"{type(result.exception).__name__}: {str(result.exception).splitlines()[0]}"
    ran = "RAN" if marker.exists() else "never ran"
    fault.detail = f"`genbench train vae` exit {result.exit_code}: {error[:200]}; the payload {ran}"
    fault.made_by = "a checkpoint.pt whose pickle creates a file when unpickled, planted in the run; `genbench train`"
    fault.verified = "non-zero exit with one error line; the payload's file never appeared; the weights unchanged"
    assert result.exit_code != 0 and not marker.exists()
    assert (project / RUN / WEIGHTS).read_bytes() == weights
