"""Windowing of long recordings into labeled cases, and equalizing unequal lengths.

A recording of ``T`` timepoints is cut into windows ``[s, s + window)`` for ``s = 0, stride,
2 * stride, ...`` while the window fits; the tail that does not fill a window is dropped (and
counted in the report). A window takes the recording's label, or, when every timepoint carries a
label, the label chosen by the rule: ``majority`` (ties go to the label seen first in the window),
``last`` or ``center``. Every window of a recording carries the recording's id as its group, so a
group-aware split keeps a recording in one part.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..choices import LABEL_RULES, LENGTH_POLICIES, check_choice, choice_problem, raise_problems
from ..exceptions import ConfigError, Problem
from .signal_readers import RawSignals


def trim_trailing_nan(case: np.ndarray) -> np.ndarray:
    """Drop the trailing timepoints where every channel is NaN (a shorter case in a padded file)."""
    present = ~np.isnan(case).all(axis=0)
    last = int(np.flatnonzero(present)[-1]) + 1 if present.any() else 0
    return case[:, :last]


def window_label(labels: np.ndarray, rule: str) -> str:
    """The label of one window from the labels of its timepoints."""
    if rule == "last":
        return str(labels[-1])
    if rule == "center":
        return str(labels[len(labels) // 2])
    counts = Counter(labels)
    best = max(counts.values())
    return str(next(label for label in labels if counts[label] == best))


def window_problems(window: int | None, stride: int | None, label_rule: str) -> list[str]:
    """What is wrong with the windowing options, one message each (empty when all are valid)."""
    problems = [choice_problem("signal.label_rule", label_rule, LABEL_RULES)]
    if window is None:
        if stride is not None:
            problems.append("The 'signal.stride' option needs 'signal.window' too.")
        return [p for p in problems if p]
    if not isinstance(window, int) or window < 2:
        problems.append(f"The 'signal.window' option must be an integer of at least 2 timepoints. "
                        f"Got {window!r}.")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        problems.append(f"The 'signal.stride' option must be a positive integer. Got {stride!r}.")
    return [p for p in problems if p]


def check_window_options(window: int | None, stride: int | None, label_rule: str) -> None:
    """Validate the windowing options (before any data is read); every problem in one error."""
    raise_problems(window_problems(window, stride, label_rule))


def window_recordings(raw: RawSignals, window: int, stride: int | None = None,
                      label_rule: str = "majority") -> tuple[RawSignals, dict]:
    """Cut every case of ``raw`` (a recording) into windows; returns the windows and a summary.

    Recordings shorter than one window are problems (reported, or skipped with
    ``on_bad_file="skip"``). Windows are named ``<recording>@<start>`` and grouped by recording.
    """
    check_window_options(window, stride, label_rule)
    stride = stride or window
    cases, labels, ids, groups, origin = [], [], [], [], []
    # A recording with unparsable cells yields no windows; its problems are kept (index -1:
    # reported, and skipped under on_bad_file="skip"). Problems of the whole input stay None.
    unusable = {k for k, _ in raw.problems if k is not None and k >= 0}
    problems = [(None if k is None else -1, p) for k, p in raw.problems]
    dropped = 0
    for k, recording in enumerate(raw.cases):
        if k in unusable:
            continue
        recording = trim_trailing_nan(recording)
        length = recording.shape[1]
        if length < window:
            problems.append((-1, Problem(raw.case_name(k), f"recording of {length} timepoints is "
                                         f"shorter than one window ({window}); lower signal.window")))
            continue
        starts = range(0, length - window + 1, stride)
        dropped += length - (starts[-1] + window)
        for start in starts:
            cases.append(recording[:, start:start + window])
            ids.append(f"{raw.ids[k]}@{start}")
            groups.append(raw.groups[k] if raw.groups is not None else raw.ids[k])
            origin.append((k, start))
            if raw.labels is not None:
                label = raw.labels[k]
                labels.append(window_label(label[start:start + window], label_rule)
                              if isinstance(label, np.ndarray) else label)

    def locate(case: int, channel: int, t: int) -> str:
        k, start = origin[case]
        return raw.where(k, channel, start + t)

    windows = RawSignals(cases, labels if raw.labels is not None else None, ids, raw.channel_names,
                         groups, problems, locate, raw.name, None)
    summary = {"window": window, "stride": stride, "label_rule": label_rule,
               "n_recordings": len(raw.cases), "n_windows": len(cases),
               "timepoints_not_in_a_window": int(dropped)}
    return windows, summary


def equalize_lengths(cases: list[np.ndarray], policy: str, length: int | None,
                     names: list[str], source: str = "") -> tuple[np.ndarray | None, list[tuple[int, Problem]], dict]:
    """Stack cases of possibly unequal length into ``(n, C, T)`` following ``policy``.

    Returns:
        The array (``None`` when lengths differ under ``policy="error"``), the problems, and a
        summary (target length, padded and truncated counts).
    """
    check_choice("signal.length_policy", policy, LENGTH_POLICIES)
    lengths = np.array([case.shape[1] for case in cases], dtype=np.int64)
    if len(cases) == 0:
        return None, [], {"length": 0}
    if policy == "error":
        if length is not None or len(set(lengths.tolist())) > 1:
            return None, [(None, _unequal_problem(lengths, names, length, source))], {}
        target = int(lengths[0])
    else:
        target = int(length) if length is not None else int(lengths.max() if policy == "pad" else lengths.min())
    if target < 1:
        raise ConfigError(f"The 'signal.length' option must be at least 1. Got {target}.")
    if policy == "truncate" and (lengths < target).any():
        short = int(lengths.argmin())
        return None, [(None, Problem(source, f"{int((lengths < target).sum())} case(s) are shorter "
                                     f"than signal.length {target} ({names[short]} has "
                                     f"{lengths[short]}); 'truncate' only cuts: use 'pad', or a "
                                     "smaller signal.length"))], {}
    out = np.zeros((len(cases), cases[0].shape[0], target), dtype=np.float64)
    for i, case in enumerate(cases):
        keep = min(target, case.shape[1])
        out[i, :, :keep] = case[:, :keep]
    summary = {"length": target, "length_policy": policy,
               "padded": int((lengths < target).sum()), "truncated": int((lengths > target).sum())}
    return out, [], summary


def _unequal_problem(lengths: np.ndarray, names: list[str], length: int | None,
                     source: str) -> Problem:
    """One problem for unequal lengths, naming the shortest and the longest case."""
    shortest, longest = int(lengths.argmin()), int(lengths.argmax())
    examples = f"{names[shortest]} has {lengths[shortest]}, {names[longest]} has {lengths[longest]}"
    if length is not None:
        return Problem(source, f"signal.length is {length} but signal.length_policy is 'error'; set it "
                       "to 'pad' or 'truncate' to bring every case to that length")
    return Problem(source, f"cases have unequal lengths, from {lengths.min()} to {lengths.max()} "
                   f"timepoints ({examples}); set signal.length_policy to 'pad' or 'truncate' "
                   "(and signal.length) to equalize them")
