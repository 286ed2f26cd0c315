"""The demo: transfer learning side by side on real data, images and signals, with the defaults.

1. ELPV solar-cell electroluminescence images (PyPI ``elpv-dataset``, 2,624 cells, 4 defect
   classes; license CC BY-NC-SA 4.0): ``sigclass compare elpv --time-limit 9m`` — the default
   image entries (headless: frozen EfficientNet-Lite2 + logistic regression; fine-tuned
   EfficientNet-Lite0; a small CNN from scratch; HOG/LBP + SVM) and the ensemble row, beside the
   published figures of Deitsch et al. 2019.
2. BasicMotions (6-channel accelerometer + gyroscope): ``sigclass compare aeon:BasicMotions
   --time-limit 4m`` — 1D CNNs, recurrent nets, MiniRocket, MultiROCKET-Hydra, catch22 and
   signal-as-image on the dataset's own train/test split.

Every entry runs with the settings ``sigclass train DATA --mode MODE`` uses with no flags; the
time limit only sizes each network's minutes, so that the demo finishes in about 15 minutes on
2 cores. On a GPU (or with ``--full``) there is no time limit and no network's training is cut
short by the clock: each trains the epochs its automatic budget plans. Results land in ``demo_runs/``
(one run folder per model, leaderboards as Markdown and JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

ELPV_REFERENCES = [
    {"name": "Deitsch et al. 2019: end-to-end CNN (VGG-19), 75/25 split", "accuracy": 0.8842,
     "source": "Solar Energy 185 (2019), arXiv 1807.02894"},
    {"name": "Deitsch et al. 2019: hand-crafted features + SVM, 75/25 split", "accuracy": 0.8244,
     "source": "Solar Energy 185 (2019), arXiv 1807.02894"},
]
BASICMOTIONS_REFERENCES = [
    {"name": "Strong methods of the multivariate bake-off (40 test cases)", "accuracy": 1.0,
     "source": "Ruiz et al. 2021"},
]


IMAGE_MINUTES, SIGNAL_MINUTES = 9, 4  # the CPU demo's time limits


def setting(config, full: bool):
    """``config`` in the demo's setting. The full setting caps nothing: no time limit for the
    comparison and no wall-clock cap on a network (``train.max_minutes: null``), so every network
    trains the epochs its automatic budget plans (on a GPU the cap never binds anyway)."""
    return config.updated({"train.max_minutes": None}) if full else config


def record(out: Path, minutes: dict[str, float], full: bool, target: Path) -> Path:
    """Write the demo's leaderboards and times to ``target`` (the README's demo tables cite it)."""
    import torch

    boards = {}
    for name in ("elpv", "basicmotions"):
        board = out / name / "leaderboard.json"
        if board.is_file():
            boards[name] = json.loads(board.read_text())
    summary = {"setting": "full" if full else "CPU-sized",
               "time_limits_minutes": {"elpv": IMAGE_MINUTES, "basicmotions": SIGNAL_MINUTES},
               "minutes": minutes, "device": "cuda" if torch.cuda.is_available() else "cpu",
               "cpu_count": os.cpu_count(), "machine": platform.platform(),
               "leaderboards": boards}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(summary, indent=2) + "\n")
    return target


def run_images(out: Path, full: bool) -> None:
    from sigclass.config import RunConfig
    from sigclass.workflows.compare import compare

    config = setting(RunConfig(val_size=0.1, test_size=0.25, seed=0), full)
    board = compare("elpv", out / "elpv", config=config, references=ELPV_REFERENCES,
                    time_limit=None if full else IMAGE_MINUTES * 60.0,
                    title="ELPV solar cells, 4 classes (defect probability 0, 1/3, 2/3, 1), 75/25 split, "
                          "near-duplicate cells on one side")
    print(board.to_markdown())


def run_signals(out: Path, full: bool) -> None:
    from sigclass.config import RunConfig
    from sigclass.workflows.compare import compare

    config = setting(RunConfig(val_size=0.2, seed=0), full)
    board = compare("aeon:BasicMotions", out / "basicmotions", config=config,
                    references=BASICMOTIONS_REFERENCES, progress=False,
                    time_limit=None if full else SIGNAL_MINUTES * 60.0,
                    title="BasicMotions (6 x 100, 4 activities), default train/test split")
    print(board.to_markdown())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_runs"), help="results folder")
    parser.add_argument("--full", action="store_true", help="the full setting (default on a GPU)")
    parser.add_argument("--only", choices=("images", "signals"), help="run one half only")
    parser.add_argument("--record", type=Path, default=None, metavar="JSON",
                        help="also write the leaderboards and times to JSON "
                             "(bench/results/demo.json is what the README cites)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    full = args.full or torch.cuda.is_available()
    print(f"sigclass demo on {'GPU' if torch.cuda.is_available() else 'CPU'}, "
          f"{'full' if full else 'CPU-sized'} setting; results in {args.out}/")
    started = time.perf_counter()
    minutes = {}
    if args.only in (None, "images"):
        run_images(args.out, full)
        minutes["elpv"] = round((time.perf_counter() - started) / 60, 2)
    if args.only in (None, "signals"):
        begun = time.perf_counter()
        run_signals(args.out, full)
        minutes["basicmotions"] = round((time.perf_counter() - begun) / 60, 2)
    minutes["total"] = round((time.perf_counter() - started) / 60, 2)
    print(f"demo finished in {minutes['total']:.1f} minutes")
    if args.record:
        print(f"recorded in {record(args.out, minutes, full, args.record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
