"""Image benchmark: featurization and fine-tuning speed against plain PyTorch loops in the same run,
and test accuracy of the three modes on ELPV (4 classes and defective/functional) and fridgeObjects.

Usage::

    .venv/bin/python bench/bench_images.py                 # speed, then accuracy (about 30 min on 2 cores)
    .venv/bin/python bench/bench_images.py --only speed    # a few minutes
    .venv/bin/python bench/bench_images.py --only accuracy --datasets fridge

Speed protocol:

* Featurization: the same decoded, preprocessed batches of real photos go through (a) a plain timm
  eager loop (``model.eval()``, ``torch.no_grad()``, NCHW float32) and (b) sigclass's
  :class:`~sigclass.training.image_featurizer.Featurizer` with each backend, end to end from the files
  (decode and preprocessing included in both). Batch 1 and 32. Each variant runs in its own process,
  so its peak resident memory is its own.
  Figures are the best of 5 repeats (the machine may be shared); ``images_per_s`` is end to end,
  ``network_images_per_s`` the network alone on the same preprocessed batches.
* Fine-tuning: the :class:`~sigclass.training.trainer.Trainer` against a minimal hand-written loop
  (AdamW, cross-entropy, shuffled batches) on the same network, tensors and batch size; the first
  epoch of each is a warm-up and is not counted. Both interleaved over rounds.

Accuracy protocol: ``sigclass compare`` with the default entries and settings, as the demo
(``scripts/demo.py``) runs them: within the demo's time limit for ELPV, without a limit for the
small fridgeObjects (or ``--full`` for all), on a
stratified split (75/25 train/test as in Deitsch et al. 2019, 10 % of the training part for
validation), seed 0. Writes ``bench/results/images.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "images.json"
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
VARIANTS = ("timm_eager", "sigclass_torch", "sigclass_onnx")


def sample_images(n: int) -> list[str]:
    """``n`` real photos: ELPV cells when installed, else fridgeObjects (repeated as needed)."""
    from sigclass.workflows.prepare import load_dataset

    try:
        paths = [str(p) for p in load_dataset("elpv").paths]
    except Exception:  # the demo extra is not installed
        paths = [str(p) for p in sorted(FRIDGE.rglob("*.jpg"))]
    return [paths[i % len(paths)] for i in range(n)]


# -- featurization ----------------------------------------------------------------------------------


def featurize_variant(variant: str, model: str, batch_size: int, n_images: int, repeats: int = 5) -> dict:
    """Images/s of one variant (run in a child process; peak memory is the child's own)."""
    import torch

    from sigclass.training.image_featurizer import Featurizer

    paths = sample_images(n_images)
    featurizer = Featurizer(model, cache_dir=False, batch_size=batch_size,
                            backend="onnx" if variant == "sigclass_onnx" else "torch").fit()
    preprocess = featurizer.preprocessor_
    if variant == "timm_eager":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        network = featurizer.network_.eval().to(device)  # the same timm network and weights

        def forward(batch):
            with torch.no_grad():
                return network(batch.to(device)).cpu().numpy()

        def run(items):
            return [forward(preprocess(items[begin:begin + batch_size]))
                    for begin in range(0, len(items), batch_size)]
    else:
        forward = featurizer.engine()  # the ONNX export happens once, before the clock starts

        def run(items):
            return featurizer.transform(items)

    batches = [preprocess(paths[begin:begin + batch_size]) for begin in range(0, len(paths), batch_size)]
    run(paths[:batch_size])  # warm-up
    end_to_end, network_only = [], []
    for _ in range(repeats):  # best of the repeats: the machine may be shared
        started = time.perf_counter()
        run(paths)
        end_to_end.append(len(paths) / (time.perf_counter() - started))
        started = time.perf_counter()
        for batch in batches:
            forward(batch)
        network_only.append(len(paths) / (time.perf_counter() - started))
    return {"images_per_s": round(max(end_to_end), 2), "network_images_per_s": round(max(network_only), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def featurization(model: str, n_images: int) -> dict:
    results = {}
    for batch_size in (1, 32):
        n = n_images if batch_size > 1 else max(8, n_images // 4)
        row = {}
        for variant in VARIANTS:
            output = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--model", model,
                 "--batch-size", str(batch_size), "--n-images", str(n)],
                check=True, capture_output=True, text=True)
            row[variant] = json.loads(output.stdout.strip().splitlines()[-1])
            print(f"  featurize {model} batch {batch_size} {variant}: {row[variant]}", flush=True)
        base = row["timm_eager"]
        for variant in VARIANTS[1:]:
            row[variant]["speedup"] = round(row[variant]["images_per_s"] / base["images_per_s"], 2)
            row[variant]["network_speedup"] = round(
                row[variant]["network_images_per_s"] / base["network_images_per_s"], 2)
        results[f"batch_{batch_size}"] = row
    return {"model": model, "goal_speedup": 3.0, **results}


# -- fine-tuning ------------------------------------------------------------------------------------


class TensorImages:
    """A torch dataset of preprocessed image tensors (``targets`` as the Trainer expects)."""

    def __init__(self, X, y):
        self.X, self.targets = X, list(map(int, y))

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index):
        return self.X[index], self.targets[index]


def hand_loop_epochs(network, X, y, epochs: int, batch_size: int, lr: float, seed: int) -> list[float]:
    """A minimal PyTorch loop (AdamW, cross-entropy, shuffled batches); images/s per epoch."""
    import torch

    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.01)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    generator = torch.Generator().manual_seed(seed)
    network.train()
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(X), generator=generator).to(X.device)
        for begin in range(0, len(X), batch_size):
            index = order[begin:begin + batch_size]
            loss = criterion(network(X[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(X) / (time.perf_counter() - started))
    return rates


def finetune_speed(model: str, image_size: int, n_images: int, epochs: int, rounds: int) -> dict:
    import numpy as np
    import torch

    import sigclass as sc
    from sigclass.config import TrainConfig
    from sigclass.training.image_featurizer import Featurizer
    from sigclass.training.trainer import Trainer

    preprocess = Featurizer(model, image_size=image_size, cache_dir=False).fit().preprocessor_
    X = preprocess(sample_images(n_images))
    y = np.arange(n_images) % 4
    config = TrainConfig(epochs=epochs, batch_size=16, patience=0, freeze_epochs=0, warmup_epochs=0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trainer_rates, hand_rates = [], []
    for round_ in range(rounds):
        torch.manual_seed(round_)
        network = sc.create_model(model, n_classes=4, pretrained=True)
        trainer = Trainer(network, config, "finetune", device, progress=False, seed=round_)
        trainer.fit(TensorImages(X, y), TensorImages(X[:16], y[:16]))
        trainer_rates += [h["train_items_per_s"] for h in trainer.history_[1:]]
        torch.manual_seed(round_)
        network = sc.create_model(model, n_classes=4, pretrained=True).to(device)
        hand_rates += hand_loop_epochs(network, X.to(device), torch.as_tensor(y).to(device), epochs, 16,
                                       config.lr, round_)[1:]
        print(f"  finetune round {round_}: trainer {trainer_rates[-1]:.1f} img/s, "
              f"hand loop {hand_rates[-1]:.1f} img/s", flush=True)
    trainer_speed, hand_speed = statistics.median(trainer_rates), statistics.median(hand_rates)
    return {"model": model, "image_size": image_size, "n_images": n_images, "batch_size": 16, "device": device,
            "trainer_images_per_s": round(trainer_speed, 2), "hand_loop_images_per_s": round(hand_speed, 2),
            "ratio": round(trainer_speed / hand_speed, 3), "goal": 0.9}


# -- accuracy ---------------------------------------------------------------------------------------

# name: (source, title, small). A small dataset runs without the time limit on a CPU too: its cost
# is minutes.
DATASETS = {
    "elpv": ("elpv", "ELPV, 4 classes", False),
    "elpv_binary": ("elpv:binary", "ELPV, defective vs functional", False),
    "fridge": (str(FRIDGE), "fridgeObjects, 4 classes", True),
}


def demo_module():
    spec = importlib.util.spec_from_file_location("sigclass_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def accuracy(names: list[str], out: Path, full: bool) -> tuple[dict, dict]:
    """Leaderboard figures per dataset, and the setting (``full`` or ``CPU-sized``) each ran."""
    from sigclass.config import RunConfig
    from sigclass.workflows.compare import compare

    demo = demo_module()
    table, settings = {}, {}
    for name in names:
        source, title, small = DATASETS[name]
        use_full = full or small
        config = demo.setting(RunConfig(val_size=0.1, test_size=0.25, seed=0), use_full)
        references = demo.ELPV_REFERENCES if name == "elpv" else []
        board = compare(source, out / name, config=config, references=references, title=title,
                        progress=False, time_limit=None if use_full else demo.IMAGE_MINUTES * 60.0)
        print(board.to_markdown(), flush=True)
        keys = ("model", "accuracy", "balanced_accuracy", "f1_macro", "train_seconds", "items_per_second")
        table[name] = {row["name"]: {k: row.get(k) for k in keys} for row in board.rows}
        settings[name] = "full" if use_full else "CPU-sized"
    return table, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("speed", "accuracy"))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--full", action="store_true", help="the demo's full (GPU) setting")
    parser.add_argument("--out", type=Path, default=None, help="keep the accuracy runs here")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to update")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(featurize_variant(args.child, args.model, args.batch_size, args.n_images)))
        return 0
    import torch

    import sigclass

    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__, "sigclass": sigclass.__version__,
                          "cuda": torch.cuda.is_available()}
    started = time.perf_counter()
    if args.only in (None, "speed"):
        results["featurization"] = featurization(args.model, args.n_images)
        results["finetune_speed"] = finetune_speed(args.model, 128, 64, epochs=3, rounds=2)
    if args.only in (None, "accuracy"):
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or Path(tmp)
            table, settings = accuracy(args.datasets, out, args.full)
            results.setdefault("accuracy", {}).update(table)  # datasets not rerun are kept
            results.setdefault("accuracy_setting", {}).update(settings)
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
