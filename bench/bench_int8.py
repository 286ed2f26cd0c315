"""INT8 quantization with the defaults: ``sigclass train DATA`` (no flags), then
``sigclass export RUN --quantize int8`` (ONNX Runtime static quantization calibrated on 200 of
the run's training items), on:

- fridgeObjects (headless, the default image model),
- ELPV (headless, the demo split: 75/25, 10 % of the training part for validation),
- BasicMotions (``--mode scratch``: the default signal network, FCN; the default headless
  MiniRocket runs numba code and has no ONNX graph).

Writes bench/results/int8.json: per dataset, the quantization report (test accuracy and
macro-F1 of the fp32 and int8 graphs, probability differences, items per second of both graphs
on the test part at batch 32, network alone, same process) and the seconds it took. Goals
(issue 15): int8 >= 2x the fp32 ONNX Runtime speed, accuracy drop <= 1 point.

    python bench/bench_int8.py [--only fridge|elpv|basicmotions]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "int8.json"
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
CASES = {
    "fridge": (str(FRIDGE), {}),
    "elpv": ("elpv", {"val_size": 0.1, "test_size": 0.25}),
    # the default signal entry is MiniRocket (numba code, no ONNX graph): the default network
    "basicmotions": ("aeon:BasicMotions", {"mode": "scratch"}),
}


def main() -> None:
    import sigclass as sc
    from sigclass.workflows.quantize import quantize_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=tuple(CASES))
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {"datasets": {}}
    results.update(machine={"cpu_count": os.cpu_count(), "platform": platform.platform()},
                   settings="sigclass train DATA (defaults), sigclass export RUN --quantize int8 (defaults)")
    tmp = Path(tempfile.mkdtemp(prefix="sigclass-int8-"))
    for name, (data, split) in CASES.items():
        if args.only not in (None, name):
            continue
        started = time.perf_counter()
        result = sc.train(data, out=tmp / name, progress=False, **{"tracking.enabled": False}, **split)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = quantize_model(tmp / name)
        results["datasets"][name] = {"mode": result.config.mode, "model": result.config.model,
                                     "train_seconds": train_seconds,
                                     "export_seconds": time.perf_counter() - started, **report}
        print(name, json.dumps(results["datasets"][name], indent=1))
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
