"""Compare several modes and models on exactly the same split.

The dataset is loaded and checked once, one split is drawn and saved, and every entry trains in
its own run folder under ``out``. A finished entry is not trained again and an interrupted one
resumes, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from .._utils import write_json
from ..config import Entry, RunConfig, save_config
from ..data.split import Split
from ..ensemble import build_ensemble
from ..evaluation.leaderboard import Leaderboard
from ..evaluation.metrics import evaluate
from ..exceptions import ConfigError
from ..modalities import modality_of
from ..tracking import tracked_parent
from .prepare import dataset_for, resolve_split
from .train import train

logger = logging.getLogger(__name__)

__all__ = ["Entry", "compare", "default_entries", "parse_entries", "parse_time_limit"]


def default_entries(modality: str) -> list[Entry]:
    """The contestants of ``sigclass compare`` when none are given (see each modality's
    :meth:`~sigclass.modalities.base.Modality.default_entries`)."""
    return modality_of(modality).default_entries()


def parse_entries(text: str) -> list[Entry]:
    """Parse ``"headless:efficientnet_lite2,finetune,scratch:vgg_like_2"``."""
    entries = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        mode, _, model = part.partition(":")
        name = f"{mode}-{model}" if model else mode
        entries.append(Entry(name, mode, model or None))
    if not entries:
        raise ConfigError("The '--entries' option lists no entries; e.g. 'headless,finetune,scratch'.")
    return entries


def compare(
    data,
    out: str | Path,
    entries: list[Entry] | None = None,
    config: RunConfig | None = None,
    references: list[dict[str, Any]] | None = None,
    title: str | None = None,
    progress: bool = True,
    callbacks_for=None,
    time_limit: float | str | None = None,
    ensemble: bool = True,
    **overrides: Any,
) -> Leaderboard:
    """Train every entry on one split and rank them.

    Args:
        data: A dataset object or a source for :func:`sigclass.load_dataset`.
        out: Comparison folder: ``split.json``, one run folder per entry, ``leaderboard.md/.json``.
            With tracking on, the comparison is an MLflow parent run and each entry a child.
        entries: Contestants; ``None`` takes :func:`default_entries` for the data's modality.
        config: Base configuration shared by all entries; ``overrides`` apply on top.
        references: Published figures printed beside the leaderboard.
        title: Leaderboard heading.
        progress: Show progress bars.
        callbacks_for: Optional ``f(entry) -> callbacks`` for each entry's training loop.
        time_limit: Total time for the entries, in seconds or as ``"10m"`` (see
            :func:`parse_time_limit`); ``None`` for no limit. The cheap entries (headless) run
            first; each network gets an equal share of what is left as its ``train.max_minutes``
            (the user's own, if smaller, wins); entries that find no time left are not run and
            are listed as such in the leaderboard.
        ensemble: Add an ``ensemble`` row: up to three entries within 5 points of the best
            held-out selection score, probabilities averaged with weights (see
            :mod:`sigclass.ensemble`), saved in ``out/ensemble/model`` and scored on the same
            test part; no row when fewer than two entries qualify.

    Returns:
        The :class:`Leaderboard` (also saved in ``out``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = (config or RunConfig()).updated({**overrides})
    if isinstance(data, str | Path):
        base = base.updated({"data": str(data)}).validate()
        dataset = dataset_for(base)
    else:
        dataset = data
        base = base.updated({"data": getattr(data, "source", "")}).validate()
    split_file = out / "split.json"
    split = resolve_split(Split.load(split_file) if split_file.is_file() else None, base, dataset)
    split.save(split_file)
    save_config(base, out / "config.yaml")
    with tracked_parent(base, out, f"compare-{out.name}", "compare") as parent:
        if not parent.resumed:
            parent.log_params(base.to_dict())
        rows, skipped = [], []
        todo = list(entries or default_entries(dataset.modality))
        minutes = base.train.max_minutes  # a number the user set caps each network's share
        budget = CompareBudget(out, todo, time_limit, minutes if isinstance(minutes, int | float) else None)
        for entry in budget.entries:
            run_dir = out / entry.name
            values = {"mode": entry.mode, **({"model": entry.model} if entry.model else {}),
                      **_not_set_by_user(base, entry.overrides)}
            callbacks = tuple(callbacks_for(entry)) if callbacks_for else ()
            status = _status(run_dir)
            if status != "finished":
                allowed = budget.allow(entry)
                if allowed is False:
                    logger.warning("Not running %s: the time limit is used up", entry.name)
                    skipped.append(entry.name)
                    continue
                if allowed is not True:
                    values["train.max_minutes"] = allowed
            if status == "finished":
                logger.info("Reusing the finished run of %s (%s)", entry.name, run_dir)
                result_metrics, model_name = _finished(run_dir)
            else:
                logger.info("%s %s", "Resuming" if status else "Training", entry.name)
                start = time.monotonic()
                result = train(dataset, split, out=run_dir, config=base.updated(values),
                               resume=status is not None, progress=progress, callbacks=callbacks)
                budget.took(entry, time.monotonic() - start)
                result_metrics, model_name = result.metrics, result.config.model
            rows.append(_row(entry, model_name, result_metrics))
        if ensemble:
            row = _ensemble_row(out, dataset, split, [e.name for e in budget.entries
                                                      if e.name not in skipped])
            if row is not None:
                rows.append(row)
        board = Leaderboard(rows, references or [], title or f"{base.data}: {len(rows)} models on one split",
                            skipped)
        board.save(out)
        parent.log_metrics({f"{row['name']}.test_{k}": row[k] for row in rows
                            for k in ("accuracy", "balanced_accuracy", "f1_macro")})
        parent.log_artifacts(out, skip=tuple(p.name for p in out.iterdir() if p.is_dir()))
    return board


TIME_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_time_limit(text: float | str) -> float:
    """Seconds of ``"10m"``, ``"90s"``, ``"1.5h"``; a plain number is minutes (a float from
    Python is seconds)."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*", str(text))
        seconds = float(match.group(1)) * TIME_UNITS[match.group(2) or "m"] if match else -1.0
    if not seconds > 0:
        raise ConfigError("The 'time_limit' option (--time-limit) takes a positive duration such as "
                          f"'10m', '90s' or '1.5h'. Got {text!r}.")
    return seconds


class CompareBudget:
    """The time limit of a comparison: headless entries first, then the networks, sized to what
    is left, then the reference baselines (``Entry.run_last``) if there is time for them."""

    SHARE = 0.9  # of a network's share is training; the rest is left for its evaluation

    def __init__(self, out: Path, entries: list[Entry], time_limit, user_minutes: float | None):
        self.out = out
        self.user_minutes = user_minutes
        self.headless_seconds = 0.0  # the longest a headless entry took: a baseline's estimate
        if time_limit is None:
            self.entries, self.deadline = entries, None
        else:
            self.entries = sorted(entries, key=lambda e: (e.run_last, e.mode != "headless"))  # stable
            self.deadline = time.monotonic() + parse_time_limit(time_limit)

    def allow(self, entry: Entry) -> bool | float:
        """``True`` (no limit, or a headless entry with time left), ``False`` (no time left), or
        the training minutes of a network."""
        if self.deadline is None:
            return True
        left = self.deadline - time.monotonic()
        if left <= 0 or (entry.run_last and left < self.headless_seconds):
            return False
        if entry.mode == "headless":
            return True
        position = self.entries.index(entry)
        networks = [e for e in self.entries[position:]
                    if e.mode != "headless" and _status(self.out / e.name) != "finished"]
        minutes = self.SHARE * left / max(1, len(networks)) / 60
        return min(minutes, self.user_minutes) if self.user_minutes else minutes

    def took(self, entry: Entry, seconds: float) -> None:
        """Record how long an entry ran (training and evaluation)."""
        if entry.mode == "headless":
            self.headless_seconds = max(self.headless_seconds, seconds)


def _not_set_by_user(base: RunConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides whose option still has its default value in ``base``."""
    default, current = RunConfig().to_dict(), base.to_dict()

    def get(values: dict[str, Any], key: str) -> Any:
        for part in key.split("."):
            values = values.get(part) if isinstance(values, dict) else None
        return values

    return {k: v for k, v in overrides.items() if get(current, k) == get(default, k)}


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _finished(run_dir: Path) -> tuple[dict[str, Any], str]:
    import yaml

    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = yaml.safe_load((run_dir / "config.yaml").read_text()).get("model")
    return metrics, model


def _ensemble_row(out: Path, dataset, split: Split, names: list[str]) -> dict[str, Any] | None:
    """Build, save and score the weighted ensemble of the finished entries; ``None`` under two."""
    finished = {n: out / n for n in names if _status(out / n) == "finished"}
    ensemble = build_ensemble(finished)
    if ensemble is None:
        return None
    run_dir = out / "ensemble"
    metrics = evaluate(ensemble, dataset, split.indices(dataset)["test"], run_dir)
    ensemble.info.update({"test_metrics": {k: metrics.get(k) for k in ("accuracy", "f1_macro")}})
    ensemble.save(run_dir / "model")
    write_json(run_dir / "run.json", {"status": "finished", "members": ensemble.info["members"]})
    logger.info("Ensemble of %s: test accuracy %.4f", ", ".join(ensemble.names), metrics["accuracy"])
    return {"name": "ensemble", "mode": "ensemble", "model": "+".join(ensemble.names),
            **{k: metrics.get(k) for k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr",
                                           "items_per_second")}, "train_seconds": None}


def _row(entry: Entry, model: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": entry.name, "mode": entry.mode, "model": model,
        **{k: metrics.get(k) for k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr",
                                       "train_seconds", "items_per_second")},
    }
