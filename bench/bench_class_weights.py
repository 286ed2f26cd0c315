"""Loss weights of networks on skewed classes: none, square root of inverse frequency, inverse.

- ELPV (4 classes, 14.6 : 1), the demo's split, ``sigclass train elpv --mode finetune`` with the
  defaults (on a CPU: the 5-minute budget, the input size it picks) and each
  ``train.class_weights`` setting;
- held out: GunPoint with one class cut to a quarter of its training cases (ratio 4), FCN from
  scratch with the defaults, scored on the dataset's full, balanced test part.

Writes bench/results/class_weights.json (accuracy, balanced accuracy, macro-F1, seconds).

    python bench/bench_class_weights.py [--only elpv|gunpoint]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "class_weights.json"
SETTINGS = {"none": False, "sqrt": "sqrt", "inverse": True}


def skewed_gun_point(folder: Path) -> Path:
    """GunPoint's training cases with the second class cut to a quarter (``train.npz``) and its
    own test part (``test.npz``), as a folder of split files."""
    from sigclass.data.signals import load_signals

    gun = load_signals("aeon:GunPoint")
    test = set(gun.fixed_test)
    labels = np.asarray(gun.labels).astype(str)
    train = [i for i, case in enumerate(gun.ids) if case not in test]
    keep = [i for i in train if labels[i] == labels[train[0]]]
    keep += [i for i in train if labels[i] != labels[train[0]]][: len(keep) // 4]
    held = [i for i, case in enumerate(gun.ids) if case in test]
    root = folder / "gunpoint_skewed"
    root.mkdir(parents=True, exist_ok=True)
    for part, index in (("train", keep), ("test", held)):
        np.savez(root / f"{part}.npz", X=gun.X[index].astype(np.float32), y=labels[index])
    return root


def main() -> None:
    import sigclass as sc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("elpv", "gunpoint"))
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {"rows": []}
    tmp = Path(tempfile.mkdtemp(prefix="sigclass-weights-"))
    cases = {"elpv": ("elpv", "finetune", None, {"val_size": 0.1, "test_size": 0.25}),
             "gunpoint": (None, "scratch", "fcn", {})}
    for name, (data, mode, model, split) in cases.items():
        if args.only not in (None, name):
            continue
        if data is None:
            data = str(skewed_gun_point(tmp))
        results["rows"] = [r for r in results["rows"] if r["data"] != name]
        for label, setting in SETTINGS.items():
            started = time.perf_counter()
            run = sc.train(data, mode=mode, model=model, out=tmp / f"{name}-{label}", progress=False,
                           seed=0, cam_examples=0, **split, **{"train.class_weights": setting})
            summary = json.loads((tmp / f"{name}-{label}" / "run.json").read_text())
            row = {"data": name, "mode": mode, "model": run.config.model, "class_weights": label,
                   "accuracy": run.metrics["accuracy"],
                   "balanced_accuracy": run.metrics["balanced_accuracy"],
                   "f1_macro": run.metrics["f1_macro"], "seconds": time.perf_counter() - started,
                   "epochs_run": summary.get("epochs_run"), "image_size": summary.get("image_size"),
                   "weights": summary.get("class_weights")}
            results["rows"].append(row)
            print(row, flush=True)
            OUT.write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
