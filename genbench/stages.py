"""Every pipeline stage, by name, in the order the drivers run them. Each is declared once, beside its component
(components/<stage>/stage.py); the CLI, the Prefect flow, the Kubeflow pipeline and dvc.yaml are built from here."""

from __future__ import annotations

from .components.common.stage import At, Stage
from .components.evaluate.stage import CURVE_STAGE as FID_CURVE
from .components.evaluate.stage import REAL_STAGE as EVALUATE_REAL
from .components.evaluate.stage import STAGE as EVALUATE
from .components.prepare.stage import STAGE as PREPARE
from .components.register.stage import STAGE as REGISTER
from .components.report.stage import STAGE as REPORT
from .components.sample.stage import STAGE as SAMPLE
from .components.sweep.stage import STAGE as SWEEP
from .components.train.stage import STAGE as TRAIN

__all__ = ["STAGES", "PER_ENTRY", "At", "Stage"]

STAGES: dict[str, Stage] = {stage.name: stage for stage in
                            (PREPARE, EVALUATE_REAL, TRAIN, FID_CURVE, SAMPLE, EVALUATE, REGISTER, SWEEP, REPORT)}
PER_ENTRY = tuple(name for name, stage in STAGES.items() if stage.over == "entries")  # one loop body per (entry, seed)
