"""Export a trained model's network to ONNX and check ONNX Runtime against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..detector import require_classifier
from ..exceptions import ConfigError
from ..inference import OnnxEngine, export_onnx
from ..loading import load


def export_model(model: str, output: str | Path, n_check: int = 4, atol: float = 1e-4,
                 seed: int = 0) -> dict[str, Any]:
    """Write ``model``'s network to ``output`` and compare outputs on ``n_check`` random inputs.

    The graph takes preprocessed inputs (``(N, C, H, W)`` images or ``(N, C, T)`` signals) and
    returns what the network returns: logits, or features for a headless model's head. A
    detection model's graph is the whole detector instead (one image of any size in, boxes in its
    own pixels, labels and scores out; :meth:`DetectionPredictor.export_onnx
    <sigclass.detector.DetectionPredictor.export_onnx>`), checked on ``n_check`` synthetic images.

    Raises:
        ConfigError: The network cannot be exported, or ONNX Runtime disagrees with PyTorch by
            more than ``atol`` (relative to the outputs' scale).
    """
    import torch

    predictor = load(model)
    if getattr(predictor, "task", "classification") == "detection":
        return predictor.export_onnx(Path(output), n_check=n_check, seed=seed)
    predictor = require_classifier(predictor, "ONNX export and the service")
    network = predictor.network.eval().float().cpu()
    if not getattr(network, "onnx_exportable", True):
        raise ConfigError(f"'{predictor.model_name}' cannot be exported to ONNX (it runs code "
                          "outside PyTorch); serve it with --backend torch.")
    shape = tuple(predictor.preprocessor.item_shape)
    path = export_onnx(network, shape, Path(output))
    batch = torch.from_numpy(np.random.default_rng(seed).standard_normal((n_check, *shape),
                                                                         dtype=np.float32))
    with torch.inference_mode():
        expected = network(batch).float().numpy()
    got = OnnxEngine(path)(batch.numpy())
    diff = float(np.max(np.abs(got - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    if diff > atol * scale:
        raise ConfigError(f"ONNX Runtime differs from PyTorch by {diff:.3g} on '{path}' "
                          f"(tolerance {atol * scale:.3g}); serve this model with --backend torch.")
    return {"path": str(path), "max_abs_diff": diff, "n_checked": n_check, "input_shape": list(shape)}
