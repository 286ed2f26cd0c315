"""The lean serving runtime: a bundle (``sigclass export MODEL --format bundle``) loaded and run
with ONNX Runtime, NumPy and Pillow, without PyTorch, timm, scikit-learn or MLflow.

``sigclass serve BUNDLE`` serves it through the same FastAPI app as a model folder
(:mod:`sigclass.runtime.serving`); :func:`load_bundle` gives the predictor in Python.
"""

from __future__ import annotations

from pathlib import Path

from .bundle import Bundle, is_bundle

__all__ = ["Bundle", "is_bundle", "load_bundle"]


def load_bundle(path: str | Path, threads: int | None = None) -> Bundle:
    """The bundle folder ``path``, its checksums verified (:class:`Bundle`)."""
    return Bundle(path, threads)
