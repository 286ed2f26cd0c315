"""Readers of signal files into raw cases: NPZ, CSV/Parquet (wide and long), UCR/UEA ``.ts``,
and the datasets bundled with aeon.

A reader only parses: it returns :class:`RawSignals`, a list of ``(C, T_i)`` float arrays (NaN
where a cell is empty), their labels and ids, and the parsing problems it found (non-numeric
cells, labels that do not match the cases). Checking values, windowing and equalizing lengths
happen once for every format in :mod:`sigclass.data.signals`.

Formats:

- **NPZ**: ``X`` of shape ``(n_cases, n_channels, n_timepoints)`` or ``(n_cases, n_timepoints)``,
  ``y`` with one label per case (or one per timepoint, ``(n_cases, n_timepoints)``, for
  windowing), optional ``groups``, ``ids`` and ``channel_names``. Trailing NaN mark shorter cases.
- **Wide table** (one row per case): a label column, optional case-id and group columns, and value
  columns named ``<channel>_<index>`` (``acc_x_0 ... acc_x_99``) or ``<index>`` for one channel.
  Empty trailing cells mark shorter cases.
- **Long table** (one row per timepoint): case-id, time, one column per channel, label.

Both tables follow the signal layout of :mod:`sigclass.data.signal_layout`, shared with the
service and the MLflow pyfunc model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import DataError, Problem
from .file_checks import FileLimits, file_problem
from .signal_layout import case_from_columns, split_channels

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SIGNAL_SUFFIXES = (".npz", ".ts", *TABLE_SUFFIXES)
_COLUMN = re.compile(r"^(.*?)[_:]?(\d+)$")


@dataclass
class RawSignals:
    """Parsed cases before checking.

    Attributes:
        cases: One ``(C, T_i)`` float64 array per case; NaN where a value is missing.
        labels: One label per case (str), or one ``(T_i,)`` array of labels per case, or ``None``.
        ids: Stable case ids.
        channel_names: One name per channel.
        groups: Group (recording) of every case, or ``None``.
        problems: ``(case index or None, Problem)`` found while parsing.
        locate: ``locate(case, channel, t)`` names a value for messages (column, row).
        name: File or dataset name used in messages.
        fixed_test: Ids of a predefined test part (aeon datasets).
        times: Long tables: the sorted times of every case in seconds (for resampling).
    """

    cases: list[np.ndarray]
    labels: list[Any] | None
    ids: list[str]
    channel_names: list[str]
    groups: list[str] | None = None
    problems: list[tuple[int | None, Problem]] = field(default_factory=list)
    locate: Callable[[int, int, int], str] | None = None
    name: str = ""
    fixed_test: list[str] | None = None
    times: list[np.ndarray] | None = None

    def where(self, case: int, channel: int, t: int) -> str:
        if self.locate is not None:
            return self.locate(case, channel, t)
        return f"channel '{self.channel_names[channel]}', time {t}"

    def case_name(self, case: int) -> str:
        return f"{self.name} case '{self.ids[case]}'"


def read_signal_file(path: Path, options, require_labels: bool = True,
                     limits: FileLimits | None = None, root: Path | None = None) -> RawSignals:
    """Parse one NPZ, CSV, Parquet or ``.ts`` file: a regular file within ``limits`` (and,
    for a link, inside ``root``), checked before it is opened."""
    reason = file_problem(path, limits, root)
    if reason:
        raise DataError(Problem(str(path), reason))
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path, require_labels)
    if suffix == ".ts":
        return read_ts(path)
    if suffix in TABLE_SUFFIXES:
        return read_table(path, options, require_labels)
    raise DataError(Problem(str(path), f"unsupported signal file type '{suffix}'; use .npz, .csv, "
                            ".parquet or .ts, or a bundled dataset such as aeon:BasicMotions"))


# -- NPZ --------------------------------------------------------------------------------------


def read_npz(path: Path, require_labels: bool = True) -> RawSignals:
    """``X`` (and ``y``, ``groups``, ``ids``, ``channel_names``) from an ``.npz`` file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        reason = ("holds object arrays, which are not loaded (they could run code); save numbers "
                  "as float arrays and labels as strings" if "pickle" in str(exc) else str(exc))
        raise DataError(Problem(path.name, reason)) from None
    except (OSError, EOFError) as exc:
        raise DataError(Problem(path.name, f"not a readable .npz file ({exc})")) from None
    if "X" not in arrays:
        raise DataError(Problem(path.name, f"has no array 'X'; found {sorted(arrays)}. Save the "
                                "cases as X with shape (n_cases, n_channels, n_timepoints)"))
    X = arrays["X"]
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3:
        raise DataError(Problem(path.name, f"'X' must have shape (n_cases, n_channels, n_timepoints) "
                                f"or (n_cases, n_timepoints); got {X.shape}"))
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DataError(Problem(path.name, f"'X' must hold real numbers; got dtype {X.dtype}"))
    n = len(X)
    problems = []
    for key in ("y", "groups", "ids"):
        if key in arrays and len(arrays[key]) != n:
            what = {"y": "labels", "groups": "groups", "ids": "ids"}[key]
            problems.append(Problem(path.name, f"'{key}' holds {len(arrays[key])} {what} for {n} "
                                    "cases in 'X'; give one per case"))
    if require_labels and "y" not in arrays:
        problems.append(Problem(path.name, f"has no array 'y' of labels; found {sorted(arrays)}"))
    channels = [str(c) for c in arrays.get("channel_names", [])] or [f"ch{i}" for i in range(X.shape[1])]
    if len(channels) != X.shape[1]:
        problems.append(Problem(path.name, f"'channel_names' names {len(channels)} channels but "
                                f"'X' has {X.shape[1]}"))
    if problems:
        raise DataError(problems)
    ids = [str(i) for i in arrays["ids"]] if "ids" in arrays else [f"case-{i:05d}" for i in range(n)]
    labels = _npz_labels(arrays["y"], X.shape[2], path.name) if "y" in arrays else None
    groups = [str(g) for g in arrays["groups"]] if "groups" in arrays else None
    cases = [np.asarray(case, dtype=np.float64) for case in X]
    problems = repeated_ids(ids, path.name, lambda i: f"index {i} of 'ids'",
                            "give every case its own id")
    return RawSignals(cases, labels, ids, channels, groups, problems, name=path.name)


def _npz_labels(y: np.ndarray, n_timepoints: int, name: str) -> list:
    """One label per case, or (for windowing) one array of labels per case."""
    if y.ndim == 1:
        return [_label_text(v) for v in y]
    if y.ndim != 2 or y.shape[1] != n_timepoints:
        raise DataError(Problem(name, f"'y' has shape {y.shape} but 'X' has {n_timepoints} "
                                "timepoints; give one label per case or one per timepoint"))
    return [np.array([_label_text(v) for v in row], dtype=object) for row in y]


def _label_text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    return str(value)


# -- UCR/UEA .ts and aeon ---------------------------------------------------------------------


def read_ts(path: Path, name: str | None = None) -> RawSignals:
    """A UCR/UEA ``.ts`` file, read with aeon's loader."""
    from aeon.datasets import load_from_ts_file

    try:
        X, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise DataError(Problem(path.name, f"cannot be read as a .ts file: {exc}")) from None
    if not meta.get("classlabel", True):
        raise DataError(Problem(name or path.name, "is a regression dataset (numeric targets, no "
                                "class labels); sigclass classifies"))
    cases = [np.asarray(case, dtype=np.float64) for case in X]
    n_channels = cases[0].shape[0] if cases else 0
    ids = [f"case-{i:05d}" for i in range(len(cases))]
    return RawSignals(cases, [str(v) for v in y], ids, [f"ch{i}" for i in range(n_channels)],
                      name=name or path.name)


def bundled_aeon_datasets() -> list[str]:
    """Classification datasets shipped inside the aeon package (readable offline)."""
    folder = _aeon_data_dir()
    names = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        train, test = sub / f"{sub.name}_TRAIN.ts", sub / f"{sub.name}_TEST.ts"
        if train.is_file() and test.is_file() and _has_class_labels(train):
            names.append(sub.name)
    return names


def _has_class_labels(path: Path) -> bool:
    """Whether a .ts header declares class labels (regression files declare targets)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            lowered = line.strip().lower()
            if lowered.startswith("@classlabel"):
                return lowered.split()[1:2] == ["true"]
            if lowered.startswith("@data"):
                break
    return False


def _aeon_data_dir() -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def read_aeon(spec: str) -> RawSignals:
    """``aeon:NAME`` (train and test together, the test ids kept as ``fixed_test``) or
    ``aeon:NAME?split=random`` (the same cases, the split drawn by sigclass)."""
    name, _, query = spec.partition(":")[2].partition("?")
    options = dict(part.partition("=")[::2] for part in query.split("&") if part)
    unknown = sorted(set(options) - {"split"})
    split = options.get("split", "default")
    if unknown or split not in ("default", "random"):
        raise DataError(Problem(spec, "the only option is split: 'aeon:NAME' keeps the dataset's "
                                "train/test split, 'aeon:NAME?split=random' draws a new one"))
    folder = _aeon_data_dir() / name
    if name not in bundled_aeon_datasets():
        close = [n for n in bundled_aeon_datasets() if n.lower() == name.lower()]
        hint = f" Did you mean aeon:{close[0]}?" if close else ""
        raise DataError(Problem(spec, f"not a classification dataset bundled with aeon (readable "
                                f"offline).{hint} Bundled: {', '.join(bundled_aeon_datasets())}. "
                                "For other UCR/UEA data, pass the path of a downloaded .ts file"))
    parts = [read_ts(folder / f"{name}_{part}.ts", f"aeon:{name}") for part in ("TRAIN", "TEST")]
    train, test = parts
    ids = [f"train-{i:04d}" for i in range(len(train.cases))] + [f"test-{i:04d}" for i in range(len(test.cases))]
    raw = RawSignals(train.cases + test.cases, train.labels + test.labels, ids, train.channel_names,
                     name=f"aeon:{name}")
    raw.fixed_test = ids[len(train.cases):] if split == "default" else None
    return raw


# -- CSV and Parquet --------------------------------------------------------------------------


def read_table(path: Path, options, require_labels: bool = True) -> RawSignals:
    """A CSV or Parquet table, long form when it has the time column, else wide form."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise DataError(Problem(path.name, f"cannot be read as a table: {exc}")) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if options.time_column in frame.columns:
        return _read_long(frame, path.name, options, require_labels)
    return _read_wide(frame, path.name, options, require_labels)


def _numeric(frame, columns: list[str]):
    """Float matrix of ``columns`` (empty cells are NaN) and the unparsable cells ``(row, column, text)``."""
    import pandas as pd

    values = np.empty((len(frame), len(columns)), dtype=np.float64)
    bad_cells: list[tuple[int, str, str]] = []
    for j, column in enumerate(columns):
        raw = frame[column]
        parsed = pd.to_numeric(raw, errors="coerce")
        values[:, j] = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        text = raw.astype(str).str.strip()
        bad = parsed.isna().to_numpy() & ~raw.isna().to_numpy() & (text != "").to_numpy()
        bad &= ~text.str.lower().isin(["nan", "inf", "-inf", "na"]).to_numpy()
        bad_cells += [(int(i), column, str(raw.iloc[i])) for i in np.flatnonzero(bad)]
    return values, bad_cells


def _cell_problem(name: str, case_id: str, row: int, column: str, text: str) -> Problem:
    return Problem(f"{name} case '{case_id}'", f"non-numeric value {text!r} at row {row + 2}, "
                   f"column '{column}'")


def _labels_of(frame, name: str, options, require_labels: bool) -> list[str] | None:
    if options.label_column not in frame.columns:
        if require_labels:
            raise DataError(Problem(name, f"has no label column '{options.label_column}'; found "
                                    f"{list(frame.columns)[:8]}. Name it 'label' or set signal.label_column"))
        return None
    return [_label_text(v).strip() if v is not None else "" for v in frame[options.label_column]]


def _read_wide(frame, name: str, options, require_labels: bool) -> RawSignals:
    reserved = {options.label_column, options.case_column, options.group_column}
    value_columns = [c for c in frame.columns if c not in reserved]
    layout: dict[str, list[tuple[int, str]]] = {}
    for column in value_columns:
        match = _COLUMN.match(column)
        if match is None:
            raise DataError(Problem(name, f"column '{column}' is not a value column of a wide table "
                                    "(name it <channel>_<index>, e.g. acc_x_0, or <index>), nor "
                                    f"'{options.label_column}', '{options.case_column}' or "
                                    f"'{options.group_column}'; a long table needs a "
                                    f"'{options.time_column}' column"))
        layout.setdefault(match.group(1) or "ch0", []).append((int(match.group(2)), column))
    if not layout:
        raise DataError(Problem(name, "has no value columns"))
    channels = list(layout)
    indices = {ch: sorted(i for i, _ in cols) for ch, cols in layout.items()}
    first = indices[channels[0]]
    uneven = [ch for ch in channels if indices[ch] != first]
    if uneven:
        raise DataError(Problem(name, f"channels {channels[0]!r} and {uneven[0]!r} have different "
                                "column indices; every channel needs the same timepoints"))
    ordered = [col for ch in channels for _, col in sorted(layout[ch])]
    ids = ([str(v) for v in frame[options.case_column]] if options.case_column in frame.columns
           else [f"row-{i + 2}" for i in range(len(frame))])
    values, bad_cells = _numeric(frame, ordered)
    problems = [(row, _cell_problem(name, ids[row], row, column, text)) for row, column, text in bad_cells]
    n_t = len(first)
    cases = list(split_channels(values, len(channels)))
    groups = ([str(v) for v in frame[options.group_column]] if options.group_column in frame.columns
              else None)

    def locate(case: int, channel: int, t: int) -> str:
        return f"row {case + 2}, column '{ordered[channel * n_t + t]}'"

    problems += repeated_ids(ids, name, lambda i: f"row {i + 2}",
                             f"give each row its own id in column '{options.case_column}', or, if "
                             f"the rows are timepoints of one recording, add a '{options.time_column}' "
                             "column (a long table; set signal.time_column if it has another name)")
    raw = RawSignals(cases, _labels_of(frame, name, options, require_labels), ids, channels,
                     groups, problems, locate, name)
    return raw


def repeated_ids(ids: list[str], name: str, where: Callable[[int], str],
                 fix: str) -> list[tuple[int, Problem]]:
    """A problem for every case whose id another case has too (found with the other problems,
    not instead of them; under ``on_bad_file="skip"`` all cases of a repeated id are left out)."""
    positions: dict[str, list[int]] = {}
    for i, case_id in enumerate(ids):
        positions.setdefault(case_id, []).append(i)
    problems = []
    for case_id, found in positions.items():
        if len(found) < 2:
            continue
        listed = ", ".join(where(i) for i in found)
        problems += [(i, Problem(f"{name} case '{case_id}'", f"case id repeated ({where(i)}; the id "
                                 f"is on {listed}); {fix}")) for i in found]
    return problems


def _read_long(frame, name: str, options, require_labels: bool) -> RawSignals:
    if options.case_column not in frame.columns:
        raise DataError(Problem(name, f"a long table (it has a '{options.time_column}' column) needs "
                                f"a case id column '{options.case_column}'; set signal.case_column"))
    reserved = {options.label_column, options.case_column, options.group_column, options.time_column}
    channels = list(options.channels or [c for c in frame.columns if c not in reserved])
    missing = [c for c in channels if c not in frame.columns]
    if missing or not channels:
        raise DataError(Problem(name, f"channel columns {missing or 'none'} not found; columns are "
                                f"{list(frame.columns)}"))
    values, bad_values = _numeric(frame, channels)
    times, bad_times = _times(frame, options.time_column)
    labels = _labels_of(frame, name, options, require_labels)
    case_ids = [str(v) for v in frame[options.case_column]]
    order: dict[str, list[int]] = {}
    for i, case in enumerate(case_ids):
        order.setdefault(case, []).append(i)
    ids = list(order)
    case_of_row = {i: k for k, rows_of in enumerate(order.values()) for i in rows_of}
    problems = [(case_of_row[row], _cell_problem(name, case_ids[row], row, column, text))
                for row, column, text in sorted(bad_values + bad_times)]
    cases, case_labels, row_maps, case_times = [], [], [], []
    for k, case in enumerate(ids):
        members = np.array(order[case])
        t = times[members, 0]
        members = members[np.argsort(t, kind="stable")]
        t_sorted = times[members, 0]
        case_values = values[members]
        repeated = t_sorted[1:][np.diff(t_sorted) == 0]
        if len(repeated) and getattr(options, "resample", None):
            # rows of one instant (channels logged on rows of their own) are one timepoint
            t_sorted, first, case_values = _merge_instants(t_sorted, case_values)
            members = members[first]
        elif len(repeated):
            problems.append((k, Problem(f"{name} case '{case}'", f"time {repeated[0]:g} appears more "
                                        f"than once in column '{options.time_column}'; with "
                                        "signal.resample, rows of one time are merged")))
        cases.append(case_from_columns(case_values, None, None))
        case_times.append(t_sorted)
        row_maps.append(members)
        if labels is not None:
            case_labels.append(np.array([labels[i] for i in members], dtype=object))
    groups = None
    if options.group_column in frame.columns:
        groups = [str(frame[options.group_column].iloc[order[case][0]]) for case in ids]

    def locate(case: int, channel: int, t: int) -> str:
        row = int(row_maps[case][t])
        return f"row {row + 2} (time {times[row, 0]:g}), column '{channels[channel]}'"

    return RawSignals(cases, case_labels if labels is not None else None, ids, channels, groups,
                      problems, locate, name, times=case_times)


def _merge_instants(t: np.ndarray, values: np.ndarray):
    """Rows of equal (sorted) time merged: the mean of each channel's non-empty cells."""
    unique, first, inverse = np.unique(t, return_index=True, return_inverse=True)
    sums = np.zeros((len(unique), values.shape[1]))
    counts = np.zeros_like(sums)
    present = np.isfinite(values)
    np.add.at(sums, inverse, np.where(present, values, 0.0))
    np.add.at(counts, inverse, present)
    with np.errstate(invalid="ignore", divide="ignore"):
        return unique, first, np.where(counts > 0, sums / counts, np.nan)


def _times(frame, column: str):
    """The time column in seconds: numbers as they are, or date-times (e.g. ISO 8601) parsed."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(frame[column]):  # Parquet keeps date-times typed
        seconds = (frame[column] - frame[column].min()).dt.total_seconds()
        return seconds.to_numpy(dtype=np.float64, na_value=np.nan)[:, None], []
    times, bad = _numeric(frame, [column])
    if bad and len(bad) == int((frame[column].astype(str).str.strip() != "").sum()):
        parsed = pd.to_datetime(frame[column], errors="coerce", format="mixed")
        if parsed.notna().any():
            seconds = (parsed - parsed.min()).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
            bad = [(int(i), column, str(frame[column].iloc[i])) for i in np.flatnonzero(np.isnan(seconds))
                   if str(frame[column].iloc[i]).strip()]
            return seconds[:, None], bad
    return times, bad
