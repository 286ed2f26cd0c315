"""The demo: transfer learning side by side on real data, images and signals.

1. ELPV solar-cell electroluminescence images (PyPI ``elpv-dataset``, 2,624 cells, 4 defect
   classes; license CC BY-NC-SA 4.0): headless (frozen EfficientNet-Lite2 + logistic regression),
   fine-tuned EfficientNet-Lite0 and a small CNN from scratch on one stratified 75/25 split,
   beside the published figures of Deitsch et al. 2019.
2. BasicMotions (6-channel accelerometer + gyroscope): 1D CNNs, recurrent nets, MiniRocket and
   signal-as-image on the dataset's own train/test split.

On a CPU the image models run at a reduced resolution with few epochs so that the whole demo
finishes in about 15 minutes on 2 cores; on a GPU (or with ``--full``) they run the full setting.
Results land in ``demo_runs/`` (one run folder per model, leaderboards as Markdown and JSON).
"""

from __future__ import annotations

import argparse
import logging
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


def image_entries(full: bool):
    """The three modes, at a CPU-friendly or the full setting."""
    from sigclass.compare import Entry

    if full:
        return [
            Entry("headless", "headless", "efficientnet_lite2", {"tta": True}),
            Entry("finetune", "finetune", "efficientnet_lite0",
                  {"image_size": 224, "train.epochs": 30, "train.patience": 8}),
            Entry("scratch", "scratch", "vgg_like_3", {"image_size": 224, "train.epochs": 60,
                                                       "train.patience": 10}),
        ]
    return [
        Entry("headless", "headless", "efficientnet_lite2", {}),
        Entry("finetune", "finetune", "efficientnet_lite0",
              {"image_size": 128, "train.epochs": 6, "train.max_minutes": 5.0}),
        Entry("scratch", "scratch", "simple_cnn_gap",
              {"image_size": 96, "train.epochs": 20, "train.lr": 3e-3, "train.max_minutes": 2.0}),
    ]


def run_images(out: Path, full: bool) -> None:
    from sigclass.compare import compare
    from sigclass.config import RunConfig

    config = RunConfig(resize="squash", val_size=0.1, test_size=0.25, seed=0)
    board = compare("elpv", out / "elpv", entries=image_entries(full), config=config,
                    references=ELPV_REFERENCES,
                    title="ELPV solar cells, 4 classes (defect probability 0, 1/3, 2/3, 1), 656 test cells")
    print(board.to_markdown())


def run_signals(out: Path, full: bool) -> None:
    from sigclass.compare import compare
    from sigclass.config import RunConfig

    config = RunConfig(val_size=0.2, seed=0)
    overrides = {} if full else {"train.max_minutes": 0.6}
    board = compare("aeon:BasicMotions", out / "basicmotions", config=config,
                    references=BASICMOTIONS_REFERENCES, progress=False,
                    title="BasicMotions (6 x 100, 4 activities), default train/test split", **overrides)
    print(board.to_markdown())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_runs"), help="results folder")
    parser.add_argument("--full", action="store_true", help="the full setting (default on a GPU)")
    parser.add_argument("--only", choices=("images", "signals"), help="run one half only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    full = args.full or torch.cuda.is_available()
    print(f"sigclass demo on {'GPU' if torch.cuda.is_available() else 'CPU'}, "
          f"{'full' if full else 'CPU-sized'} setting; results in {args.out}/")
    started = time.perf_counter()
    if args.only in (None, "images"):
        run_images(args.out, full)
    if args.only in (None, "signals"):
        run_signals(args.out, full)
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
