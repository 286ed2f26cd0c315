"""Tune benchmark: trials per hour with 1 worker against 2 workers sharing one SQLite study.

Protocol: headless trials on ``aeon:GunPoint`` (MiniRocket features fitted per trial, then the
drawn head and its C/alpha), ``--trials N`` per study. First an untimed one-trial study warms
the disk caches and imports; then a study run by one ``sigclass tune`` process and another run
by two processes started together, each on its own fresh SQLite file, alternating over rounds.
Wall time is from the first worker's start to the last worker's end (process start-up
included, as a user sees it). On a 2-core machine the gain is bounded by the cores: both workers
compete for them. Writes ``bench/results/tune.json``.

Usage::

    .venv/bin/python bench/bench_tune.py            # about 3 minutes on 2 cores
    .venv/bin/python bench/bench_tune.py --trials 6 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "tune.json"
DATA = "aeon:GunPoint"


def run_study(out: Path, workers: int, trials: int) -> dict:
    env = {**os.environ, "SIGCLASS_TRACKING": "off", "HF_HUB_OFFLINE": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    args = [sys.executable, "-m", "sigclass", "tune", DATA, "--mode", "headless", "--trials",
            str(trials), "--out", str(out), "--study", "bench", "-q"]
    started = time.perf_counter()
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"tune worker failed:\n{err[-3000:]}")
    seconds = time.perf_counter() - started
    summary = json.loads((out / "study.json").read_text())
    done = summary["counts"].get("COMPLETE", 0) + summary["counts"].get("PRUNED", 0)
    return {"workers": workers, "seconds": seconds, "trials": done,
            "trials_per_hour": 3600 * done / seconds,
            "median_trial_seconds": statistics.median(t["seconds"] for t in summary["trials"]),
            "counts": summary["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_study(Path(tmp) / "warm", 1, 1)
        rounds = []
        for r in range(args.rounds):
            one = run_study(Path(tmp) / f"one-{r}", 1, args.trials)
            two = run_study(Path(tmp) / f"two-{r}", 2, args.trials)
            rounds.append({"one_worker": one, "two_workers": two,
                           "speedup": two["trials_per_hour"] / one["trials_per_hour"]})
            print(json.dumps(rounds[-1], indent=2))
    result = {
        "benchmark": "tune: trials/hour, 1 vs 2 workers sharing one SQLite study",
        "data": DATA, "mode": "headless (minirocket + drawn head and C/alpha)",
        "trials_per_study": args.trials, "cpus": os.cpu_count(), "platform": platform.platform(),
        "rounds": rounds,
        "speedup_median": statistics.median(r["speedup"] for r in rounds),
        "note": "2 CPU cores shared with other jobs: both workers compete for the same cores",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"speedup (2 workers / 1): {result['speedup_median']:.2f}  -> {RESULTS}")


if __name__ == "__main__":
    main()
