"""The one layout of signal input, wherever it comes from: files, HTTP or an MLflow pyfunc model.

- One case is ``[channel][time]``: a ``(C, T)`` array, a JSON array of channels (``[time]`` for
  one channel; ``null`` is a missing value).
- A table holds one column per channel and one row per time point. A header naming the model's
  channels puts the columns in the model's order; without one, the columns are the channels in
  order. A table of several cases adds a case id column (``case_id``) and, in files, ``time``
  and ``label`` columns: the long tables of :mod:`sigclass.data.signal_readers`.
- A table may instead hold one row per case with the values channel by channel (channel 0's time
  points first): the wide tables of signal files and the rows of a pyfunc DataFrame.

The service (:mod:`sigclass.serve`), the pyfunc model (:mod:`sigclass.tracking.pyfunc`) and the
file readers decode through these functions, so a case means the same thing everywhere.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from ..exceptions import DataError, Problem

CASE_COLUMN = "case_id"


def case_from_json(value: Any, name: str) -> np.ndarray:
    """A ``(C, T)`` or ``(T,)`` float array from a JSON value (``null`` counts as missing)."""
    if isinstance(value, dict):
        value = value.get("signal", value.get("data"))
    if not isinstance(value, list) or not value:
        raise DataError(Problem(name, "must be a non-empty JSON array of numbers [time] or of "
                                "arrays [channel][time]"))
    nested = [isinstance(v, list) for v in value]
    if any(nested) and not all(nested):
        raise DataError(Problem(name, "mixes numbers and arrays; send [channel][time] arrays"))
    rows = value if all(nested) else [value]
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise DataError(Problem(name, f"has channels of different lengths {sorted(lengths)}; every "
                                "channel needs one value per time point"))
    flat = [v for row in rows for v in row]
    bad = next((v for v in flat if v is not None and (isinstance(v, bool)
                                                     or not isinstance(v, int | float))), None)
    if bad is not None:
        raise DataError(Problem(name, f"holds a non-number value {bad!r}; send numbers only"))
    array = np.array([[math.nan if v is None else float(v) for v in row] for row in rows],
                     dtype=np.float64)
    return array if all(nested) else array[0]


def case_from_csv(data: bytes | None, name: str, channel_names: list[str] | None) -> np.ndarray:
    """A ``(C, T)`` array from CSV text: one column per channel, an optional header row."""
    if not data:
        raise DataError(Problem(name, "is empty; send CSV with one column per channel"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(Problem(name, "is not UTF-8 text; send CSV with one column per channel")) from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as exc:  # a cell over the csv module's size limit, a NUL byte, ...
        raise DataError(Problem(name, f"is not valid CSV ({exc}); send one column per channel")) from None
    if not rows:
        raise DataError(Problem(name, "holds no rows; send CSV with one column per channel"))
    header = None
    if not _numeric(rows[0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    if not rows:
        raise DataError(Problem(name, "has a header but no values"))
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise DataError(Problem(name, f"has rows with different numbers of columns {sorted(widths)}"))
    try:
        columns = np.array([[_number(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise DataError(Problem(name, f"{exc}; send numbers only (empty cells count as missing)")) from None
    return case_from_columns(columns, header, channel_names)


def case_from_columns(columns: np.ndarray, header: list[str] | None,
                      channel_names: list[str] | None) -> np.ndarray:
    """The ``(C, T)`` case of a ``(T, columns)`` table; a header naming every channel of the
    model picks and orders the columns."""
    order = channel_order(header, channel_names)
    case = np.asarray(columns, dtype=np.float64).T
    return np.ascontiguousarray(case if order is None else case[order])


def channel_order(header: list[str] | None, channel_names: list[str] | None) -> list[int] | None:
    """Positions of the model's channels in ``header``, or ``None`` when the header does not name
    them all (the columns are then the channels in order)."""
    if not header or not channel_names or not set(channel_names) <= set(header):
        return None
    return [list(header).index(c) for c in channel_names]


def cases_from_frame(frame, n_channels: int, n_timepoints: int,
                     channel_names: list[str] | None) -> list[np.ndarray] | np.ndarray:
    """The cases of a DataFrame (an MLflow pyfunc input).

    A frame whose columns name every channel of the model is a long table: one case, or one per
    value of its ``case_id`` column (rows in order). Otherwise each row is one case, its numeric
    columns the values channel by channel.
    """
    header = [str(c) for c in frame.columns]
    order = channel_order(header, channel_names)
    if order is not None:
        columns = [header[i] for i in order]
        if CASE_COLUMN not in frame.columns:
            return [case_from_columns(frame[columns].to_numpy(dtype=np.float64), None, None)]
        return [case_from_columns(group[columns].to_numpy(dtype=np.float64), None, None)
                for _, group in frame.groupby(CASE_COLUMN, sort=False)]
    values = frame.select_dtypes("number").to_numpy(dtype=np.float32)
    return split_channels(values, n_channels, n_timepoints)


def split_channels(values: np.ndarray, n_channels: int, n_timepoints: int | None = None) -> np.ndarray:
    """Rows of values channel by channel as ``(n, C, T)`` cases."""
    width = values.shape[1]
    if width % n_channels:
        expected = f"{n_channels} x {n_timepoints}" if n_timepoints else f"a multiple of {n_channels}"
        raise DataError(Problem("input", f"{width} numeric columns cannot hold {n_channels} "
                                f"channel(s) of equal length; the model takes {expected} values "
                                "per row"))
    return values.reshape(len(values), n_channels, -1)


def _numeric(row: list[str]) -> bool:
    try:
        [_number(cell) for cell in row]
    except ValueError:
        return False
    return True


def _number(cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in ("nan", "na", "null"):
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"holds the non-number value {cell[:40]!r}") from None
