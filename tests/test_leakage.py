"""Near-duplicates: copies of a photo are grouped, kept in one part, and reported when a split leaks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

import sigclass as sc
from sigclass.config import RunConfig
from sigclass.data.images import ImageDataset
from sigclass.data.leakage import LeakageWarning, check_leakage, near_duplicate_groups
from sigclass.exceptions import DataError
from sigclass.workflows.prepare import resolve_split as _resolve_split


def _with_copies(fridge, root):
    """fridgeObjects plus a re-encoded and a half-size copy of the first photo of each class."""
    shutil.copytree(fridge, root, ignore=shutil.ignore_patterns("*.md"))
    copies = {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        original = sorted(class_dir.glob("*.jpg"))[0]
        image = Image.open(original).convert("RGB")
        image.save(class_dir / "copy_q40.jpg", quality=40)
        image.resize((image.width // 2, image.height // 2)).save(class_dir / "copy_half.png")
        copies[class_dir.name] = {original.relative_to(root).as_posix(), f"{class_dir.name}/copy_q40.jpg",
                                  f"{class_dir.name}/copy_half.png"}
    return root, copies


def test_copies_are_grouped_and_kept_in_one_part(fridge, tmp_path):
    root, copies = _with_copies(fridge, tmp_path / "photos")
    data = ImageDataset.from_folder(root)
    groups = [{data.ids[i] for i in g} for g in near_duplicate_groups(data)]
    for members in copies.values():
        assert any(members <= g for g in groups), members
    assert sum(len(g) for g in groups) <= 3 * len(copies) + 2  # distinct photos are not grouped
    split = _resolve_split(None, RunConfig(data=str(root)), data)
    where = {i: name for name in ("train", "val", "test") for i in split.part(name)}
    for members in copies.values():
        assert len({where[i] for i in members}) == 1
    assert split.checks["near_duplicates"]["n_leaked_pairs"] == 0


def test_a_split_that_leaks_is_reported(fridge, tmp_path):
    root, copies = _with_copies(fridge, tmp_path / "photos")
    data = ImageDataset.from_folder(root)
    members = sorted(copies["can"])
    split = sc.make_split(data, seed=0)
    for name in ("train", "val", "test"):
        split.part(name)[:] = [i for i in split.part(name) if i not in members]
    split.train.append(members[0])
    split.test.append(members[1])
    with pytest.warns(LeakageWarning, match="near-duplicate pair"):
        report = check_leakage(split, data, "warn")
    assert {(p["a"], p["b"]) for p in report["leaked_pairs"]} & {(members[0], members[1]), (members[1], members[0])}
    with pytest.raises(DataError, match="near-duplicate of"):
        check_leakage(split, data, "error")
    assert check_leakage(split, data, "ignore")["n_leaked_pairs"] >= 1


def test_identical_signal_windows_are_grouped():
    from sigclass.data.signals import SignalDataset

    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 2, 30)).astype(np.float32)
    X[7] = X[2] * 3 + 1  # the same shape, rescaled: a near-identical case
    data = SignalDataset(X, np.array(["a", "b"] * 5, dtype=object), ["a", "b"],
                         [f"c{i}" for i in range(10)], ["x", "y"])
    assert near_duplicate_groups(data) == [[2, 7]]


@pytest.mark.parametrize(("noise", "grouped"), [(0.04, True), (0.06, False)])
def test_signal_cases_link_below_a_znorm_rms_difference_of_005(noise, grouped):
    from sigclass.data.signals import SignalDataset

    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 2, 30)).astype(np.float32)
    X[7] = X[2] + noise * rng.standard_normal((2, 30)).astype(np.float32)  # RMS difference ~noise
    data = SignalDataset(X, np.array(["a", "b"] * 5, dtype=object), ["a", "b"],
                         [f"c{i}" for i in range(10)], ["x", "y"])
    assert near_duplicate_groups(data) == ([[2, 7]] if grouped else [])
    assert data.similarity_method("phash") == "znorm_rms"  # the method compared, for the report
