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

A detection model (:class:`~sigclass.detector.DetectionPredictor`) takes the ``path`` column of
image files (or a single unnamed column of paths) and returns one row per box, with the columns
of ``sigclass predict`` on a detector: ``path, xmin, ymin, xmax, ymax, label, score``; an image
with no box has one row whose box fields are null. The params ``score_threshold`` (0.05 by
default) and ``max_detections`` (100) are those of ``sigclass predict``. Base64 ``image``
input is refused: its rows could not be named in the output.
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
from ..artifacts import find_model_dir, read_model_json
from ..detector import DetectionPredictor
from ..exceptions import DataError, Problem
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
        folder = find_model_dir(context.artifacts[ARTIFACT_KEY])
        document = read_model_json(folder)
        if document.get("task") == "detection":
            self.predictor = DetectionPredictor.from_folder(folder, document)
        else:
            self.predictor = Predictor.load(folder)

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if getattr(self.predictor, "task", "classification") == "detection":
            return detect_frame(self.predictor, frame, params or {})
        inputs = frame_to_inputs(frame, self.predictor)
        proba = self.predictor.predict_proba(inputs)
        classes = self.predictor.classes
        result = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes], index=frame.index)
        result.insert(0, "label", np.asarray(classes, dtype=object)[proba.argmax(axis=1)])
        return result


def frame_to_inputs(frame, predictor) -> Any:
    """The rows of ``frame`` as inputs of ``predictor`` (see the module docstring)."""
    return modality_of(predictor).decode_frame(frame, predictor)


def detect_frame(predictor, frame: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The boxes of the images named by ``frame``'s ``path`` column, one row per box (see the
    module docstring); a file that cannot be read is a :class:`DataError` naming it."""
    from ..detector import BOX_COLUMNS, box_rows

    if "path" not in frame.columns and not (len(frame.columns) == 1
                                            and str(frame.columns[0]) == "0"):
        raise DataError(Problem("input", "a detection model takes a 'path' column of image files "
                                f"(base64 'image' input is not taken); got columns {list(frame.columns)}"))
    paths = [str(p) for p in (frame["path"] if "path" in frame.columns else frame.iloc[:, 0])]
    threshold = float(params.get("score_threshold", 0.05))
    limit = int(params.get("max_detections", 100))
    found = predictor.predict_boxes(paths, threshold, limit)
    rows = [row for path, image in zip(paths, found, strict=True) for row in box_rows(path, image)]
    table = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    for column in BOX_COLUMNS[1:5] + ("score",):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["label"] = table["label"].where(table["label"] != "", None)
    return table


def save_pyfunc(model_dir: str | Path, path: str | Path) -> Path:
    """Write the MLflow pyfunc model of the sigclass model folder ``model_dir`` to ``path``."""
    import mlflow.pyfunc

    versions = environment_info("cpu")["versions"]
    requirements = [f"{name}=={versions[name]}" for name in
                    ("torch", "torchvision", "timm", "scikit-learn", "numpy") if name in versions]
    requirements = [f"sigclass=={__version__}", "safetensors", "skops", "pandas", *requirements]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    detector = read_model_json(find_model_dir(model_dir)).get("task") == "detection"
    mlflow.pyfunc.save_model(
        path=str(path), python_model=str(CODE_FILE), artifacts={ARTIFACT_KEY: str(Path(model_dir))},
        pip_requirements=requirements, metadata={"sigclass_format": "safetensors+json"},
        **({"signature": detection_signature()} if detector else {}),
    )
    return Path(path)


def detection_signature():
    """A detector's MLflow signature: its params (MLflow passes none a signature does not
    declare); the input is left to sigclass to check, as a classifier's."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(inputs=None, outputs=None, params=ParamSchema([
        ParamSpec("score_threshold", "double", 0.05), ParamSpec("max_detections", "long", 100)]))
