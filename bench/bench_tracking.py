"""What MLflow tracking costs a training run: tracked versus untracked, in the same process.

A tiny scratch run (simple_cnn_gap, 32 px, 2 epochs on fridgeObjects, or generated colour images
when the photos are absent) is trained alternately with tracking off and on, after one warm-up of
each; the one-time costs (creating a SQLite store, the first model logging of a process) are
reported apart. Writes ``bench/results/tracking.json``. A few minutes on a CPU.

    python bench/bench_tracking.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", REPO.parent / "shared" / "datasets" / "fridgeObjects"))


def colour_images(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, rgb in {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(30):
            noise = rng.integers(-30, 30, (32, 32, 3))
            Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(
                root / name / f"{i}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tracking.json")
    args = parser.parse_args()

    import sigclass as sc
    from sigclass._utils import environment_info, write_json
    from sigclass.tracking.store import get_client

    work = Path(tempfile.mkdtemp(prefix="sigclass-bench-tracking-"))
    os.environ["SIGCLASS_CACHE_DIR"] = str(work / "cache")
    data = FRIDGE if (FRIDGE / "can").is_dir() else colour_images(work / "colours")
    uri = f"sqlite:///{(work / 'store' / 'mlflow.db').as_posix()}"
    dataset = sc.load_dataset(str(data))
    options = {"train.epochs": 2, "image_size": 32, "tracking.uri": uri}

    def run(tracked: bool, index: int) -> float:
        started = time.perf_counter()
        sc.train(dataset, mode="scratch", model="simple_cnn_gap", progress=False,
                 out=work / f"run-{'on' if tracked else 'off'}-{index}",
                 **{**options, "tracking.enabled": tracked})
        return time.perf_counter() - started

    run(False, -1)  # warm-up: imports, first epoch allocations
    started = time.perf_counter()
    get_client(uri)
    store_seconds = time.perf_counter() - started
    first_tracked = run(True, -1)
    times: dict[bool, list[float]] = {False: [], True: []}
    for index in range(args.repeats):
        for tracked in (False, True):
            times[tracked].append(run(tracked, index))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    result = {
        "benchmark": "tracking overhead per training run",
        "data": data.name, "n_items": len(dataset), "run": "scratch simple_cnn_gap 32px 2 epochs",
        "repeats": args.repeats,
        "untracked_seconds": times[False], "tracked_seconds": times[True],
        "median_untracked_seconds": round(off, 3), "median_tracked_seconds": round(on, 3),
        "tracked_over_untracked": round(on / off, 3),
        "overhead_seconds_per_run": round(on - off, 3),
        "store_creation_seconds": round(store_seconds, 3),
        "first_tracked_run_seconds": round(first_tracked, 3),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(), **environment_info("auto"),
    }
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}, indent=2))


if __name__ == "__main__":
    main()
