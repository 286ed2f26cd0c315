"""A checked, labeled set of signal cases in one shape, ``(n_cases, n_channels, n_timepoints)``.

:func:`~sigclass.data.signals.load_signals` builds it from files; the counterpart of
:class:`~sigclass.data.images.ImageDataset` (the same protocol: ids, labels, subsets,
fingerprint, report, tensors for training).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._utils import sha256_bytes, sha256_json
from ..exceptions import ConfigError, DataError, Problem
from .additions import min_classes
from .leakage import DEFAULT_THRESHOLDS, ZNORM_RMS, signal_vectors
from .signal_augment import SignalAugmentConfig, SignalTensorDataset
from .signal_preprocess import standardize


@dataclass
class SignalDataset:
    """Checked, labeled cases of equal length.

    Attributes:
        X: Values, ``(n_cases, n_channels, n_timepoints)`` float32.
        label_values: Class name of every case.
        classes: Sorted class names.
        case_ids: Stable case ids (split files refer to them).
        channel_names: One name per channel.
        group_ids: Recording of every case (``None`` when cases are independent).
        source: Where the data came from.
        fixed_test: Ids of a predefined test part (kept by :func:`~sigclass.make_split`).
        skipped: Cases left out under ``on_bad_file="skip"``, with the reason.
        options: The reading options (:class:`~sigclass.config.SignalConfig` as a dict).
        summary: Windowing and length equalization figures for the report.
    """

    X: np.ndarray
    label_values: np.ndarray
    classes: list[str]
    case_ids: list[str]
    channel_names: list[str]
    group_ids: np.ndarray | None = None
    source: str = ""
    fixed_test: list[str] | None = None
    skipped: list[Problem] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    predefined: Any = None  # PredefinedParts of split files (see load_signals)

    modality = "signal"

    def __len__(self) -> int:
        return len(self.X)

    @property
    def ids(self) -> list[str]:
        return list(self.case_ids)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.label_values, dtype=object)

    @property
    def y(self) -> np.ndarray:
        """Class indices into :attr:`classes`."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[label] for label in self.label_values], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray | None:
        return self.group_ids

    @property
    def n_channels(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_timepoints(self) -> int:
        return int(self.X.shape[2])

    @property
    def content_hashes(self) -> list[str]:
        return [sha256_bytes(np.ascontiguousarray(case).tobytes()) for case in self.X]

    def model_inputs(self) -> np.ndarray:
        """What a predictor takes for these cases: the ``(n, C, T)`` array."""
        return self.X

    def to_torch(self, data_config: dict[str, Any], augment=None):
        """A torch dataset of (standardized ``(C, T)`` tensor, class index) pairs.

        Args:
            data_config: The model's preprocessing (:func:`signal_data_config`).
            augment: A :class:`~sigclass.data.signal_augment.SignalAugmentConfig` (training only).
        """
        if augment is not None and not isinstance(augment, SignalAugmentConfig):
            raise ConfigError(f"Signals are augmented with a SignalAugmentConfig (config key "
                              f"'signal_augment'), not a {type(augment).__name__}.")
        return SignalTensorDataset(standardize(self.X, data_config), self.y, augment)

    def subset(self, indices) -> SignalDataset:
        """The cases at ``indices``, keeping the full class list."""
        index = np.asarray(indices, dtype=np.int64)
        groups = None if self.group_ids is None else self.group_ids[index]
        return SignalDataset(self.X[index], self.label_values[index], self.classes,
                             [self.case_ids[i] for i in index], self.channel_names, groups,
                             self.source, self.fixed_test, self.skipped, self.options, self.summary)

    def similarity_vectors(self, method: str, threshold: float | None, features=None):
        """What :mod:`~sigclass.data.leakage` compares to find near-duplicates: ``(vectors,
        metric, radius)``; cases z-normalized per channel, linked below a root-mean-square
        difference of ``threshold`` (the image ``method`` does not apply)."""
        limit = DEFAULT_THRESHOLDS[ZNORM_RMS] if threshold is None else float(threshold)
        return signal_vectors(self.X), "euclidean", limit

    def similarity_method(self, method: str) -> str:
        """How near-duplicates were found, for the report: :data:`~sigclass.data.leakage.ZNORM_RMS`."""
        return ZNORM_RMS

    def fingerprint(self) -> str:
        """Hash of every (id, label, content hash): equal fingerprints mean equal data."""
        return sha256_json(sorted(zip(self.case_ids, map(str, self.label_values),
                                      self.content_hashes, strict=True)))

    def report(self) -> dict[str, Any]:
        """Counts per class, shape, windowing and every skipped case, for the run report."""
        return {
            "modality": self.modality, "source": self.source, "n_items": len(self),
            "n_channels": self.n_channels, "n_timepoints": self.n_timepoints,
            "channel_names": self.channel_names, "classes": self.classes,
            "class_counts": dict(Counter(map(str, self.label_values))),
            "n_groups": None if self.group_ids is None else len(set(self.group_ids.tolist())),
            "fixed_test": self.fixed_test is not None, "fingerprint": self.fingerprint(),
            **self.summary,
            "predefined_split": None if self.predefined is None else self.predefined.to_dict(),
            "skipped": [{"path": p.path, "reason": p.reason} for p in self.skipped],
            "ignored": [],
        }


def check_classes(labels: np.ndarray, min_per_class: int, source: str) -> None:
    counts = Counter(labels.tolist())
    small = [Problem(f"class '{label}'", f"{n} case(s), at least {min_per_class} needed for the "
                     "split; add cases, merge or remove the class, or lower --val-size/--test-size")
             for label, n in sorted(counts.items()) if n < min_per_class]
    if small:
        raise DataError(small)
    if len(counts) < min_classes():
        raise DataError(Problem(source, f"need at least {min_classes()} classes, found {sorted(counts)}"))
