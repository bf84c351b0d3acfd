"""The train stage: `models.<entry>` and the prepared data → runs/<entry>/seed-<s>/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genbench.components.common.stage import SHARED_CODE, Call, Place, Stage

RUN_FILES = ("model.safetensors", "config.json", "summary.json", "history.csv", "checkpoint.pt", "snapshots")


def _call(run: Call) -> Any:
    from genbench.components.train.train import train

    # `distributed` (how long torchrun's processes wait) is not among the params: it changes nothing that trains
    return train(run.entry, run.config.entry(run.entry), run.seed, run.data, run.out, run.config.distributed)


def _says(summary: Any, run: Call) -> str:
    where = summary.device if summary.processes == 1 else f"{summary.processes} × {summary.device}"
    return (f"trained {run.entry}: {summary.steps} steps in {summary.seconds:.0f} s on {where} "
            f"({summary.images_per_second:.0f} images/s)")


STAGE = Stage(
    name="train",
    doc="Train one entry under one seed; resumes from its checkpoint.pt when the config is unchanged. SIGTERM or "
        "Ctrl-C checkpoint the step in flight and exit 128 + the signal's number. Under `torchrun --nproc_per_node "
        "N` the N processes train it with DistributedDataParallel (docs/operations.md: Scale out).",
    over="entries",
    params=("profile", "seeds", "models.{entry}"),
    places=(
        Place("data", lambda here, at: here.data, "in", "Prepared data folder.",
              files=lambda path: (path / "train.npy", path / "train_labels.npy")),
        Place("out", lambda here, at: here.run(at.entry, at.seed), "out", "Run folder.",
              files=lambda path: tuple(Path(path) / name for name in RUN_FILES), persist=("checkpoint.pt",)),
    ),
    code=("components/train", *SHARED_CODE),
    call=_call,
    says=_says,
)
