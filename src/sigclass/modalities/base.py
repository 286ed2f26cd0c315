"""The Modality contract: everything that differs between kinds of input, behind one protocol.

Images and signals take the same road (split, trainer, evaluation, maps, saved model, service);
what differs is how a source becomes a dataset, how an input becomes a tensor, which featurizer
headless mode uses, how an upload or a table row is decoded and how a map is drawn. A
:class:`Modality` answers those questions, and the rest of sigclass asks
:func:`~sigclass.modalities.modality_of` instead of comparing strings. A new kind of input (audio)
or a new task (detection: the same methods, with boxes as targets and outlines as pictures) is
one new subclass registered in :mod:`sigclass.modalities`. Its torch-free part (how an upload is
decoded and described, and a bundle's NumPy preprocessing) is a :class:`LeanModality` the
:class:`Modality` subclasses, so the lean serving runtime reads uploads with the same code.

A modality also supplies objects that carry the per-item work: its dataset class (ids, labels,
subsets, tensors for training, near-duplicate vectors) and its preprocessor (``as_list``,
``__call__(items, names)``, ``item_shape``, ``views``, ``prepare`` and ``to_input``, which puts
a map computed on the model input back on the original input).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import Entry, RunConfig
from ..data.file_checks import DEFAULT_MAX_FILE_MB
from ..exceptions import ConfigError
from ..training.schedule import Budget


@dataclass(frozen=True)
class UploadLimits:
    """What one uploaded input may cost before it is decoded (the service's guards).

    Attributes:
        max_pixels: Images over this many pixels are refused from their header.
        max_aspect_ratio: Images whose long side exceeds this many times the short one are
            refused: resizing the short side to the network's input would blow the long one up
            (a 1x4000 PNG of 92 bytes becomes 256x1,024,000 pixels).
        max_number_chars: Longest number, in characters, a JSON value or CSV cell may spell.
        max_csv_cell_chars: Longest CSV cell (a header name included).
    """

    max_pixels: int = 40_000_000
    max_aspect_ratio: float = 20.0
    max_number_chars: int = 64
    max_csv_cell_chars: int = 256


class LeanModality(ABC):
    """The part of a modality the lean serving runtime (:mod:`sigclass.runtime`) needs, without
    PyTorch: how an upload is read and described, and the NumPy preprocessing of a bundle.

    Each modality's lean part is a subclass in a torch-free module of its own
    (:mod:`~sigclass.modalities.image_lean`, :mod:`~sigclass.modalities.signal_lean`),
    registered in :data:`sigclass.modalities.LEAN`; its :class:`Modality` subclasses it, so the
    service reads uploads the same way whether it runs a model folder or a bundle.

    Attributes:
        name: ``"image"``, ``"signal"``: the ``modality`` of datasets, configs and models.
        body_types: Content types the service takes as a raw request body (a prefix ending in
            ``/`` matches a family, e.g. ``image/``).
        json_inputs: The service takes inputs as JSON values.
        inputs: The bundle's preprocessing, built from a model's ``data_config``: ``__call__``
            (a float32 batch), ``item_shape``, ``views``, ``as_list``, ``cam_input`` and
            ``place_map`` (an explanation's input and where its map lands), ``per_channel``
            (whether an explanation weighs channels).
    """

    name: ClassVar[str]
    body_types: ClassVar[tuple[str, ...]] = ()
    json_inputs: ClassVar[bool] = False
    inputs: ClassVar[type]

    @abstractmethod
    def decode_upload(self, upload, data_config: dict[str, Any], limits: UploadLimits | int):
        """One service input (its ``name``, raw ``data`` or parsed JSON ``value``) as a model
        input, or a :class:`~sigclass.exceptions.DataError` naming what is wrong. ``limits``
        (an int: the pixel limit alone) bounds what the input may cost to decode."""

    def reduce_for_explanation(self, item, max_pixels: int):
        """``item`` small enough to explain at once (a map over it has one value per pixel or
        time point); by default the item itself."""
        return item

    @abstractmethod
    def input_spec(self, predictor, max_pixels: int) -> dict[str, Any]:
        """What the model (a predictor or a bundle) takes and how to send it, for the service's
        ``/metadata``: at least ``modality``, ``content_types``, ``accept`` (the file types the
        quick-test page offers) and ``description`` (one sentence the page shows)."""

    @abstractmethod
    def upload_hint(self, field: str) -> str:
        """How to send one input to the service (form ``field``), for its error messages."""

    def accepts_body(self, content_type: str) -> bool:
        """Whether the service takes a raw request body of ``content_type`` as one input."""
        return any(content_type.startswith(t) if t.endswith("/") else content_type == t
                   for t in self.body_types)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Modality(LeanModality):
    """One kind of input. Subclasses set the class attributes and implement the methods; the
    upload methods and :attr:`name`, :attr:`body_types`, :attr:`json_inputs` come from its
    :class:`LeanModality`.

    Attributes:
        modes: The training modes that work on this input.
        default_models: The network (or featurizer) of each mode when none is named.
        map_ndim: Dimensions of a class activation map over one input (2: rows and columns of an
            image, 1: the timepoints of a signal).
        explains_channels: Explanations also rate each input channel (occlusion).
        tune_heads: The heads ``sigclass tune`` searches in headless mode.
        tunes_augmentation: ``sigclass tune`` searches the strength of the training augmentation.
        budget: Optimisation steps and minutes that ``epochs="auto"`` spends on its networks.
    """

    modes: ClassVar[tuple[str, ...]]
    default_models: ClassVar[Mapping[str, str]]
    budget: ClassVar[Budget]
    map_ndim: ClassVar[int]
    explains_channels: ClassVar[bool] = False
    tune_heads: ClassVar[tuple[str, ...]]
    tunes_augmentation: ClassVar[bool] = False

    # -- data ------------------------------------------------------------------------------------

    @abstractmethod
    def claims(self, source: str) -> bool:
        """Whether ``source`` (a path or a named dataset) holds this kind of input."""

    @abstractmethod
    def load(self, source, root=None, on_bad_file: str = "error", min_per_class: int = 1,
             options=None, *, max_file_mb: float = DEFAULT_MAX_FILE_MB,
             follow_symlinks: bool = False):
        """The checked dataset of ``source``; ``options`` are reading options (signals).
        Only regular files of at most ``max_file_mb`` are read, and no symbolic link leaving
        the dataset root unless ``follow_symlinks`` (:mod:`sigclass.data.file_checks`)."""

    @abstractmethod
    def merge_parts(self, parts: dict[str, Any], sources: dict[str, str], where: str):
        """One dataset of parts given apart (``--val-dir``, ``--test-dir``), kept as a split."""

    @abstractmethod
    def read_files(self, files, data_config: dict[str, Any]) -> dict[str, Any]:
        """Unlabeled inputs of files for batch scoring and maps: ``{name: input}``; an input that
        cannot be read maps to its :class:`~sigclass.exceptions.DataError`."""

    # -- networks and training -------------------------------------------------------------------

    def check_mode(self, mode: str, model: str | None) -> None:
        """Refuse a mode (or a mode and network) that cannot work on this input, saying what to
        use instead."""
        if mode not in self.modes:
            raise ConfigError(f"Mode '{mode}' does not apply to {self.name} data; use one of "
                              f"{', '.join(repr(m) for m in self.modes)}.")

    def default_model(self, mode: str) -> str:
        return self.default_models[mode]

    @abstractmethod
    def preprocessor(self, data_config: dict[str, Any]):
        """The preprocessor a model's data config describes."""

    @abstractmethod
    def network(self, cfg: RunConfig, dataset, train_indices) -> tuple[Any, dict[str, Any]]:
        """The network of a ``finetune``/``scratch`` run and the data config stored with it."""

    def fit_to_budget(self, cfg: RunConfig, network, data_config: dict[str, Any],
                      n_train: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The data config to train with when the time budget asks for a smaller input, and
        what to record about it; by default the data config unchanged."""
        return data_config, {}

    @abstractmethod
    def training_set(self, dataset, data_config: dict[str, Any], cfg: RunConfig):
        """The torch dataset a network trains on, with the run's augmentation."""

    @abstractmethod
    def featurizer(self, cfg: RunConfig, progress: bool = False):
        """The unfitted featurizer of a headless run."""

    @abstractmethod
    def fit_featurizer(self, featurizer, part):
        """``featurizer`` fitted on the training part ``part`` (a dataset); returns it."""

    def featurizer_summary(self, featurizer) -> dict[str, Any]:
        """What the fitted featurizer chose, for the run summary."""
        return {}

    @abstractmethod
    def default_entries(self) -> list[Entry]:
        """The contestants of ``sigclass compare`` when none are given."""

    def augment_overrides(self, strength: float) -> dict[str, Any]:
        """Config overrides of a training augmentation of ``strength`` in [0, 1] (``sigclass
        tune``, where :attr:`tunes_augmentation`)."""
        return {}

    # -- updating a headless model (``sigclass update``) ------------------------------------------

    @abstractmethod
    def saved_featurizer(self, predictor, cfg: RunConfig, progress: bool = False):
        """The fitted featurizer of the saved headless model ``predictor`` (its frozen network
        and preprocessing, as training left them), whose features its head takes."""

    @abstractmethod
    def join(self, base, added, prefix: str, where: str):
        """The items of ``base`` and those of ``added`` (their ids prefixed by ``prefix``) as one
        dataset whose ids of ``base`` are unchanged; data ``added`` that does not fit the model
        trained on ``base`` (another shape) is refused, naming ``where``."""

    # -- the label audit -------------------------------------------------------------------------

    @abstractmethod
    def audit_features(self, dataset, model: str, cache_dir=None):
        """Frozen features of every item, for the out-of-fold probabilities of the audit."""

    @abstractmethod
    def audit_feature_name(self, model: str) -> str:
        """The name of those features (``model``, or the fixed featurizer used instead)."""

    @abstractmethod
    def item_paths(self, dataset) -> list[str]:
        """Where each item is: its file, or its id where items are not files."""

    @abstractmethod
    def thumbnail(self, dataset, index: int, draw: bool = True):
        """A picture of one item: the path of an image file, or PNG bytes (``None`` when it
        would have to be drawn and ``draw`` is off)."""

    # -- inputs at prediction time ---------------------------------------------------------------

    @abstractmethod
    def decode_frame(self, frame, predictor) -> Any:
        """The rows of a DataFrame (an MLflow pyfunc input) as model inputs."""

    # -- explanations ----------------------------------------------------------------------------

    @abstractmethod
    def render(self, explanation, item, alpha: float = 0.45, classes: list[str] | None = None,
               channel_names: list[str] | None = None) -> bytes:
        """A PNG of ``explanation`` over its input ``item``."""
