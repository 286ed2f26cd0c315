"""What a resumed training run must show: it went on from its checkpoint, not from scratch."""

from __future__ import annotations

from pathlib import Path


def saved_history(checkpoint: Path) -> list[dict]:
    """The per-epoch records in a ``last.pt`` checkpoint."""
    import torch

    return list(torch.load(checkpoint, map_location="cpu", weights_only=True)["history"])


def assert_resumed(before: list[dict], history: list[dict], checkpoint: Path) -> None:
    """``history`` (the finished run's) continues ``before`` (the checkpoint's at the interruption).

    A restart would rewrite the first epochs (their timings differ), begin its step counters at
    zero, and end with an optimizer that counted only the epochs it ran itself.
    """
    import torch

    k = len(before)
    assert k >= 1
    assert len(history) > k, "nothing was trained after the interruption"
    assert history[:k] == before  # the saved epochs kept as they were, not trained again
    steps_per_epoch = before[0]["step"]
    assert steps_per_epoch >= 1 and before[0]["optimizer_step"] == steps_per_epoch
    first = history[k]
    assert first["epoch"] == before[-1]["epoch"] + 1
    assert first["step"] == before[-1]["step"] + steps_per_epoch  # the schedule went on
    assert first["optimizer_step"] == before[-1]["optimizer_step"] + steps_per_epoch  # AdamW too
    assert [h["step"] for h in history] == [steps_per_epoch * h["epoch"] for h in history]
    final = saved_history(checkpoint)
    assert final == history
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["optimizer"]["state"]
    adam_steps = max(int(s["step"]) for s in state.values())
    resumed_alone = (len(history) - k) * steps_per_epoch
    assert adam_steps == len(history) * steps_per_epoch > resumed_alone
