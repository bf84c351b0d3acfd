"""`genbench sample`, `evaluate` and `report` killed with SIGKILL while they write: no output looks complete
afterwards, and a rerun completes.

Each child kills itself just before publishing a file (tests/faults/launcher.py `die`): the moment between two
files of one output, where a crash is hardest on a reader. Complete means what the next stage would accept: a
samples `.npy` that loads with the full shape beside a record that validates and describes it; a metrics file
that parses with its FID; a results folder with its index page.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genbench.components.common.records import read_sample_record
from genbench.layout import Layout

from .conftest import project_copy
from .launcher import Launcher
from .records import FaultRecord

HERE = Layout()  # relative paths, as the commands see them from the project folder
SAMPLES, RECORD, METRICS = (str(path) for path in (HERE.samples("vae", 0), HERE.sample_record("vae", 0),
                                                   HERE.metrics("vae", 0)))


def samples_complete(root: Path) -> bool:
    try:
        images, record = np.load(root / SAMPLES, allow_pickle=False), read_sample_record(root / RECORD)
    except (OSError, ValueError):
        return False
    return list(images.shape) == record.shape and record.shape[0] == record.n


def metrics_complete(root: Path) -> bool:
    try:
        return "fid" in json.loads((root / METRICS).read_text())
    except (OSError, ValueError):
        return False


def results_complete(root: Path) -> bool:
    return all((root / "results" / name).is_file() for name in ("index.html", "summary.json", "results.csv"))


# (command, the call before which the child dies, what the output should look like, the check of completeness)
CASES = {
    "sample, before the .npy": (["sample", "vae"], {"call": "os.replace", "match": SAMPLES, "after": 0},
                                samples_complete),
    "sample, between the .npy and its record": (["sample", "vae"], {"call": "os.replace", "match": "samples/vae/",
                                                                    "after": 1}, samples_complete),
    "evaluate, before the metrics file": (["evaluate", "vae"], {"call": "os.replace", "match": METRICS, "after": 0},
                                          metrics_complete),
    "report, while assembling results/": (["report"], {"call": "os.replace", "match": ".results.", "after": 0},
                                          results_complete),
    "report, before swapping results/ in": (["report"], {"call": "os.replace", "match": " results", "after": 0},
                                            results_complete),
}
OUTPUTS = {"sample": ["samples"], "evaluate": ["metrics/vae"], "report": ["results"]}


@pytest.mark.parametrize("case", list(CASES))
def test_a_stage_killed_while_writing_leaves_nothing_that_looks_complete(
    case: str, launcher: Launcher, faults_project: Path, fault: FaultRecord, tmp_path: Path
) -> None:
    args, die, complete = CASES[case]
    fault.fault, fault.kind = f"SIGKILL of `genbench {args[0]}` {case.split(', ', 1)[1]}", "crash"
    project = project_copy(faults_project, tmp_path / "project")
    for output in OUTPUTS[args[0]]:
        shutil.rmtree(project / output, ignore_errors=True)
    before = set(project.rglob("*"))
    code, output = launcher.run(project, args, tmp_path / "killed.log", die=die, stand_in_network=True)
    assert code == -signal.SIGKILL, output
    left = sorted(str(path.relative_to(project)) for path in set(project.rglob("*")) - before if path.is_file())
    assert not complete(project), f"looks complete after the kill: {left}"
    code, output = launcher.run(project, args, tmp_path / "rerun.log", stand_in_network=True)
    assert code == 0 and complete(project), output
    fault.lost = "the killed command's work (the rerun redid it)"
    fault.made_by = (f"SIGKILL of the `genbench {args[0]}` process from inside it, at its {die['call']} of a path "
                     f"holding {die['match'].strip()!r}")
    fault.verified = "no output looked complete after the kill; the same command rerun completed them"
    shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    fault.detail = f"left behind: {shown or 'nothing'}; the rerun completed"


def _sampling(project: Path, **settings: Any) -> None:
    params = project / "params.yaml"
    text = params.read_text()
    assert "\n  vae: {}" in text, "params.yaml's sampling.vae line changed"
    params.write_text(text.replace("\n  vae: {}", f"\n  vae: {json.dumps(settings)}", 1))


def test_a_resample_killed_between_its_files_never_pairs_new_images_with_the_old_record(
    launcher: Launcher, faults_project: Path, fault: FaultRecord, tmp_path: Path
) -> None:
    """Samples exist (EMA weights); resampling with the raw weights dies between the .npy and its record. The
    files on disk must then be one run's: both old, or both new, or visibly incomplete."""
    fault.fault, fault.kind = "SIGKILL of `genbench sample` between its files, over an earlier output", "crash"
    project = project_copy(faults_project, tmp_path / "project")
    before = (project / SAMPLES).read_bytes()
    _sampling(project, ema=False)
    code, output = launcher.run(project, ["sample", "vae"], tmp_path / "killed.log",
                                die={"call": "os.replace", "match": "samples/vae/", "after": 1})
    assert code == -signal.SIGKILL, output
    try:
        record = read_sample_record(project / RECORD)
    except (OSError, ValueError):
        record = None
    new_images = (project / SAMPLES).read_bytes() != before
    fault.detail = (f"resampling with the raw weights over the EMA samples, killed after the .npy: images "
                    f"{'new' if new_images else 'old'}, record {record.weights if record else 'absent'}")
    fault.lost = "the earlier samples (the rerun draws them again)" if new_images else "nothing"
    fault.made_by = "SIGKILL of the `genbench sample` process from inside it, after it replaced the .npy"
    fault.verified = "the images and the sample record on disk never pair new images with the old (EMA) record"
    assert not (new_images and record is not None and record.weights == "ema"), "new images beside the old record"
