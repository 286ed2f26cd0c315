"""Signal datasets: multichannel time series in one shape, ``(n_cases, n_channels, n_timepoints)``.

:func:`load_signals` reads NPZ, CSV/Parquet (wide or long), UCR/UEA ``.ts`` files and the datasets
bundled with aeon (``aeon:BasicMotions`` keeps the dataset's own train/test split;
``aeon:BasicMotions?split=random`` lets sigclass draw one). Every format then goes through the same
checks: windowing of long recordings (:class:`~sigclass.config.SignalConfig`), NaN and infinite
values, empty labels, unequal lengths and class sizes, all reported together, each naming the
case and the column. A one-channel series is promoted to ``(1, T)`` in one place,
:func:`as_case`.

The preprocessing stored with a model (:func:`signal_data_config`) holds the input shape, the
per-channel mean and standard deviation fitted on the training part only, the channel names and
the reading options; :class:`SignalPreprocessor` applies it in evaluation and serving.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import BAD_FILE_POLICIES, check_choice
from ..exceptions import ConfigError, DataError, Problem
from .file_checks import DEFAULT_MAX_FILE_MB, FileLimits, file_problem
from .signal_dataset import SignalDataset, check_classes
from .signal_options import reading_options
from .signal_parts import merge_parts, split_files
from .signal_readers import RawSignals, read_aeon, read_signal_file
from .signal_resample import (
    check_resample_options,
    constant_channels,
    resample_recordings,
    time_steps,
)
from .signal_windows import (
    check_window_options,
    equalize_lengths,
    trim_trailing_nan,
    window_recordings,
)

MAX_PROBLEMS = 50  # more are summarized in one line

__all__ = ["SignalDataset", "load_signals", "read_signal_inputs"]


def read_raw(source: str, options, require_labels: bool = True, limits: FileLimits | None = None,
             root: Path | None = None) -> RawSignals:
    """Parse a file or ``aeon:NAME`` into raw cases (no checks yet); a file must pass
    :func:`~sigclass.data.file_checks.file_problem` first."""
    text = str(source)
    if text.lower().startswith("aeon:"):
        return read_aeon(text)
    if text.split(":", 1)[0].lower() in ("sktime", "ucr"):
        raise DataError(Problem(text, "named signal datasets are read as aeon:NAME, e.g. aeon:GunPoint"))
    return read_signal_file(Path(text).expanduser(), options, require_labels, limits, root)


def load_signals(source: str, on_bad_file: str = "error", min_per_class: int = 1,
                 options=None, *, max_file_mb: float = DEFAULT_MAX_FILE_MB,
                 follow_symlinks: bool = False) -> SignalDataset:
    """Read and check a signal source.

    Args:
        source: ``.npz``, ``.csv``, ``.parquet`` or ``.ts`` file, or ``aeon:NAME`` (add
            ``?split=random`` to let sigclass draw the split instead of keeping the dataset's own).
        on_bad_file: ``"error"`` raises :class:`DataError` listing every bad case; ``"skip"``
            leaves bad cases out and lists them in ``skipped``.
        min_per_class: Fewest cases a class needs (the split decides it).
        options: Reading options, a :class:`~sigclass.config.SignalConfig` or dict.
        max_file_mb: Largest file read, in megabytes, refused from its size before it is opened;
            as anything that is not a regular file (a pipe, a device).
        follow_symlinks: In a folder of split files, read symbolic links whose target lies
            outside the folder (refused by default).
    """
    check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    if not max_file_mb > 0:
        raise ConfigError(f"The 'max_file_mb' option must be a positive number of megabytes. "
                          f"Got {max_file_mb!r}.")
    limits = FileLimits(float(max_file_mb), bool(follow_symlinks))
    options = reading_options(options)
    check_window_options(options.window, options.stride, options.label_rule)
    check_resample_options(options)
    if Path(str(source)).expanduser().is_dir():
        return load_split_files(Path(str(source)).expanduser(), on_bad_file, min_per_class, options,
                                limits)
    raw = read_raw(source, options, limits=limits)
    return build_dataset(raw, options, on_bad_file, min_per_class, str(source))


def load_split_files(folder: Path, on_bad_file: str, min_per_class: int, options,
                     limits: FileLimits | None = None) -> SignalDataset:
    """A folder of split-named signal files read as a predefined split (the rules of
    :mod:`sigclass.data.predefined`); every refused file is named before any is read."""
    files = split_files(folder)
    root = folder.resolve()
    if not files:
        raise DataError(Problem(str(folder), "holds no split-named signal files; expected e.g. "
                                "train.csv + test.csv, NAME_TRAIN.ts + NAME_TEST.ts, or train/ and "
                                "test/ folders with one .npz/.csv/.parquet/.ts file each"))
    refused = [Problem(str(path), reason) for path in files.values()
               if (reason := file_problem(path, limits, root))]
    if refused:
        raise DataError(refused)
    parts = {part: build_dataset(read_raw(str(path), options, limits=limits, root=root), options,
                                 on_bad_file, 1, str(path))
             for part, path in files.items()}
    sources = {part: f"the file {path.relative_to(folder).as_posix()}" for part, path in files.items()}
    return merge_parts(parts, sources, str(folder), min_per_class)


def build_dataset(raw: RawSignals, options, on_bad_file: str, min_per_class: int,
                  source: str) -> SignalDataset:
    """Window, check and equalize raw cases into a :class:`SignalDataset`."""
    summary: dict[str, Any] = {}
    fixed_test = raw.fixed_test
    raw, timing = _regular_times(raw, options)
    summary.update(timing)
    irregular = raw.times is not None and _has_nan(raw)  # before windowing drops the times
    if options.window:
        raw, summary["windowing"] = window_recordings(raw, options.window, options.stride,
                                                      options.label_rule)
    else:
        raw.cases = [trim_trailing_nan(case) for case in raw.cases]
        raw.problems += _constant_labels(raw, options)
    problems = list(raw.problems)
    flagged = {i for i, _ in problems if i is not None}
    problems += [(i, p) for i, p in _value_problems(raw) if i not in flagged]
    problems += _label_problems(raw, options)
    problems.sort(key=lambda item: -1 if item[0] is None else item[0])  # in reading order
    fatal = [p for i, p in problems if i is None]
    bad = {i for i, _ in problems if i is not None and i >= 0}
    if fatal or (problems and on_bad_file == "error"):
        hint = None if fatal else ("Fix these values, or pass --on-bad-file skip to leave bad cases "
                                   "out (they are listed in the run report).")
        if hint and irregular:
            hint += (" Empty cells in a long table often mean channels sampled at different rates "
                     "or gaps: set signal.resample (e.g. --resample 50Hz) to put every channel on "
                     "one grid.")
        raise DataError(_capped([p for _, p in problems]), hint=hint)
    keep = [i for i in range(len(raw.cases)) if i not in bad]
    X, length_problems, summary["lengths"] = equalize_lengths(
        [raw.cases[i] for i in keep], options.length_policy, options.length,
        [f"case '{raw.ids[i]}'" for i in keep], raw.name)
    if length_problems:
        raise DataError(_capped([p for _, p in length_problems]))
    labels = np.array([raw.labels[i] for i in keep], dtype=object)
    check_classes(labels, min_per_class, source)
    skipped = [p for _, p in problems]
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} bad case(s) of {source}; see the dataset's 'skipped' "
                      "list and the run's data_report.json.", stacklevel=3)
    ids = [raw.ids[i] for i in keep]
    groups = None if raw.groups is None else np.array([raw.groups[i] for i in keep], dtype=object)
    if fixed_test is not None:
        fixed_test = [i for i in fixed_test if i in set(ids)]
    return SignalDataset(X.astype(np.float32), labels, sorted(set(labels.tolist())), ids,
                         list(raw.channel_names), groups, source, fixed_test, skipped,
                         asdict(options), summary)


def _regular_times(raw: RawSignals, options) -> tuple[RawSignals, dict[str, Any]]:
    """Resampling onto a regular grid (``signal.resample``) or, without it, the time steps seen;
    constant channels either way."""
    summary: dict[str, Any] = {}
    constant = constant_channels(raw)
    if constant:
        summary["constant_channels"] = constant[:50]
    if options.resample:
        raw, summary["resampling"] = resample_recordings(raw, options.resample, options.max_gap)
    elif raw.times is not None:
        summary["time_steps"] = time_steps(raw)
    return raw, summary


def _has_nan(raw: RawSignals) -> bool:
    return any(np.isnan(case).any() for case in raw.cases)


def _constant_labels(raw: RawSignals, options) -> list[tuple[int, Problem]]:
    """Without windowing, a case whose timepoints carry labels needs one label throughout."""
    problems = []
    if raw.labels is None:
        return problems
    for i, label in enumerate(raw.labels):
        if not isinstance(label, np.ndarray):
            continue
        values = [v for v in dict.fromkeys(label.tolist())]
        if len(values) > 1:
            change = int(np.flatnonzero(label != label[0])[0])
            problems.append((None, Problem(raw.case_name(i), f"column '{options.label_column}' "
                             f"changes within the case ({values[0]!r} at timepoint 0, "
                             f"{label[change]!r} at timepoint {change}); set signal.window to cut "
                             "labeled windows, or give one label per case")))
        raw.labels[i] = str(values[0]) if values else ""
    return problems


def _value_problems(raw: RawSignals) -> list[tuple[int, Problem]]:
    problems = []
    for i, case in enumerate(raw.cases):
        finite = np.isfinite(case)
        if finite.all():
            continue
        channel, t = (int(v[0]) for v in np.nonzero(~finite))
        value = case[channel, t]
        kind = "missing value (NaN)" if np.isnan(value) else f"infinite value ({value})"
        more = int((~finite).sum()) - 1
        extra = f" and {more} more non-finite value(s)" if more else ""
        problems.append((i, Problem(raw.case_name(i), f"{kind} at {raw.where(i, channel, t)}{extra}")))
    return problems


def _label_problems(raw: RawSignals, options) -> list[tuple[int | None, Problem]]:
    if raw.labels is None:
        return [(None, Problem(raw.name, "has no labels"))]
    if len(raw.labels) != len(raw.cases):
        return [(None, Problem(raw.name, f"{len(raw.labels)} labels for {len(raw.cases)} cases; "
                               "give one label per case"))]
    return [(i, Problem(raw.case_name(i), f"empty label in column '{options.label_column}'"))
            for i, label in enumerate(raw.labels) if str(label).strip() in ("", "nan", "None")]


def _read_unlabeled(source, options) -> RawSignals:
    """The cases of one file to score; a problem of the whole file raises."""
    raw = read_raw(str(source), options, require_labels=False)
    if options.resample:
        raw, _ = resample_recordings(raw, options.resample, options.max_gap)
    if options.window:
        raw, _ = window_recordings(raw, options.window, options.stride, options.label_rule)
    fatal = [p for i, p in raw.problems if i is None or i < 0]
    if fatal:
        raise DataError(fatal)
    return raw


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return problems[:MAX_PROBLEMS] + [Problem("", f"... and {len(problems) - MAX_PROBLEMS} more")]


def read_signal_inputs(inputs, data_config: dict[str, Any]) -> dict[str, np.ndarray | DataError]:
    """Cases of unlabeled signal files for batch scoring, keyed ``<file>#<case id>``.

    Files are read with the model's reading options (windowing, columns). A case that cannot be
    parsed maps to its :class:`DataError`, so that batch scoring writes an error row for it and
    goes on with the others; so does a whole file that cannot be read (a pipe, a device, a file
    over the default size limit, a file no reader parses), keyed by its name. A path that does
    not exist stops the batch before anything is scored.
    """
    options = reading_options(data_config.get("reader"))
    inputs = list(inputs)
    missing = [Problem(str(s), "no such file") for s in inputs
               if not str(s).lower().startswith("aeon:") and not os.path.lexists(Path(str(s)).expanduser())]
    if missing:
        raise DataError(missing)
    out: dict[str, np.ndarray | DataError] = {}
    for source in inputs:
        try:
            raw = _read_unlabeled(source, options)
        except DataError as exc:
            out[str(source)] = exc
            continue
        bad: dict[int, list[Problem]] = {}
        for i, problem in raw.problems:
            bad.setdefault(i, []).append(problem)
        for i, (case_id, case) in enumerate(zip(raw.ids, raw.cases, strict=True)):
            out[f"{source}#{case_id}"] = DataError(bad[i]) if i in bad else case
    return out
