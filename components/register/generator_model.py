"""The MLflow pyfunc model of a registered genbench generator, logged from code (MLflow's models-from-code).

`genbench register` gives this file's path to `mlflow.pyfunc.log_model`: MLflow copies it into the version and runs
it to load the model, so no pickled object is stored. It ends in `set_model`, as MLflow requires, so genbench never
imports it. Everything it does is in `generator_contract`, of the genbench version the requirements pin.
"""

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext

from genbench.components.register.generator_contract import Generator, load_generator


class GenbenchGenerator(PythonModel):
    """n images of a seed from a registered version, drawn by the loop `genbench sample` runs."""

    generator: Generator

    def load_context(self, context: PythonModelContext) -> None:
        self.generator = load_generator(context.artifacts, context.model_config)

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> np.ndarray:
        try:
            return self.generator.predict(model_input, params or {})
        except ValueError as exc:  # a bad request: the scoring server answers 400 with this message, not 500
            raise MlflowException.invalid_parameter_value(str(exc)) from None


mlflow.models.set_model(GenbenchGenerator())
