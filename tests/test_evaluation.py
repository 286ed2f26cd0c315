"""Metrics match hand-computed values; plots are written."""

from __future__ import annotations

import numpy as np
import pytest

from sigclass.evaluation.leaderboard import Leaderboard
from sigclass.evaluation.metrics import classification_metrics
from sigclass.evaluation.plots import plot_confusion_matrix, plot_training_curves


def test_metrics_by_hand():
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # precision: a 2/2, b 1/2, c 1/2 ; recall: a 2/3, b 1/2, c 1
    assert m["precision_macro"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_class"]["c"]["recall"] == 1.0
    assert m["roc_auc_ovr"] is None  # no probabilities given


def test_roc_auc_with_probabilities():
    y_true = ["a", "b", "a", "b"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    m = classification_metrics(y_true, ["a", "b", "a", "a"], ["a", "b"], proba)
    assert m["roc_auc_ovr"] == pytest.approx(0.75)
    three = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert classification_metrics(["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], three)["roc_auc_ovr"] == 1.0


def test_plots_and_leaderboard(tmp_path):
    confusion = {"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}
    assert plot_confusion_matrix(confusion, tmp_path / "cm.png").stat().st_size > 1000
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 10,
                "val_accuracy": 0.4 + e / 10} for e in (1, 2, 3)]
    assert plot_training_curves(history, tmp_path / "curves.png").stat().st_size > 1000
    board = Leaderboard([{"name": "x", "model": "m1", "accuracy": 0.8, "f1_macro": 0.7},
                         {"name": "y", "model": "m2", "accuracy": 0.9, "f1_macro": 0.85}],
                        references=[{"name": "paper", "accuracy": 0.88, "source": "Someone 2019"}])
    markdown = board.to_markdown()
    assert markdown.index("| y |") < markdown.index("| x |")
    assert "| paper | 0.8800 | Someone 2019 |" in markdown
    md, js = board.save(tmp_path)
    assert md.read_text() == markdown and js.is_file()
