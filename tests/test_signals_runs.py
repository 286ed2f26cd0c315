"""Signal runs end to end: the networks and MiniRocket really learn on real data (BasicMotions,
GunPoint), saved models give the same predictions after loading, and the CLI trains, predicts,
evaluates and compares on signals."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import sigclass as sc
from sigclass.data.signals import load_signals
from sigclass.exceptions import ConfigError
from sigclass.modalities.signal import default_entries as default_signal_entries
from sigclass.workflows.compare import _not_set_by_user


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def basic_motions():
    return load_signals("aeon:BasicMotions")


@pytest.fixture(scope="module")
def cnn_run(basic_motions, tmp_path_factory):
    """The lab brief's 1D CNN trained from scratch on BasicMotions' own train/test split."""
    return sc.train(basic_motions, mode="scratch", model="simple_cnn1d", seed=0, progress=False,
                    out=tmp_path_factory.mktemp("runs") / "cnn",
                    **{"train.epochs": 40, "train.batch_size": 8, "train.patience": 0,
                       "train.monitor": "val_loss"})


@pytest.fixture(scope="module")
def minirocket_run(tmp_path_factory):
    """MiniRocket + ridge head on GunPoint's own train/test split, through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "minirocket"
    done = run_cli("train", "aeon:GunPoint", "--mode", "headless", "--out", out, "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_a_1d_cnn_learns_basic_motions(cnn_run):
    assert cnn_run.metrics["n"] == 40  # the dataset's own 40 test cases
    assert cnn_run.metrics["accuracy"] >= 0.95, cnn_run.metrics["confusion_matrix"]
    assert cnn_run.history[-1]["train_items_per_s"] > 0
    report = json.loads((cnn_run.dir / "data_report.json").read_text())
    assert report["split_counts"]["test"] == 40 and report["n_channels"] == 6


def test_minirocket_learns_gun_point(minirocket_run):
    out, stdout = minirocket_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 150 and metrics["accuracy"] >= 0.95
    assert "accuracy" in stdout and f"run folder: {out}" in stdout
    files = sorted(p.name for p in (out / "model").iterdir())
    assert files == ["head.skops", "model.json", "ood.safetensors", "weights.safetensors"]  # no pickle
    # MiniRocket has no feature map: the run says so instead of writing maps
    assert not (out / "cam").exists()
    cam = json.loads((out / "run.json").read_text())["cam_examples"]
    assert cam.startswith("none: 'minirocket' has no feature map")


def test_network_round_trip_gives_the_same_predictions(cnn_run, basic_motions):
    loaded = sc.load(cnn_run.dir)
    X = basic_motions.X[40:]
    np.testing.assert_allclose(loaded.predict_proba(X), cnn_run.predictor.predict_proba(X), atol=1e-6)
    assert loaded.modality == "signal" and loaded.data_config == cnn_run.predictor.data_config
    assert loaded.data_config["channel_names"] == [f"ch{i}" for i in range(6)]
    single = loaded.predict(X[0])  # one (C, T) case
    assert list(single) == [loaded.predict(X)[0]]


def test_minirocket_round_trip_gives_the_same_predictions(minirocket_run):
    out, _ = minirocket_run
    loaded = sc.load(out)
    assert loaded.mode == "headless" and loaded.model_name == "minirocket"
    assert loaded.engine.name == "torch"  # MiniRocket is never exported to ONNX
    X = load_signals("aeon:GunPoint").X[50:]
    again = sc.load(out)
    np.testing.assert_array_equal(loaded.predict_proba(X), again.predict_proba(X))
    saved = {}
    with open(out / "predictions.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            saved[row["id"]] = row["predicted"]
    ids = [f"test-{i:04d}" for i in range(150)]
    assert list(loaded.predict(X)) == [saved[i] for i in ids]


def test_predict_a_signal_file_writes_one_row_per_case_and_resumes(minirocket_run, tmp_path):
    out, _ = minirocket_run
    X = load_signals("aeon:GunPoint").X[50:60, 0].astype(np.float64)
    X[3, 10] = np.nan
    np.savez(tmp_path / "new.npz", X=X)
    done = run_cli("predict", out, tmp_path / "new.npz", "-o", tmp_path / "p.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["input"] for r in rows] == [f"{tmp_path / 'new.npz'}#case-{i:05d}" for i in range(10)]
    assert rows[3]["error"] == "input 0: contains NaN at channel 0 ('ch0'), time 10"
    assert all(r["predicted"] in ("1", "2") for i, r in enumerate(rows) if i != 3)
    again = run_cli("predict", out, tmp_path / "new.npz", "-o", tmp_path / "p.csv")
    assert "0 predictions written" in again.stdout
    evaluated = run_cli("evaluate", out, "aeon:GunPoint")
    assert evaluated.returncode == 0 and "accuracy" in evaluated.stdout


def test_headless_signal_as_image(basic_motions, tmp_path):
    part = basic_motions.subset(np.r_[0:40:2, 40:80:4])  # 20 train and 10 test cases
    run = sc.train(part, mode="headless", model="signal_image", progress=False, out=tmp_path / "si",
                   model_args={"image_size": 48}, cv_folds=3)
    # 4 classes, chance 0.25; it gets 8 of 10 right: a broken rendering or head falls below 7
    assert run.metrics["n"] == 10 and run.metrics["accuracy"] >= 0.7, run.metrics["confusion_matrix"]
    loaded = sc.load(tmp_path / "si")
    np.testing.assert_allclose(loaded.predict_proba(part.X[-3:]), run.predictor.predict_proba(part.X[-3:]),
                               atol=1e-5)


def test_mode_and_model_mistakes_are_explained(basic_motions, tmp_path):
    with pytest.raises(ConfigError, match=r"^Mode 'finetune' needs a pretrained network, and there "
                       r"are no pretrained 1D networks. Use --mode scratch"):
        sc.train(basic_motions, mode="finetune", out=tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match=r"^Headless mode on signals needs a featurizer: "
                       r"one of 'minirocket', 'multirocket_hydra', 'catch22', 'signal_image'. Got 'fcn'; train it "
                       r"with --mode scratch."):
        sc.train(basic_motions, mode="headless", model="fcn", out=tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match=r"^'efficientnet_lite0' is not a signal network"):
        sc.train(basic_motions, mode="scratch", model="efficientnet_lite0", out=tmp_path / "c",
                 progress=False)


def test_compare_prints_a_leaderboard_and_user_options_win(tmp_path):
    entries = {e.name: e for e in default_signal_entries()}
    assert set(entries) == {"fcn", "resnet1d", "inception", "cnn1d", "lstm", "gru", "minirocket",
                            "multirocket_hydra", "catch22_rf", "signal_image"}
    assert entries["lstm"].mode == "scratch" and entries["minirocket"].mode == "headless"
    done = run_cli("compare", "aeon:BasicMotions", "--entries", "scratch:simple_cnn1d,headless:minirocket",
                   "--epochs", "3", "--out", tmp_path / "cmp", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| entry | network | accuracy |" in done.stdout and "headless-minirocket" in done.stdout
    board = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    assert {row["model"] for row in board["rows"]} == {"simple_cnn1d", "minirocket"}
    history = json.loads((tmp_path / "cmp" / "scratch-simple_cnn1d" / "history.json").read_text())
    assert len(history) <= 3
    base = sc.RunConfig(data="aeon:BasicMotions").updated({"train.epochs": 4})
    assert entries["fcn"].overrides == {}  # the networks run the defaults of `sigclass train`
    assert _not_set_by_user(base, {"train.batch_size": 16}) == {"train.batch_size": 16}
    assert _not_set_by_user(base.updated({"train.batch_size": 8}), {"train.batch_size": 16}) == {}
