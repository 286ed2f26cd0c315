"""Irregular sensor recordings: generated long tables with channels at different rates, jittered
timestamps and gaps are put on one grid, gaps are filled or split, and what was done is reported;
train and predict read the files the same way."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sigclass.data.signal_resample import SignalWarning, parse_duration, parse_period
from sigclass.data.signals import load_signals
from sigclass.data.split import make_split
from sigclass.exceptions import ConfigError, DataError

RATE_ACC, RATE_TEMP = 50.0, 5.0


def recording(name: str, label: str, freq: float, rng, seconds: float = 10.0,
              gap: tuple[float, float] | None = None, temp_missing: bool = False, noise: float = 0.0):
    """Rows of one recording: ``acc`` at 50 Hz with jitter, ``temp`` at 5 Hz, each on rows of its own."""
    t_acc = np.arange(0, seconds, 1 / RATE_ACC) + rng.uniform(-0.003, 0.003, int(seconds * RATE_ACC))
    t_acc[0] = 0.0
    t_temp = np.arange(0, seconds, 1 / RATE_TEMP) + 0.01
    if gap is not None:
        t_acc = t_acc[(t_acc < gap[0]) | (t_acc > gap[1])]
        t_temp = t_temp[(t_temp < gap[0]) | (t_temp > gap[1])]
    acc = np.sin(2 * np.pi * freq * t_acc) + rng.normal(0, noise, len(t_acc))
    rows = [(name, f"{t:.5f}", f"{a:.6f}", "", label) for t, a in zip(t_acc, acc, strict=True)]
    rows += [(name, f"{t:.5f}", "", "" if temp_missing else f"{20 + 0.5 * t:.4f}", label) for t in t_temp]
    return rows


def write_table(path: Path, rows, shuffle: bool = True) -> Path:
    frame = pd.DataFrame(rows, columns=["case_id", "time", "acc", "temp", "label"])
    if shuffle:
        frame = frame.sample(frac=1.0, random_state=0)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def multirate(tmp_path) -> Path:
    """Eight 10 s recordings of two classes (1 Hz or 3 Hz motion); ``rec0`` has a 3 s gap."""
    rng = np.random.default_rng(0)
    rows = []
    for r in range(8):
        rows += recording(f"rec{r}", "fast" if r % 2 else "slow", 3.0 if r % 2 else 1.0, rng,
                          gap=(4.0, 7.0) if r == 0 else None)
    return write_table(tmp_path / "multirate.csv", rows)


def test_channels_at_different_rates_reach_one_grid(multirate):
    data = load_signals(str(multirate), options={"resample": "50Hz", "length_policy": "pad"})
    report = data.summary["resampling"]
    assert report["period_s"] == pytest.approx(0.02)
    assert report["channels"]["acc"]["native_rate_hz"] == pytest.approx(RATE_ACC, rel=0.01)
    assert report["channels"]["temp"]["native_rate_hz"] == pytest.approx(RATE_TEMP, rel=0.01)
    # rec0's 3 s gap is longer than the default (10 intervals of the 5 Hz channel = 2 s): two pieces
    assert report["recordings_split"] == 1 and report["n_cases"] == 9
    assert "rec0~1" in data.ids and "rec0~2" in data.ids and "rec0" not in data.ids
    assert data.X.shape[1] == 2 and data.X.shape[2] in (499, 500)
    # interpolated values are the signals on the grid: acc = sin(2 pi 3 t), temp = 20 + t / 2
    x = data.X[data.ids.index("rec3")]
    grid = np.arange(x.shape[1]) * 0.02
    assert np.abs(x[0] - np.sin(2 * np.pi * 3.0 * grid)).max() < 0.15
    inside = (grid > 0.02) & (grid < 9.8)
    assert np.abs(x[1][inside] - (20 + 0.5 * grid[inside])).max() < 1e-3


def test_a_long_gap_splits_the_recording_and_windows_never_bridge_it(multirate):
    data = load_signals(str(multirate), options={"resample": "50Hz", "window": 50})
    pieces = [i for i in data.ids if i.startswith("rec0~")]
    starts = {i.split("@")[0] for i in pieces}
    assert starts == {"rec0~1", "rec0~2"}
    # the first piece ends at the last 5 Hz sample before the gap (3.81 s): 3 windows of 1 s; the
    # second starts at the first after it (7.01 s) and holds 2; no window spans the gap
    assert sum(i.startswith("rec0~1@") for i in pieces) == 3
    assert sum(i.startswith("rec0~2@") for i in pieces) == 2
    # the pieces keep their recording as group: a split never puts one recording in two parts
    groups = {g for i, g in zip(data.ids, data.group_ids, strict=True) if i.startswith("rec0")}
    assert groups == {"rec0"}
    split = make_split(data, val_size=0.25, test_size=0.25, seed=0, groups=data.group_ids)
    part_of = {}
    for part, positions in split.indices(data).items():
        for i in positions:
            part_of.setdefault(data.group_ids[i], set()).add(part)
    assert all(len(parts) == 1 for parts in part_of.values())


def test_a_gap_shorter_than_max_gap_is_filled_and_counted(multirate):
    data = load_signals(str(multirate), options={"resample": "20ms", "max_gap": "5s",
                                                 "length_policy": "truncate"})
    report = data.summary["resampling"]
    assert report["recordings_split"] == 0 and "rec0" in data.ids
    assert report["max_gap_s"] == 5.0
    assert report["channels"]["acc"]["gaps_filled"] >= 1
    assert report["channels"]["acc"]["longest_gap_filled_s"] == pytest.approx(3.0, abs=0.1)


def test_a_channel_missing_in_a_whole_recording_is_named(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for r in range(6):
        rows += recording(f"rec{r}", "fast" if r % 2 else "slow", 1.0 + 2 * (r % 2), rng,
                          temp_missing=(r == 2))
    path = write_table(tmp_path / "missing.csv", rows)
    with pytest.raises(DataError, match=r"case 'rec2'.*channel 'temp' has no value in the whole"):
        load_signals(str(path), options={"resample": "50Hz", "length_policy": "truncate"})
    with pytest.warns(UserWarning, match="Skipped 1 bad case"):
        kept = load_signals(str(path), on_bad_file="skip",
                            options={"resample": "50Hz", "length_policy": "truncate"})
    assert "rec2" not in kept.ids and len(kept) == 5
    assert "rec2" in kept.report()["skipped"][0]["path"]


def test_a_constant_channel_is_reported(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for r in range(4):
        rows += recording(f"rec{r}", "fast" if r % 2 else "slow", 1.0 + 2 * (r % 2), rng)
    rows = [(c, t, a, "21.0" if c == "rec1" and temp else temp, label) for c, t, a, temp, label in rows]
    path = write_table(tmp_path / "constant.csv", rows)
    with pytest.warns(SignalWarning, match=r"constant in a whole recording \(rec1: temp\)"):
        data = load_signals(str(path), options={"resample": "50Hz", "length_policy": "truncate"})
    assert data.summary["constant_channels"] == ["rec1: temp"]


def test_without_resample_irregular_data_is_reported_not_changed(multirate, tmp_path):
    with pytest.raises(DataError, match=r"set signal.resample \(e.g. --resample 50Hz\)"):
        load_signals(str(multirate))
    rng = np.random.default_rng(3)
    rows = [row for r in range(4) for row in recording(f"rec{r}", "ab"[r % 2], 1.0, rng)
            if row[2] != ""]  # acc only: one rate, jittered times
    path = write_table(tmp_path / "jitter.csv", [(c, t, a, "0", lab) for c, t, a, _, lab in rows])
    with pytest.warns(SignalWarning, match=r"time steps vary .* --resample 50Hz"):
        data = load_signals(str(path), options={"channels": ["acc"]})
    steps = data.summary["time_steps"]
    assert steps["median_s"] == pytest.approx(0.02, rel=0.05) and steps["irregular_recordings"] == 4
    assert data.X.shape == (4, 1, 500)


def test_date_time_columns_are_read_as_seconds(tmp_path):
    start = pd.Timestamp("2026-03-01 08:00:00")
    rows = []
    for r in range(4):
        for k in range(200):
            t = start + pd.Timedelta(milliseconds=20 * k + (2 if k % 3 == 0 else 0))
            rows.append((f"m{r}", t.isoformat(), np.sin(k / (3 + r % 2)), 1.0 + k / 100, "ab"[r % 2]))
    path = write_table(tmp_path / "dates.csv", rows)
    data = load_signals(str(path), options={"resample": "20ms", "length_policy": "truncate"})
    assert data.summary["resampling"]["channels"]["acc"]["native_rate_hz"] == pytest.approx(50, rel=0.1)
    assert data.X.shape[2] in (199, 200)


def test_rates_periods_and_mistakes():
    assert parse_period("50Hz") == pytest.approx(0.02)
    assert parse_period("2kHz") == pytest.approx(0.0005)
    assert parse_period("20ms") == pytest.approx(0.02)
    assert parse_period("1min") == 60.0
    assert parse_duration("2s") == 2.0 and parse_duration(1.5) == 1.5 and parse_duration("500ms") == 0.5
    with pytest.raises(ConfigError, match=r"'signal.resample'.*'50Hz'.*Got '50'"):
        parse_period("50")
    with pytest.raises(ConfigError, match="'signal.max_gap' option needs 'signal.resample'"):
        load_signals("aeon:GunPoint", options={"max_gap": "2s"})
    with pytest.raises(ConfigError, match="needs a long table with a time column"):
        load_signals("aeon:GunPoint", options={"resample": "50Hz"})


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_train_and_predict_read_the_recordings_the_same_way(tmp_path):
    rng = np.random.default_rng(4)
    rows = []
    for r in range(12):
        rows += recording(f"rec{r}", "fast" if r % 2 else "slow", 3.0 if r % 2 else 1.0, rng,
                          seconds=6.0, gap=(2.0, 4.5) if r == 0 else None, noise=0.1)
    path = write_table(tmp_path / "train.csv", rows)
    out = tmp_path / "run"
    done = run_cli("train", path, "--mode", "headless", "--resample", "50Hz", "--window", "50",
                   "--out", out, "--no-track", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "data_report.json").read_text())
    assert report["resampling"]["recordings_split"] == 1
    assert min(report["split_counts"].values()) > 0
    new = write_table(tmp_path / "new.csv", recording("new", "", 3.0, rng, seconds=3.0, noise=0.1),
                      shuffle=False)
    predicted = run_cli("predict", out, new, "-o", tmp_path / "p.csv")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["input"].rsplit("#", 1)[1] for r in rows] == ["new@0", "new@50"]
    assert all(r["error"] == "" for r in rows)


def test_windows_of_clean_periodic_signals_do_not_empty_the_split(tmp_path):
    """Noise-free periodic windows are all near-duplicates of each other: one big group per class
    is a cluster of similar items, not copies, and stays where the stratified draw put it."""
    from sigclass.data.leakage import keep_together, near_duplicate_groups

    rng = np.random.default_rng(5)
    rows = [row for r in range(12) for row in recording(f"rec{r}", "ab"[r % 2], 1.0 + 2 * (r % 2), rng)]
    data = load_signals(str(write_table(tmp_path / "clean.csv", rows)),
                        options={"resample": "50Hz", "window": 50})
    groups = near_duplicate_groups(data, "phash")
    assert max(len(g) for g in groups) > len(data) // 4
    split = make_split(data, val_size=0.2, test_size=0.2, seed=0, groups=data.group_ids)
    kept = keep_together(split, data, groups)
    assert kept["groups_too_large_to_move"] >= 1
    for positions in split.indices(data).values():  # every part keeps both classes
        assert set(data.labels[positions].tolist()) == {"a", "b"}
