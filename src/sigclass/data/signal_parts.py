"""Signal parts: a folder of split-named signal files, and parts given apart (``--val-dir``,
``--test-dir``) joined into one dataset whose parts are a predefined split.

The counterpart of :mod:`sigclass.data.image_parts`; the rules are those of
:mod:`sigclass.data.predefined`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..exceptions import DataError, Problem
from .predefined import apply_rules, canonical_split, check_same_classes
from .signal_dataset import SignalDataset, check_classes
from .signal_readers import SIGNAL_SUFFIXES


def split_files(folder: Path) -> dict[str, Path]:
    """The signal file of each split part in ``folder``: ``train.csv``/``test.csv`` (any split
    name, any signal suffix), the UCR archive's ``NAME_TRAIN.ts``/``NAME_TEST.ts``, or
    ``train/``, ``test/`` sub-folders holding one signal file each."""
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


def merge_parts(parts: dict[str, SignalDataset], sources: dict[str, str], where: str,
                min_per_class: int = 1) -> SignalDataset:
    """One dataset of several parts (ids prefixed by the part), its parts kept as a predefined
    split; every part needs the same classes and the same shape."""
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
    check_classes(labels, min_per_class, where)
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


def join_signal_datasets(base: SignalDataset, added: SignalDataset, prefix: str,
                         where: str) -> SignalDataset:
    """The cases of ``base`` and those of ``added`` (ids prefixed by ``prefix``) as one dataset
    (``sigclass update``); both need the same channels and length. ``base``'s ids, options and
    predefined parts are kept, so its split still applies."""
    if added.X.shape[1:] != base.X.shape[1:]:
        raise DataError(Problem(where, f"{added.n_channels} channel(s) x {added.n_timepoints} "
                                f"timepoints per case, the model takes {base.n_channels} x "
                                f"{base.n_timepoints}; give cases of that shape (cut or pad them, "
                                "e.g. with signal.window or signal.length_policy and signal.length "
                                "in the run's config)"))
    groups = None
    if base.group_ids is not None or added.group_ids is not None:  # a recording stays in one part
        groups = np.concatenate([
            base.group_ids if base.group_ids is not None else np.asarray(base.case_ids, dtype=object),
            np.array([f"{prefix}{g}" for g in (added.group_ids if added.group_ids is not None
                                                else added.case_ids)], dtype=object)])
    labels = np.concatenate([base.label_values, added.label_values])
    return SignalDataset(np.concatenate([base.X, added.X]).astype(base.X.dtype, copy=False), labels,
                         sorted(set(map(str, labels.tolist()))),
                         [*base.case_ids, *(f"{prefix}{i}" for i in added.case_ids)],
                         base.channel_names, groups, base.source, base.fixed_test,
                         [*base.skipped, *added.skipped], base.options, base.summary,
                         base.predefined)
