"""Irregular recordings of long tables onto one regular time grid, and gaps.

IoT recordings mix channels sampled at different rates, jittered timestamps and gaps. With
``signal.resample`` (a rate, ``50Hz``, or a period, ``20ms``) every recording of a long table (one
row per timepoint, a time column) is put on one grid ``t0, t0 + p, t0 + 2p, ...`` from its first
to its last row:

- each channel is interpolated linearly (:func:`numpy.interp`) from its own non-empty cells, so
  a channel sampled at 10 Hz and one at 100 Hz in the same table both reach the grid;
- a stretch without samples of a channel shorter than ``signal.max_gap`` is filled by that
  interpolation (counted in the report); a longer one splits the recording: the grid points in
  the gap are left out and each piece becomes its own case ``<recording>~<k>``, so that windows
  and networks never see a bridged gap. The pieces keep the recording as their group, so a split
  never puts one recording in two parts;
- the default ``max_gap`` is ten sampling intervals of the recording's slowest channel (at least
  two grid periods);
- a channel with no value in a whole recording is a problem of that recording; a channel that is
  constant in a whole recording is reported (it carries no information there).

Time columns hold seconds (numbers) or date-times (parsed by pandas). The summary in the data
report lists the grid, the native rate of every channel, the gaps filled, the pieces and the
recordings left out. Without ``resample``, irregular time steps are reported, not changed.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from ..choices import raise_problems
from ..exceptions import ConfigError, Problem
from .signal_readers import RawSignals

_UNITS = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "us": 1e-6}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([a-zA-Z]*)\s*$")


class SignalWarning(UserWarning):
    """Signal data that is read but looks wrong: irregular time steps, constant channels."""


def parse_period(text, option: str = "signal.resample") -> float:
    """Seconds of a rate (``50Hz``, ``2kHz``) or a period (``20ms``, ``0.5s``, ``1min``)."""
    match = _QUANTITY.match(str(text))
    unit = match.group(2).lower() if match else ""
    value = float(match.group(1)) if match else 0.0
    if match and value > 0 and unit in ("hz", "khz"):
        return 1.0 / (value * (1000.0 if unit == "khz" else 1.0))
    if match and value > 0 and unit in _UNITS:
        return value * _UNITS[unit]
    raise ConfigError(f"The '{option}' option must be a rate such as '50Hz' or a period such as "
                      f"'20ms', '0.5s' or '1min'. Got {text!r}.")


def parse_duration(text, option: str = "signal.max_gap") -> float:
    """Seconds of a duration (``2s``, ``500ms``); a bare number is seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text > 0:
        return float(text)
    match = _QUANTITY.match(str(text))
    if match and float(match.group(1)) > 0 and match.group(2).lower() in ("", *_UNITS):
        return float(match.group(1)) * _UNITS.get(match.group(2).lower(), 1.0)
    raise ConfigError(f"The '{option}' option must be a duration such as '2s', '500ms' or '1min'. "
                      f"Got {text!r}.")


def resample_problems(options) -> list[str]:
    """What is wrong with ``signal.resample`` and ``signal.max_gap``, one message each."""
    problems = []
    checks = [(parse_period, options.resample)] if options.resample is not None else []
    if options.max_gap is not None:
        if options.resample is None:
            problems.append("The 'signal.max_gap' option needs 'signal.resample' too (gaps are "
                            "filled on the resampled grid); e.g. --resample 50Hz --max-gap 2s.")
        else:
            checks.append((parse_duration, options.max_gap))
    for parse, value in checks:
        try:
            parse(value)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def check_resample_options(options) -> None:
    """Validate ``signal.resample`` and ``signal.max_gap`` before any data is read."""
    raise_problems(resample_problems(options))


def resample_recordings(raw: RawSignals, resample, max_gap=None) -> tuple[RawSignals, dict]:
    """Put every recording of ``raw`` (which needs ``times``) on one regular grid.

    Returns the resampled cases (pieces where long gaps split a recording) and the summary.
    Recordings with parsing problems are left out with their problems kept (index ``-1``, as
    windowing does), as are recordings with a channel that has no value at all.
    """
    if raw.times is None:
        raise ConfigError(f"{raw.name}: 'signal.resample' needs a long table with a time column "
                          "(one row per timepoint); this source has fixed timepoints")
    period = parse_period(resample)
    fixed_gap = None if max_gap is None else parse_duration(max_gap)
    unusable = {k for k, _ in raw.problems if k is not None and k >= 0}
    problems = [(None if k is None else -1, p) for k, p in raw.problems]
    cases, labels, ids, groups, origin = [], [], [], [], []
    native: dict[str, list[float]] = {c: [] for c in raw.channel_names}
    filled = {c: 0 for c in raw.channel_names}
    longest = {c: 0.0 for c in raw.channel_names}
    split_at = {c: 0 for c in raw.channel_names}
    short, gaps_used, n_split = [], [], 0
    for k, (recording, times) in enumerate(zip(raw.cases, raw.times, strict=True)):
        if k in unusable:
            continue
        empty = [c for c, row in zip(raw.channel_names, recording, strict=True) if not np.isfinite(row).any()]
        if empty:
            problems.append((-1, Problem(raw.case_name(k), f"channel '{empty[0]}' has no value in "
                                         "the whole recording; fill it, or leave the channel out "
                                         "with signal.channels")))
            continue
        steps = {c: _median_step(times, row) for c, row in zip(raw.channel_names, recording, strict=True)}
        slowest = max((s for s in steps.values() if s > 0), default=period)
        gap = fixed_gap if fixed_gap is not None else max(10 * slowest, 2 * period)
        gaps_used.append(gap)
        grid = times[0] + period * np.arange(int(np.floor((times[-1] - times[0]) / period + 1e-9)) + 1)
        values = np.empty((len(raw.channel_names), len(grid)))
        keep = np.ones(len(grid), dtype=bool)
        for c, (name, row) in enumerate(zip(raw.channel_names, recording, strict=True)):
            valid = np.isfinite(row)
            t, v = times[valid], row[valid]
            if steps[name] > 0:
                native[name].append(1.0 / steps[name])
            values[c] = np.interp(grid, t, v)
            intervals = np.diff(t)
            for start, length in zip(t[:-1], intervals, strict=True):
                if length > gap:
                    keep &= ~((grid > start) & (grid < start + length))
                    split_at[name] += 1
                elif steps[name] > 0 and length > 1.5 * steps[name]:
                    filled[name] += 1
                    longest[name] = max(longest[name], float(length))
            keep &= (grid >= t[0] - gap) & (grid <= t[-1] + gap)
        pieces = _runs(keep)
        n_split += len(pieces) > 1
        for j, (a, b) in enumerate(pieces, start=1):
            case_id = raw.ids[k] if len(pieces) == 1 else f"{raw.ids[k]}~{j}"
            if b - a < 2:
                short.append(case_id)
                continue
            cases.append(values[:, a:b])
            ids.append(case_id)
            groups.append(raw.groups[k] if raw.groups is not None else raw.ids[k])
            origin.append((k, grid[a:b]))
            if raw.labels is not None:
                label = raw.labels[k]
                if isinstance(label, np.ndarray):  # the label of the last row at or before each point
                    rows = np.clip(np.searchsorted(times, grid[a:b] + 1e-9 * period, "right") - 1, 0, None)
                    label = label[rows]
                labels.append(label)

    def locate(case: int, channel: int, t: int) -> str:
        k, grid = origin[case]
        return f"channel '{raw.channel_names[channel]}', time {grid[t]:g} s (resampled)"

    out = RawSignals(cases, labels if raw.labels is not None else None, ids, raw.channel_names,
                     groups, problems, locate, raw.name, raw.fixed_test)
    summary = {
        "period_s": period, "rate_hz": 1.0 / period,
        "max_gap_s": fixed_gap if fixed_gap is not None else
        ({"auto": "10 sampling intervals of the slowest channel",
          "min": _round(min(gaps_used)), "max": _round(max(gaps_used))} if gaps_used else None),
        "n_recordings": len(raw.cases), "n_cases": len(cases), "recordings_split": n_split,
        "channels": {c: {"native_rate_hz": _round(np.median(native[c])) if native[c] else None,
                         "gaps_filled": filled[c], "longest_gap_filled_s": _round(longest[c]),
                         "gaps_split": split_at[c]} for c in raw.channel_names},
        "pieces_too_short": short,
    }
    return out, summary


def time_steps(raw: RawSignals) -> dict | None:
    """Time steps of a long table read without resampling; warns when they are irregular."""
    if raw.times is None or not raw.times:
        return None
    steps = np.concatenate([np.diff(t) for t in raw.times if len(t) > 1] or [np.zeros(0)])
    steps = steps[np.isfinite(steps) & (steps > 1e-9)]
    if not len(steps):
        return None
    median = float(np.median(steps))
    irregular = [raw.ids[k] for k, t in enumerate(raw.times)
                 if len(t) > 2 and np.ptp(np.diff(t)) > 0.1 * median]
    summary = {"median_s": median, "min_s": float(steps.min()), "max_s": float(steps.max()),
               "irregular_recordings": len(irregular)}
    if irregular:
        warnings.warn(f"{raw.name}: time steps vary ({steps.min():g} s to {steps.max():g} s, median "
                      f"{median:g} s) in {len(irregular)} recording(s), e.g. '{irregular[0]}'; the "
                      f"values are used as they are. Set signal.resample (e.g. --resample "
                      f"{_rate_text(median)}) to put them on a regular grid", SignalWarning, stacklevel=4)
    return summary


def constant_channels(raw: RawSignals) -> list[str]:
    """``"<case>: <channel>"`` for every channel constant in a whole case (NaN ignored); warns."""
    found = []
    for k, case in enumerate(raw.cases):
        for name, row in zip(raw.channel_names, case, strict=True):
            finite = row[np.isfinite(row)]
            if len(finite) > 1 and finite.min() == finite.max():
                found.append(f"{raw.ids[k]}: {name}")
    if found:
        warnings.warn(f"{raw.name}: {len(found)} channel(s) are constant in a whole recording "
                      f"({', '.join(found[:5])}{', ...' if len(found) > 5 else ''}); they carry no "
                      "information there", SignalWarning, stacklevel=4)
    return found


def _median_step(times: np.ndarray, row: np.ndarray) -> float:
    t = times[np.isfinite(row)]
    return float(np.median(np.diff(t))) if len(t) > 1 else 0.0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _round(value) -> float:
    return float(f"{float(value):.4g}")


def _rate_text(step: float) -> str:
    return f"{round(1 / step):g}Hz" if step < 0.5 else f"{step:.2g}s"
