"""Stratified, reproducible train/validation/test splits, saved as JSON and reusable.

A split lists item ids (image paths relative to the dataset root, or signal case ids) with their
content hashes, so that every mode and model of a comparison uses exactly the same items, and a
split reused on changed data is caught instead of silently mixing old and new items.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import write_json
from ..choices import PARTS, raise_problems
from ..exceptions import DataError, Problem


@dataclass
class Split:
    """Item ids of the train, validation and test parts.

    Attributes:
        train, val, test: Item ids.
        seed: Seed the split was drawn with.
        val_size, test_size: Fractions asked for.
        hashes: Content hash of every id, checked when the split is reused.
        grouped: Whether items of one group (recording) were kept in one part.
        sources: Where each part came from (``"the folder val/"``, ``"drawn from train"``).
    """

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int = 0
    val_size: float = 0.15
    test_size: float = 0.2
    hashes: dict[str, str] = field(default_factory=dict)
    grouped: bool = False
    sources: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict, compare=False)  # not saved: data_report.json

    def part(self, name: str) -> list[str]:
        return getattr(self, name)

    def indices(self, dataset) -> dict[str, np.ndarray]:
        """Positions of each part's ids in ``dataset``; every id must be present, unchanged."""
        position = {item_id: i for i, item_id in enumerate(dataset.ids)}
        current = dict(zip(dataset.ids, dataset.content_hashes, strict=True))
        problems = []
        for name in PARTS:
            for item_id in self.part(name):
                if item_id not in position:
                    problems.append(Problem(item_id, f"in the split's '{name}' part but not in the dataset"))
                elif self.hashes.get(item_id) not in (None, current[item_id]):
                    problems.append(Problem(item_id, "content changed since the split was made"))
        if problems:
            raise DataError(problems, hint="The split file was made for other data. Make a new "
                            "split (leave out --split) or restore the original files.")
        return {name: np.array([position[i] for i in self.part(name)], dtype=np.int64) for name in PARTS}

    def unused(self, dataset) -> list[str]:
        """Dataset ids that the split does not mention (added after it was made)."""
        known = set(self.train) | set(self.val) | set(self.test)
        return [i for i in dataset.ids if i not in known]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "val_size": self.val_size, "test_size": self.test_size,
            "grouped": self.grouped, "sources": self.sources,
            "counts": {name: len(self.part(name)) for name in PARTS},
            "train": self.train, "val": self.val, "test": self.test, "hashes": self.hashes,
        }

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Split:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            return cls(
                train=list(raw["train"]), val=list(raw["val"]), test=list(raw["test"]),
                seed=int(raw.get("seed", 0)), val_size=float(raw.get("val_size", 0.0)),
                test_size=float(raw.get("test_size", 0.0)), hashes=dict(raw.get("hashes", {})),
                grouped=bool(raw.get("grouped", False)), sources=dict(raw.get("sources") or {}),
            )
        except FileNotFoundError:
            raise DataError(Problem(str(path), "split file does not exist")) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(Problem(str(path), f"not a sigclass split file ({exc}); it needs "
                                    "'train', 'val' and 'test' lists of ids")) from None


def min_class_size(val_size: float, test_size: float) -> int:
    """Fewest items a class needs so that each non-empty part gets at least one of it."""
    _check_sizes(val_size, test_size)
    return 1 + (val_size > 0) + (test_size > 0)


def size_problems(val_size: float, test_size: float) -> list[str]:
    """What is wrong with the fractions of a split, one message each."""
    problems = [f"The '{name}' option must be a fraction in [0, 1). Got {value!r}."
                for name, value in (("val_size", val_size), ("test_size", test_size))
                if not (isinstance(value, int | float) and 0 <= value < 1)]
    if not problems and val_size + test_size >= 1:
        problems.append(f"val_size + test_size must leave room for training data; got {val_size} "
                        f"+ {test_size}.")
    return problems


def _check_sizes(val_size: float, test_size: float) -> None:
    raise_problems(size_problems(val_size, test_size))


def make_split(
    dataset,
    val_size: float = 0.15,
    test_size: float = 0.2,
    seed: int = 0,
    fixed_test: list[str] | None = None,
    fixed_parts: dict[str, list[str]] | None = None,
    groups=None,
) -> Split:
    """Draw a stratified split of ``dataset``.

    Every class is represented in every non-empty part. When the dataset has groups (cases cut
    from one recording), whole groups go to one part. Parts the data brings with it are kept
    (split folders, a manifest's ``split`` column, a benchmark's own train/test split: the
    dataset's ``predefined`` parts, or ``fixed_parts``/``fixed_test`` given here); the parts not
    given are drawn from the rest, so a part the user set aside is never trained on.

    Args:
        dataset: An image or signal dataset (``ids``, ``labels``, ``groups``, ``content_hashes``).
        val_size: Fraction of items for validation (early stopping, model choice).
        test_size: Fraction of items held out for the final evaluation.
        seed: Seed; the same seed and data give the same split.
        fixed_test: Ids of a predefined test part.
        fixed_parts: Ids of predefined parts, ``{"train"|"val"|"test": ids}``; default: the
            dataset's own (``dataset.predefined``).
        groups: One group id per item that must stay in one part (default: ``dataset.groups``;
            runs pass recordings joined with near-duplicate groups).
    """
    _check_sizes(val_size, test_size)
    predefined = getattr(dataset, "predefined", None)
    sources: dict[str, str] = {}
    if fixed_parts is None and predefined is not None:
        fixed_parts, sources = predefined.parts, dict(predefined.sources)
    fixed = {k: list(v) for k, v in (fixed_parts or {}).items() if k in ("val", "test")}
    if fixed_test is not None and "test" not in fixed:
        fixed["test"] = list(fixed_test)
    ids = np.asarray(dataset.ids, dtype=object)
    labels = np.asarray(dataset.labels, dtype=object)
    groups = dataset.groups if groups is None else groups
    rng = np.random.default_rng(seed)
    position = {item_id: i for i, item_id in enumerate(ids)}
    held = {part: np.array([position[i] for i in fixed.get(part, []) if i in position], dtype=np.int64)
            for part in ("val", "test")}
    taken = set(held["val"].tolist()) | set(held["test"].tolist())
    rest = np.array([i for i in range(len(ids)) if i not in taken], dtype=np.int64)
    test_fraction = 0.0 if "test" in fixed else test_size
    val_fraction = 0.0 if "val" in fixed else val_size / (1 - test_fraction)
    fractions = [test_fraction, val_fraction]
    if groups is None:
        parts = _stratified(labels[rest], fractions, rng)
    else:
        parts = _grouped(labels[rest], np.asarray(groups, dtype=object)[rest], fractions, seed)
    test_part = held["test"] if "test" in fixed else rest[parts[0]]
    val_part = held["val"] if "val" in fixed else rest[parts[1]]
    train_part = rest[parts[2]]
    for part in ("train", "val", "test"):
        if not fixed:
            sources.setdefault(part, "drawn at random")
        else:
            sources.setdefault(part, "the items not set aside" if part == "train"
                               else "drawn from the training part")
    hashes = dict(zip(dataset.ids, dataset.content_hashes, strict=True))
    return Split(
        train=[ids[i] for i in np.sort(train_part)],
        val=[ids[i] for i in np.sort(val_part)],
        test=[ids[i] for i in np.sort(test_part)],
        seed=seed, val_size=val_size, test_size=test_size, hashes=hashes,
        grouped=groups is not None, sources=sources,
    )


def _stratified(labels: np.ndarray, fractions: list[float], rng) -> list[np.ndarray]:
    """Per class: ``fractions[0]`` to the first part, then ``fractions[1]`` of the rest, etc."""
    first, second, remainder = [], [], []
    problems = []
    for label in sorted(set(labels)):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        n = len(members)
        n_first = _take(n, fractions[0])
        n_second = _take(n - n_first, fractions[1])
        if n - n_first - n_second < 1:
            problems.append(Problem(str(label), f"class too small for the split: {n} item(s)"))
            continue
        first += list(members[:n_first])
        second += list(members[n_first:n_first + n_second])
        remainder += list(members[n_first + n_second:])
    if problems:
        raise DataError(problems, hint="Add items to these classes or lower --val-size/--test-size.")
    return [np.array(part, dtype=np.int64) for part in (first, second, remainder)]


def _take(n: int, fraction: float) -> int:
    if fraction <= 0 or n == 0:
        return 0
    return min(n - 1, max(1, int(math.floor(n * fraction + 0.5))))


def _grouped(labels: np.ndarray, groups: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Group-aware stratified parts with scikit-learn's StratifiedGroupKFold."""
    from sklearn.model_selection import StratifiedGroupKFold

    def carve(index: np.ndarray, fraction: float, fold_seed: int) -> tuple[np.ndarray, np.ndarray]:
        if fraction <= 0:
            return np.array([], dtype=np.int64), index
        n_groups = len(set(groups[index]))
        n_splits = max(2, min(n_groups, int(round(1 / fraction))))
        if n_groups < 2:
            raise DataError(Problem("groups", f"only {n_groups} group(s): a group-aware split "
                                    "needs at least 2 recordings"))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=fold_seed)
        keep, held = next(folds.split(index, labels[index], groups[index]))
        return index[held], index[keep]

    everything = np.arange(len(labels))
    first, rest = carve(everything, fractions[0], seed)
    second, remainder = carve(rest, fractions[1], seed + 1)
    return [first, second, remainder]
