"""Saving and loading models without pickle.

A model folder holds:

- ``model.json``: format version, modality, mode, classes, preprocessing, how to rebuild the
  network (registry name and options), metadata, and the SHA-256 of every other file;
- ``weights.safetensors``: the network's tensors;
- ``head.skops`` (headless models only): the scikit-learn head in skops format, loaded with an
  explicit allowlist of scikit-learn types, so it cannot run arbitrary code.

Loading checks every checksum first: a corrupted or modified file is reported by name.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from . import __version__
from ._utils import atomic_write, sha256_file, write_json
from .exceptions import ArtifactError
from .models import create_model

FORMAT = "sigclass-model"
ENSEMBLE = "ensemble"  # the "kind" of an ensemble's model.json (see sigclass.ensemble)
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
HEAD = "head.skops"

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
        "info": predictor.info,
        "files": files,
        "saved_with": {"sigclass": __version__, "python": platform.python_version(), **_versions()},
    }
    write_json(folder / MODEL_JSON, document)
    return folder


def read_model_json(folder: Path) -> dict[str, Any]:
    """The checked ``model.json`` of a model folder."""
    try:
        document = json.loads((folder / MODEL_JSON).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"'{folder / MODEL_JSON}' is corrupted ({exc}). Restore the model folder from its run "
            "or the model registry."
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"'{folder / MODEL_JSON}' is not a sigclass model description.")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"'{folder}' was saved by a newer sigclass (format {document['format_version']}); "
            "upgrade sigclass to load it."
        )
    if document.get("kind") == ENSEMBLE:
        return _check_ensemble(folder, document)
    missing = [k for k in ("modality", "mode", "classes", "data_config", "network", "files") if k not in document]
    if missing:
        raise ArtifactError(f"'{folder / MODEL_JSON}' lacks the fields {missing}; the file was modified.")
    temperature = document.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
            0.01 <= temperature <= 100):
        raise ArtifactError(f"'{folder / MODEL_JSON}': field 'temperature' must be a number from 0.01 "
                            f"to 100, got {temperature!r}; the file was modified. Restore the model "
                            "folder from its run or the model registry.")
    return document


def _check_ensemble(folder: Path, document: dict[str, Any]) -> dict[str, Any]:
    """An ensemble's ``model.json``: members inside the folder, one weight each."""
    members = document.get("members")
    if not isinstance(members, list) or len(members) < 2 or not all(
            isinstance(m, dict) and "folder" in m and "weight" in m for m in members):
        raise ArtifactError(f"'{folder / MODEL_JSON}' lists no valid ensemble members; the file was "
                            "modified. Restore the model folder.")
    for member in members:
        parts = Path(str(member["folder"])).parts
        if not parts or parts[0] != "members" or ".." in parts or Path(str(member["folder"])).is_absolute():
            raise ArtifactError(f"'{folder / MODEL_JSON}' names a member outside the model folder: "
                                f"{member['folder']!r}.")
    return document


def verify_files(folder: Path, files: dict[str, str]) -> None:
    """Check every file against its recorded SHA-256."""
    for name, expected in files.items():
        if Path(name).name != name:
            raise ArtifactError(f"'{folder / MODEL_JSON}' names a file outside the model folder: {name!r}.")
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
    every file checked against its checksum first."""
    from safetensors.torch import load_file

    verify_files(folder, document["files"])
    spec = document["network"]
    try:
        network = create_model(
            spec["name"], n_classes=spec["n_classes"], pretrained=False,
            in_chans=spec.get("in_chans"), **spec.get("kwargs", {}),
        )
        network.load_state_dict(load_file(str(folder / WEIGHTS)))
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - any mismatch means a broken artifact
        raise ArtifactError(f"Cannot rebuild the network of '{folder}': {exc}") from exc
    head = _load_head(folder / HEAD) if document.get("head") else None
    return network, head


def model_files(folder: str | Path | None) -> dict[str, str]:
    """The recorded checksums of a saved model's files (empty when there is no model there)."""
    if not folder:
        return {}
    try:
        return json.loads((Path(folder) / MODEL_JSON).read_text()).get("files", {})
    except (OSError, ValueError):
        return {}


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
