"""Conformal prediction sets with the defaults: the coverage they reach on the test part and how
many classes they hold, beside the 0.9 they promise.

Usage::

    .venv/bin/python bench/bench_conformal.py                 # the headless rows and GunPoint scratch
    .venv/bin/python bench/bench_conformal.py --rows fridgeObjects:headless GunPoint:scratch
    .venv/bin/python bench/bench_conformal.py --rows GunPoint:scratch:val_size=0.4   # an override

Protocol: ``sc.train(data, mode=MODE)`` with every other option at its default (coverage 0.9,
val_size 0.15, test_size 0.2; the UCR/UEA sets keep their own test files). Headless runs are
calibrated on the out-of-fold probabilities of their head on the training items; networks on
the temperature-scaled probabilities of the validation part. Coverage on one test part is one
draw: with ``n`` test items its standard error is about ``sqrt(0.09 / n)`` (0.025 at 150).
Writes ``bench/results/conformal.json`` after every row; rows of an earlier file that a run
does not redo are kept.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

FRIDGE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fridgeObjects"
RESULTS = Path(__file__).resolve().parent / "results" / "conformal.json"
ROWS = ("fridgeObjects:headless", "BasicMotions:headless", "GunPoint:headless", "GunPoint:scratch")


def run_row(dataset: str, mode: str, out: Path, overrides: dict) -> dict:
    """One default run (with ``overrides``); its coverage figures."""
    import sigclass as sc

    data = str(FRIDGE) if dataset == "fridgeObjects" else f"aeon:{dataset}"
    started = time.perf_counter()
    run = sc.train(data, mode=mode, out=out, progress=False,
                   **{"tracking.enabled": False, "cam_examples": 0, **overrides})
    conformal = run.metrics["conformal"]
    summary = json.loads((out / "run.json").read_text())["conformal"]
    per_class = conformal["per_class"].values()
    return {
        "dataset": dataset, "mode": mode, "overrides": overrides, "model": run.config.model or run.predictor.model_name,
        "n_classes": len(run.predictor.classes), "target_coverage": conformal["target_coverage"],
        "coverage": round(conformal["coverage"], 4), "mean_set_size": round(conformal["mean_set_size"], 3),
        "accuracy": round(run.metrics["accuracy"], 4), "n_test": conformal["n"],
        "min_class_coverage": round(min(c["coverage"] for c in per_class), 4),
        "qhat": conformal["qhat"], "n_calibration": conformal["n_calibration"],
        "calibrated_on": summary["calibrated_on"], "reason": summary.get("reason"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="DATASET:MODE pairs")
    args = parser.parse_args()

    import torch
    import yaml

    result = {
        "protocol": "sc.train(data, mode=MODE) with defaults (coverage 0.9); coverage and mean set "
                    "size of the prediction sets on the test part",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average": list(os.getloadavg())},
        "rows": [],
    }
    try:
        earlier = json.loads(RESULTS.read_text()).get("rows", [])
    except (OSError, ValueError):
        earlier = []

    def save() -> None:
        def key(r):
            return r["dataset"], r["mode"], json.dumps(r.get("overrides") or {}, sort_keys=True)

        done = {key(r) for r in result["rows"]}
        kept = [r for r in earlier if key(r) not in done]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({**result, "rows": kept + result["rows"]}, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="sigclass-conformal-") as tmp:
        for spec in args.rows:
            dataset, mode, *settings = spec.split(":")
            overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in settings)}
            row = run_row(dataset, mode or "headless", Path(tmp) / spec.replace(":", "-").replace("=", "-"),
                          overrides)
            result["rows"].append(row)
            save()
            print(f"{dataset:<14} {row['mode']:<9} {settings} coverage {row['coverage']:.3f} (target "
                  f"{row['target_coverage']})  set size {row['mean_set_size']:.2f} of "
                  f"{row['n_classes']}  accuracy {row['accuracy']:.3f}  n_test {row['n_test']}  "
                  f"{row['seconds']:.0f} s", flush=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    save()


if __name__ == "__main__":
    main()
