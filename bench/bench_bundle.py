"""The lean serving runtime against the full install, on the same model.

Trains (or takes) a headless EfficientNet-Lite0 image model (64 px, logistic head) and a scratch
FCN on BasicMotions, exports both as bundles, then measures in fresh processes:

- import time and peak memory (RSS) of loading the model and scoring one input: the bundle on
  :mod:`sigclass.runtime` (ONNX Runtime, NumPy, Pillow) vs ``sigclass.load`` of the model folder
  (PyTorch), on its ONNX Runtime backend and on PyTorch;
- the median latency of one prediction (preprocessing included) on each;
- parity: the largest probability difference between the bundle and the PyTorch predictor over
  all fridgeObjects photos and the BasicMotions test cases.

With ``--cam`` only the class activation maps are measured and merged into the existing
results under ``"cam"`` (the other figures are kept): the largest difference between the
bundle's NumPy map and ``sigclass.explain``'s over the inputs, and the p50 of ``/predict`` with
``explain=true`` against plain ``/predict`` on a real bundle service (requests interleaved).

With ``--trust`` the out-of-distribution score and the signal channel importance are measured
and merged under ``"trust"``: the largest OOD score difference between the bundle (NumPy) and
the PyTorch predictor and the share of inputs both call unknown alike, over the fridgeObjects
photos plus noise and flat images, and the BasicMotions test cases plus amplified and
flat-lined copies; the largest channel importance difference against ``sigclass.explain``.

Writes bench/results/bundle.json. Usage: python bench/bench_bundle.py [--image-run RUN]
[--signal-run RUN] [--cam] [--trust]
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
RUNS = 3  # fresh processes per measurement; the median is kept

# One process: import, load, score one input REPEATS times; prints JSON.
PROBE = r"""
import json, sys, time
kind, model, item, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def peak_rss_mb():  # this process's own high-water mark (ru_maxrss would include the parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024



start = time.perf_counter()
if kind == "lean":
    from sigclass.runtime import load_bundle
    imported = time.perf_counter()
    predictor = load_bundle(model)
else:
    import sigclass as sc
    from sigclass.loading import load
    import torch  # what loading a model folder imports anyway, timed as import
    imported = time.perf_counter()
    predictor = load(model)
    predictor.use_backend("onnx" if kind == "full-onnx" else "torch")
loaded = time.perf_counter()
if item.endswith(".npy"):
    import numpy as np
    item = np.load(item)
times = []
for _ in range(repeats):
    t = time.perf_counter()
    predictor.predict_proba([item])
    times.append(time.perf_counter() - t)
heavy = sorted(m for m in ("torch", "timm", "sklearn", "mlflow") if m in sys.modules)
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported,
                  "first_s": times[0], "p50_ms": sorted(times[1:])[len(times[1:]) // 2] * 1e3,
                  "peak_rss_mb": peak_rss_mb(),
                  "heavy_modules": heavy}))
"""


def probe(kind: str, model: Path, item: str, repeats: int = 41) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE",
           "HF_HUB_OFFLINE": "1"}
    rows = []
    for _ in range(RUNS):
        done = subprocess.run([sys.executable, "-c", PROBE, kind, str(model), item, str(repeats)],
                              capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out = {key: statistics.median(r[key] for r in rows)
           for key in ("import_s", "load_s", "first_s", "p50_ms", "peak_rss_mb")}
    return {**out, "heavy_modules": rows[0]["heavy_modules"]}


def train(out: Path) -> tuple[Path, Path]:
    import sigclass as sc

    sys.path.insert(0, str(ROOT / "tests"))
    from servers import small_fridge

    quick = {"audit": False, "cam_examples": 0, "progress": False, "tracking.enabled": False}
    sc.train(small_fridge(FRIDGE, out / "data", per_class=8), mode="headless",
             model="efficientnet_lite0", image_size=64, head="logreg", near_duplicates="off",
             backend="torch", out=out / "image-run", **quick)
    sc.train("aeon:BasicMotions", mode="scratch", model="fcn", out=out / "signal-run",
             **{"train.epochs": 3, **quick})
    return out / "image-run", out / "signal-run"


def cam_figures(runs: dict, bundles: dict, inputs: dict, requests: int = 41) -> dict:
    """CAM parity with the toolkit and the explain=true cost on a bundle service."""
    import time

    import httpx

    import sigclass as sc
    from sigclass.runtime import load_bundle
    from sigclass.runtime.cam import bundle_cam

    sys.path.insert(0, str(ROOT / "tests"))
    from servers import running_server

    out = {}
    for name in ("image", "signal"):
        items = inputs[name]
        expected = sc.explain(sc.load(runs[name]), items, channel_importance=False)
        bundle = load_bundle(bundles[name])
        diffs, same = [], 0
        for item, explanation in zip(items, expected, strict=True):
            got = bundle_cam(bundle, item, None)
            diffs.append(float(np.max(np.abs(np.array(got["map"]) - explanation.map))))
            same += got["target"] == explanation.label
        first = items[0]
        if name == "image":
            kwargs = {"files": {"file": (first.name, first.read_bytes(), "image/jpeg")}}
        else:
            kwargs = {"json": np.asarray(first).tolist()}
        times = {"predict": [], "explain": []}
        with running_server(bundles[name]) as (base, _):
            for i in range(requests + 2):
                for kind, url in (("predict", "/predict"), ("explain", "/predict?explain=true")):
                    t = time.perf_counter()
                    answer = httpx.post(base + url, timeout=60, **kwargs)
                    answer.raise_for_status()
                    if i >= 2:  # two warm-up rounds
                        times[kind].append(time.perf_counter() - t)
        p50 = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        out[name] = {"method": bundle.cam.kind, "n_inputs": len(items), "map_max_abs_diff": max(diffs),
                     "same_target": same / len(items), "predict_p50_ms": p50["predict"],
                     "explain_p50_ms": p50["explain"],
                     "explain_over_predict": p50["explain"] / p50["predict"], "requests": requests}
        print(name, out[name])
    return out


def unusual_images(folder: Path, n: int = 10) -> list[Path]:
    """Inputs far from fridge photos: uniform noise and flat grey images of varied sizes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (60 + 7 * i, 80 + 3 * i, 3), dtype=np.uint8)).save(
            folder / f"noise{i}.png")
        grey = int(255 * i / max(1, n - 1))
        Image.new("RGB", (64 + 4 * i, 48 + 5 * i), (grey, grey, grey)).save(folder / f"flat{i}.png")
        paths += [folder / f"noise{i}.png", folder / f"flat{i}.png"]
    return paths


def trust_figures(runs: dict, bundles: dict, inputs: dict) -> dict:
    """OOD score and unknown parity (bundle vs PyTorch predictor), channel importance parity."""
    import sigclass as sc
    from sigclass.runtime import load_bundle
    from sigclass.runtime.cam import bundle_cam

    out = {}
    for name in ("image", "signal"):
        items = inputs[name]
        expected = sc.load(runs[name]).score(items)
        bundle = load_bundle(bundles[name])
        got = bundle.score(items)
        out[name] = {
            "ood_method": bundle.ood["method"], "k": bundle.ood.get("k"),
            "threshold": bundle.ood["threshold"], "n_inputs": len(items),
            "ood_max_abs_diff": max(abs(g["ood_score"] - e["ood_score"])
                                    for g, e in zip(got, expected, strict=True)),
            "same_unknown": float(np.mean([g["unknown"] == e["unknown"]
                                           for g, e in zip(got, expected, strict=True)])),
            "n_unknown": int(sum(bool(e["unknown"]) for e in expected))}
        print(name, out[name])
    cases = inputs["signal_cases"]
    explained = sc.explain(sc.load(runs["signal"]), cases)
    bundle = load_bundle(bundles["signal"])
    diffs = [float(np.max(np.abs(np.array(bundle_cam(bundle, case, None)["channel_importance"])
                                 - e.channel_importance))) for case, e in zip(cases, explained, strict=True)]
    out["signal"]["channel_importance_max_abs_diff"] = max(diffs)
    out["signal"]["channel_importance_n_inputs"] = len(cases)
    print("channel importance", max(diffs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-run", type=Path)
    parser.add_argument("--signal-run", type=Path)
    parser.add_argument("--cam", action="store_true", help="measure the CAM figures only")
    parser.add_argument("--trust", action="store_true", help="measure the OOD and channel "
                        "importance figures only (with --cam: both)")
    args = parser.parse_args()
    import sigclass as sc
    from sigclass.runtime import load_bundle
    from sigclass.workflows.bundle import export_bundle

    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    if args.image_run and args.signal_run:
        image_run, signal_run = args.image_run, args.signal_run
    else:
        image_run, signal_run = train(work)
    bundles = {name: Path(export_bundle(str(run), work / f"{name}-bundle")["path"])
               for name, run in (("image", image_run), ("signal", signal_run))}

    from aeon.datasets import load_basic_motions

    photos = sorted(p for p in FRIDGE.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    X, _ = load_basic_motions(split="test")
    X = X.astype(np.float32)
    if args.cam or args.trust:
        path = ROOT / "bench" / "results" / "bundle.json"
        result = json.loads(path.read_text())
        machine = {"cpus": os.cpu_count(), "load_average": list(os.getloadavg())}
        if args.trust:
            flat = X[:10].copy()
            flat[:, 0, :] = flat[:, 0, :1]  # the first channel flat-lined
            shifted = {"image": photos + unusual_images(work / "unusual"),
                       "signal": np.concatenate([X, X[:10] * 20.0, flat]), "signal_cases": list(X)}
            result["trust"] = {**trust_figures({"image": image_run, "signal": signal_run}, bundles,
                                               shifted), "machine": machine,
                               "what": "bundle OOD score (NumPy) vs the PyTorch predictor's: largest "
                                       "difference and share of inputs with the same unknown flag "
                                       "(image: 134 photos + 10 noise + 10 flat images; signal: 40 "
                                       "test cases + 10 amplified x20 + 10 with a flat-lined "
                                       "channel); channel importance vs sigclass.explain over the "
                                       "40 test cases"}
        if args.cam:
            result["cam"] = {**cam_figures({"image": image_run, "signal": signal_run}, bundles,
                                           {"image": photos, "signal": list(X)}),
                             "machine": machine,
                             "what": "bundle CAM (NumPy) vs sigclass.explain: largest map difference "
                                     "over all inputs; p50 of /predict?explain=true vs /predict on "
                                     "the bundle service, one input per request, interleaved (the "
                                     "signal explanation includes the channel importance)"}
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
        return
    parity = {}
    for name, run, inputs in (("image", image_run, photos), ("signal", signal_run, X)):
        expected = sc.load(run).predict_proba(inputs)
        got = load_bundle(bundles[name]).predict_proba(inputs)
        parity[name] = {"n_inputs": len(inputs), "max_abs_diff": float(np.max(np.abs(got - expected))),
                        "same_class": float(np.mean(got.argmax(1) == expected.argmax(1)))}
        print(name, parity[name])

    case = work / "case.npy"
    np.save(case, X[0])
    serving = {}
    for name, run, item in (("image", image_run, str(photos[0])), ("signal", signal_run, str(case))):
        serving[name] = {"lean (bundle)": probe("lean", bundles[name], item),
                         "full, ONNX Runtime backend": probe("full-onnx", run, item),
                         "full, PyTorch backend": probe("full-torch", run, item)}
        print(name, json.dumps(serving[name], indent=1))
    result = {
        "what": "lean runtime (bundle) vs full install on the same model: import and load time, "
                "peak RSS after one prediction, p50 latency of one prediction (preprocessing "
                "included), and probability parity with the PyTorch predictor",
        "models": {"image": "headless efficientnet_lite0, 64 px, logistic head, 32 fridgeObjects "
                            "photos", "signal": "scratch FCN, BasicMotions, 3 epochs"},
        "parity": parity, "serving": serving,
        "bundle_bytes": {name: sum(p.stat().st_size for p in folder.iterdir())
                         for name, folder in bundles.items()},
        "runs_per_figure": RUNS, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                             "load_average": list(os.getloadavg())},
    }
    path = ROOT / "bench" / "results" / "bundle.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
