"""Data as users keep it: split folders, a manifest's split column, --val-dir/--test-dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import sigclass as sc
from conftest import write_image
from sigclass.data.images import ImageDataset
from sigclass.exceptions import DataError


def _rearrange(fridge, root, parts=("train", "val"), every=4):
    """Copy the photos into root/<part>/<class>/: every ``every``-th photo to the later parts."""
    for class_dir in sorted(p for p in fridge.iterdir() if p.is_dir()):
        for i, photo in enumerate(sorted(class_dir.iterdir())):
            part = parts[0] if i % every else parts[1 + (i // every) % (len(parts) - 1)]
            (root / part / class_dir.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, root / part / class_dir.name / photo.name)
    return root


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_train_and_val_folders_are_a_split_not_two_classes(fridge, tmp_path):
    root = _rearrange(fridge, tmp_path / "photos", ("train", "val"))
    out = tmp_path / "run"
    done = _cli("train", root, "--mode", "headless", "--model", "efficientnet_lite0", "--no-track",
                "--cam-examples", "0", "--out", out, "-q")
    assert done.returncode == 0, done.stderr
    n_val = sum(1 for _ in (root / "val").rglob("*.jpg"))
    assert f"split: test = the folder val/ ({n_val} items)" in done.stdout
    split = json.loads((out / "split.json").read_text())
    assert split["sources"]["test"] == "the folder val/"
    assert all(i.startswith("val/") for i in split["test"]) and len(split["test"]) == n_val
    assert all(i.startswith("train/") for i in split["train"] + split["val"])
    report = json.loads((out / "data_report.json").read_text())
    assert report["classes"] == ["can", "carton", "milk_bottle", "water_bottle"]
    assert any("held-out test part" in line for line in report["split_sources"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8  # a "train vs val" classifier would be near chance
    evaluated = _cli("evaluate", out, root)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"evaluating test = the folder val/ ({n_val} items)" in evaluated.stdout


def _generated(root, parts, classes=("cat", "dog"), n=4):
    for p, part in enumerate(parts):
        for c, name in enumerate(classes):
            for i in range(n):
                write_image(root / part / name / f"{name}_{i}.png", seed=1000 * p + 100 * c + i)
    return root


@pytest.mark.parametrize("parts, expected", [
    (("train", "test"), {"test": "the folder test/", "val": "drawn from the training part"}),
    (("Train", "Valid", "TEST"), {"test": "the folder TEST/", "val": "the folder Valid/"}),
])
def test_split_folder_rules(tmp_path, parts, expected):
    data = ImageDataset.from_folder(_generated(tmp_path / "d", parts))
    split = sc.make_split(data, seed=0)
    for part, source in expected.items():
        assert split.sources[part] == source
    folder = {p.lower()[:3] if p.lower() != "valid" else "val": p for p in parts}
    assert all(i.startswith(folder["tes"] + "/") for i in split.test)
    assert not set(split.train) & (set(split.val) | set(split.test))
    assert all(i.startswith(folder["tra"] + "/") for i in split.train)


def test_bad_split_layouts_are_named(tmp_path):
    mixed = _generated(tmp_path / "mixed", ("train", "extra"))
    with pytest.raises(DataError, match=r"mixes split folders \(train/\) with other folders \(extra/\)"):
        ImageDataset.from_folder(mixed)
    missing = _generated(tmp_path / "missing", ("train", "test"))
    shutil.rmtree(missing / "test" / "dog")
    with pytest.raises(DataError, match=r"the folder test/: has no items of class 'dog'"):
        ImageDataset.from_folder(missing)
    stray = _generated(tmp_path / "stray", ("train", "test"))
    write_image(stray / "train" / "loose.png")
    with pytest.raises(DataError, match=r"train/loose.png: file directly in the split folder train/"):
        ImageDataset.from_folder(stray)
    no_train = _generated(tmp_path / "notrain", ("val", "test"))
    with pytest.raises(DataError, match="but no training part"):
        ImageDataset.from_folder(no_train)


def test_two_levels_of_class_folders_is_an_error_showing_the_tree(tmp_path):
    root = _generated(tmp_path / "nested", ("set1", "set2"))
    with pytest.raises(DataError) as info:
        ImageDataset.from_folder(root)
    text = str(info.value)
    assert "two levels of folders" in text and "set1/  ->  cat/, dog/" in text
    assert "name them train/, val/ and test/" in text and str(root / "set1") in text


def test_manifest_split_column(tmp_path):
    root = _generated(tmp_path / "flat", ("all",))
    rows = ["path,label,split"]
    for i, photo in enumerate(sorted((root / "all").rglob("*.png"))):
        rows.append(f"{photo.relative_to(root).as_posix()},{photo.parent.name},{'test' if i % 4 == 0 else 'train'}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    data = ImageDataset.from_manifest(root / "data.csv")
    split = sc.make_split(data, seed=0)
    assert len(split.test) == 2 and split.sources["test"] == "the rows with split=test of data.csv"
    (root / "bad.csv").write_text(rows[0] + "\n" + rows[1].rsplit(",", 1)[0] + ",holdout\n")
    with pytest.raises(DataError, match=r"split 'holdout' is not one of 'train', 'val', 'test' \(bad.csv line 2\)"):
        ImageDataset.from_manifest(root / "bad.csv")


def test_test_dir_is_held_out(tmp_path):
    from sigclass.workflows.prepare import load_parts

    pool = _generated(tmp_path / "pool", ("x",), n=6) / "x"
    held = _generated(tmp_path / "held", ("x",), n=2) / "x"
    data = load_parts(pool, {"test": str(held)})
    split = sc.make_split(data, seed=0)
    assert len(split.test) == 4 and all(i.startswith("test/") for i in split.test)
    assert split.sources["test"] == f"'{held}' (--test-dir)"
    assert len(split.val) >= 2 and all(i.startswith("train/") for i in split.train + split.val)


def test_signal_split_files(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    folder = tmp_path / "sig"
    folder.mkdir()
    for part, n in (("TRAIN", 12), ("TEST", 6)):
        frame = pd.DataFrame(rng.standard_normal((n, 20)), columns=[str(i) for i in range(20)])
        frame.insert(0, "label", ["a", "b"] * (n // 2))
        frame.to_csv(folder / f"Toy_{part}.csv", index=False)
    data = sc.load_dataset(folder)
    assert data.modality == "signal"
    split = sc.make_split(data, seed=0)
    assert len(split.test) == 6 and split.sources["test"] == "the file Toy_TEST.csv"
    assert all(i.startswith("train/") for i in split.train + split.val)
