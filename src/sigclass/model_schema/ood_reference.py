"""The reference tensors of a model's out-of-distribution score (``ood.safetensors``), read with
safetensors' NumPy API (no PyTorch) and checked against the ``ood`` field of ``model.json``: a
model folder and a serving bundle read them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ArtifactError
from .fields import FIX

# the tensors of each OOD score: name -> its shape, in terms of the spec's counts
OOD_TENSORS = {"knn": {"bank": ("n_reference", "dim")},
               "mahalanobis": {"means": ("n_classes", "dim"), "basis": ("dim", "rank"),
                               "inverse_variances": ("rank",), "residual_precision": (1,)}}


def read_ood_tensors(path: Path, spec: dict[str, Any], n_classes: int, feature_width: int | None,
                     fix: str = FIX) -> dict[str, np.ndarray]:
    """The tensors of ``path``, every name and shape checked against the ``ood`` field ``spec``,
    and the feature width against the network's pooled features (``feature_width``; ``None``:
    not known).

    Args:
        path: The ``.safetensors`` file (its checksum was verified with the others).
        spec: The ``ood`` field of ``model.json``.
        n_classes: The model's number of classes.
        feature_width: The width of the features the score is computed on, where known.
        fix: What to do about a bad file, for the error (default: restore the model folder).

    Raises:
        ArtifactError: The file cannot be read, or does not fit ``spec``.
    """
    from safetensors.numpy import load_file

    from . import fail

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"Cannot read the OOD reference '{path}' ({exc}); fix: {fix}.") from None
    sizes = {"n_reference": spec["n_reference"], "dim": spec["dim"], "n_classes": n_classes}
    if "basis" in tensors and tensors["basis"].ndim == 2:
        sizes["rank"] = int(tensors["basis"].shape[1])
    expected = {name: tuple(sizes.get(d, d) for d in dims)
                for name, dims in OOD_TENSORS[spec["method"]].items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    problems = [f"tensor '{name}' has shape {list(found.get(name, ()))}, field 'ood' says "
                f"{list(shape)}" for name, shape in expected.items() if found.get(name) != shape]
    problems += [f"tensor '{name}' is not one of a {spec['method']} reference"
                 for name in sorted(found.keys() - expected.keys())]
    if feature_width is not None and feature_width != spec["dim"]:
        problems.append(f"field 'ood.dim' is {spec['dim']}, the network's pooled features have "
                        f"{feature_width}")
    if any(not np.all(np.isfinite(t)) for t in tensors.values()):
        problems.append("holds values that are not finite numbers")
    if problems:
        raise fail(path, ["does not fit field 'ood' of model.json: " + "; ".join(problems[:3])], fix)
    return tensors
