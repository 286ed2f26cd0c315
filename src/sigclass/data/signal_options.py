"""How signal files are read: the options of :func:`~sigclass.data.signals.load_signals`.

They are stored with a signal model (``data_config["reader"]``), so evaluation and batch scoring
read files the way training did.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import LENGTH_POLICIES, choice_problem
from .signal_resample import resample_problems
from .signal_windows import window_problems


@dataclass
class SignalConfig:
    """How signal files are read: windowing of long recordings, unequal lengths, column names.

    Attributes:
        window: Cut every recording into windows of this many timepoints (``None``: each case
            as it is). Windows of one recording share a group, so a split never puts one
            recording in two parts.
        stride: Step between window starts (default: ``window``, no overlap).
        label_rule: Label of a window whose timepoints carry labels: ``majority``, ``last``
            or ``center``.
        length_policy: Cases of unequal length: ``error``, ``pad`` (zeros at the end, up to
            ``length`` or the longest case) or ``truncate`` (cut to ``length`` or the shortest).
        length: Target length of ``pad``/``truncate``; ``None`` takes the longest/shortest case.
        case_column: Case (recording) id column of CSV/Parquet tables.
        time_column: Time column of long tables; a table with it is read as long form.
        label_column: Label column.
        group_column: Optional group (recording, subject) column.
        channels: Channel columns of long tables; ``None`` takes every other column.
        resample: Long tables: put every recording on one regular grid, a rate (``50Hz``) or a
            period (``20ms``); channels are interpolated from their own samples. Time columns
            hold seconds or date-times.
        max_gap: With ``resample``: gaps up to this duration (``2s``) are filled; a longer gap
            splits the recording into pieces ``<id>~<k>``. ``None``: ten sampling intervals of
            the slowest channel.
    """

    window: int | None = None
    stride: int | None = None
    label_rule: str = "majority"
    length_policy: str = "error"
    length: int | None = None
    case_column: str = "case_id"
    time_column: str = "time"
    label_column: str = "label"
    group_column: str = "group"
    channels: list[str] | None = None
    resample: str | None = None
    max_gap: str | float | None = None

    def problems(self) -> list[str]:
        """What is wrong with the options, one message each (empty when all are valid)."""
        problems = window_problems(self.window, self.stride, self.label_rule)
        problems.append(choice_problem("signal.length_policy", self.length_policy, LENGTH_POLICIES))
        return [p for p in problems + resample_problems(self) if p]


def reading_options(options=None) -> SignalConfig:
    """A :class:`SignalConfig` from ``None``, a dict (unknown keys left out) or a config."""
    if options is None:
        return SignalConfig()
    if isinstance(options, dict):
        known = {k: v for k, v in options.items() if k in SignalConfig.__dataclass_fields__}
        return SignalConfig(**known)
    return options
