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

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import sha256_bytes, sha256_json
from ..exceptions import ConfigError, DataError, Problem
from .signal_preprocess import SignalPreprocessor, as_case, signal_data_config, standardize
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

__all__ = ["SignalDataset", "SignalPreprocessor", "as_case", "default_signal_entries",
           "load_signals", "read_signal_inputs", "signal_data_config", "standardize"]


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
        from .signal_augment import SignalAugmentConfig, SignalTensorDataset

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


def reading_options(options=None):
    """A :class:`~sigclass.config.SignalConfig` from ``None``, a dict or a config."""
    from ..config import SignalConfig

    if options is None:
        return SignalConfig()
    if isinstance(options, dict):
        known = {k: v for k, v in options.items() if k in SignalConfig.__dataclass_fields__}
        return SignalConfig(**known)
    return options


def read_raw(source: str, options, require_labels: bool = True) -> RawSignals:
    """Parse a file or ``aeon:NAME`` into raw cases (no checks yet)."""
    text = str(source)
    if text.lower().startswith("aeon:"):
        return read_aeon(text)
    if text.split(":", 1)[0].lower() in ("sktime", "ucr"):
        raise DataError(Problem(text, "named signal datasets are read as aeon:NAME, e.g. aeon:GunPoint"))
    return read_signal_file(Path(text).expanduser(), options, require_labels)


def load_signals(source: str, on_bad_file: str = "error", min_per_class: int = 1,
                 options=None) -> SignalDataset:
    """Read and check a signal source.

    Args:
        source: ``.npz``, ``.csv``, ``.parquet`` or ``.ts`` file, or ``aeon:NAME`` (add
            ``?split=random`` to let sigclass draw the split instead of keeping the dataset's own).
        on_bad_file: ``"error"`` raises :class:`DataError` listing every bad case; ``"skip"``
            leaves bad cases out and lists them in ``skipped``.
        min_per_class: Fewest cases a class needs (the split decides it).
        options: Reading options, a :class:`~sigclass.config.SignalConfig` or dict.
    """
    from .images import _check_policy

    _check_policy(on_bad_file)
    options = reading_options(options)
    check_window_options(options.window, options.stride, options.label_rule)
    check_resample_options(options)
    if Path(str(source)).expanduser().is_dir():
        return load_split_files(Path(str(source)).expanduser(), on_bad_file, min_per_class, options)
    raw = read_raw(source, options)
    return build_dataset(raw, options, on_bad_file, min_per_class, str(source))


def split_files(folder: Path) -> dict[str, Path]:
    """The signal file of each split part in ``folder``: ``train.csv``/``test.csv`` (any split
    name, any signal suffix), the UCR archive's ``NAME_TRAIN.ts``/``NAME_TEST.ts``, or
    ``train/``, ``test/`` sub-folders holding one signal file each."""
    from .predefined import canonical_split
    from .signal_readers import SIGNAL_SUFFIXES

    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            part = canonical_split(entry.name)
            files = [p for p in sorted(entry.iterdir()) if p.suffix.lower() in SIGNAL_SUFFIXES]
            if part and files:
                found.setdefault(part, []).extend(files)
        elif entry.suffix.lower() in SIGNAL_SUFFIXES:
            stem = entry.stem
            part = canonical_split(stem) or canonical_split(stem.rsplit("_", 1)[-1])
            if part:
                found.setdefault(part, []).append(entry)
    problems = [Problem(f"{folder.name}/", f"holds {len(files)} signal files for the {part} part "
                        f"({', '.join(p.name for p in files)}); keep one per part")
                for part, files in found.items() if len(files) > 1]
    if problems:
        raise DataError(problems)
    return {part: files[0] for part, files in found.items()}


def load_split_files(folder: Path, on_bad_file: str, min_per_class: int, options) -> SignalDataset:
    """A folder of split-named signal files read as a predefined split (the rules of
    :mod:`sigclass.data.predefined`)."""
    files = split_files(folder)
    if not files:
        raise DataError(Problem(str(folder), "holds no split-named signal files; expected e.g. "
                                "train.csv + test.csv, NAME_TRAIN.ts + NAME_TEST.ts, or train/ and "
                                "test/ folders with one .npz/.csv/.parquet/.ts file each"))
    parts = {part: build_dataset(read_raw(str(path), options), options, on_bad_file, 1, str(path))
             for part, path in files.items()}
    sources = {part: f"the file {path.relative_to(folder).as_posix()}" for part, path in files.items()}
    return merge_parts(parts, sources, str(folder), min_per_class)


def merge_parts(parts: dict[str, SignalDataset], sources: dict[str, str], where: str,
                min_per_class: int = 1) -> SignalDataset:
    """One dataset of several parts (ids prefixed by the part), its parts kept as a predefined
    split; every part needs the same classes and the same shape."""
    from .predefined import apply_rules, check_same_classes

    shapes = {part: ds.X.shape[1:] for part, ds in parts.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{sources[p]} has {s[0]} channel(s) x {s[1]} timepoints"
                           for p, s in shapes.items())
        raise DataError(Problem(where, f"parts of different shapes: {listed}; every part must "
                                "have the same channels and length (see signal.length_policy)"))
    problems = check_same_classes({p: set(map(str, ds.label_values)) for p, ds in parts.items()}, sources)
    if problems:
        raise DataError(problems)
    order = [p for p in ("train", "val", "test") if p in parts]
    ids = {p: [f"{p}/{i}" for i in parts[p].case_ids] for p in order}
    predefined = apply_rules({p: (sources[p], ids[p]) for p in order}, where)
    X = np.concatenate([parts[p].X for p in order])
    labels = np.concatenate([parts[p].label_values for p in order])
    _check_classes(labels, min_per_class, where)
    groups = None
    if any(parts[p].group_ids is not None for p in order):  # a recording never spans two parts
        groups = np.array([f"{p}/{g}" for p in order for g in
                           (parts[p].group_ids if parts[p].group_ids is not None else parts[p].case_ids)],
                          dtype=object)
    first = parts[order[0]]
    return SignalDataset(X, labels, sorted(set(labels.tolist())), [i for p in order for i in ids[p]],
                         first.channel_names, groups, where, predefined.fixed_test,
                         [s for p in order for s in parts[p].skipped], first.options,
                         first.summary, predefined)


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
    _check_classes(labels, min_per_class, source)
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


def _check_classes(labels: np.ndarray, min_per_class: int, source: str) -> None:
    counts = Counter(labels.tolist())
    small = [Problem(f"class '{label}'", f"{n} case(s), at least {min_per_class} needed for the "
                     "split; add cases, merge or remove the class, or lower --val-size/--test-size")
             for label, n in sorted(counts.items()) if n < min_per_class]
    if small:
        raise DataError(small)
    if len(counts) < 2:
        raise DataError(Problem(source, f"need at least 2 classes, found {sorted(counts)}"))


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return problems[:MAX_PROBLEMS] + [Problem("", f"... and {len(problems) - MAX_PROBLEMS} more")]


def read_signal_inputs(inputs, data_config: dict[str, Any]) -> dict[str, np.ndarray | DataError]:
    """Cases of unlabeled signal files for batch scoring, keyed ``<file>#<case id>``.

    Files are read with the model's reading options (windowing, columns). A case that cannot be
    parsed maps to its :class:`DataError`, so that batch scoring writes an error row for it and
    goes on with the others.
    """
    options = reading_options(data_config.get("reader"))
    out: dict[str, np.ndarray | DataError] = {}
    for source in inputs:
        raw = read_raw(str(source), options, require_labels=False)
        if options.resample:
            raw, _ = resample_recordings(raw, options.resample, options.max_gap)
        if options.window:
            raw, _ = window_recordings(raw, options.window, options.stride, options.label_rule)
        fatal = [p for i, p in raw.problems if i is None or i < 0]
        if fatal:
            raise DataError(fatal)
        bad: dict[int, list[Problem]] = {}
        for i, problem in raw.problems:
            bad.setdefault(i, []).append(problem)
        for i, (case_id, case) in enumerate(zip(raw.ids, raw.cases, strict=True)):
            out[f"{source}#{case_id}"] = DataError(bad[i]) if i in bad else case
    return out


def default_signal_entries() -> list:
    """The contestants of ``sigclass compare`` on signals: 1D CNNs (FCN, ResNet, Inception, the
    lab brief's CNN), recurrent nets (LSTM, GRU), MiniRocket, MultiROCKET-Hydra, catch22 + random
    forest (the non-deep baseline) and signal-as-image transfer.

    Networks train with the adaptive defaults of :class:`~sigclass.config.TrainConfig` (an
    epoch budget from a number of optimisation steps, capped by minutes; early stopping on the
    smoothed validation loss; a batch size that gives an epoch at least 4 steps); options the user sets win (``--epochs``,
    ``--batch-size``, ``--max-minutes``).
    """
    from ..compare import Entry

    networks = [("fcn", "fcn"), ("resnet1d", "resnet1d"), ("inception", "inception"),
                ("cnn1d", "simple_cnn1d"), ("lstm", "lstm"), ("gru", "gru")]
    return [
        *[Entry(name, "scratch", model) for name, model in networks],
        Entry("minirocket", "headless", "minirocket"),
        Entry("multirocket_hydra", "headless", "multirocket_hydra"),
        Entry("catch22_rf", "headless", "catch22", {"head": "random_forest"}),
        Entry("signal_image", "headless", "signal_image"),
    ]
