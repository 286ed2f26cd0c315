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

Writes bench/results/bundle.json. Usage: python bench/bench_bundle.py [--image-run RUN]
[--signal-run RUN] [--cam]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-run", type=Path)
    parser.add_argument("--signal-run", type=Path)
    parser.add_argument("--cam", action="store_true", help="measure the CAM figures only")
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
    if args.cam:
        path = ROOT / "bench" / "results" / "bundle.json"
        result = json.loads(path.read_text())
        result["cam"] = {**cam_figures({"image": image_run, "signal": signal_run}, bundles,
                                       {"image": photos, "signal": list(X)}),
                         "machine": {"cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
                         "what": "bundle CAM (NumPy) vs sigclass.explain: largest map difference over "
                                 "all inputs; p50 of /predict?explain=true vs /predict on the bundle "
                                 "service, one input per request, interleaved"}
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
