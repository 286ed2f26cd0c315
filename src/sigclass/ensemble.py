"""A weighted soft-voting ensemble of trained models, used like one :class:`~sigclass.Predictor`.

``sigclass compare`` adds an ``ensemble`` row: up to three of the best entries by their held-out
selection score (the validation accuracy of a network, the cross-validated accuracy of a headless
head), those within 5 points of the best, their class probabilities averaged with weights
proportional to the score above chance (AutoGluon's weighted ensemble is the model of this; it
selects greedily on shared out-of-fold predictions, which entries trained on different parts do
not have). The ensemble is saved as a folder holding every member's own
model folder and a ``model.json`` that lists them with their weights; it loads with
:func:`sigclass.load`, evaluates, scores batches and serves like any model. Class activation maps
are computed per member (``explain`` names the members' folders).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._utils import write_json
from .artifacts import ENSEMBLE, FORMAT, MODEL_JSON
from .exceptions import ConfigError
from .model_schema import fail
from .predictor import Predictor

KIND = ENSEMBLE


class EnsemblePredictor:
    """Members' probabilities averaged with weights; the interface of a Predictor.

    Args:
        members: Trained predictors of one modality with the same classes.
        weights: One non-negative weight per member (normalized to sum 1).
        names: A name per member (its folder in the saved ensemble).
        info: Metadata saved with the ensemble.
    """

    mode = KIND
    head = None
    network = None  # the members hold the networks

    def __init__(self, members: list, weights: list[float], names: list[str] | None = None,
                 info: dict[str, Any] | None = None):
        if len(members) < 2 or len(weights) != len(members):
            raise ConfigError("An ensemble needs two or more members and one weight per member.")
        first = members[0]
        for member in members[1:]:
            if member.modality != first.modality or list(member.classes) != list(first.classes):
                raise ConfigError(f"Ensemble members must share modality and classes; "
                                  f"{member.model_name} has {member.classes}, {first.model_name} "
                                  f"has {first.classes}.")
        total = float(np.sum(weights))
        if not np.all(np.asarray(weights) >= 0) or total <= 0:
            raise ConfigError(f"Ensemble weights must be non-negative and not all zero. Got {weights}.")
        self.members = list(members)
        self.weights = [float(w) / total for w in weights]
        self.names = list(names or [f"member{i}" for i in range(len(members))])
        self.classes = list(first.classes)
        self.modality = first.modality
        self.data_config = first.data_config
        self.preprocessor = first.preprocessor
        self.device = first.device
        self.info = dict(info or {})
        self.last_items_per_second: float | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def model_name(self) -> str:
        return "ensemble(" + "+".join(m.model_name for m in self.members) + ")"

    def predict_proba(self, inputs, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """The weighted mean of the members' probabilities, columns in :attr:`classes` order."""
        started = time.perf_counter()
        items = self.preprocessor.as_list(inputs)
        proba = sum(w * m.predict_proba(items, batch_size, progress)
                    for w, m in zip(self.weights, self.members, strict=True))
        elapsed = time.perf_counter() - started
        self.last_items_per_second = len(items) / elapsed if elapsed > 0 and items else None
        return np.asarray(proba, dtype=np.float64)

    def predict(self, inputs, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        proba = self.predict_proba(inputs, batch_size, progress)
        return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]

    #: An ensemble has no out-of-distribution score of its own (each member has its own).
    ood = None

    def proba_and_ood(self, inputs, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, None]:
        """The probabilities of ``inputs`` and ``None``: no OOD score (see :attr:`ood`)."""
        return self.predict_proba(inputs, batch_size, progress), None

    def unknown(self, ood_scores) -> None:
        return None

    def prediction_sets(self, proba: np.ndarray) -> None:
        """``None``: an ensemble has no conformal threshold of its own (its members were
        calibrated on different items)."""
        return None

    def use_backend(self, backend: str, onnx_path=None, precision: str = "fp32") -> EnsemblePredictor:
        """Switch every member's inference backend (each keeps its own ONNX graph); the int8
        graphs are made and checked per member, so ``precision`` must be ``fp32``."""
        if precision != "fp32":
            raise ConfigError("--precision int8 runs one model's quantized graph; an ensemble "
                              "averages several. Score with --precision fp32, or quantize and "
                              "serve a member (members/<name> in the ensemble's folder).")
        for member in self.members:
            member.use_backend(backend)
        return self

    def save(self, path: str | Path) -> Path:
        """A folder with one model folder per member and ``model.json`` listing them."""
        folder = Path(path)
        for name, member in zip(self.names, self.members, strict=True):
            member.save(folder / "members" / name)
        write_json(folder / MODEL_JSON, {
            "format": FORMAT, "kind": KIND, "modality": self.modality, "classes": self.classes,
            "members": [{"folder": f"members/{n}", "weight": w, "model": m.model_name, "mode": m.mode}
                        for n, w, m in zip(self.names, self.weights, self.members, strict=True)],
            "info": self.info,
        })
        return folder

    @classmethod
    def load(cls, folder: str | Path, document: dict[str, Any], device: str | None = "auto",
             backend: str = "torch") -> EnsemblePredictor:
        """The ensemble of the folder whose checked ``model.json`` is ``document``."""
        folder = Path(folder)
        members = [Predictor.load(folder / m["folder"], device=device, backend=backend)
                   for m in document["members"]]
        differ = [f"members[{i}] ({m['folder']}) has {member.modality} classes {member.classes}"
                  for i, (m, member) in enumerate(zip(document["members"], members, strict=True))
                  if member.classes != list(document["classes"])
                  or member.modality != document["modality"]]
        if differ:
            raise fail(folder / MODEL_JSON, [f"field 'classes': the ensemble lists "
                                             f"{document['modality']} classes "
                                             f"{document['classes']}, but " + ", ".join(differ)])
        info = dict(document.get("info", {}))
        info["path"] = str(folder)  # where it was loaded from, whatever the file says
        return cls(members, [m["weight"] for m in document["members"]],
                   [Path(m["folder"]).name for m in document["members"]], info)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n} {w:.2f}" for n, w in zip(self.names, self.weights, strict=True))
        return f"EnsemblePredictor({parts}; classes={self.classes})"


def selection_score(run_dir: Path) -> float | None:
    """The held-out score an entry was selected by: a network's validation accuracy, a headless
    head's cross-validated accuracy; ``None`` when the run has neither."""
    try:
        return float(json.loads((run_dir / "val" / "metrics.json").read_text())["accuracy"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        return float(json.loads((run_dir / "run.json").read_text())["head"]["cv_accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


CLOSE_TO_BEST = 0.05  # members score within this of the best entry


def build_ensemble(run_dirs: dict[str, Path], top: int = 3) -> EnsemblePredictor | None:
    """The weighted ensemble of the best entries; ``None`` when fewer than two qualify.

    Members are the ``top`` entries by selection score among those within
    :data:`CLOSE_TO_BEST` of the best (a much weaker model only adds noise to the vote); their
    weights are proportional to how far their score is above chance (one over the classes).
    """
    scored = [(score, name) for name, d in run_dirs.items()
              if (score := selection_score(d)) is not None and (d / "model").is_dir()]
    scored.sort(key=lambda item: -item[0])
    if not scored:
        return None
    chosen = [(s, n) for s, n in scored if s >= scored[0][0] - CLOSE_TO_BEST][:top]
    if len(chosen) < 2:
        return None
    members = [Predictor.load(run_dirs[name] / "model") for _, name in chosen]
    chance = 1.0 / members[0].n_classes
    weights = [max(score - chance, 1e-3) for score, _ in chosen]
    return EnsemblePredictor(members, weights, [name for _, name in chosen],
                             {"members": {name: score for score, name in chosen},
                              "weights": "proportional to the selection score above chance"})
