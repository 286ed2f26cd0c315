"""The Predictor: a trained model, its preprocessing and its class names, whatever mode made it.

Evaluation, explanation, export, the registry and the scoring service all consume a Predictor.
A ``finetune`` or ``scratch`` predictor's network outputs class logits; a ``headless`` predictor's
network outputs pooled features that a scikit-learn head turns into probabilities.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._utils import prefetched
from .artifacts import (
    ENSEMBLE,
    find_model_dir,
    graph_cache_path,
    read_model_json,
    read_network_and_head,
    read_ood_reference,
    save_predictor,
)
from .choices import DEFAULT_MODALITY, PRECISIONS
from .evaluation.ood import score_records
from .exceptions import ArtifactError, ConfigError
from .inference import GRAPH_VERSION, infer, make_engine, pooled_features, resolve_backend
from .modalities import modality_of


def onnx_cache_path(predictor, explicit: str | Path | None = None) -> Path | None:
    """Where a saved model's ONNX graph is kept: ``explicit``, else the sigclass cache folder
    keyed by the model's checksums (``None`` for a model that was never saved)."""
    return graph_cache_path(predictor.info.get("path"),
                            {"shape": list(predictor.preprocessor.item_shape), "graph": GRAPH_VERSION},
                            explicit)


def quantized_paths(predictor) -> tuple[Path, Path]:
    """The cached int8 graph of a saved model and its report, beside the fp32 graph
    (see :func:`sigclass.workflows.quantize.quantize_model`)."""
    fp32 = onnx_cache_path(predictor)
    if fp32 is None:
        raise ArtifactError("This model was never saved, so it has no int8 graph; save it and run "
                            "`sigclass export RUN --quantize int8`.")
    return fp32.with_suffix(".int8.onnx"), fp32.with_suffix(".int8.json")


def _checked_int8_graph(predictor) -> Path:
    graph, report_path = quantized_paths(predictor)
    where = predictor.info.get("path") or "MODEL"
    if not graph.is_file() or not report_path.is_file():
        raise ConfigError(f"'{where}' has no int8 graph yet; make it (calibrated on the run's own "
                          f"data) with `sigclass export {where} --quantize int8 -o model.int8.onnx`, "
                          "or use --precision fp32.")
    report = json.loads(report_path.read_text())
    if not report.get("accepted"):
        raise ConfigError(
            f"The int8 graph of '{where}' loses {report.get('accuracy_drop_points', float('nan')):.1f} "
            f"accuracy points on the test part, more than the {report.get('max_accuracy_drop')} "
            "allowed when it was made; use --precision fp32, or quantize again with a larger "
            "--max-accuracy-drop if that loss is acceptable.")
    return graph


class Predictor:
    """A trained classifier that takes raw inputs and returns classes and probabilities.

    Args:
        network: A network following the registry contract. Its output is class logits, or
            pooled features when ``head`` is given.
        classes: Class names; column ``i`` of :meth:`predict_proba` is ``classes[i]``.
        data_config: The preprocessing stored with the model.
        modality: ``"image"`` or ``"signal"``.
        mode: ``"headless"``, ``"finetune"`` or ``"scratch"`` (informational).
        head: A fitted scikit-learn classifier on the network's features (``headless``).
        info: Metadata saved with the model (name, metrics, lineage, versions).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        backend: ``"torch"``, ``"onnx"`` or ``"auto"``.
        engine: An inference engine already built for ``network`` (else built on first use).
        temperature: The logits are divided by it before the softmax (temperature scaling,
            fitted on the validation part by training; 1 leaves them as they are).
        drift_reference: The test part's drift scores, which the service compares recent
            inputs with (:func:`sigclass.evaluation.drift.reference_scores`); ``None`` for
            models saved before it was recorded.
        conformal: The threshold of the prediction sets (``{"method", "coverage", "qhat", "n"}``,
            see :mod:`sigclass.evaluation.conformal`); ``None`` for a model saved without one.
        ood: How far an input is from the training data is scored and thresholded
            (``{"method", "k", "threshold", "tpr", "n", "n_reference", "dim"}``, see
            :mod:`sigclass.evaluation.ood`); ``None`` for a model saved without it.
        ood_reference: The reference tensors of that score (name -> array).
    """

    def __init__(
        self,
        network,
        classes: list[str],
        data_config: dict[str, Any],
        modality: str = DEFAULT_MODALITY,
        mode: str = "finetune",
        head=None,
        info: dict[str, Any] | None = None,
        device: str | None = "auto",
        backend: str = "torch",
        engine=None,
        temperature: float = 1.0,
        drift_reference: dict[str, Any] | None = None,
        conformal: dict[str, Any] | None = None,
        ood: dict[str, Any] | None = None,
        ood_reference: dict[str, Any] | None = None,
    ):
        self.network = network
        self.classes = [str(c) for c in classes]
        self.data_config = data_config
        self.modality = modality
        self.mode = mode
        self.head = head
        self.info = dict(info or {})
        self.device = device
        self.backend = backend
        self.preprocessor = modality_of(modality).preprocessor(data_config)
        self._engine = engine
        self.temperature = float(temperature)
        self.drift_reference = drift_reference
        self.conformal = dict(conformal) if conformal else None
        self.ood = dict(ood) if ood and ood_reference else None
        self.ood_reference = dict(ood_reference) if ood and ood_reference else None
        self.last_items_per_second: float | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def model_name(self) -> str:
        return self.network.model_spec["name"]

    @property
    def engine(self):
        """The inference engine, built on first use."""
        if self._engine is None:
            self._engine = make_engine(self.network, self.preprocessor.item_shape, self.backend, self.device)
        return self._engine

    def use_backend(self, backend: str, onnx_path: str | Path | None = None,
                    precision: str = "fp32") -> Predictor:
        """Switch the inference backend (``auto``, ``torch`` or ``onnx``, decided by
        :func:`~sigclass.inference.resolve_backend`); a saved model's ONNX graph is exported
        once to :func:`onnx_cache_path`. ``precision="int8"`` runs the quantized graph made by
        ``sigclass export --quantize int8`` on ONNX Runtime, if it passed its accuracy check.
        Returns ``self``."""
        if precision not in PRECISIONS:
            raise ConfigError(f"The 'precision' option takes 'fp32' or 'int8'. Got {precision!r}.")
        if precision == "int8":
            graph = _checked_int8_graph(self)
            if backend == "torch":
                raise ConfigError("--precision int8 runs on ONNX Runtime; drop --backend torch.")
            self.backend = "onnx"
            self._engine = make_engine(self.network, self.preprocessor.item_shape, "onnx", self.device,
                                       graph)
            return self
        resolved = resolve_backend(backend, self.device, self.network)
        if resolved == "onnx" and onnx_path is None:
            onnx_path = onnx_cache_path(self)
        self.backend = backend
        self._engine = make_engine(self.network, self.preprocessor.item_shape, resolved, self.device,
                                   onnx_path)
        return self

    def transform(self, inputs, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Network outputs (logits, or features for ``headless``) for ``inputs``, batch by batch."""
        items = self.preprocessor.as_list(inputs)
        outputs = []
        start = time.perf_counter()
        batches = prefetched(self.preprocessor, [items[b:b + batch_size] for b in range(0, len(items), batch_size)])
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="predict", unit="batch", leave=False,
                           total=-(-len(items) // batch_size))
        for _, batch in batches:  # the next batch is read while the network runs this one
            outputs.append(infer(self.engine, batch, self.preprocessor.views))
        elapsed = time.perf_counter() - start
        self.last_items_per_second = len(items) / elapsed if elapsed > 0 and items else None
        if not outputs:
            return np.zeros((0, self.n_classes), dtype=np.float32)
        return np.concatenate(outputs)

    def probabilities_from_outputs(self, outputs: np.ndarray) -> np.ndarray:
        """Class probabilities from network outputs (softmax of the logits divided by the
        temperature, or the head's)."""
        if self.head is not None:
            proba = self.head.predict_proba(outputs)
            order = [list(self.head.classes_).index(c) for c in self.classes]
            return np.asarray(proba, dtype=np.float64)[:, order]
        logits = outputs.astype(np.float64) / self.temperature
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict_proba(self, inputs, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Probabilities, one row per input, columns in :attr:`classes` order."""
        return self.probabilities_from_outputs(self.transform(inputs, batch_size, progress))

    def predict(self, inputs, batch_size: int = 64, progress: bool = False,
                reject_unknown: bool = False) -> np.ndarray:
        """Predicted class names, one per input; with ``reject_unknown``, ``None`` for the
        inputs the model's OOD score calls unknown (see :meth:`score` for the scores)."""
        if not reject_unknown:
            proba = self.predict_proba(inputs, batch_size, progress)
            return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        require_ood(self)
        proba, ood = self.proba_and_ood(inputs, batch_size, progress)
        labels = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        labels[self.unknown(ood)] = None
        return labels

    def prediction_sets(self, proba: np.ndarray) -> list[list[str]] | None:
        """The conformal prediction set of every row of ``proba`` (class names, most probable
        first), each holding the true class with probability ``conformal["coverage"]``; ``None``
        for a model saved without a threshold."""
        if self.conformal is None:
            return None
        from .evaluation.conformal import prediction_sets

        return prediction_sets(proba, self.classes, self.conformal.get("qhat"))

    def features(self, inputs, batch_size: int = 64) -> np.ndarray:
        """The pooled features of ``inputs``: a headless model's featurizer outputs, a network's
        pooled vector before its classifier (a PyTorch pass of its own, first view only)."""
        if self.head is not None:
            return self.transform(inputs, batch_size)
        items = self.preprocessor.as_list(inputs)
        rows = [pooled_features(self.network, self.preprocessor(items[b:b + batch_size]))
                for b in range(0, len(items), batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def ood_scores(self, features: np.ndarray) -> np.ndarray | None:
        """How far each row of pooled ``features`` is from the training data (larger: farther;
        see :mod:`sigclass.evaluation.ood`); ``None`` for a model saved without OOD data."""
        if self.ood is None:
            return None
        from .evaluation.ood import scores

        return scores(self.ood_reference, self.ood["method"], self.ood.get("k"), features)

    def batch_ood_scores(self, batch, outputs: np.ndarray) -> np.ndarray | None:
        """The OOD scores of a preprocessed ``batch`` whose network ``outputs`` are known (a
        headless model's outputs are its features; a network's are computed again)."""
        if self.ood is None:
            return None
        return self.ood_scores(outputs if self.head is not None else pooled_features(self.network, batch))

    def proba_and_ood(self, inputs, batch_size: int = 64,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and OOD scores (``None`` without OOD data) of ``inputs``."""
        outputs = self.transform(inputs, batch_size, progress)
        proba = self.probabilities_from_outputs(outputs)
        if self.ood is None:
            return proba, None
        features = outputs if self.head is not None else self.features(inputs, batch_size)
        return proba, self.ood_scores(features)

    def unknown(self, ood_scores: np.ndarray | None) -> np.ndarray | None:
        """Which scores lie above the model's OOD threshold."""
        if ood_scores is None or self.ood is None:
            return None
        return np.asarray(ood_scores) > self.ood["threshold"]

    def score(self, inputs, batch_size: int = 64, reject_unknown: bool = False) -> list[dict[str, Any]]:
        """One record per input, as the service answers: ``class`` (``None`` for an unknown
        input with ``reject_unknown``), ``confidence``, ``probabilities``, ``prediction_set``,
        ``ood_score`` and ``unknown`` (``None`` both for a model saved without OOD data)."""
        if reject_unknown:
            require_ood(self)
        proba, ood = self.proba_and_ood(inputs, batch_size)
        return score_records(self, proba, ood, reject_unknown)

    def save(self, path: str | Path) -> Path:
        """Save as a self-contained model folder (safetensors + JSON; see :mod:`sigclass.artifacts`)."""
        return save_predictor(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | None = "auto", backend: str = "torch") -> Predictor:
        """Load a model folder or run folder without executing code from it (an ensemble's
        folder loads with :func:`sigclass.load`)."""
        folder = find_model_dir(path)
        document = read_model_json(folder)
        if document.get("kind") == ENSEMBLE:
            raise ArtifactError(f"'{folder}' holds an ensemble of models; load it with sigclass.load.")
        return cls.from_folder(folder, document, device, backend)

    @classmethod
    def from_folder(cls, folder: Path, document: dict[str, Any], device: str | None = "auto",
                    backend: str = "torch") -> Predictor:
        """The predictor of a model folder whose checked ``model.json`` is ``document``."""
        if document.get("task", "classification") != "classification":
            raise ArtifactError(f"'{folder}' holds a {document['task']} model, not a classifier; "
                                "load it with sigclass.load(), which returns its predictor.")
        network, head = read_network_and_head(folder, document)
        info = dict(document.get("info", {}))
        # where it was loaded from, whatever the file says: the ONNX cache is keyed by it
        info["path"] = str(folder)
        return cls(network, document["classes"], document["data_config"],
                   modality=document["modality"], mode=document["mode"], head=head, info=info,
                   device=device, backend=backend, temperature=document.get("temperature", 1.0),
                   drift_reference=document.get("drift_reference"),
                   conformal=document.get("conformal"), ood=document.get("ood"),
                   ood_reference=read_ood_reference(folder, document, _feature_width(network, head)))

    def __repr__(self) -> str:
        return (f"Predictor(model={self.model_name!r}, mode={self.mode!r}, modality={self.modality!r}, "
                f"classes={self.classes})")


def _feature_width(network, head) -> int | None:
    if head is not None:
        width = getattr(head, "n_features_in_", None)
        return int(width) if width is not None else None
    width = getattr(network, "num_features", None)
    return int(width) if isinstance(width, int) else None


def require_ood(predictor, where: str | None = None) -> None:
    """Refuse ``--reject-unknown`` for a model saved without out-of-distribution data."""
    if getattr(predictor, "ood", None) is None:
        where = where or predictor.info.get("path") or "this model"
        kind = "an ensemble" if getattr(predictor, "members", None) else "a model saved without OOD data"
        raise ConfigError(f"--reject-unknown needs the out-of-distribution data of the model, but "
                          f"'{where}' is {kind} (no 'ood' in its model.json). Retrain it with this "
                          "sigclass version (`sigclass train ...`, which fits it by default), or "
                          "drop --reject-unknown.")
