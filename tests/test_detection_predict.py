"""`sigclass predict` on a detector (tiny BCCD detector, 1 epoch): one row per box in CSV,
Parquet, JSON and JSON Lines with the same rows, images without boxes and unreadable images kept
as rows, and a run interrupted in the middle of an image's boxes resumed without a duplicate or
a lost box (the partial output a killed process leaves, and a real SIGKILL)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sigclass
from detection_models import needs_bccd, train_detection_model
from servers import stopped
from sigclass.cli import main
from sigclass.workflows.predict_files import journal_path

pytestmark = needs_bccd

COLUMNS = ["path", "xmin", "ymin", "xmax", "ymax", "label", "score", "error"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_detection_model(tmp_path_factory.mktemp("detect-predict"))


@pytest.fixture(scope="module")
def images(run, tmp_path_factory) -> Path:
    """The 8 BCCD images, a plain grey image (no cell in it) and a file that is not an image."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    for path in sorted((run.parent / "bccd" / "JPEGImages").glob("*.jpg")):
        (folder / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (160, 120), (128, 128, 128)).save(folder / "grey.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.fixture(scope="module")
def options(run, images) -> list[str]:
    """The options of every `sigclass predict` here: a score threshold between the best box of
    the grey image and the best box of each cell image, so that some images have boxes above
    it and one has none; at most 20 boxes per image, 3 images at a time (a batch of another
    size gives the same boxes to float rounding only), on PyTorch (as the predictor compared)."""
    detector = sigclass.load(run, device="cpu")
    cells = sorted(images.glob("*.jpg"))[:-1]  # the last is broken.jpg
    best = [float(f["scores"].max()) for f in detector.predict_boxes(cells, 0.0, 20)]
    grey = detector.predict_boxes([images / "grey.png"], 0.0, 20)[0]["scores"]
    grey_best = float(grey.max()) if len(grey) else 0.0
    assert grey_best < min(best), "the detector finds more in a grey image than in cells"
    return ["--score-threshold", f"{(grey_best + min(best)) / 2:.4f}", "--max-detections", "20",
            "--batch-size", "3", "--backend", "torch"]


@pytest.fixture(scope="module")
def reference(run, images, options, tmp_path_factory) -> Path:
    """A CSV output written in one go."""
    out = tmp_path_factory.mktemp("reference") / "boxes.csv"
    assert main(["predict", str(run), str(images), "-o", str(out), *options, "-q"]) == 0
    return out


def _table(path: Path) -> pd.DataFrame:
    """An output as a DataFrame whose empty fields are NaN, whatever the format."""
    suffix = path.suffix
    if suffix == ".csv":
        table = pd.read_csv(path, dtype={"path": str, "label": str, "error": str},
                            keep_default_na=False, na_values={c: [""] for c in COLUMNS[1:7]})
    elif suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_json(path, orient="records", lines=suffix == ".jsonl", dtype=False)
    assert list(table.columns) == COLUMNS
    return table


def test_one_row_per_box_images_without_boxes_and_bad_files_kept(run, images, options, reference):
    predictor = sigclass.load(run, device="cpu")
    table = _table(reference)
    good = sorted(str(p) for p in images.iterdir() if p.name != "broken.jpg")
    assert sorted(set(table["path"])) == sorted([*good, str(images / "broken.jpg")])
    threshold = float(options[1])
    found = predictor.predict_boxes(good, score_threshold=threshold, max_detections=20)
    empty = 0
    for path, expected in zip(good, found, strict=True):
        rows = table[table["path"] == path]
        assert (rows["error"] == "").all()
        if len(expected["boxes"]) == 0:  # one row, its box fields empty
            empty += 1
            assert len(rows) == 1 and rows[COLUMNS[1:7]].isna().all(axis=None)
            continue
        assert len(rows) == len(expected["boxes"]) <= 20
        np.testing.assert_allclose(rows[["xmin", "ymin", "xmax", "ymax"]], expected["boxes"], atol=0.006)
        np.testing.assert_allclose(rows["score"], expected["scores"], atol=6e-5)
        assert list(rows["label"]) == list(expected["labels"])
        assert (rows["score"] >= threshold).all()
    assert empty == 1  # the grey image
    broken = table[table["path"] == str(images / "broken.jpg")]
    assert len(broken) == 1 and "not an image" in broken["error"].iloc[0]
    assert broken[COLUMNS[1:7]].isna().all(axis=None)


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".jsonl"])
def test_parquet_and_json_hold_the_rows_of_the_csv(run, images, options, reference, tmp_path,
                                                   suffix):
    out = tmp_path / f"boxes{suffix}"
    assert main(["predict", str(run), str(images), "-o", str(out), *options, "-q"]) == 0
    assert not journal_path(out).exists()
    pd.testing.assert_frame_equal(_table(out), _table(reference), check_dtype=False)
    if suffix == ".json":  # an array of records, missing values as null
        records = json.loads(out.read_text())
        grey = next(r for r in records if r["path"].endswith("grey.png"))
        assert grey["xmin"] is None and grey["label"] is None and grey["error"] == ""


def _interrupted(reference: Path) -> tuple[str, str]:
    """What a process killed while writing an image's boxes leaves: the rows up to the middle
    of the boxes of the second image, and the start of its next row."""
    lines = reference.read_text().splitlines(keepends=True)
    paths = [line.split(",")[0] for line in lines[1:]]
    second = next(p for p in paths if p != paths[0])
    assert paths.count(second) >= 3
    cut = paths.index(second) + 2 + 1  # the header, the first image's rows and 2 of its boxes
    return "".join(lines[:cut]) + lines[cut][:-6], second


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_interrupted_predict_resumes_where_it_stopped(run, images, options, reference, tmp_path,
                                                         suffix, caplog):
    partial, cut_image = _interrupted(reference)
    # a mark on the first row: it must be kept as it is, not scored again
    first = partial.splitlines()[1]
    marked = first.rsplit(",", 2)[0] + ",0.9999,\n"
    partial = partial.replace(first + "\n", marked, 1)
    out = tmp_path / f"boxes{suffix}"
    (journal_path(out) if suffix == ".parquet" else out).write_text(partial)
    caplog.set_level("INFO")
    assert main(["predict", str(run), str(images), "-o", str(out), *options, "-q"]) == 0
    assert "Resuming: 1 of 10 inputs already scored" in caplog.text  # the first image
    table, expected = _table(out), _table(reference)
    assert table.loc[0, "score"] == pytest.approx(0.9999)  # kept, not scored again
    table.loc[0, "score"] = expected.loc[0, "score"]
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)  # no box twice, none lost


def test_a_killed_predict_run_again_finishes_with_every_box_once(run, images, options, reference,
                                                                tmp_path):
    many = tmp_path / "many"  # the images 4 times, scored one at a time: killed well before the end
    many.mkdir()
    for copy in range(4):
        for path in sorted(images.iterdir()):
            (many / f"{copy}-{path.name}").write_bytes(path.read_bytes())
    out = tmp_path / "boxes.csv"
    command = [sys.executable, "-m", "sigclass", "predict", str(run), str(many), "-o", str(out),
               *options, "-q"]

    def images_written() -> int:
        return len({line.split(",")[0] for line in out.read_text().splitlines()[1:]}) \
            if out.is_file() else 0

    process = subprocess.Popen([*command, "--batch-size", "1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    with stopped(process):
        deadline = time.monotonic() + 240
        while images_written() < 3:
            assert process.poll() is None, f"finished before it was killed: {process.stderr.read()}"
            assert time.monotonic() < deadline, "no rows were written in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGSTOP)
        process.send_signal(signal.SIGKILL)
        process.wait()
    before = images_written()
    assert 3 <= before < 40
    assert main([*command[3:], "--batch-size", "4"]) == 0
    table = _table(out)
    expected = _table(reference)
    expected["path"] = expected["path"].map(lambda p: Path(p).name)
    expected["error"] = expected["error"].str.replace(str(images) + "/", "")
    for copy in range(4):  # each copy's rows: those of the reference, in its order
        rows = table[table["path"].str.startswith(str(many / f"{copy}-"))].reset_index(drop=True)
        rows["path"] = rows["path"].map(lambda p: Path(p).name.split("-", 1)[1])
        rows["error"] = rows["error"].str.replace(str(many / f"{copy}-"), "")
        # scored in batches of 1 and 4 (the reference: 3): the same boxes to float rounding
        pd.testing.assert_frame_equal(rows, expected, check_dtype=False, check_exact=False,
                                      atol=0.011)


def test_an_output_of_another_kind_is_not_added_to(run, images, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    with open(out, "w", newline="") as handle:
        csv.writer(handle).writerow(["input", "predicted", "confidence", "error"])
    assert main(["predict", str(run), str(images), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Cannot add to" in err and "Write to another --output" in err
    assert main(["predict", str(run), str(images), "-o", str(tmp_path / "b.csv"),
                 "--score-threshold", "1.5"]) == 2
    assert "score threshold must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "b.csv").exists()
