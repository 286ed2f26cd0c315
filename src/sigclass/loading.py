"""Loading a trained model, whatever it is and wherever it lives: :func:`load`.

A run folder, a model folder (a single model or an ensemble) or a registered model
(``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) gives a predictor; nothing executes code from
the files (see :mod:`sigclass.artifacts`). The service, batch scoring and the command line load
models through this, never through training.
"""

from __future__ import annotations

from pathlib import Path

from .artifacts import ENSEMBLE, find_model_dir, read_model_json
from .detector import DetectionPredictor
from .ensemble import EnsemblePredictor
from .exceptions import ArtifactError
from .predictor import Predictor
from .runtime.bundle import is_bundle
from .tracking.registry import download_model


def load(path: str | Path, device: str | None = "auto", backend: str = "torch"):
    """Load a trained model from a run folder, a model folder or a ``models:/`` registry URI.

    Returns:
        A :class:`~sigclass.Predictor`, an :class:`~sigclass.ensemble.EnsemblePredictor` for
        an ensemble's folder, or a :class:`~sigclass.detector.DetectionPredictor` for a
        detection model (``"task": "detection"``).

    Raises:
        ArtifactError: ``model.json`` breaks its schema (:mod:`sigclass.model_schema`) or
            disagrees with itself or with the files beside it (classes against the network's
            outputs and the head, checksums, weights' shapes); one line names the file, every
            field and the fix.
        TrackingError: A ``models:/`` URI whose registry cannot be used or does not exist.
    """
    folder = model_folder(path)
    document = read_model_json(folder)
    if document.get("kind") == ENSEMBLE:
        return EnsemblePredictor.load(folder, document, device=device, backend=backend)
    if document.get("task") == "detection":
        return DetectionPredictor.from_folder(folder, document, device=device)
    return Predictor.from_folder(folder, document, device=device, backend=backend)


def model_folder(path: str | Path) -> Path:
    """The model folder of a run folder, a model folder or a ``models:/`` URI (downloaded)."""
    text = str(path)
    if text.startswith("models:/"):
        path = download_model(text)
    if is_bundle(path):
        raise ArtifactError(f"'{path}' is a serving bundle (`sigclass export --format bundle`), not "
                            "a model folder: it holds no PyTorch weights. Serve it with `sigclass "
                            "serve`, load it with sigclass.runtime.load_bundle, or use the run or "
                            "model folder it was exported from.")
    return find_model_dir(path)
