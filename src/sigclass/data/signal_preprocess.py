"""Signal preprocessing, identical in training, evaluation and serving, and the way back from
the model input to the original signal (where a class activation map lies on it).

The *data config* of a signal model holds the input shape, the per-channel mean and standard
deviation (fitted on the training part only), the channel names and the reading options. It is
stored with the model as JSON; :class:`SignalPreprocessor` rebuilds the preprocessing from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import DataError, Problem
from .signal_windows import trim_trailing_nan

MIN_STD = 1e-8  # a constant channel is centred, not divided by ~0


def as_case(values) -> np.ndarray:
    """One case as a float ``(C, T)`` array; a 1D series becomes ``(1, T)``.

    This is the only place where univariate input is promoted.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim != 2:
        raise DataError(Problem("input", f"a case must have shape (n_channels, n_timepoints) or "
                                f"(n_timepoints,); got {array.shape}"))
    return array


def as_cases(X) -> np.ndarray:
    """Cases as one ``(n_cases, n_channels, n_timepoints)`` array: a signal dataset's, a 3D
    array, or a 2D array of one-channel cases (aeon's ``(n_cases, n_timepoints)``).

    This is the only place where a collection of univariate cases is promoted (one case is
    promoted by :func:`as_case`).
    """
    array = X.X if hasattr(X, "X") else np.asarray(X)
    if np.iscomplexobj(array):
        raise DataError(Problem("input", "cases hold complex numbers; signals are real-valued"))
    if not hasattr(X, "X"):
        array = array.astype(np.float32, copy=False)
    if array.ndim == 2:
        return array[:, None, :]
    if array.ndim != 3:
        raise DataError(Problem("input", f"cases must have shape (n_cases, n_channels, "
                                f"n_timepoints) or (n_cases, n_timepoints); got {array.shape}"))
    return array


def signal_data_config(dataset, train_indices) -> dict[str, Any]:
    """The preprocessing of a signal model, with statistics of the training cases only.

    Args:
        dataset: A :class:`~sigclass.data.signals.SignalDataset` (or an ``(n, C, T)`` array).
        train_indices: Positions of the training cases; mean and std come from them alone.

    Returns:
        A JSON-serializable dict: ``modality``, ``n_channels``, ``n_timepoints``,
        ``channel_names``, ``mean``, ``std`` (one per channel), ``length_policy`` and ``reader``
        (the reading options, so evaluation and prediction read files the same way).
    """
    values = dataset.X if hasattr(dataset, "X") else np.asarray(dataset)
    X = np.asarray(values[np.asarray(train_indices, dtype=np.int64)], dtype=np.float64)
    if X.ndim != 3 or X.size == 0:
        raise DataError(Problem(getattr(dataset, "source", "") or "input", "no training cases "
                                "(n_cases, n_channels, n_timepoints) to fit the standardization on"))
    mean = X.mean(axis=(0, 2))
    std = X.std(axis=(0, 2))
    std = np.where(std < MIN_STD, 1.0, std)
    options = dict(getattr(dataset, "options", None) or {})
    names = getattr(dataset, "channel_names", None) or [f"ch{i}" for i in range(X.shape[1])]
    return {
        "modality": "signal",
        "n_channels": int(X.shape[1]),
        "n_timepoints": int(X.shape[2]),
        "channel_names": [str(c) for c in names],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "length_policy": options.get("length_policy", "error"),
        "reader": options,
    }


def standardize(X: np.ndarray, data_config: dict[str, Any]) -> np.ndarray:
    """``(X - mean) / std`` per channel, as float32; ``X`` is ``(n, C, T)``."""
    mean = np.asarray(data_config["mean"], dtype=np.float64)[None, :, None]
    std = np.asarray(data_config["std"], dtype=np.float64)[None, :, None]
    return ((np.asarray(X, dtype=np.float64) - mean) / std).astype(np.float32)


class SignalPreprocessor:
    """Turns cases (arrays ``(C, T)``, ``(T,)`` for one channel, ``(N, C, T)``, or lists of them)
    into one standardized batch tensor ``(N, C, T)``, checking every case first.

    A wrong number of channels, a length the model cannot take, or NaN/infinite values raise one
    :class:`DataError` that names each bad input (the service maps it to HTTP 422).
    """

    modality = "signal"

    def __init__(self, data_config: dict[str, Any]):
        self.data_config = data_config

    @property
    def item_shape(self) -> tuple[int, ...]:
        return int(self.data_config["n_channels"]), int(self.data_config["n_timepoints"])

    @property
    def views(self) -> tuple[str, ...]:
        """The test-time views of a signal: the signal itself."""
        return ("id",)

    def as_list(self, inputs) -> list:
        """One case or many, as a list: a 3D array is a batch, a 1D or 2D array is one case, a
        list holds cases."""
        if hasattr(inputs, "detach"):  # a torch tensor
            inputs = inputs.detach().cpu().numpy()
        if isinstance(inputs, np.ndarray):
            return list(inputs) if inputs.ndim == 3 else [inputs]
        if isinstance(inputs, str | bytes):
            raise DataError(Problem("input", "a signal predictor takes arrays, not file names; "
                                    "read files with sigclass.load_dataset or `sigclass predict`"))
        return list(inputs)

    def check(self, item, name: str) -> tuple[np.ndarray | None, list[Problem]]:
        """One case fitted to the model's shape, or the problems that prevent it."""
        if isinstance(item, DataError):  # a case a reader could not parse (batch scoring)
            return None, item.problems
        try:
            case = as_case(item)
        except DataError as exc:
            return None, [Problem(name, exc.problems[0].reason)]
        except (TypeError, ValueError) as exc:
            return None, [Problem(name, f"cannot be read as numbers: {exc}")]
        n_channels, n_timepoints = self.item_shape
        if case.shape[0] != n_channels:
            names = ", ".join(self.data_config.get("channel_names", []))
            hint = " (several one-channel cases go in an (N, 1, T) array)" if n_channels == 1 else ""
            return None, [Problem(name, f"has {case.shape[0]} channel(s); the model expects "
                                  f"{n_channels} ({names}){hint}")]
        case = trim_trailing_nan(case)
        finite = np.isfinite(case)
        if not finite.all():
            channel, t = (int(v[0]) for v in np.nonzero(~finite))
            kind = "NaN" if np.isnan(case[channel, t]) else "an infinite value"
            return None, [Problem(name, f"contains {kind} at channel {channel} "
                                  f"('{self._channel(channel)}'), time {t}")]
        return self._fit_length(case, name)

    def _channel(self, index: int) -> str:
        names = self.data_config.get("channel_names") or []
        return names[index] if index < len(names) else str(index)

    def _fit_length(self, case: np.ndarray, name: str) -> tuple[np.ndarray | None, list[Problem]]:
        target = int(self.data_config["n_timepoints"])
        length = case.shape[1]
        policy = self.data_config.get("length_policy", "error")
        if length == target:
            return case, []
        if length > target and policy in ("pad", "truncate"):
            return case[:, :target], []
        if length < target and policy == "pad":
            return np.pad(case, ((0, 0), (0, target - length))), []
        return None, [Problem(name, f"has {length} timepoints; the model takes {target} "
                              f"(length policy '{policy}'); cut or pad the input to {target}")]

    def __call__(self, items: list, names: list[str] | None = None):
        import torch

        return torch.from_numpy(self.batch(items, names))

    def batch(self, items: list, names: list[str] | None = None) -> np.ndarray:
        """The checked, standardized cases as one float32 ``(N, C, T)`` array; every problem of
        every case in one :class:`DataError`."""
        cases, problems = [], []
        for index, item in enumerate(items):
            case, found = self.check(item, names[index] if names else f"input {index}")
            problems += found
            cases.append(case)
        if problems:
            raise DataError(problems)
        if not cases:
            return np.zeros((0, *self.item_shape), dtype=np.float32)
        return standardize(np.stack(cases), self.data_config)

    def prepare(self, items: list) -> tuple[Any, list[int]]:
        """The batch tensor of ``items`` and the length of every original signal."""
        return self(items), [int(trim_trailing_nan(as_case(item)).shape[1]) for item in items]

    def to_input(self, raw: np.ndarray, length: int) -> np.ndarray:
        """A map at the network's feature resolution stretched to the model input, then cut or
        padded with zeros (the part the model never saw) to the original ``length``."""
        import torch
        import torch.nn.functional as F

        model_length = int(self.data_config["n_timepoints"])
        stretched = F.interpolate(torch.as_tensor(raw, dtype=torch.float32)[None, None],
                                  size=model_length, mode="linear", align_corners=False)[0, 0].numpy()
        if length <= model_length:
            return stretched[:length]
        return np.concatenate([stretched, np.zeros(length - model_length, dtype=np.float32)])
