"""Near-duplicates and the leakage they cause when a copy lands on both sides of a split.

Exact duplicates are found while images are read (:mod:`sigclass.data.images`). This module finds
*near* duplicates: a re-encoded, resized or cropped copy of an image, or an identical or almost
identical signal window. Items closer than a threshold are linked and the connected components
are the near-duplicate groups (scikit-learn's radius neighbours graph, SciPy's components).

- Images: a perceptual hash (``imagehash``; ``phash`` by default, chosen by
  measured on re-encoded and resized copies: crops of 10 % or more are not found), linked within a Hamming distance; or pooled CNN features
  (``features``) linked above a cosine similarity.
- Signals: every case z-normalized per channel; cases whose root-mean-square difference is
  below the threshold are linked (identical cases have distance 0).

:func:`keep_together` moves each group into one part of a drawn split (runs do it after the
stratified draw).
:func:`check_leakage` checks any split (drawn, reused or predefined): a group with members in
two parts is leakage, reported with the pairs named, and ``on_leak`` decides between an error,
a warning and silence.
"""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import LEAK_POLICIES, NEAR_DUPLICATE_METHODS, check_choice
from ..exceptions import DataError, Problem

logger = logging.getLogger(__name__)

#: How signal cases are compared: the root-mean-square difference of z-normalized channels
#: (:func:`signal_vectors`).
ZNORM_RMS = "znorm_rms"
#: Default link thresholds: Hamming bits of a 64-bit hash, cosine similarity, z-normalized RMS.
# phash at 2 bits: 90 % of JPEG-quality-30 and half-size copies of fridgeObjects and ELPV photos are
# within 2 bits (all within 4); on ELPV, 4 bits chains 582 look-alike cells into groups of up to 21.
DEFAULT_THRESHOLDS = {"phash": 2, "dhash": 2, "features": 0.95, ZNORM_RMS: 0.05}
MAX_PAIRS_SHOWN = 20  # the report lists every pair; messages name the first ones


class LeakageWarning(UserWarning):
    """Near-duplicates straddle the parts of a split."""


# -- the vectors that are compared ---------------------------------------------------------------

def image_hashes(paths: list[Path], method: str = "phash") -> np.ndarray:
    """``(n, 64)`` boolean hash bits of image files (``imagehash.phash`` or ``dhash``)."""
    import imagehash
    from PIL import Image

    function = {"phash": imagehash.phash, "dhash": imagehash.dhash}[method]

    def one(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(function(image.convert("RGB")).hash, dtype=bool).ravel()

    if not paths:
        return np.zeros((0, 64), dtype=bool)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return np.stack(list(pool.map(one, paths)))


def signal_vectors(X: np.ndarray) -> np.ndarray:
    """Cases z-normalized per channel and flattened, scaled so that the Euclidean distance of two
    rows is their root-mean-square difference (a constant channel becomes zeros)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=2, keepdims=True)
    std = X.std(axis=2, keepdims=True)
    Z = np.divide(X - mean, std, out=np.zeros_like(X), where=std > 1e-12)
    flat = Z.reshape(len(Z), -1)
    return flat / np.sqrt(max(flat.shape[1], 1))


def link_groups(vectors: np.ndarray, metric: str, radius: float) -> list[list[int]]:
    """Groups (connected components, 2 or more members) of rows within ``radius`` of each other."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import radius_neighbors_graph

    if len(vectors) < 2:
        return []
    graph = radius_neighbors_graph(vectors, radius, metric=metric, mode="connectivity",
                                   include_self=False)
    _, component = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for index, label in enumerate(component):
        members.setdefault(int(label), []).append(index)
    return sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])


_GROUPS: dict[tuple, list[list[int]]] = {}  # by dataset fingerprint: compare's entries hash once


def near_duplicate_groups(dataset, method: str = "phash", threshold: float | None = None,
                          features: np.ndarray | None = None) -> list[list[int]]:
    """Positions of near-duplicate items of ``dataset``, one list per group.

    Args:
        dataset: An image or signal dataset.
        method: Images: ``phash``, ``dhash`` (bits within ``threshold``), ``features`` (cosine
            similarity of ``features`` at least ``threshold``) or ``off``. Signals ignore it
            (``off`` turns the check off).
        threshold: The link threshold; ``None`` takes :data:`DEFAULT_THRESHOLDS`.
        features: Feature rows of the items, for ``method="features"``.
    """
    check_choice("near_duplicates", method, NEAR_DUPLICATE_METHODS)
    if method == "off" or len(dataset) < 2:
        return []
    key = (dataset.fingerprint(), tuple(dataset.ids), method, threshold)
    if features is None and key in _GROUPS:
        return [list(g) for g in _GROUPS[key]]
    groups = _find_groups(dataset, method, threshold, features)
    if features is None:
        _GROUPS[key] = groups
    return [list(g) for g in groups]


def _find_groups(dataset, method: str, threshold: float | None,
                 features: np.ndarray | None) -> list[list[int]]:
    vectors, metric, radius = dataset.similarity_vectors(method, threshold, features)
    return link_groups(vectors, metric, radius)


# -- a split against the groups ------------------------------------------------------------------

def leaked_pairs(split, dataset, groups: list[list[int]]) -> list[dict[str, str]]:
    """Pairs of one group that sit in different parts of ``split``: ``{a, part_a, b, part_b}``."""
    ids = dataset.ids
    where = {item_id: name for name in ("train", "val", "test") for item_id in split.part(name)}
    pairs = []
    for group in groups:
        placed = [(ids[i], where[ids[i]]) for i in group if ids[i] in where]
        for k, (a, part_a) in enumerate(placed):
            for b, part_b in placed[k + 1:]:
                if part_a != part_b:
                    pairs.append({"a": a, "part_a": part_a, "b": b, "part_b": part_b})
    return pairs


def leakage_report(split, dataset, groups: list[list[int]], method: str) -> dict[str, Any]:
    """The ``near_duplicates`` section of ``data_report.json``."""
    ids = dataset.ids
    pairs = leaked_pairs(split, dataset, groups)
    return {
        "method": dataset.similarity_method(method),
        "n_groups": len(groups),
        "n_items_in_groups": int(sum(len(g) for g in groups)),
        "groups": [[ids[i] for i in g] for g in groups],
        "n_leaked_pairs": len(pairs),
        "leaked_pairs": pairs,
    }


def check_leakage(split, dataset, on_leak: str = "warn", method: str = "phash",
                  threshold: float | None = None, groups: list[list[int]] | None = None,
                  features: np.ndarray | None = None) -> dict[str, Any]:
    """Check that no near-duplicate group straddles the parts of ``split``.

    Works on any split: drawn by :func:`~sigclass.make_split` (which keeps groups together, so
    only a split reused on changed data or a predefined one can leak), loaded from a file, or
    given by the data's own folders.

    Args:
        split: The :class:`~sigclass.data.split.Split`.
        dataset: The dataset it splits.
        on_leak: ``error`` raises :class:`DataError` naming the pairs, ``warn`` warns
            (:class:`LeakageWarning`), ``ignore`` only reports.
        method, threshold, features: As in :func:`near_duplicate_groups`.
        groups: Groups already found (positions), instead of finding them again.

    Returns:
        The report section (see :func:`leakage_report`).
    """
    check_choice("on_leak", on_leak, LEAK_POLICIES)
    if groups is None:
        groups = near_duplicate_groups(dataset, method, threshold, features)
    report = leakage_report(split, dataset, groups, method)
    pairs = report["leaked_pairs"]
    if not pairs or on_leak == "ignore":
        return report
    problems = [Problem(p["a"], f"near-duplicate of {p['b']}: '{p['part_a']}' and '{p['part_b']}' "
                        "parts share it") for p in pairs[:MAX_PAIRS_SHOWN]]
    if len(pairs) > MAX_PAIRS_SHOWN:
        problems.append(Problem("...", f"{len(pairs) - MAX_PAIRS_SHOWN} more pair(s) in "
                                "data_report.json ('near_duplicates')"))
    hint = ("Near-duplicates across the parts inflate test scores. Remove the copies, move them to "
            "one part, or let sigclass draw the split (it keeps each group in one part); "
            "--on-leak warn|ignore accepts the split as it is.")
    if on_leak == "error":
        raise DataError(problems, hint=hint)
    warnings.warn(f"{len(pairs)} near-duplicate pair(s) straddle the split, e.g. "
                  f"{pairs[0]['a']} ({pairs[0]['part_a']}) ~ {pairs[0]['b']} ({pairs[0]['part_b']}); "
                  "see data_report.json ('near_duplicates'). --on-leak error stops on this.",
                  LeakageWarning, stacklevel=2)
    return report


def keep_together(split, dataset, groups: list[list[int]]) -> dict[str, int]:
    """Move the members of each near-duplicate group to one part of a drawn ``split`` (the part
    of most of them, training on a tie), so the stratified split of everything else stays as it
    was.

    A group larger than one twentieth of the data (at least 8 items) is a cluster of similar
    items rather than copies of one (periodic signals, a plain background); moving it could
    empty a part, so it stays where the draw put it and the leakage check reports its pairs.
    Returns how many items moved and how many groups were too large to move.
    """
    ids = dataset.ids
    where = {item_id: name for name in ("train", "val", "test") for item_id in split.part(name)}
    limit = max(8, len(ids) // 20)
    moved = too_large = 0
    for group in groups:
        members = [ids[i] for i in group if ids[i] in where]
        if len(members) > limit:
            too_large += 1
            continue
        parts = [where[m] for m in members]
        target = max(("train", "val", "test"), key=lambda name: (parts.count(name), name == "train"))
        for member in members:
            if where[member] != target:
                split.part(where[member]).remove(member)
                split.part(target).append(member)
                where[member] = target
                moved += 1
    for name in ("train", "val", "test"):
        split.part(name).sort()
    return {"moved_items": moved, "groups_too_large_to_move": too_large}


def describe(report: dict[str, Any] | None) -> str:
    """The summary line of train and compare."""
    if not report:
        return "near-duplicates: not checked"
    return (f"near-duplicates: {report['n_groups']} group(s), {report['n_leaked_pairs']} pair(s) "
            "across the split")
