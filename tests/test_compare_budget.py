"""``sigclass compare --time-limit``: cheap entries first, networks sized to what is left, entries
without time left listed as not run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from sigclass.data.signals import load_signals
from sigclass.exceptions import ConfigError
from sigclass.workflows.compare import Entry, compare, parse_time_limit


def test_time_limits_are_parsed_with_units():
    assert parse_time_limit("10m") == 600
    assert parse_time_limit("90s") == 90
    assert parse_time_limit("1.5h") == 5400
    assert parse_time_limit("2") == 120  # a plain number on the command line is minutes
    assert parse_time_limit(30.0) == 30  # a number from Python is seconds
    for bad in ("ten minutes", "0m", "-5s", 0):
        with pytest.raises(ConfigError, match=r"^The 'time_limit' option \(--time-limit\) takes"):
            parse_time_limit(bad)


def test_headless_entries_run_first_and_networks_get_what_is_left(tmp_path):
    data = load_signals("aeon:BasicMotions")
    entries = [Entry("cnn", "scratch", "simple_cnn1d", {"train.epochs": 2}),
               Entry("catch22", "headless", "catch22", {"head": "random_forest"})]
    board = compare(data, tmp_path / "cmp", entries=entries, time_limit=120.0, progress=False)
    assert {row["name"] for row in board.rows} == {"cnn", "catch22"} and board.skipped == []
    finished = {name: json.loads((tmp_path / "cmp" / name / "run.json").read_text())
                for name in ("cnn", "catch22")}
    order = sorted(finished, key=lambda n: (tmp_path / "cmp" / n / "run.json").stat().st_mtime)
    assert order == ["catch22", "cnn"], finished
    minutes = yaml.safe_load((tmp_path / "cmp" / "cnn" / "config.yaml").read_text())["train"]["max_minutes"]
    assert 0 < minutes <= 0.9 * 120 / 60
    assert yaml.safe_load((tmp_path / "cmp" / "catch22" / "config.yaml").read_text())["train"]["max_minutes"] == "auto"  # the default: headless has no budget


def test_entries_without_time_left_are_listed_as_not_run(tmp_path):
    data = load_signals("aeon:GunPoint")
    entries = [Entry("catch22", "headless", "catch22"), Entry("fcn", "scratch", "fcn")]
    board = compare(data, tmp_path / "cmp", entries=entries, time_limit=1e-9, progress=False)
    assert board.rows == [] and board.skipped == ["catch22", "fcn"]
    assert "Not run within the time limit: catch22, fcn." in (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())["skipped"] == ["catch22", "fcn"]
    assert not (tmp_path / "cmp" / "fcn").exists()


def test_cli_time_limit(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sigclass", "compare", "aeon:BasicMotions", "--entries",
                           "headless:catch22", "--time-limit", "5m", "--out", tmp_path / "cmp", "-q"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "headless-catch22" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "sigclass", "compare", "aeon:BasicMotions",
                          "--time-limit", "soon", "--out", tmp_path / "bad"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "takes a positive duration" in bad.stderr


def test_reference_baselines_run_after_the_networks_only_with_time_for_them(tmp_path):
    data = load_signals("aeon:BasicMotions")
    entries = [Entry("catch22", "headless", "catch22", {"head": "random_forest"}, run_last=True),
               Entry("cnn", "scratch", "simple_cnn1d", {"train.epochs": 2}),
               Entry("minirocket", "headless", "minirocket")]
    board = compare(data, tmp_path / "cmp", entries=entries, time_limit=300.0, progress=False)
    assert board.skipped == []
    order = sorted((row["name"] for row in board.rows if row["name"] != "ensemble"),
                   key=lambda n: (tmp_path / "cmp" / n / "run.json").stat().st_mtime)
    assert order == ["minirocket", "cnn", "catch22"]
    # the network's share was not cut to leave room for the baseline
    minutes = yaml.safe_load((tmp_path / "cmp" / "cnn" / "config.yaml").read_text())["train"]["max_minutes"]
    assert minutes > 0.9 * 0.8 * 300 / 60


def test_a_reference_baseline_without_time_for_it_is_not_run(tmp_path):
    from sigclass.workflows.compare import CompareBudget

    entries = [Entry("headless", "headless"), Entry("hog", "headless", "hog_lbp", run_last=True)]
    budget = CompareBudget(tmp_path, entries, time_limit=60.0, user_minutes=None)
    assert budget.allow(entries[0]) is True
    budget.took(entries[0], 120.0)  # the headless entry took longer than the time left
    assert budget.allow(entries[1]) is False
