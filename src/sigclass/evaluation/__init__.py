"""Evaluation: metrics, plots and the leaderboard of a comparison."""

from .metrics import classification_metrics, evaluate

__all__ = ["classification_metrics", "evaluate"]
