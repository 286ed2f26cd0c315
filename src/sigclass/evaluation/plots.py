"""Plots written as PNG: confusion matrix and training curves."""

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
