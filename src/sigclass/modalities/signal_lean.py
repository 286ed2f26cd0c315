"""The lean part of signals: uploads read and described, and a bundle's preprocessing (the
training-side checks and standardization of :mod:`sigclass.data.signal_preprocess`, which need
NumPy only), without PyTorch (:class:`~sigclass.modalities.base.LeanModality`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.signal_layout import case_from_csv, case_from_json
from ..data.signal_preprocess import SignalPreprocessor, as_case
from ..data.signal_windows import trim_trailing_nan
from ..exceptions import DataError
from .base import LeanModality
from .resize import resize_1d
from .uploads import as_limits, check_csv_cells, check_signal_values, find_bad_number


class SignalInputs(SignalPreprocessor):
    """Signal cases as one standardized float32 ``(N, C, T)`` batch: the training-side checks
    (channels, NaN, length policy) and standardization, without PyTorch (the ``inputs`` of
    :class:`~sigclass.modalities.base.LeanModality`)."""

    per_channel = True

    def __call__(self, items: list, names: list[str] | None = None) -> np.ndarray:
        return self.batch(items, names)

    def cam_input(self, item) -> tuple[np.ndarray, int, None]:
        """One case's batch ``(1, C, T)`` and its own length (no picture)."""
        return self([item]), int(trim_trailing_nan(as_case(item)).shape[1]), None

    def place_map(self, raw: np.ndarray, length: int) -> np.ndarray:
        """A map over the model's time steps stretched back onto the case's ``length`` (zero
        past the model's length), as the toolkit places it."""
        model_length = int(self.data_config["n_timepoints"])
        stretched = resize_1d(raw, model_length)
        if length <= model_length:
            return stretched[:length]
        return np.concatenate([stretched, np.zeros(length - model_length, dtype=np.float32)])


class LeanSignal(LeanModality):
    """Signal uploads: a JSON array ``[channel][time]`` or CSV (one column per channel)."""

    name = "signal"
    body_types = ("text/csv", "text/plain")
    json_inputs = True
    inputs = SignalInputs

    def upload_hint(self, field: str) -> str:
        return "a JSON array [channel][time] or CSV"

    def decode_upload(self, upload, data_config, limits):
        """A ``(C, T)`` case of a JSON value or CSV bytes; numbers too long to parse or too large
        for float32, and oversized CSV cells, are refused with their place named."""
        limits = as_limits(limits)
        if upload.data is None:
            problem = find_bad_number(upload.value, upload.name, limits.max_number_chars)
            if problem:
                raise DataError(problem)
            case = case_from_json(upload.value, upload.name)
        else:
            check_csv_cells(upload.data, upload.name, limits)
            case = case_from_csv(upload.data, upload.name, data_config.get("channel_names"))
        check_signal_values(case, upload.name)
        return case

    def input_spec(self, predictor, max_pixels: int) -> dict[str, Any]:
        config = predictor.data_config
        n_channels, n_timepoints = predictor.preprocessor.item_shape
        names = config.get("channel_names")
        listed = f" ({', '.join(names)})" if names else ""
        return {"modality": self.name, "n_channels": n_channels, "n_timepoints": n_timepoints,
                "channel_names": names,
                "length_policy": config.get("length_policy", "error"),
                "content_types": ["application/json (array [channel][time])",
                                  "multipart/form-data (field 'file', CSV: one column per channel)",
                                  "text/csv"],
                "accept": ".csv,text/csv",
                "description": f"A CSV file: {n_channels} column(s){listed}, {n_timepoints} rows "
                               "(one per time point)."}
