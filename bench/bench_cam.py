"""CAM benchmark: prediction with class activation maps against prediction alone, same run.

Usage::

    .venv/bin/python bench/bench_cam.py            # a few minutes on 2 CPU cores

Protocol: for each network (``simple_cnn_gap`` at 64 px, ``efficientnet_lite0`` at 224 px with
its ImageNet weights and a 4-class head), the same real photos (fridgeObjects, decoded from the
files in every variant) go through

* ``predict``: :meth:`Predictor.predict_proba` (PyTorch backend, the deployed path);
* ``cam``: :func:`sigclass.explain` (probabilities plus the map of the predicted class, upsampled
  to each photo's full resolution and normalized);
* ``gradcam``: :func:`sigclass.explain` with ``method="gradcam"``.

Variants are interleaved over rounds and each figure is the best of the rounds (the machine may
be shared); ``cam_overhead`` is ``cam / predict - 1`` (goal: at most 0.20 for GAP networks).
Writes ``bench/results/cam.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
NETWORKS = (("simple_cnn_gap", 64), ("efficientnet_lite0", None))


def photos(n: int) -> list[str]:
    files = sorted(str(p) for p in FRIDGE.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"fridgeObjects photos not found under {FRIDGE} (set SIGCLASS_FRIDGE)")
    return files[:n]


def build(name: str, image_size: int | None):
    import sigclass as sc
    from sigclass.data.image_preprocess import image_data_config
    from sigclass.predictor import Predictor

    pretrained = name.startswith("efficientnet")
    kwargs = {"input_size": image_size} if image_size else {}
    network = sc.create_model(name, n_classes=4, pretrained=pretrained, **kwargs).eval()
    config = image_data_config(network, image_size)
    return Predictor(network, ["carton", "can", "milk", "water"], config, backend="torch")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_network(name: str, image_size: int | None, files: list[str], rounds: int,
                  batch_size: int) -> dict:
    import torch

    from sigclass.explain import explain

    predictor = build(name, image_size)
    variants = {
        "predict": lambda: predictor.predict_proba(files, batch_size=batch_size),
        "cam": lambda: explain(predictor, files, batch_size=batch_size),
        "gradcam": lambda: explain(predictor, files, method="gradcam", batch_size=batch_size),
    }
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for key, fn in variants.items():
            times[key].append(timed(fn))
    best = {k: min(v) for k, v in times.items()}
    cam = explain(predictor, files[:4], batch_size=batch_size)
    return {
        "network": name,
        "input_size": predictor.data_config["input_size"],
        "method_auto": cam[0].method,
        "n_images": len(files),
        "batch_size": batch_size,
        "seconds_best": best,
        "seconds_all": times,
        "images_per_s": {k: len(files) / v for k, v in best.items()},
        "cam_overhead": best["cam"] / best["predict"] - 1.0,
        "gradcam_overhead": best["gradcam"] / best["predict"] - 1.0,
        "device": str(predictor.engine.device) if hasattr(predictor.engine, "device") else "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cam.json")
    args = parser.parse_args()
    files = photos(args.images)
    results = []
    for name, size in NETWORKS:
        result = bench_network(name, size, files, args.rounds, args.batch_size)
        print(f"{name:<20} predict {result['images_per_s']['predict']:7.1f} img/s  "
              f"cam overhead {100 * result['cam_overhead']:+6.1f} %  "
              f"gradcam overhead {100 * result['gradcam_overhead']:+6.1f} %")
        results.append(result)
    document = {
        "benchmark": "cam",
        "protocol": "best of interleaved rounds; predict = Predictor.predict_proba (torch backend), "
                    "cam/gradcam = sigclass.explain incl. maps at full photo resolution; files "
                    "decoded in every variant",
        "goal": "cam_overhead <= 0.20 for GAP networks",
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
