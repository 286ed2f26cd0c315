"""Signal benchmark: test accuracy on the UCR/UEA default splits beside published figures, and the
training speed of sigclass's Trainer against a minimal hand-written PyTorch loop.

Usage::

    .venv/bin/python bench/bench_signals.py            # about 15 minutes on 2 CPU cores
    .venv/bin/python bench/bench_signals.py --quick    # a smoke run of a minute or two

Protocol (like the published runs in ../shared/ANCHORS.md): each dataset's own train/test split;
networks train on all training cases (no validation part) and keep the epoch with the lowest
training loss, as in dl-4-tsc (Ismail Fawaz et al. 2019), but for 100 epochs with a cosine
schedule instead of 1,500-2,000. Writes ``bench/results/signals.json``.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting stall badly when another process holds a core; passive
# waiting costs nothing on an idle machine. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

DATASETS = ("GunPoint", "ItalyPowerDemand", "BasicMotions")
NETWORKS = ("fcn", "resnet1d", "inception", "simple_cnn1d", "lstm", "gru")
FEATURIZERS = ("minirocket", "signal_image")
SOURCE = ("hfawaz/dl-4-tsc results-ucr-128.csv (FCN, ResNet); hfawaz/InceptionTime; "
          "angus924/rocket (ROCKET); via ../shared/ANCHORS.md")
PUBLISHED = {  # test accuracy %, UCR default split
    "GunPoint": {"fcn": 100.0, "resnet1d": 99.1, "inception": 100.0, "rocket": 100.0},
    "ItalyPowerDemand": {"fcn": 96.3, "resnet1d": 96.2, "inception": 96.5, "rocket": 97.0},
    "BasicMotions": {"best": 100.0},  # Ruiz et al. 2021 bake-off: strong methods reach 100 %
}
RESULTS = Path(__file__).resolve().parent / "results" / "signals.json"


def train_one(dataset, model: str, out: Path, epochs: int, max_minutes: float) -> dict:
    """Train and test one model on ``dataset``'s own split; returns its figures."""
    import sigclass as sc

    options = {"val_size": 0.0, "seed": 0}
    if model not in FEATURIZERS:
        options.update({"train.epochs": epochs, "train.batch_size": 8, "train.patience": 0,
                        "train.monitor": "val_loss", "train.max_minutes": max_minutes})
    mode = "headless" if model in FEATURIZERS else "scratch"
    run = sc.train(dataset, mode=mode, model=model, out=out / model, progress=False, **options)
    history = run.history
    return {
        "accuracy": round(100 * run.metrics["accuracy"], 2),
        "f1_macro": round(100 * run.metrics["f1_macro"], 2),
        "train_seconds": round(run.train_seconds, 1),
        "epochs_run": len(history) or None,
        "best_epoch": (min(range(len(history)), key=lambda i: history[i]["val_loss"]) + 1) if history else None,
        "train_series_per_s": round(statistics.median(h["train_items_per_s"] for h in history), 1) if history else None,
        "test_cases_per_s": round(run.metrics["items_per_second"], 1),
    }


def accuracy_table(epochs: int, max_minutes: float, models: tuple[str, ...], datasets: tuple[str, ...]) -> dict:
    from sigclass.data.signals import load_signals

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="sigclass-bench-") as tmp:
        for name in datasets:
            dataset = load_signals(f"aeon:{name}")
            results[name] = {"shape": list(dataset.X.shape[1:]), "n_train": len(dataset) - len(dataset.fixed_test),
                             "n_test": len(dataset.fixed_test), "models": {}}
            for model in models:
                started = time.perf_counter()
                figures = train_one(dataset, model, Path(tmp) / name, epochs, max_minutes)
                figures["wall_seconds"] = round(time.perf_counter() - started, 1)
                results[name]["models"][model] = figures
                print(f"{name:<18} {model:<14} acc {figures['accuracy']:6.2f} %  "
                      f"train {figures['train_seconds']:6.1f} s", flush=True)
    return results


# -- Trainer versus a hand-written loop -------------------------------------------------------


def hand_loop_epochs(network, X, y, epochs: int, batch_size: int, lr: float, seed: int) -> list[float]:
    """A minimal PyTorch loop (AdamW, cross-entropy, shuffled batches); series/s per epoch."""
    import torch

    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.01)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    generator = torch.Generator().manual_seed(seed)
    rates = []
    network.train()
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(X), generator=generator)
        for begin in range(0, len(X), batch_size):
            index = order[begin:begin + batch_size]
            loss = criterion(network(X[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(X) / (time.perf_counter() - started))
    return rates


def throughput(model: str = "fcn", n_cases: int = 512, epochs: int = 4, rounds: int = 2) -> dict:
    """Training series/s of the Trainer and of the hand loop, same network and data, interleaved."""
    import torch

    import sigclass as sc
    from sigclass.config import TrainConfig
    from sigclass.data.signal_augment import SignalTensorDataset
    from sigclass.training.trainer import Trainer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_cases, 6, 100)).astype(np.float32)  # BasicMotions' shape
    y = rng.integers(0, 4, n_cases)
    config = TrainConfig(epochs=epochs, batch_size=32, patience=0, monitor="val_loss")
    trainer_rates, hand_rates = [], []
    for round_ in range(rounds):
        torch.manual_seed(round_)
        network = sc.create_model(model, n_classes=4, in_chans=6, n_timepoints=100)
        trainer = Trainer(network, config, "scratch", "cpu", progress=False, seed=round_)
        trainer.fit(SignalTensorDataset(X, y), SignalTensorDataset(X[:32], y[:32]))
        trainer_rates += [h["train_items_per_s"] for h in trainer.history_[1:]]  # first epoch warms up
        torch.manual_seed(round_)
        network = sc.create_model(model, n_classes=4, in_chans=6, n_timepoints=100)
        rates = hand_loop_epochs(network, torch.from_numpy(X), torch.from_numpy(y), epochs, 32,
                                 config.lr, round_)
        hand_rates += rates[1:]
    trainer_speed, hand_speed = statistics.median(trainer_rates), statistics.median(hand_rates)
    return {
        "model": model, "shape": [6, 100], "n_cases": n_cases, "batch_size": 32,
        "trainer_series_per_s": round(trainer_speed, 1), "hand_loop_series_per_s": round(hand_speed, 1),
        "ratio": round(trainer_speed / hand_speed, 3), "goal": 0.9,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, FCN and MiniRocket on GunPoint only")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-minutes", type=float, default=1.5, help="training budget per network")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    started = time.perf_counter()
    if args.quick:
        table = accuracy_table(3, args.max_minutes, ("fcn", "minirocket"), ("GunPoint",))
        speed = throughput(n_cases=128, epochs=2, rounds=1)
    else:
        table = accuracy_table(args.epochs, args.max_minutes, NETWORKS + FEATURIZERS, DATASETS)
        speed = throughput()
    result = {
        "protocol": "UCR/UEA default train/test split; networks: all training cases, the epoch with "
                    f"the lowest training loss, up to {args.epochs} epochs (batch 8, AdamW, cosine "
                    f"schedule, budget {args.max_minutes} min); headless: fitted on the training cases",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average": os.getloadavg()},
        "published": {"figures": PUBLISHED, "source": SOURCE},
        "accuracy": table, "trainer_vs_hand_loop": speed,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Trainer {speed['trainer_series_per_s']} series/s vs hand loop {speed['hand_loop_series_per_s']} "
          f"(ratio {speed['ratio']}, goal >= 0.9); written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
