"""Plots written as PNG: confusion matrix, training curves, the reliability diagram and the
precision-recall curves of a detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(confusion: dict[str, Any], path: str | Path) -> Path:
    """Confusion matrix with counts and row-normalized colours."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    labels = confusion["labels"]
    matrix = np.asarray(confusion["matrix"])
    size = max(4.0, 0.8 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=labels).plot(ax=ax, colorbar=False, cmap="Blues",
                                                               xticks_rotation=45)
    ax.set_title("Confusion matrix (rows: true class)")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def plot_training_curves(history: list[dict[str, float]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train vs validation."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        acc_ax.plot(epochs, [h[f"{split}_accuracy"] for h in history], style, label=split)
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def plot_reliability(proba: np.ndarray, y: np.ndarray, path: str | Path,
                     temperature: float | None = None) -> Path:
    """The reliability diagram: accuracy per confidence bin against the diagonal (and, for a
    network with a temperature, the same before scaling)."""
    from .calibration import BINS, expected_calibration_error, uncalibrated

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    curves = [("calibrated" if temperature not in (None, 1.0) else "model", proba)]
    if temperature not in (None, 1.0):
        curves.append((f"before scaling (T = {temperature:.2f})", uncalibrated(proba, temperature)))
    for label, p in curves:
        confidence = p.max(axis=1)
        correct = p.argmax(axis=1) == np.asarray(y)
        which = np.minimum((confidence * BINS).astype(int), BINS - 1)
        used = [b for b in range(BINS) if (which == b).any()]
        ax.plot([confidence[which == b].mean() for b in used], [correct[which == b].mean() for b in used],
                "-o", label=f"{label}: ECE {expected_calibration_error(p, y):.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence", ylabel="accuracy",
           title=f"Reliability ({BINS} bins, test part)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def plot_pr_curves(curves: dict[str, Any], path: str | Path) -> Path:
    """Precision against recall per class (``pr_curves`` of
    :func:`~sigclass.evaluation.detection.detection_metrics`), AP@0.5 in the legend."""
    plt = _pyplot()
    recall = np.asarray(curves["recall"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, precision in curves["precision"].items():
        precision = np.asarray(precision)
        ap = float(np.mean(np.pad(precision, (0, len(recall) - len(precision)))))
        ax.plot(recall[:len(precision)], precision, label=f"{name} (AP@{curves['iou']:g} {ap:.3f})")
    ax.set(title=f"Precision-recall at IoU {curves['iou']:g}", xlabel="recall", ylabel="precision",
           xlim=(0, 1.01), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)
