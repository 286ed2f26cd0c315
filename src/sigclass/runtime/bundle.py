"""A serving bundle read and run without PyTorch: ONNX Runtime, NumPy and Pillow only.

A bundle is a folder written by ``sigclass export MODEL --format bundle -o DIR``:

- ``bundle.json``: the manifest, with the SHA-256 of every other file (checked before any is used);
- ``model.json``: the model's description (classes, preprocessing, temperature, conformal
  threshold, drift reference), validated by the same schema as a model folder's;
- ``model.onnx``: the network (preprocessed input to logits, or to features for a head);
- ``head.json`` (headless models): the scikit-learn head as coefficients;
- ``cam.json`` (networks with global average pooling + a linear head, or a linear sklearn head):
  the class weights over the last feature map, which the graph gives as its second output, so
  class activation maps are computed in NumPy (:mod:`sigclass.runtime.cam`).

Nothing in a bundle is pickled, and nothing in it is executed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, StringConstraints, ValidationError

from ..data.views import apply_view
from ..evaluation.conformal import prediction_sets
from ..exceptions import ArtifactError
from ..model_schema import DATA_CONFIGS, ModelDocument, fail, read_document
from ..model_schema.fields import MODEL_JSON, StrictModel
from .cam import read_cam
from .heads import LinearHead
from .preprocess import inputs_for

__all__ = ["BUNDLE_FORMAT", "BUNDLE_JSON", "Bundle", "BundleManifest", "file_sha256", "is_bundle"]

BUNDLE_JSON = "bundle.json"
BUNDLE_FORMAT = "sigclass-bundle"
BUNDLE_VERSION = 1
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
        self.preprocessor = inputs_for(self.modality, self.data_config)
        self.head = (LinearHead.read(self.folder / self.manifest.head, self.classes)
                     if self.manifest.head else None)
        if self.mode == "headless" and self.head is None:
            raise fail(where, ["field 'head': a headless model's bundle needs its head, got null"],
                       EXPORT_AGAIN)
        self.cam = (read_cam(self.folder / self.manifest.cam, len(self.classes))
                    if self.manifest.cam else None)
        self.session = _session(self.folder / self.manifest.graph, threads)
        self.input_name = self.session.get_inputs()[0].name

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
        needed = [MODEL_JSON, manifest.graph] + [n for n in (manifest.head, manifest.cam) if n]
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
        views = self.preprocessor.views
        out = None
        for view in views:
            x = batch if view == "id" else apply_view(batch, view)
            result = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
            out = result if out is None else out + result
        return out / float(len(views)) if len(views) > 1 else out

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

    def predict(self, inputs, batch_size: int = 64) -> np.ndarray:
        proba = self.predict_proba(inputs, batch_size)
        return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]

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
