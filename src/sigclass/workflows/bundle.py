"""``sigclass export MODEL --format bundle``: a model folder as a bundle the lean runtime serves.

The bundle (see :mod:`sigclass.runtime.bundle`) holds the ONNX graph, ``model.json``, the head
as coefficients, the OOD reference (``ood.safetensors``, as in the model folder) and
``bundle.json`` with the SHA-256 of every file; no pickle. After writing it, the bundle is loaded
by the runtime and its probabilities and OOD scores are compared with the PyTorch predictor's on
the same preprocessed inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import write_json
from ..artifacts import read_model_json
from ..exceptions import ConfigError
from ..inference import export_onnx
from ..loading import load
from ..model_schema.fields import MODEL_JSON
from ..runtime.bundle import BUNDLE_FORMAT, BUNDLE_JSON, BUNDLE_VERSION, Bundle, file_sha256
from ..runtime.cam import CAM_JSON
from ..runtime.heads import head_document

__all__ = ["export_bundle", "head_document"]

GRAPH, HEAD, OOD = "model.onnx", "head.json", "ood.safetensors"
CAM_TOL = 1e-3
OOD_RTOL = 1e-4  # largest OOD score difference allowed, relative to the threshold


def cam_document(predictor) -> dict[str, Any] | None:
    """``cam.json``: the class weights over the last feature map, where the toolkit's CAM is
    ``weights @ feature map`` (``cam`` and ``head_cam`` of :mod:`sigclass.explain.engine`), checked
    on a random batch: the logits (or a headless model's features) must come from the feature
    map's mean. ``None`` where the map needs gradients (Grad-CAM) or there is no feature map."""
    import torch

    from ..exceptions import ExplainError
    from ..explain.engine import CamEngine

    try:
        engine = CamEngine.for_predictor(predictor, "auto")
    except ExplainError:
        return None
    if engine.kind not in ("cam", "head_cam"):
        return None
    network = predictor.network.eval().float().cpu()
    weights = engine.weights.float().cpu().numpy()
    x = torch.randn(2, *tuple(predictor.preprocessor.item_shape))
    with torch.inference_mode():
        feats = network.forward_features(x).float()
        outputs = network.forward_head(feats).float().numpy()
    pooled = feats.mean(dim=tuple(range(2, feats.ndim))).numpy()
    if engine.kind == "head_cam":
        start, stop = getattr(network, "final_mean_slice", (0, outputs.shape[1]))
        expected, got = pooled, outputs[:, start:stop]
    else:
        classifier = network.get_classifier()
        expected = pooled @ weights.T + classifier.bias.detach().float().numpy()
        got = outputs
    if expected.shape != got.shape or np.abs(expected - got).max() > CAM_TOL * (1 + np.abs(got).max()):
        return None
    return {"kind": engine.kind, "weights": weights.astype(np.float64).tolist()}


def _with_outputs(network, feature_map: bool, pooled: bool):
    """``network`` answering ``(its output[, the last feature map][, its pooled features])``;
    the pooled features are the input of its last linear layer, as
    :func:`sigclass.inference.pooled_features`."""
    import torch

    if not (feature_map or pooled):
        return network

    class WithOutputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            feats = self.inner.forward_features(x)
            outputs = (self.inner.forward_head(feats),) + ((feats,) if feature_map else ())
            if pooled:
                outputs += (self.inner.forward_head(feats, pre_logits=True).flatten(1),)
            return outputs

    return WithOutputs(network).eval()


def export_bundle(model: str, output: str | Path, n_check: int = 8, atol: float = 1e-4,
                  seed: int = 0) -> dict[str, Any]:
    """Write the bundle of ``model`` to the folder ``output`` and check it.

    Args:
        model: A run folder, model folder or ``models:/NAME@ALIAS``.
        output: The bundle folder (created; an existing bundle there is replaced).
        n_check: Random preprocessed inputs the runtime and PyTorch are compared on.
        atol: Largest probability difference allowed between them.

    Returns:
        ``{"path", "files", "max_abs_diff", "n_checked", "head", "cam", "ood", "max_ood_diff"}``
        (``ood``: the OOD score's method, ``None`` for a model without one).

    Raises:
        ConfigError: An ensemble, a network or head that cannot be exported, an output folder
            that holds something else, or a bundle whose probabilities differ by more than ``atol``.
    """
    import torch

    predictor = load(model)
    if getattr(predictor, "members", None):
        raise ConfigError(f"'{model}' is an ensemble; export each member's bundle "
                          "(members/<name> in the ensemble's folder).")
    network = predictor.network.eval().float().cpu()
    if not getattr(network, "onnx_exportable", True):
        raise ConfigError(f"'{predictor.model_name}' cannot be exported to ONNX (it runs code "
                          "outside PyTorch), so it has no bundle; serve the model folder instead.")
    head = head_document(predictor.head, predictor.classes) if predictor.head is not None else None
    folder = _prepare_folder(Path(output))
    shape = tuple(predictor.preprocessor.item_shape)
    cam = cam_document(predictor)
    ood = getattr(predictor, "ood", None)
    pooled = ood is not None and head is None  # a headless model's outputs are its features
    export_onnx(_with_outputs(network, cam is not None, pooled), shape, folder / GRAPH)
    source = Path(predictor.info["path"])
    document = read_model_json(source)
    document.pop("head", None)
    document.pop("ood", None)
    if ood is not None:  # the reference tensors as the model folder holds them, checksum and all
        shutil.copyfile(source / ood["file"], folder / OOD)
        document["ood"] = {**ood, "file": OOD}
    if head is not None:
        write_json(folder / HEAD, head)
        document["head"] = {"file": HEAD, "type": head["kind"]}
    if cam is not None:
        write_json(folder / CAM_JSON, cam)
    write_json(folder / MODEL_JSON, document)
    names = ([MODEL_JSON, GRAPH] + ([HEAD] if head is not None else [])
             + ([CAM_JSON] if cam is not None else []) + ([OOD] if ood is not None else []))
    files = {name: file_sha256(folder / name) for name in names}
    write_json(folder / BUNDLE_JSON, {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "graph": GRAPH,
        "head": HEAD if head is not None else None,
        "cam": CAM_JSON if cam is not None else None,
        "ood": OOD if ood is not None else None,
        "outputs": (["features" if head is not None else "logits"] + (["feature_map"] if cam else [])
                    + (["pooled_features"] if pooled else [])),
        "files": files,
        "info": {"source": str(model), "model": predictor.model_name},
    })

    bundle = Bundle(folder)
    batch = np.random.default_rng(seed).standard_normal((n_check, *shape), dtype=np.float32)
    with torch.inference_mode():
        outputs = network(torch.from_numpy(batch)).float().numpy()
    expected = predictor.probabilities_from_outputs(outputs)
    results = bundle.session.run(None, {bundle.input_name: batch})
    got = bundle.probabilities_from_outputs(results[0])
    diff = float(np.max(np.abs(got - expected)))
    if diff > atol:
        raise ConfigError(f"The bundle in '{folder}' gives probabilities {diff:.3g} away from "
                          f"PyTorch's (tolerance {atol:g}); serve the model folder instead.")
    ood_diff = None
    if ood is not None:
        features = results[bundle.manifest.outputs.index("pooled_features")] if pooled else results[0]
        reference = predictor.batch_ood_scores(torch.from_numpy(batch), outputs)
        ood_diff = float(np.max(np.abs(bundle.ood_scores(features) - reference)))
        if ood_diff > OOD_RTOL * max(1.0, float(ood["threshold"])):
            raise ConfigError(f"The bundle in '{folder}' gives OOD scores {ood_diff:.3g} away from "
                              "PyTorch's; serve the model folder instead.")
    return {"path": str(folder), "files": files, "max_abs_diff": diff, "n_checked": n_check,
            "head": None if head is None else head["kind"],
            "cam": None if cam is None else cam["kind"],
            "ood": None if ood is None else ood["method"], "max_ood_diff": ood_diff}


def _prepare_folder(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"The bundle destination '{folder}' is a file; give a folder path.")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / BUNDLE_JSON).is_file():
            raise ConfigError(f"The bundle destination '{folder}' holds other files; give an "
                              "empty or new folder (an existing bundle there is replaced).")
        manifest = json.loads((folder / BUNDLE_JSON).read_text())
        for name in list(manifest.get("files", {})) + [BUNDLE_JSON]:
            path = folder / str(name)
            if path.is_file() and path.parent == folder:
                path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder
