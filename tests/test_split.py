"""Splits: stratified, reproducible, saved and reused, and refused on changed data."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_image
from sigclass.data.images import ImageDataset
from sigclass.data.split import Split, make_split, min_class_size
from sigclass.exceptions import ConfigError, DataError


def test_split_is_stratified_disjoint_and_complete(image_folder):
    data = ImageDataset.from_folder(image_folder)
    split = make_split(data, val_size=0.2, test_size=0.3, seed=1)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(data.ids)
    labels = dict(zip(data.ids, data.labels, strict=True))
    for part in (split.train, split.val, split.test):
        assert {labels[i] for i in part} == {"cat", "dog", "fox"}  # every class in every part
    assert [len(split.test), len(split.val), len(split.train)] == [6, 3, 9]


def test_same_seed_same_split_other_seed_other_split(fridge):
    data = ImageDataset.from_folder(fridge)
    first, again, other = (make_split(data, seed=s) for s in (7, 7, 8))
    assert first.to_dict() == again.to_dict()
    assert first.test != other.test


def test_split_file_round_trip_and_reuse(image_folder, tmp_path):
    data = ImageDataset.from_folder(image_folder)
    split = make_split(data, seed=3)
    split.save(tmp_path / "split.json")
    loaded = Split.load(tmp_path / "split.json")
    assert loaded.to_dict() == split.to_dict()
    index = loaded.indices(data)
    assert [data.ids[i] for i in index["test"]] == split.test
    assert loaded.unused(data) == []


def test_reused_split_refuses_changed_or_missing_files(image_folder, tmp_path):
    data = ImageDataset.from_folder(image_folder)
    split = make_split(data, seed=3)
    changed = split.test[0]
    write_image(image_folder / changed, seed=12345)
    missing = split.train[0]
    (image_folder / missing).unlink()
    with pytest.raises(DataError) as caught:
        split.indices(ImageDataset.from_folder(image_folder))
    found = {p.path: p.reason for p in caught.value.problems}
    assert found == {changed: "content changed since the split was made",
                     missing: "in the split's 'train' part but not in the dataset"}
    assert "The split file was made for other data" in str(caught.value)


def test_bad_split_file_and_sizes(tmp_path):
    (tmp_path / "s.json").write_text('{"train": []}')
    with pytest.raises(DataError, match="not a sigclass split file"):
        Split.load(tmp_path / "s.json")
    with pytest.raises(DataError, match="split file does not exist"):
        Split.load(tmp_path / "none.json")
    with pytest.raises(ConfigError, match=r"The 'test_size' option must be a fraction in \[0, 1\). Got 1.5"):
        min_class_size(0.1, 1.5)
    assert min_class_size(0.1, 0.2) == 3 and min_class_size(0.0, 0.2) == 2


class _Grouped:
    """A minimal dataset with groups (cases cut from recordings)."""

    def __init__(self):
        self.groups = np.repeat(np.arange(12), 5)
        self.labels = np.array(["a" if g % 2 else "b" for g in self.groups], dtype=object)
        self.ids = [f"case{i}" for i in range(60)]
        self.content_hashes = self.ids


def test_grouped_split_keeps_each_group_in_one_part():
    data = _Grouped()
    split = make_split(data, val_size=0.2, test_size=0.25, seed=0)
    group_of = dict(zip(data.ids, data.groups, strict=True))
    parts = [{group_of[i] for i in split.part(name)} for name in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert split.grouped and all(parts)


def test_fixed_test_part_is_kept(image_folder):
    data = ImageDataset.from_folder(image_folder)
    fixed = [i for i in data.ids if i.endswith(("_0.png", "_1.png"))]
    split = make_split(data, val_size=0.2, seed=0, fixed_test=fixed)
    assert split.test == sorted(fixed)
    assert not set(split.val) & set(fixed)
