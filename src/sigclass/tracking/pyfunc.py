"""The MLflow pyfunc face of a sigclass model, so any MLflow tool can score it.

The logged MLflow model holds the sigclass model folder (safetensors + JSON) as an artifact and
is written in MLflow's "models from code" form: its code file (:mod:`.pyfunc_code`) only builds
:class:`SigclassPyfunc`, which loads the folder with sigclass's own checksum-verified loader.
Nothing is pickled.

Input (a pandas DataFrame, e.g. from ``mlflow models predict -i batch.csv``):

- images: a ``path`` column of image files (or an ``image`` column of base64-encoded bytes; a
  single unnamed column, as ``mlflow.pyfunc.spark_udf`` passes it, is read as paths);
- signals, in the layout of :mod:`sigclass.data.signal_layout`: one row per case, the numeric
  columns holding the values channel by channel (``n_channels * n_timepoints`` columns, channel 0
  first); or one column per channel named as the model's channels, one row per time point (a
  ``case_id`` column for several cases).

Output: a DataFrame with ``label`` and one ``p_<class>`` probability column per class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from .. import __version__
from .._utils import environment_info
from ..modalities import modality_of
from ..predictor import Predictor

ARTIFACT_KEY = "sigclass_model"
CODE_FILE = Path(__file__).with_name("pyfunc_code.py")


class SigclassPyfunc(PythonModel):
    """Scores DataFrames with a sigclass model loaded from the MLflow model's artifacts.

    The input is typed as a DataFrame, whose columns depend on the model (image paths or signal
    values), so MLflow leaves validation to sigclass's preprocessing, which names bad inputs.
    """

    def load_context(self, context) -> None:
        self.predictor = Predictor.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        inputs = frame_to_inputs(frame, self.predictor)
        proba = self.predictor.predict_proba(inputs)
        classes = self.predictor.classes
        result = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes], index=frame.index)
        result.insert(0, "label", np.asarray(classes, dtype=object)[proba.argmax(axis=1)])
        return result


def frame_to_inputs(frame, predictor) -> Any:
    """The rows of ``frame`` as inputs of ``predictor`` (see the module docstring)."""
    return modality_of(predictor).decode_frame(frame, predictor)


def save_pyfunc(model_dir: str | Path, path: str | Path) -> Path:
    """Write the MLflow pyfunc model of the sigclass model folder ``model_dir`` to ``path``."""
    import mlflow.pyfunc

    versions = environment_info("cpu")["versions"]
    requirements = [f"{name}=={versions[name]}" for name in
                    ("torch", "torchvision", "timm", "scikit-learn", "numpy") if name in versions]
    requirements = [f"sigclass=={__version__}", "safetensors", "skops", "pandas", *requirements]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.pyfunc.save_model(
        path=str(path), python_model=str(CODE_FILE), artifacts={ARTIFACT_KEY: str(Path(model_dir))},
        pip_requirements=requirements, metadata={"sigclass_format": "safetensors+json"},
    )
    return Path(path)
