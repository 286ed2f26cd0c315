"""A new class in seconds: ``sigclass update`` against a full headless training with cached features.

Images: fridgeObjects without ``milk_bottle`` trains a headless model (the default backbone, no
test-time views); ``update`` then adds ``milk_bottle``. The baseline is a full ``train`` on all
four classes. Both start from the feature cache the first run left (the old photos cached, the
new ones not: what a user who retrains has), and both are run a second time with every photo
cached (``*_all_cached_seconds``). Signals:
BasicMotions (aeon) without ``badminton`` trains a MiniRocket model, ``update`` adds it; the
baseline is a full MiniRocket training on all four classes (MiniRocket is fitted, not cached).

Reported per case: the seconds of update and of the baseline (whole calls, and the fit part that
``run.json`` records), the accuracy on the old run's test items before and after the update, the
updated model's accuracy on all classes (the old test items and the new class's own test items)
and the baseline's on its own test part. Writes bench/results/update.json.

    python bench/bench_update.py [--cases image signal]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
COMMON = {"mode": "headless", "cam_examples": 0, "audit": False, "progress": False, "seed": 0,
          "tracking.enabled": False}


def _timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def _row(name: str, held_out: str, base, update, update_s: float, full, full_s: float,
         **extra: float) -> dict:
    summary = update.summary
    row = {
        "case": name, "held_out_class": held_out, "model": base.config.model,
        "head": base.predictor.info["head"]["head"],
        "update_seconds": update_s, "update_fit_seconds": update.train_seconds,
        "full_train_seconds": full_s, "full_train_fit_seconds": full.train_seconds,
        "speedup": full_s / update_s, **extra,
        "old_classes_test_accuracy_before": summary["old_test_accuracy_before"],
        "old_classes_test_accuracy_after": summary["old_test_accuracy_after"],
        "all_classes_test_accuracy_after_update": update.metrics["accuracy"],
        "new_class_test_items": summary["new_items_split"]["test"],
        "new_class_recall": update.metrics["per_class"][held_out]["recall"],
        "full_train_test_accuracy": full.metrics["accuracy"],
        "n_train_items_after_update": summary["split_counts"]["train"] + summary["split_counts"]["val"],
    }
    print(json.dumps(row, indent=1), flush=True)
    return row


def _use_cache(folder: Path) -> None:
    os.environ["SIGCLASS_CACHE_DIR"] = str(folder)


def image_case(work: Path) -> dict:
    """Update and full training each start from the cache the base run left (old photos
    cached, new ones not), then run again with every photo cached."""
    import sigclass as sc

    settings = {**COMMON, "tta": "none"}
    held_out = "milk_bottle"
    for name in sorted(p.name for p in FRIDGE.iterdir() if p.is_dir()):
        shutil.copytree(FRIDGE / name, work / ("new" if name == held_out else "base") / name)
        shutil.copytree(FRIDGE / name, work / "all" / name)
    _use_cache(work / "cache")
    base = sc.train(work / "base", out=work / "base_run", **settings)
    for copy in ("cache_update", "cache_full"):
        shutil.copytree(work / "cache", work / copy)
    _use_cache(work / "cache_update")
    update, update_s = _timed(lambda: sc.update(base.dir, work / "new", work / "updated",
                                                progress=False))
    _, update_cached_s = _timed(lambda: sc.update(base.dir, work / "new", work / "updated_again",
                                                  progress=False))
    _use_cache(work / "cache_full")
    full, full_s = _timed(lambda: sc.train(work / "all", out=work / "full_run", **settings))
    _, full_cached_s = _timed(lambda: sc.train(work / "all", out=work / "full_again", **settings))
    return _row("image: fridgeObjects", held_out, base, update, update_s, full, full_s,
                update_all_cached_seconds=update_cached_s, full_train_all_cached_seconds=full_cached_s,
                speedup_all_cached=full_cached_s / update_cached_s)


def signal_case(work: Path) -> dict:
    from aeon.datasets import load_basic_motions

    import sigclass as sc

    X1, y1 = load_basic_motions(split="train")
    X2, y2 = load_basic_motions(split="test")
    X, y = np.concatenate([X1, X2]).astype(np.float32), np.concatenate([y1, y2]).astype(str)
    held_out = "badminton" if "badminton" in set(y) else sorted(set(y))[-1]
    keep = y != held_out
    np.savez(work / "base.npz", X=X[keep], y=y[keep])
    np.savez(work / "new.npz", X=X[~keep], y=y[~keep])
    np.savez(work / "all.npz", X=X, y=y)
    settings = {**COMMON, "model": "minirocket"}
    base = sc.train(work / "base.npz", out=work / "sig_base", **settings)
    update, update_s = _timed(lambda: sc.update(base.dir, work / "new.npz", work / "sig_updated",
                                                progress=False))
    full, full_s = _timed(lambda: sc.train(work / "all.npz", out=work / "sig_full", **settings))
    return _row("signal: BasicMotions", held_out, base, update, update_s, full, full_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["image", "signal"], choices=["image", "signal"])
    args = parser.parse_args()
    out = ROOT / "bench" / "results" / "update.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _use_cache(Path(tmp) / "cache")  # a cold cache
        for case in args.cases:
            work = Path(tmp) / case
            work.mkdir()
            rows.append({"image": image_case, "signal": signal_case}[case](work))
            out.write_text(json.dumps({"cpu_count": os.cpu_count(),
                                       "load_average_1min": os.getloadavg()[0], "rows": rows},
                                      indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
