"""Saving and loading models without pickle.

A model folder holds:

- ``model.json``: format version, modality, mode, classes, preprocessing, how to rebuild the
  network (registry name and options), metadata, and the SHA-256 of every other file;
- ``weights.safetensors``: the network's tensors;
- ``head.skops`` (headless models only): the scikit-learn head in skops format, loaded with an
  explicit allowlist of scikit-learn types, so it cannot run arbitrary code;
- ``ood.safetensors`` (models fitted with out-of-distribution data): the reference tensors of
  the ``ood`` score (:mod:`sigclass.evaluation.ood`), checked against ``model.json``'s ``ood``.

Loading validates ``model.json`` against its schema and itself first (:mod:`sigclass.model_schema`),
then every checksum: a corrupted or modified file is reported by name; last, the classes are
checked against what the network and the head output.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._utils import atomic_write, sha256_file, write_json
from .exceptions import ArtifactError
from .modalities import modality_of
from .model_schema import (
    ENSEMBLE,  # noqa: F401 - the "kind" of an ensemble's model.json, used by sigclass.loading
    FORMAT,
    FORMAT_VERSION,
    MODEL_JSON,
    WEIGHTS,
    check_document,
    fail,
    file_problems,
    read_document,
)
from .model_schema.ood_reference import read_ood_tensors
from .models import create_model

HEAD = "head.skops"
OOD_FILE = "ood.safetensors"

# scikit-learn internals the heads are made of, beyond the types skops trusts by default.
TRUSTED_HEAD_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn.ensemble._hist_gradient_boosting.common.PREDICTOR_RECORD_DTYPE",
    "numpy.dtype",
})


def find_model_dir(path: str | Path) -> Path:
    """The model folder of ``path``: the folder itself, or ``path/model`` for a run folder."""
    path = Path(path).expanduser()
    if (path / MODEL_JSON).is_file():
        return path
    if (path / "model" / MODEL_JSON).is_file():
        return path / "model"
    if path.is_file() and path.name == MODEL_JSON:
        return path.parent
    raise ArtifactError(
        f"No sigclass model at '{path}': expected a run folder with model/{MODEL_JSON} or a model "
        f"folder with {MODEL_JSON}. Train one with `sigclass train`, or check the path."
    )


def save_predictor(predictor, path: str | Path) -> Path:
    """Write ``predictor`` to the folder ``path`` (created); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in predictor.network.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    files = {WEIGHTS: sha256_file(folder / WEIGHTS)}
    head = None
    if predictor.head is not None:
        import skops.io as sio

        atomic_write(folder / HEAD, lambda p: sio.dump(predictor.head, p))
        files[HEAD] = sha256_file(folder / HEAD)
        head = {"file": HEAD, "type": _describe(predictor.head)}
    ood = _save_ood(predictor, folder, files)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modality": predictor.modality,
        "mode": predictor.mode,
        "classes": predictor.classes,
        "data_config": predictor.data_config,
        "network": predictor.network.model_spec,
        "head": head,
        "temperature": getattr(predictor, "temperature", 1.0),
        "drift_reference": getattr(predictor, "drift_reference", None),
        "conformal": getattr(predictor, "conformal", None),
        "ood": ood,
        "info": predictor.info,
        "files": files,
        "saved_with": {"sigclass": __version__, "python": platform.python_version(), **_versions()},
    }
    write_json(folder / MODEL_JSON, document)
    return folder


def read_model_json(folder: Path) -> dict[str, Any]:
    """The ``model.json`` of a model folder, validated against its schema and itself (see
    :mod:`sigclass.model_schema`)."""
    outside = file_problems(folder, MODEL_JSON, MODEL_JSON)
    if outside:
        raise fail(folder, outside)
    return check_document(folder, read_document(folder / MODEL_JSON))


def verify_files(folder: Path, files: dict[str, str]) -> None:
    """Check every file against its recorded SHA-256 (their names were checked with the rest of
    ``model.json``: plain names, no link out of the folder)."""
    for name, expected in files.items():
        problems = file_problems(folder, name, f"files['{name}']")
        if problems:
            raise fail(folder / MODEL_JSON, problems)
        target = folder / name
        if not target.is_file():
            raise ArtifactError(f"Model file '{target}' is missing. Restore the whole model folder.")
        if sha256_file(target) != expected:
            raise ArtifactError(
                f"Model file '{target}' does not match its recorded checksum: it is corrupted or was "
                "modified after saving. Restore it from the run or the model registry."
            )


def read_network_and_head(folder: Path, document: dict[str, Any]):
    """The network (weights loaded) and the scikit-learn head (or ``None``) of a model folder,
    every file checked against its checksum first, the classes against what the network and
    the head output."""
    verify_files(folder, document["files"])
    spec = document["network"]
    try:
        network = create_model(
            spec["name"], n_classes=spec["n_classes"], pretrained=False,
            in_chans=spec.get("in_chans"), **spec.get("kwargs", {}),
        )
    except Exception as exc:  # noqa: BLE001 - any failure means a broken artifact
        raise fail(folder / MODEL_JSON, [f"field 'network': cannot rebuild '{spec['name']}' "
                                         f"({' '.join(str(exc).split())})"]) from None
    load_weights(folder, network)
    head = _load_head(folder / document["head"]["file"]) if document.get("head") else None
    check_outputs(folder, document, network, head)
    return network, head


def load_weights(folder: Path, network) -> None:
    """Load ``weights.safetensors`` into ``network``, every tensor's name and shape checked."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"Cannot read the weights '{folder / WEIGHTS}' ({exc}). Restore the "
                            "model folder from its run or the model registry.") from None
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    # an empty tensor is the placeholder of a fitted featurizer's state (MiniRocket's kernels),
    # sized when the weights are loaded
    problems = [f"'{k}' has shape {list(found[k])}, the network built from model.json "
                f"{list(expected[k])}" for k in sorted(expected.keys() & found.keys())
                if expected[k] != found[k] and 0 not in expected[k]]
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing (e.g. '{missing[0]}')")
    if extra:
        problems.append(f"{len(extra)} tensor(s) the network does not have (e.g. '{extra[0]}')")
    if problems:
        raise fail(folder / WEIGHTS, ["does not fit field 'network' of model.json: "
                                      + "; ".join(problems[:3])])
    try:
        network.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any mismatch means a broken artifact
        raise fail(folder / WEIGHTS, ["does not fit field 'network' of model.json: "
                                      + " ".join(str(exc).split())[:300]]) from None


def check_outputs(folder: Path, document: dict[str, Any], network, head) -> None:
    """The network's output size (one input of the model's shape) and the head's classes
    against ``classes``: a model never drops or invents a class silently."""
    import torch

    classes = list(document["classes"])
    shape = modality_of(document["modality"]).preprocessor(document["data_config"]).item_shape
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            width = int(network(torch.zeros((1, *shape))).reshape(1, -1).shape[1])
    except Exception as exc:  # noqa: BLE001
        raise fail(folder / MODEL_JSON, [f"field 'data_config': the network does not take an "
                                         f"input of shape {list(shape)} "
                                         f"({' '.join(str(exc).split())[:200]})"]) from None
    finally:
        network.train(was_training)
    where = folder / MODEL_JSON
    if head is None:
        if width != len(classes):
            raise fail(where, [f"field 'classes': {len(classes)} class(es) listed, the network "
                               f"in {WEIGHTS} outputs {width}"])
        return
    head_classes = [str(c) for c in getattr(head, "classes_", [])]
    if sorted(head_classes) != sorted(classes) or len(head_classes) != len(classes):
        missing = [c for c in classes if c not in head_classes]
        extra = [c for c in head_classes if c not in classes]
        raise fail(where, [f"field 'classes': {len(classes)} class(es) listed, the head in "
                           f"{document['head']['file']} has {len(head_classes)}"
                           + (f"; not in the head: {missing[:5]}" if missing else "")
                           + (f"; only in the head: {extra[:5]}" if extra else "")])
    n_features = getattr(head, "n_features_in_", None)
    if n_features is not None and int(n_features) != width:
        raise fail(where, [f"field 'network': the network outputs {width} features, the head in "
                           f"{document['head']['file']} takes {int(n_features)}"])


def _save_ood(predictor, folder: Path, files: dict[str, str]) -> dict[str, Any] | None:
    spec, reference = getattr(predictor, "ood", None), getattr(predictor, "ood_reference", None)
    if not spec or not reference:
        return None
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in reference.items()}
    atomic_write(folder / OOD_FILE, lambda p: save_file(tensors, str(p)))
    files[OOD_FILE] = sha256_file(folder / OOD_FILE)
    return {**spec, "file": OOD_FILE}


def read_ood_reference(folder: Path, document: dict[str, Any], feature_width: int | None):
    """The reference tensors of a model's ``ood`` score (``None`` for a model saved without
    one), every tensor's name and shape checked against the ``ood`` field, and the feature
    width against the network's pooled features (``feature_width``; ``None``: not known).
    The file's checksum was verified with the others."""
    spec = document.get("ood")
    if not spec:
        return None
    return read_ood_tensors(folder / spec["file"], spec, len(document["classes"]), feature_width)


def model_files(folder: str | Path | None) -> dict[str, str]:
    """The recorded checksums of a saved model's files (empty when there is no model there)."""
    if not folder:
        return {}
    try:
        return json.loads((Path(folder) / MODEL_JSON).read_text()).get("files", {})
    except (OSError, ValueError):
        return {}


def graph_cache_path(folder: str | Path | None, key: dict[str, Any], explicit: str | Path | None = None,
                     prefix: str = "") -> Path | None:
    """Where the ONNX graph of the model saved in ``folder`` is kept: ``explicit``, else the
    sigclass cache folder, keyed by the model's checksums and ``key`` (what else the graph
    depends on); ``None`` for a model that was never saved."""
    if explicit:
        return Path(explicit)
    files = model_files(folder)
    if not files:
        return None
    from ._utils import default_cache_dir, sha256_json

    return default_cache_dir() / "onnx" / f"{prefix}{sha256_json({'files': files, **key})[:20]}.onnx"


def _load_head(path: Path):
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"Cannot read the classifier head '{path}': {exc}") from None
    unknown = sorted(untrusted - TRUSTED_HEAD_TYPES)
    if unknown:
        raise ArtifactError(
            f"The classifier head '{path}' holds types sigclass does not trust: {unknown}. "
            "Only scikit-learn heads saved by sigclass can be loaded."
        )
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"Cannot load the classifier head '{path}': {exc}") from None


def _describe(estimator) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        return " -> ".join(type(step).__name__ for _, step in steps)
    return type(estimator).__name__


def _versions() -> dict[str, str]:
    import sklearn
    import timm
    import torch

    return {"torch": torch.__version__, "timm": timm.__version__, "scikit-learn": sklearn.__version__}
