"""The command line: help everywhere, train → predict → evaluate, compare on one split, config."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from sigclass.cli import build_parser, main, resolve_config


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["train", "compare", "evaluate", "predict", "networks"])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert "usage: sigclass " + command in capsys.readouterr().out


def test_config_flows_defaults_then_file_then_flags(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"mode": "finetune", "seed": 5,
                                                     "train": {"epochs": 7, "lr": 0.01}}))
    args = build_parser().parse_args(["train", "x", "--config", str(tmp_path / "c.yaml"),
                                      "--epochs", "3", "--set", "train.label_smoothing=0.0"])
    config = resolve_config(args)
    assert (config.mode, config.seed, config.train.epochs, config.train.lr) == ("finetune", 5, 3, 0.01)
    assert config.train.label_smoothing == 0.0 and config.train.batch_size == "auto"


def test_bad_config_key_and_bad_data_exit_with_clear_errors(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("trian: {epochs: 2}\n")
    assert main(["train", str(tmp_path), "--config", str(tmp_path / "c.yaml")]) == 2
    assert "Unknown configuration key 'trian'. Did you mean 'train'" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing")]) == 2
    assert "not a folder of class subfolders" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--mode", "headless", "--set", "head=knn"]) == 2
    assert "The 'head' option must be one of" in capsys.readouterr().err


def test_train_predict_evaluate(colour_folder, tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", colour_folder, "--mode", "headless", "--model", "efficientnet_lite0",
                   "--image-size", "48", "--backend", "torch", "--out", out, "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout
    for name in ("config.yaml", "split.json", "data_report.json", "metrics.json", "confusion_matrix.png",
                 "confusion_matrix.json", "predictions.csv", "model/model.json", "run.json"):
        assert (out / name).is_file(), name
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "efficientnet_lite0" and config["image_size"] == 48
    metrics = json.loads((out / "metrics.json").read_text())

    predicted = run_cli("predict", out, colour_folder / "red", colour_folder / "blue" / "blue_0.png",
                        "-o", tmp_path / "p.csv")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert len(rows) == 13 and set(rows[0]) >= {"input", "predicted", "confidence", "p_red"}
    assert sum(r["predicted"] == "red" for r in rows[:12]) >= 11

    evaluated = run_cli("evaluate", out, colour_folder, "--split", out / "split.json", "--part",
                        "test", "--out", tmp_path / "eval")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"] and again["n"] == metrics["n"]


def test_compare_three_modes_on_one_split(colour_folder, tmp_path):
    out = tmp_path / "cmp"
    done = run_cli("compare", colour_folder, "--out", out, "--image-size", "32", "--epochs", "2",
                   "--backend", "torch", "--entries",
                   "headless:efficientnet_lite0,finetune:efficientnet_lite0,scratch:simple_cnn_gap",
                   "--no-ensemble", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| entry | network | accuracy |" in done.stdout
    board = json.loads((out / "leaderboard.json").read_text())
    assert {r["name"] for r in board["rows"]} == {"headless-efficientnet_lite0",
                                                 "finetune-efficientnet_lite0", "scratch-simple_cnn_gap"}
    split = json.loads((out / "split.json").read_text())
    for row in board["rows"]:
        assert json.loads((out / row["name"] / "split.json").read_text())["test"] == split["test"]
        assert row["accuracy"] is not None and row["train_seconds"] > 0
    assert (out / "leaderboard.md").read_text().startswith("### ")
    again = run_cli("compare", colour_folder, "--out", out, "--image-size", "32", "--epochs", "2",
                    "--backend", "torch", "--entries", "scratch:simple_cnn_gap", "-q")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Reusing the finished run of scratch-simple_cnn_gap" in again.stderr
    assert "Training" not in again.stderr
