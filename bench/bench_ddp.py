"""DDP benchmark: training throughput with 1 process against 2 processes under torchrun.

Protocol: ``simple_cnn_gap`` trained from scratch at 32x32 px on 240 generated images
(3 colour classes), global batch 32, 4 epochs, the same split. Throughput is the Trainer's
``train_items_per_s`` (all processes together), median over epochs 2-4 (epoch 1 is warm-up).
The single process uses every core (PyTorch's default threads); each torchrun process gets
``cores / 2`` threads, so both use the same cores: on a 2-core CPU the gain is bounded by
them. On CUDA machines (NCCL) with one GPU only the single-process figure is taken.
Writes ``bench/results/ddp.json``.

Usage::

    .venv/bin/python bench/bench_ddp.py        # about 2 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ddp.json"
ARGS = ["--mode", "scratch", "--model", "simple_cnn_gap", "--image-size", "32", "--epochs", "4",
        "--batch-size", "32", "--patience", "0", "--val-size", "0.1", "--test-size", "0.1", "-q"]


def make_images(root: Path, per_class: int = 80) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, rgb in {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = np.clip(np.array(rgb) + rng.integers(-90, 90, (32, 32, 3)), 0, 255)
            Image.fromarray(array.astype(np.uint8)).save(root / name / f"{name}_{i}.png")
    return root


def run(data: Path, out: Path, processes: int, split: Path | None) -> dict:
    env = {**os.environ, "SIGCLASS_TRACKING": "off", "OMP_WAIT_POLICY": "PASSIVE"}
    cores = os.cpu_count() or 1
    args = ["train", str(data), *ARGS, "--out", str(out), "--device", "cpu"]
    if split is not None:
        args += ["--split", str(split)]
    if processes == 1:
        command = [sys.executable, "-m", "sigclass", *args]
    else:
        env["OMP_NUM_THREADS"] = str(max(1, cores // processes))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "-m", "sigclass", *args]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {"processes": processes,
            "items_per_s": statistics.median(h["train_items_per_s"] for h in history[1:]),
            "epoch_seconds": statistics.median(h["epoch_seconds"] for h in history[1:]),
            "wall_seconds": time.perf_counter() - started, "test_accuracy": metrics["accuracy"]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = make_images(Path(tmp) / "images")
        one = run(data, Path(tmp) / "one", 1, None)
        two = run(data, Path(tmp) / "two", 2, Path(tmp) / "one" / "split.json")
    result = {
        "benchmark": "DDP on CPU (gloo): training items/s, 1 process vs 2 under torchrun",
        "network": "simple_cnn_gap 32px, 240 images, global batch 32",
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "one_process": one, "two_processes": two,
        "speedup": two["items_per_s"] / one["items_per_s"],
        "note": "same cores for both; the CPU is shared with other jobs",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
