"""Data inputs that must never reach a reader: named pipes, devices, oversized files, links out of
the dataset root; batch scoring writes an error row for each; signal reports list every problem,
repeated case ids included."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sigclass as sc
from conftest import write_image
from sigclass.cli import build_parser, main, resolve_config
from sigclass.data.images import ImageDataset
from sigclass.data.signals import load_signals
from sigclass.exceptions import ConfigError, DataError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                reason="named pipes and /dev/zero are POSIX")

PIPE = ("not a regular file: a named pipe (FIFO); only regular files are read, replace it with "
        "the data file itself or remove it")
DEV_ZERO = ("not a regular file: a symbolic link to /dev/zero, which is a character device; only "
            "regular files are read, replace it with the data file itself or remove it")


def _classes(root: Path, n: int = 3) -> Path:
    for c, name in enumerate(("cat", "dog")):
        for i in range(n):
            write_image(root / name / f"{name}_{i}.png", size=(16, 16), seed=10 * c + i)
    return root


def _reasons(error: DataError) -> dict[str, str]:
    return {p.path: p.reason for p in error.problems}


@pytest.mark.timeout(60)
def test_a_pipe_and_a_link_to_dev_zero_in_a_class_folder_are_named_not_read(tmp_path):
    root = _classes(tmp_path / "data")
    os.mkfifo(root / "cat" / "p.jpg")
    os.symlink("/dev/zero", root / "dog" / "x.jpg")
    with pytest.raises(DataError) as caught:
        ImageDataset.from_folder(root)
    assert _reasons(caught.value) == {"cat/p.jpg": PIPE, "dog/x.jpg": DEV_ZERO}
    assert "--on-bad-file skip" in str(caught.value)
    with pytest.warns(UserWarning, match="Skipped 2 bad file"):
        data = ImageDataset.from_folder(root, on_bad_file="skip")
    assert len(data) == 6
    assert data.report()["skipped"] == [{"path": "cat/p.jpg", "reason": PIPE},
                                        {"path": "dog/x.jpg", "reason": DEV_ZERO}]


def test_a_file_over_max_file_mb_is_refused_from_its_size(tmp_path, capsys):
    root = _classes(tmp_path / "data")
    with open(root / "cat" / "huge.png", "wb") as handle:
        handle.truncate(3 * 1024 * 1024)  # sparse: 3 MB that take no disk
    with pytest.raises(DataError) as caught:
        ImageDataset.from_folder(root, max_file_mb=2)
    assert _reasons(caught.value) == {
        "cat/huge.png": "file of 3.0 MB is over the 2 MB limit per file; shrink or split it, or "
                        "raise --max-file-mb (max_file_mb)"}
    with pytest.raises(DataError, match="huge.png: not an image"):  # within 4 MB: read, no image
        ImageDataset.from_folder(root, max_file_mb=4)
    # the option of the command line, and of the configuration
    assert main(["train", str(root), "--max-file-mb", "2", "--no-track"]) == 2
    assert "cat/huge.png: file of 3.0 MB is over the 2 MB limit" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "x", "--max-file-mb", "64", "--follow-symlinks"])
    config = resolve_config(args)
    assert (config.max_file_mb, config.follow_symlinks) == (64.0, True)
    assert (sc.RunConfig().max_file_mb, sc.RunConfig().follow_symlinks) == (512.0, False)
    with pytest.raises(ConfigError, match="The 'max_file_mb' option must be a positive number"):
        sc.RunConfig(data="x", max_file_mb=0).validate()


def test_links_out_of_the_root_are_refused_unless_followed(tmp_path):
    root = _classes(tmp_path / "data")
    outside = write_image(tmp_path / "elsewhere" / "far.png", size=(16, 16), seed=99)
    os.symlink(outside, root / "cat" / "far.png")
    os.symlink(root / "dog" / "dog_0.png", root / "cat" / "near.png")  # inside the root: read
    with pytest.raises(DataError) as caught:
        ImageDataset.from_folder(root)
    assert _reasons(caught.value) == {
        "cat/far.png": f"symbolic link leaving the dataset root (the file is {outside}); copy the "
                       f"file into {root}, or pass --follow-symlinks (follow_symlinks=True) to read "
                       "such links",
        "cat/near.png": "exact duplicate across classes: same content as dog/dog_0.png ('dog'); "
                        "contradicting labels, keep one copy in the right class",
        "dog/dog_0.png": "exact duplicate across classes: same content as cat/near.png ('cat'); "
                         "contradicting labels, keep one copy in the right class"}
    (root / "cat" / "near.png").unlink()
    followed = ImageDataset.from_folder(root, follow_symlinks=True)
    assert "cat/far.png" in followed.ids and len(followed) == 7
    # a manifest: the link's path is inside the root, its file is not
    manifest = root / "list.csv"
    manifest.write_text("path,label\ncat/far.png,cat\n" + "".join(
        f"{c}/{c}_{i}.png,{c}\n" for c in ("cat", "dog") for i in range(3)))
    with pytest.raises(DataError) as caught:
        ImageDataset.from_manifest(manifest)
    assert _reasons(caught.value)["cat/far.png"].endswith(
        "keep every file under the root or pass a wider --root (it is a symbolic link to a file "
        "outside the root: --follow-symlinks reads it)")
    assert "cat/far.png" in ImageDataset.from_manifest(manifest, follow_symlinks=True).ids


@pytest.mark.timeout(60)
def test_signal_files_that_are_pipes_devices_or_too_large_are_refused(tmp_path):
    os.mkfifo(tmp_path / "p.csv")
    with pytest.raises(DataError) as caught:
        load_signals(str(tmp_path / "p.csv"))
    assert _reasons(caught.value) == {str(tmp_path / "p.csv"): PIPE}
    os.symlink("/dev/zero", tmp_path / "z.npz")
    with pytest.raises(DataError) as caught:
        load_signals(str(tmp_path / "z.npz"))
    assert _reasons(caught.value) == {str(tmp_path / "z.npz"): DEV_ZERO}
    with open(tmp_path / "big.npz", "wb") as handle:
        handle.truncate(2 * 1024 * 1024)
    with pytest.raises(DataError, match=r"big.npz: file of 2.0 MB is over the 1 MB limit per file"):
        load_signals(str(tmp_path / "big.npz"), max_file_mb=1)
    # a folder of split files: every refused part is named at once
    folder = tmp_path / "parts"
    folder.mkdir()
    os.mkfifo(folder / "train.csv")
    os.symlink("/dev/zero", folder / "test.csv")
    with pytest.raises(DataError) as caught:
        load_signals(str(folder))
    assert sorted(_reasons(caught.value)) == [str(folder / "test.csv"),
                                              str(folder / "train.csv")]


def test_a_repeated_case_id_is_listed_with_every_other_problem(tmp_path):
    rng = np.random.default_rng(0)
    rows = [["case_id", "label", *[f"x_{t}" for t in range(8)]]]
    for i in range(8):
        rows.append([f"c{i}", "ab"[i % 2], *[f"{v:.3f}" for v in rng.normal(size=8)]])
    rows[5][0] = "c1"  # the id of row 3 again, on row 6
    rows[7][4] = "oops"  # a non-numeric value
    rows[8][1] = ""  # an empty label
    path = tmp_path / "s.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(DataError) as caught:
        load_signals(str(path))
    fix = ("give each row its own id in column 'case_id', or, if the rows are timepoints of one "
           "recording, add a 'time' column (a long table; set signal.time_column if it has "
           "another name)")
    assert [str(p) for p in caught.value.problems] == [
        f"s.csv case 'c1': case id repeated (row 3; the id is on row 3, row 6); {fix}",
        f"s.csv case 'c1': case id repeated (row 6; the id is on row 3, row 6); {fix}",
        "s.csv case 'c6': non-numeric value 'oops' at row 8, column 'x_2'",
        "s.csv case 'c7': empty label in column 'label'"]
    with pytest.warns(UserWarning, match="Skipped 4 bad case"):
        data = load_signals(str(path), on_bad_file="skip")
    assert data.ids == ["c0", "c2", "c3", "c5"]


# -- batch scoring -------------------------------------------------------------------------------


def _predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sigclass", "predict", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["input"]: row for row in csv.DictReader(handle)}


@pytest.mark.timeout(120)
def test_predict_writes_an_error_row_for_every_input_it_cannot_read(tmp_path):
    from sigclass.data.image_preprocess import image_data_config

    network = sc.create_model("simple_cnn_gap", n_classes=2, input_size=32).eval()
    model = sc.Predictor(network, ["cat", "dog"], image_data_config(network), device="cpu")
    model.save(tmp_path / "model")
    folder = tmp_path / "new"
    good = write_image(folder / "good.png", size=(20, 20))
    (folder / "corrupt.jpg").write_bytes(b"not a jpeg")
    os.mkfifo(folder / "p.jpg")
    os.symlink("/dev/zero", folder / "z.jpg")
    os.mkfifo(tmp_path / "given.png")  # named on the command line
    done = _predict(tmp_path / "model", folder, tmp_path / "given.png", "-o", tmp_path / "out.csv",
                    "--backend", "torch", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 of 5 input(s) could not be scored" in done.stderr
    rows = _rows(tmp_path / "out.csv")
    assert sorted(rows) == sorted(str(p) for p in (good, folder / "corrupt.jpg", folder / "p.jpg",
                                                   folder / "z.jpg", tmp_path / "given.png"))
    assert rows[str(good)]["error"] == "" and rows[str(good)]["predicted"] in ("cat", "dog")
    assert rows[str(folder / "p.jpg")]["error"] == f"{folder / 'p.jpg'}: {PIPE}"
    assert rows[str(tmp_path / "given.png")]["error"] == f"{tmp_path / 'given.png'}: {PIPE}"
    assert rows[str(folder / "z.jpg")]["error"] == f"{folder / 'z.jpg'}: {DEV_ZERO}"
    assert "cannot be read as an image" in rows[str(folder / "corrupt.jpg")]["error"]
    assert all(rows[k]["predicted"] == "" for k in rows if k != str(good))
    # a path that does not exist stops the command before anything is scored
    missing = _predict(tmp_path / "model", tmp_path / "nowhere", "-o", tmp_path / "none.csv")
    assert missing.returncode == 2 and "nowhere: no such file or folder" in missing.stderr
    assert not (tmp_path / "none.csv").exists()


@pytest.mark.timeout(120)
def test_predict_signal_files_gives_each_unreadable_file_a_row(tmp_path):
    network = sc.create_model("simple_cnn1d", n_classes=2, in_chans=1).eval()
    config = {"n_channels": 1, "n_timepoints": 30, "mean": [0.0], "std": [1.0],
              "channel_names": ["ch0"], "length_policy": "error"}
    sc.Predictor(network, ["a", "b"], config, modality="signal", device="cpu").save(tmp_path / "model")
    np.savez(tmp_path / "good.npz", X=np.random.default_rng(0).normal(size=(2, 30)))
    os.mkfifo(tmp_path / "p.csv")
    os.symlink("/dev/zero", tmp_path / "z.npz")
    done = _predict(tmp_path / "model", tmp_path / "good.npz", tmp_path / "p.csv", tmp_path / "z.npz",
                    "-o", tmp_path / "out.csv", "--backend", "torch", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(tmp_path / "out.csv")
    good = [f"{tmp_path / 'good.npz'}#case-{i:05d}" for i in range(2)]
    assert sorted(rows) == sorted([*good, str(tmp_path / "p.csv"), str(tmp_path / "z.npz")])
    assert all(rows[k]["error"] == "" and rows[k]["predicted"] in ("a", "b") for k in good)
    assert rows[str(tmp_path / "p.csv")]["error"] == f"{tmp_path / 'p.csv'}: {PIPE}"
    assert rows[str(tmp_path / "z.npz")]["error"] == f"{tmp_path / 'z.npz'}: {DEV_ZERO}"
