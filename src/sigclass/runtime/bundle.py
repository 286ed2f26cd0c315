"""A serving bundle read and run without PyTorch: ONNX Runtime, NumPy and Pillow only.

A bundle is a folder written by ``sigclass export MODEL --format bundle -o DIR``:

- ``bundle.json``: the manifest, with the SHA-256 of every other file (checked before any is used);
- ``model.json``: the model's description (classes, preprocessing, temperature, conformal
  threshold, drift reference), validated by the same schema as a model folder's;
- ``model.onnx``: the network (preprocessed input to logits, or to features for a head);
- ``head.json`` (headless models): the scikit-learn head as coefficients;
- ``cam.json`` (networks with global average pooling + a linear head, or a linear sklearn head):
  the class weights over the last feature map, which the graph gives as its second output, so
  class activation maps are computed in NumPy (:mod:`sigclass.runtime.cam`);
- ``ood.safetensors`` (models fitted with an out-of-distribution score): the score's reference
  tensors, as in the model folder; the graph of a network that outputs logits then also gives its
  pooled features (``pooled_features``), so the score (:mod:`sigclass.evaluation.ood`, NumPy)
  and ``unknown`` are those of the model folder.

Nothing in a bundle is pickled, and nothing in it is executed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, StringConstraints, ValidationError

from .._utils import prefetched
from ..data.views import apply_view
from ..evaluation.conformal import prediction_sets
from ..evaluation.ood import score_records, scores
from ..exceptions import ArtifactError, ConfigError
from ..modalities import lean_modality
from ..model_schema import DATA_CONFIGS, ModelDocument, fail, read_document
from ..model_schema.fields import MODEL_JSON, StrictModel
from ..model_schema.ood_reference import read_ood_tensors
from .cam import read_cam
from .heads import LinearHead

__all__ = ["BUNDLE_FORMAT", "BUNDLE_JSON", "Bundle", "BundleManifest", "file_sha256", "is_bundle"]

BUNDLE_JSON = "bundle.json"
BUNDLE_FORMAT = "sigclass-bundle"
BUNDLE_VERSION = 2  # 2: the OOD reference (``ood``) and the ``pooled_features`` output
EXPORT_AGAIN = "export the bundle again with `sigclass export MODEL --format bundle -o DIR`"
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class BundleManifest(StrictModel):
    """``bundle.json``: what the bundle holds and the checksum of every file."""

    format: Literal["sigclass-bundle"]
    format_version: int = Field(ge=1, le=BUNDLE_VERSION)
    graph: FileName
    head: FileName | None = None
    cam: FileName | None = None
    ood: FileName | None = None
    outputs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(min_length=1, max_length=4)
    files: dict[FileName, Sha256] = Field(min_length=2, max_length=16)
    info: dict[str, Any] = Field(default_factory=dict)


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a bundle folder (it holds ``bundle.json``)."""
    return (Path(path) / BUNDLE_JSON).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _validated(schema, value: Any, where: Path, prefix: str = "") -> Any:
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        problems = [f"field '{prefix}{'.'.join(str(p) for p in e['loc']) or '(document)'}': "
                    f"{e['msg']}" for e in exc.errors()[:10]]
        raise fail(where, problems, EXPORT_AGAIN) from None


class Bundle:
    """A bundle folder, checked and loaded: it preprocesses inputs, runs the graph on ONNX
    Runtime and returns probabilities in :attr:`classes` order, as :class:`sigclass.Predictor`.

    Args:
        folder: The bundle folder.
        threads: ONNX Runtime's intra-op threads (default: the CPU count).

    Raises:
        ArtifactError: A file is missing, its checksum differs from ``bundle.json``, or a
            description does not validate.
    """

    def __init__(self, folder: str | Path, threads: int | None = None):
        self.folder = Path(folder)
        if not is_bundle(self.folder):
            raise ArtifactError(f"'{self.folder}' is not a serving bundle (no {BUNDLE_JSON}); "
                                f"fix: {EXPORT_AGAIN}.")
        where = self.folder / BUNDLE_JSON
        self.manifest = _validated(BundleManifest, read_document(where), where)
        self.verify()
        document = read_document(self.folder / MODEL_JSON)
        self.document = _validated(ModelDocument, document, self.folder / MODEL_JSON)
        _validated(DATA_CONFIGS[self.document.modality], self.document.data_config, self.folder / MODEL_JSON, "data_config.")
        self.classes = list(self.document.classes)
        self.modality = self.document.modality
        self.mode = self.document.mode
        self.data_config = document["data_config"]
        self.temperature = float(self.document.temperature)
        self.conformal = document.get("conformal")
        self.drift_reference = document.get("drift_reference")
        self.info = {**document.get("info", {}), "path": str(self.folder)}
        self.preprocessor = lean_modality(self.modality).inputs(self.data_config)
        self.head = (LinearHead.read(self.folder / self.manifest.head, self.classes)
                     if self.manifest.head else None)
        if self.mode == "headless" and self.head is None:
            raise fail(where, ["field 'head': a headless model's bundle needs its head, got null"],
                       EXPORT_AGAIN)
        self.cam = (read_cam(self.folder / self.manifest.cam, len(self.classes))
                    if self.manifest.cam else None)
        self.session = _session(self.folder / self.manifest.graph, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.ood, self.ood_reference, self._features_output = None, None, None
        if self.manifest.ood:
            self._read_ood(document, where)

    def _read_ood(self, document: dict[str, Any], where: Path) -> None:
        """The OOD score's spec and reference tensors; a network's graph must output its pooled
        features (a headless model's outputs are its features)."""
        spec, outputs = document.get("ood"), self.manifest.outputs
        problems = []
        if not spec:
            problems.append(f"field 'ood': the manifest lists '{self.manifest.ood}', model.json has "
                            "no 'ood' field")
        if self.head is None and "pooled_features" not in outputs:
            problems.append("field 'outputs': the OOD score needs the network's pooled features, "
                            f"the graph outputs {outputs}")
        if len(self.session.get_outputs()) != len(outputs):
            problems.append(f"field 'outputs': {len(outputs)} listed, the graph has "
                            f"{len(self.session.get_outputs())}")
        if problems:
            raise fail(where, problems, EXPORT_AGAIN)
        width = int(self.head.coef.shape[1]) if self.head is not None else None
        self.ood_reference = read_ood_tensors(self.folder / self.manifest.ood, spec, self.n_classes,
                                              width, EXPORT_AGAIN)
        self.ood = dict(spec)
        if self.head is None:
            self._features_output = outputs.index("pooled_features")

    @property
    def model_name(self) -> str:
        return self.document.network.name

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def verify(self) -> None:
        """Check every listed file against its SHA-256 in ``bundle.json``; all problems in one
        :class:`ArtifactError`."""
        manifest, problems = self.manifest, []
        needed = [MODEL_JSON, manifest.graph] + [n for n in (manifest.head, manifest.cam, manifest.ood) if n]
        problems += [f"field 'files': '{name}' is not listed (no checksum to verify it by)"
                     for name in needed if name not in manifest.files]
        for name, expected in manifest.files.items():
            path = self.folder / name
            if not path.is_file() or path.is_symlink():
                problems.append(f"field 'files': '{name}' is missing from the bundle folder")
                continue
            got = file_sha256(path)
            if got != expected:
                problems.append(f"field 'files': checksum mismatch for '{name}' (its SHA-256 is "
                                f"{got[:12]}..., the manifest lists {expected[:12]}...): the file "
                                "was modified or damaged")
        if problems:
            raise fail(self.folder / BUNDLE_JSON, problems, EXPORT_AGAIN)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The graph's first output (logits or features) on a preprocessed batch, averaged over
        the test-time views."""
        return self.forward(batch)[0]

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The graph's first output averaged over the test-time views, and the pooled features
        the OOD score is computed on (``None`` without one): a headless model's averaged outputs,
        a network's ``pooled_features`` of the plain view (as :meth:`sigclass.Predictor.features`)."""
        views = self.preprocessor.views
        out, features = None, None
        for view in views:
            x = batch if view == "id" else apply_view(batch, view)
            results = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
            out = results[0] if out is None else out + results[0]
            if view == "id" and self._features_output is not None:
                features = results[self._features_output]
        out = out / float(len(views)) if len(views) > 1 else out
        return out, (out if self.ood is not None and self.head is not None else features)

    def probabilities_from_outputs(self, outputs: np.ndarray) -> np.ndarray:
        """Class probabilities: the head's, or the softmax of the logits over the temperature."""
        if self.head is not None:
            return self.head.predict_proba(outputs)
        logits = np.asarray(outputs, dtype=np.float64) / self.temperature
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def predict_proba(self, inputs, batch_size: int = 64) -> np.ndarray:
        """Probabilities of raw inputs (image files, bytes, PIL images, arrays; signal cases)."""
        items = self.preprocessor.as_list(inputs)
        rows = [self.probabilities_from_outputs(self.run(self.preprocessor(items[i:i + batch_size])))
                for i in range(0, len(items), batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, self.n_classes))

    def predict(self, inputs, batch_size: int = 64, reject_unknown: bool = False) -> np.ndarray:
        """Predicted class names; with ``reject_unknown``, ``None`` for the unknown inputs."""
        if not reject_unknown:
            proba = self.predict_proba(inputs, batch_size)
            return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        self.require_ood()
        proba, ood = self.proba_and_ood(inputs, batch_size)
        labels = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        labels[self.unknown(ood)] = None
        return labels

    def ood_scores(self, features: np.ndarray) -> np.ndarray | None:
        """How far each row of pooled ``features`` is from the training data (larger: farther;
        :mod:`sigclass.evaluation.ood`); ``None`` for a bundle without an OOD reference."""
        if self.ood is None or features is None:
            return None
        return scores(self.ood_reference, self.ood["method"], self.ood.get("k"), features)

    def proba_and_ood(self, inputs, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and OOD scores (``None`` without an OOD reference) of raw inputs."""
        items = self.preprocessor.as_list(inputs)
        proba, ood = [np.zeros((0, self.n_classes))], [np.zeros(0)]
        chunks = [items[begin:begin + batch_size] for begin in range(0, len(items), batch_size)]
        for _, batch in prefetched(self.preprocessor, chunks):  # reads the next while this one runs
            outputs, features = self.forward(batch)
            proba.append(self.probabilities_from_outputs(outputs))
            ood.append(self.ood_scores(features))
        return np.concatenate(proba), (None if self.ood is None else np.concatenate(ood))

    def unknown(self, ood_scores: np.ndarray | None) -> np.ndarray | None:
        """Which scores lie above the model's OOD threshold."""
        if ood_scores is None or self.ood is None:
            return None
        return np.asarray(ood_scores) > self.ood["threshold"]

    def score(self, inputs, batch_size: int = 64, reject_unknown: bool = False) -> list[dict[str, Any]]:
        """One record per input, as the service answers (as :meth:`sigclass.Predictor.score`):
        ``class``, ``confidence``, ``probabilities``, ``prediction_set``, ``ood_score``, ``unknown``."""
        if reject_unknown:
            self.require_ood()
        proba, ood = self.proba_and_ood(inputs, batch_size)
        return score_records(self, proba, ood, reject_unknown)

    def require_ood(self) -> None:
        """Refuse ``--reject-unknown`` for a bundle without an OOD reference."""
        if self.ood is None:
            raise ConfigError(f"--reject-unknown needs the out-of-distribution score of the model, "
                              f"but the bundle '{self.folder}' holds none (a model trained without "
                              "it, or a bundle exported by an older sigclass). Export the bundle "
                              "again from a model trained with this sigclass version, or drop "
                              "--reject-unknown.")

    def prediction_sets(self, proba: np.ndarray) -> list[list[str]] | None:
        """The conformal prediction sets of ``proba`` (``None`` without a stored threshold)."""
        if self.conformal is None:
            return None
        return prediction_sets(proba, self.classes, self.conformal.get("qhat"))

    def __repr__(self) -> str:
        return f"Bundle(model={self.model_name!r}, mode={self.mode!r}, classes={self.classes})"


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors, named by file
        raise ArtifactError(f"'{path}' cannot be loaded by ONNX Runtime ({' '.join(str(exc).split())[:300]}); "
                            f"fix: {EXPORT_AGAIN}.") from None
