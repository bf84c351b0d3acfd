"""What a registered generator promises plain MLflow (`mlflow.pyfunc.load_model`, `mlflow models serve`).

Input: one DataFrame row per request: `n` images of `seed`, and, for a class-conditional model, optionally `labels`
(one class per image; by default image i has class i % num_classes, as `genbench sample` draws them). The sampler
options are MLflow inference params: one per field of the entry's sampling settings except `ema`, each defaulting
to the value the version's samples were drawn and scored with (the FID on the version is theirs).
Output: uint8 images N×H×W×C, a tensor in the signature. MLflow's REST answer carries them as nested integer
lists under "predictions"; `np.asarray(..., dtype=np.uint8)` gives the same bytes back.
Load-time settings (`model_config`; `mlflow.pyfunc.load_model(uri, model_config={...})` overrides them): `device`
(auto | cpu | cuda), `batch_size` (the sample stage's: the same images come back bit for bit only at the same
batch split) and `ema` (which weights to sample).

`predict` runs `sample.draw_samples`, the loop `genbench sample` runs, on the weights `artifacts.load_trained`
loads, so `genbench sample --model` and the pyfunc model give the same bytes for the same n and seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError

from genbench.components.common.artifacts import CONFIG, WEIGHTS, ImageShape, RunRecord, load_trained
from genbench.components.common.devices import pick_device
from genbench.components.common.drawing import draw_samples
from genbench.components.common.records import SampleRecord
from genbench.models import family as family_spec
from genbench.models.base import GenerativeModel
from genbench.models.config import SamplingConfig

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature

CODE_PATH = Path(__file__).with_name("generator_model.py")  # the models-from-code file MLflow copies and runs
WEIGHTS_KEY, CONFIG_KEY = "weights", "config"  # the version's artifacts: a run folder's two files
INPUT_EXAMPLE = {"n": [1], "seed": [0]}  # one image: MLflow predicts it once while logging, to check serving
PINNED = ("genbench", "torch", "safetensors", "numpy")  # what predict imports, at the versions that registered it
PARAM_TYPES = {str: "string", bool: "boolean", int: "long", float: "double"}  # Python value → MLflow param type


def request_options(sampling: SamplingConfig) -> dict[str, Any]:
    """The options a request may change, with their registered values: every sampling field but `ema`, which
    chooses the weights when the version loads."""
    return {key: value for key, value in sampling.model_dump(mode="json").items() if key != "ema"}


def registered_sampling(record: RunRecord, drawn: SampleRecord) -> SamplingConfig:
    """The sampling settings `drawn` records, as the entry's family validates them."""
    settings = {key: value for key, value in drawn.sampling.items() if key != "family"}
    return family_spec(record.family).sampling.model_validate(settings)


def signature(image: ImageShape, num_classes: int, options: dict[str, Any]) -> ModelSignature:
    """Columns n, seed (and labels for a conditional model) in, uint8 N×H×W×C out, `options` as params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec
    from mlflow.types.schema import Array

    columns = [ColSpec(DataType.long, "n"), ColSpec(DataType.long, "seed")]
    if num_classes:
        columns.append(ColSpec(Array(DataType.long), "labels", required=False))
    params = ParamSchema([ParamSpec(key, PARAM_TYPES[type(value)], value) for key, value in options.items()])
    images = TensorSpec(np.dtype(np.uint8), (-1, image.size, image.size, image.channels), "images")
    return ModelSignature(Schema(columns), Schema([images]), params if options else None)


def requirements() -> list[str]:
    """pip requirements pinned to this environment: genbench's version first, then what predict imports."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in PINNED]


def served_model(run_dir: Path, drawn: SampleRecord) -> dict[str, Any]:
    """`mlflow.pyfunc.log_model`'s arguments for the run in `run_dir`, served with the settings of its samples
    `drawn`: this module's model from code, the run's weights and config.json as artifacts, the signature, an
    input example, pinned requirements and the load-time config. The model is loaded here once, so a run that
    cannot be served fails before anything is logged. That `drawn` came from these weights is the caller's check
    (`register.check_chain`)."""
    import pandas as pd

    run_dir = Path(run_dir)
    model, record = load_trained(run_dir)
    sampling = registered_sampling(record, drawn)
    return {
        "python_model": str(CODE_PATH),
        # resolved: MLflow refuses a file that resolves outside its folder, as a linked-in run folder does (KFP)
        "artifacts": {WEIGHTS_KEY: str((run_dir / WEIGHTS).resolve()), CONFIG_KEY: str((run_dir / CONFIG).resolve())},
        "signature": signature(record.image, model.num_classes, request_options(sampling)),
        "input_example": pd.DataFrame(INPUT_EXAMPLE),
        "pip_requirements": requirements(),
        "model_config": {"device": "auto", "batch_size": drawn.batch_size, "ema": sampling.ema},
    }


class Generator:
    """A loaded version: its model and the load-time settings; `predict` answers one request."""

    def __init__(self, model: GenerativeModel, record: RunRecord, batch_size: int, ema: bool) -> None:
        self.model, self.batch_size, self.ema = model, batch_size, ema
        self.spec = family_spec(record.family)
        self.arch = self.spec.arch.model_validate(record.arch)

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any]) -> np.ndarray:
        """`n` images of `seed` as uint8 N×H×W×C; ValueError naming the field for a bad request."""
        if len(model_input) != 1:
            raise ValueError(f"input: {len(model_input)} rows; send one row (n, seed) per request")
        row = model_input.iloc[0]
        n, seed = int(row["n"]), int(row["seed"])
        if n < 1:
            raise ValueError(f"n: the number of images must be at least 1 (got {n})")
        if seed < 0:
            raise ValueError(f"seed: must be 0 or more (got {seed})")
        labels = self._labels(row.get("labels"), n)
        try:
            sampling = self.spec.sampling.model_validate({**params, "ema": self.ema})
            sampling.check(self.arch)
        except ValidationError as exc:
            problems = "; ".join(f"params.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                                 for e in exc.errors())
            raise ValueError(problems) from None
        except ValueError as exc:
            raise ValueError(f"params: {exc}") from None
        return draw_samples(self.model, n, seed, self.batch_size, sampling, labels)

    def _labels(self, value: Any, n: int) -> torch.Tensor | None:
        """The request's classes, checked; None (image i has class i % num_classes) when it sends none."""
        if value is None or (np.isscalar(value) and np.isnan(value)):
            return None
        labels = [int(label) for label in value]
        classes = self.model.num_classes
        if len(labels) != n:
            raise ValueError(f"labels: {len(labels)} classes for n={n} images; send one per image or none")
        if any(not 0 <= label < classes for label in labels):
            raise ValueError(f"labels: classes must be in [0, {classes}) (got {labels})")
        return torch.tensor(labels, dtype=torch.long)


def load_generator(artifacts: dict[str, str], config: dict[str, Any]) -> Generator:
    """The version's model from its artifacts (a run folder: MLflow keeps both files in one folder) on
    `config["device"]`."""
    model, record = load_trained(Path(artifacts[WEIGHTS_KEY]).parent, pick_device(config["device"]), config["ema"],
                                 verify=False)
    return Generator(model, record, int(config["batch_size"]), bool(config["ema"]))
