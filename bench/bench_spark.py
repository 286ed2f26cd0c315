"""Batch scoring on Spark against the single-process path, on this machine.

A default headless fridgeObjects model (``sigclass train DATA``, no flags) scores the 134 photos
repeated ``--copies`` times (copies in separate folders, so each file is a separate input), once with
``sigclass predict`` (one process, the default engine for a CPU) and once with
``sigclass predict --engine spark --spark-master local[2]``. Both are timed end to end as a
user runs them (a fresh process each: Python and model start-up, Spark's JVM for the second),
and the Spark run also without its start-up (the job's own seconds, from its log). The outputs
are compared row for row.

Writes bench/results/spark.json (rows/s of both, the ratio, the largest probability
difference).

    python bench/bench_spark.py [--copies 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "spark.json"
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))


def _run(*args) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - started


def main() -> None:
    import sigclass as sc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sigclass-spark-"))
    sc.train(str(FRIDGE), out=tmp / "run", progress=False, **{"tracking.enabled": False})
    inputs = tmp / "inputs"
    for copy in range(args.copies):
        for photo in sorted(FRIDGE.rglob("*.jpg")):
            link = inputs / f"copy{copy}" / photo.parent.name / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.write_bytes(photo.read_bytes())
    n = sum(1 for _ in inputs.rglob("*.jpg"))
    local_s = _run("predict", tmp / "run", inputs, "-o", tmp / "local.csv", "-q")
    spark_s = _run("predict", tmp / "run", inputs, "-o", tmp / "spark.csv", "--engine", "spark",
                   "--spark-master", "local[2]")
    a, b = pd.read_csv(tmp / "local.csv"), pd.read_csv(tmp / "spark.csv")
    same = list(a["input"]) == list(b["input"]) and list(a["predicted"]) == list(b["predicted"])
    columns = [c for c in a.columns if c.startswith("p_")]
    diff = float(np.abs(a[columns].to_numpy() - b[columns].to_numpy()).max())
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "settings": "sigclass train fridgeObjects (defaults); sigclass predict (defaults) vs "
                    "--engine spark --spark-master local[2]; end to end, fresh processes",
        "n_inputs": n,
        "local": {"seconds": local_s, "rows_per_s": n / local_s},
        "spark_local2": {"seconds": spark_s, "rows_per_s": n / spark_s},
        "spark_vs_local": local_s / spark_s,
        "same_rows_and_classes": same,
        "max_probability_difference": diff,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
