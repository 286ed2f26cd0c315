"""The lean serving bundle: export, checksums, preprocessing parity with the PyTorch predictor,
and a service in a fresh virtual environment that holds no PyTorch, timm, scikit-learn or MLflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import sigclass as sc
from servers import running_server, small_fridge
from sigclass.exceptions import ArtifactError, ConfigError
from sigclass.runtime import load_bundle
from sigclass.runtime.cam import bundle_cam
from sigclass.workflows.bundle import export_bundle, head_document

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "sklearn", "mlflow")


@pytest.fixture(scope="module")
def runs(fridge, tmp_path_factory):
    """A headless image model (EfficientNet-Lite0 features at 32 px, logistic head) and a
    scratch FCN on BasicMotions (one epoch), trained once with the costly extras off."""
    out = tmp_path_factory.mktemp("bundle-runs")
    quick = {"audit": False, "cam_examples": 0, "progress": False, "tracking.enabled": False}
    sc.train(small_fridge(fridge, out / "data", per_class=6), mode="headless",
             model="efficientnet_lite0", image_size=32, head="logreg", head_params={"C": 0.1},
             cv_folds=3, near_duplicates="off", backend="torch", out=out / "image-run", **quick)
    sc.train("aeon:BasicMotions", mode="scratch", model="fcn", out=out / "signal-run",
             **{"train.epochs": 1, **quick})
    return out / "image-run", out / "signal-run"


@pytest.fixture(scope="module")
def image_bundle(runs, tmp_path_factory) -> Path:
    """The image model's bundle, written by the command line."""
    folder = tmp_path_factory.mktemp("bundles") / "image"
    done = subprocess.run([sys.executable, "-m", "sigclass", "export", str(runs[0]), "--format",
                           "bundle", "-o", str(folder)], capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Bundle written to" in done.stdout
    return folder


@pytest.fixture(scope="module")
def signal_bundle(runs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundles") / "signal"
    report = export_bundle(str(runs[1]), folder)
    assert report["head"] is None and report["max_abs_diff"] < 1e-4
    return folder


@pytest.fixture(scope="module")
def motions():
    from aeon.datasets import load_basic_motions

    X, _ = load_basic_motions(split="test")
    return X.astype(np.float32)


def _photos(fridge: Path) -> list[Path]:
    return sorted(p for p in fridge.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def test_image_bundle_matches_the_predictor(runs, image_bundle, fridge):
    photos = _photos(fridge)
    expected = sc.load(runs[0]).predict_proba(photos)
    got = load_bundle(image_bundle).predict_proba(photos)
    assert got.shape == expected.shape == (len(photos), 4)
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_signal_bundle_matches_the_predictor(runs, signal_bundle, motions):
    expected = sc.load(runs[1]).predict_proba(motions)
    bundle = load_bundle(signal_bundle)
    assert np.max(np.abs(bundle.predict_proba(motions) - expected)) <= 1e-4
    assert bundle.predict(motions[:3]).tolist() == sc.load(runs[1]).predict(motions[:3]).tolist()


def test_predict_scores_files_with_a_bundle_as_with_its_run(runs, image_bundle, fridge, tmp_path):
    photos = [str(p) for p in _photos(fridge)]
    outputs = {}
    for name, model in (("run", runs[0]), ("bundle", image_bundle)):
        done = subprocess.run([sys.executable, "-m", "sigclass", "predict", str(model), *photos,
                               "-o", str(tmp_path / f"{name}.csv"), "-q"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[name] = pd.read_csv(tmp_path / f"{name}.csv")
    run, bundle = outputs["run"], outputs["bundle"]
    assert list(bundle.columns) == list(run.columns)
    assert bundle["input"].tolist() == run["input"].tolist() == photos
    assert bundle["predicted"].tolist() == run["predicted"].tolist()
    p_columns = [c for c in run.columns if c.startswith("p_")]
    assert np.max(np.abs(bundle[p_columns].to_numpy() - run[p_columns].to_numpy())) <= 1e-4
    # what a bundle cannot do is refused, naming the fix
    refused = subprocess.run([sys.executable, "-m", "sigclass", "predict", str(image_bundle),
                              photos[0], "-o", str(tmp_path / "x.csv"), "--backend", "torch"],
                             capture_output=True, text=True)
    assert refused.returncode == 2
    assert "serving bundle" in refused.stderr and "--backend torch" in refused.stderr


def test_the_bundle_lists_every_file_and_holds_no_pickle(image_bundle):
    manifest = json.loads((image_bundle / "bundle.json").read_text())
    on_disk = sorted(p.name for p in image_bundle.iterdir())
    assert on_disk == sorted([*manifest["files"], "bundle.json"])
    assert sorted(manifest["files"]) == ["cam.json", "head.json", "model.json", "model.onnx",
                                         "ood.safetensors"]
    assert not any(name.endswith((".skops", ".pkl", ".pickle", ".pt")) for name in on_disk)
    document = json.loads((image_bundle / "model.json").read_text())
    assert document["head"] == {"file": "head.json", "type": "logistic_regression"}
    assert manifest["ood"] == document["ood"]["file"] == "ood.safetensors"
    assert manifest["outputs"] == ["features", "feature_map"]  # a head's features are the pooled ones
    assert json.loads((image_bundle / "head.json").read_text())["kind"] == "logistic_regression"


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def _unusual_images(folder: Path) -> list[Path]:
    """Inputs far from fridge photos: uniform noise and flat grey images."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(3):
        noise = Image.fromarray(rng.integers(0, 256, (60 + 7 * i, 80, 3), dtype=np.uint8))
        noise.save(folder / f"noise{i}.png")
        Image.new("RGB", (64, 48 + 5 * i), (90 * i, 90 * i, 90 * i)).save(folder / f"flat{i}.png")
        paths += [folder / f"noise{i}.png", folder / f"flat{i}.png"]
    return paths


def _same_flags(got: list[dict], expected: list[dict], threshold: float) -> bool:
    """The same ``unknown`` flags, but where the score lies within 1e-5 of the threshold (the
    threshold is the score of one validation item, which float differences may put either side)."""
    return all(g["unknown"] == e["unknown"] for g, e in zip(got, expected, strict=True)
               if abs(e["ood_score"] - threshold) > 1e-5)


def test_image_bundle_ood_matches_the_predictor(runs, image_bundle, fridge, tmp_path):
    inputs = _photos(fridge) + _unusual_images(tmp_path)
    expected = sc.load(runs[0]).score(inputs)
    bundle = load_bundle(image_bundle)
    got = bundle.score(inputs)
    assert bundle.ood["method"] == "knn" and bundle.ood["k"] == 5
    assert all(r["ood_score"] is not None for r in got)
    diff = max(abs(g["ood_score"] - e["ood_score"]) for g, e in zip(got, expected, strict=True))
    assert diff <= 1e-4
    flags = [g["unknown"] for g in got]
    assert _same_flags(got, expected, bundle.ood["threshold"]) and any(flags) and not all(flags)
    rejected = bundle.predict(inputs, reject_unknown=True)
    assert [label is None for label in rejected] == flags
    assert [r["class"] for r in bundle.score(inputs, reject_unknown=True)] == list(rejected)


def test_signal_bundle_ood_matches_the_predictor(runs, signal_bundle, motions):
    cases = np.concatenate([motions, motions[:5] * 20.0, np.zeros_like(motions[:2])])
    expected = sc.load(runs[1]).score(cases)
    bundle = load_bundle(signal_bundle)
    manifest = json.loads((signal_bundle / "bundle.json").read_text())
    assert manifest["outputs"] == ["logits", "feature_map", "pooled_features"]
    got = bundle.score(cases)
    diff = max(abs(g["ood_score"] - e["ood_score"]) for g, e in zip(got, expected, strict=True))
    assert diff <= 1e-4
    assert _same_flags(got, expected, bundle.ood["threshold"])
    assert any(g["unknown"] for g in got)


def test_a_mahalanobis_score_is_carried_too(runs, motions, tmp_path):
    from types import SimpleNamespace

    from aeon.datasets import load_basic_motions

    from sigclass.workflows.fit_ood import fit_ood

    predictor = sc.load(runs[1])
    X, y = load_basic_motions(split="train")
    fit_ood(SimpleNamespace(ood="mahalanobis", ood_k=5), predictor,
            predictor.features(X.astype(np.float32)), [str(c) for c in y],
            predictor.features(motions[20:]))
    predictor.save(tmp_path / "model")
    report = export_bundle(str(tmp_path / "model"), tmp_path / "bundle")
    assert report["ood"] == "mahalanobis" and report["max_ood_diff"] <= 1e-4
    # not the held-out cases: the threshold is one of their scores, which 1e-6 could flip
    cases = np.concatenate([motions[:20], motions[:5] * 20.0])
    expected = sc.load(tmp_path / "model").score(cases)
    got = load_bundle(tmp_path / "bundle").score(cases)
    assert max(abs(g["ood_score"] - e["ood_score"]) for g, e in zip(got, expected, strict=True)) <= 1e-4
    assert [g["unknown"] for g in got] == [e["unknown"] for e in expected]


def test_a_bundle_without_ood_refuses_reject_unknown(signal_bundle, tmp_path):
    from sigclass.runtime.serving import BundleServedModel
    from sigclass.serve.settings import Settings

    folder = _copy(signal_bundle, tmp_path)
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["ood"] = None  # a bundle of an older export: its score is null
    del manifest["files"]["ood.safetensors"]
    (folder / "ood.safetensors").unlink()
    (folder / "bundle.json").write_text(json.dumps(manifest))
    bundle = load_bundle(folder)
    assert bundle.ood is None and bundle.score(np.zeros((1, 6, 100), np.float32))[0]["ood_score"] is None
    with pytest.raises(ConfigError, match=r"--reject-unknown needs the out-of-distribution score.*"
                       r"Export the bundle again"):
        BundleServedModel(Settings(model=str(folder), reject_unknown=True))


def test_a_modified_file_is_refused_by_its_checksum(image_bundle, tmp_path):
    folder = _copy(image_bundle, tmp_path)
    graph = folder / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[-10] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"checksum mismatch for 'model.onnx'.*modified or "
                       r"damaged.*fix: export the bundle again"):
        load_bundle(folder)
    (folder / "head.json").unlink()
    with pytest.raises(ArtifactError, match="'head.json' is missing from the bundle folder"):
        load_bundle(folder)
    # the service refuses it before binding its port: one line, exit code 2
    done = subprocess.run([sys.executable, "-m", "sigclass", "serve", str(folder), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "checksum mismatch for 'model.onnx'" in done.stderr and "Traceback" not in done.stderr


def test_the_full_loader_points_at_the_runtime(image_bundle):
    with pytest.raises(ArtifactError, match=r"is a serving bundle.*sigclass.runtime.load_bundle"):
        sc.load(image_bundle)


def test_model_json_is_checked_by_the_model_schema(image_bundle, tmp_path):
    folder = _copy(image_bundle, tmp_path)
    document = json.loads((folder / "model.json").read_text())
    document["temperature"] = -1.0
    document["not_a_field"] = 1
    (folder / "model.json").write_text(json.dumps(document))
    manifest = json.loads((folder / "bundle.json").read_text())
    from sigclass.runtime.bundle import file_sha256

    manifest["files"]["model.json"] = file_sha256(folder / "model.json")  # a consistent forgery
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError) as error:
        load_bundle(folder)
    assert "field 'temperature'" in str(error.value) and "field 'not_a_field'" in str(error.value)


def test_a_head_without_coefficients_is_refused_clearly():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from sigclass.training.heads import make_head

    rng = np.random.default_rng(0)
    head = Pipeline([("scale", StandardScaler()), ("clf", RandomForestClassifier(n_estimators=3))])
    head.fit(rng.standard_normal((20, 4)), ["a", "b"] * 10)
    with pytest.raises(ConfigError, match=r"\(StandardScaler -> RandomForestClassifier\) cannot be "
                       r"exported to a bundle.*Train with --head logreg, linear_svm or ridge"):
        head_document(head, ["a", "b"])
    rbf = make_head("rbf_svm", cv_folds=2, calibration_folds=2, params={"C": 1.0})
    rbf = rbf.fit(rng.standard_normal((20, 4)), ["a", "b"] * 10).best_estimator_
    with pytest.raises(ConfigError, match=r"CalibratedClassifierCV \(SVC\)\) cannot be exported"):
        head_document(rbf, ["a", "b"])


@pytest.mark.parametrize("name", ["linear_svm", "ridge"])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_calibrated_linear_heads_are_exported_exactly(name, n_classes, tmp_path):
    from sigclass.runtime.heads import LinearHead
    from sigclass.training.heads import make_head

    rng = np.random.default_rng(n_classes)
    classes = [f"c{i}" for i in range(n_classes)]
    labels = np.repeat(classes, 15)
    features = (rng.standard_normal((len(labels), 12)) + np.repeat(np.eye(n_classes, 12) * 2, 15, axis=0)
                + 5.0).astype(np.float32)
    head = make_head(name, cv_folds=3, calibration_folds=3).fit(features, labels).best_estimator_
    document = head_document(head, classes)
    assert document["kind"] == "calibrated_linear"
    (tmp_path / "head.json").write_text(json.dumps(document))
    order = classes[::-1]  # the model's class order need not be the head's
    runtime = LinearHead.read(tmp_path / "head.json", order)
    queries = np.concatenate([features, rng.standard_normal((20, 12)).astype(np.float32) * 30])
    expected = head.predict_proba(queries)[:, [list(head.classes_).index(c) for c in order]]
    assert np.max(np.abs(runtime.predict_proba(queries) - expected)) <= 1e-9


def test_a_linear_svm_head_bundle_matches_the_predictor(runs, fridge, tmp_path):
    from sigclass.training.heads import fit_head

    predictor = sc.load(runs[0])
    photos = _photos(fridge)
    train = photos[::2]
    predictor.head = fit_head("linear_svm", predictor.features(train), np.array([p.parent.name for p in train]),
                              cv_folds=2, params={"C": 0.01})[0]
    predictor.save(tmp_path / "svm-model")
    report = export_bundle(str(tmp_path / "svm-model"), tmp_path / "bundle")
    assert report["head"] == "calibrated_linear" and report["max_abs_diff"] <= 1e-4
    document = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert document["head"] == {"file": "head.json", "type": "calibrated_linear"}
    expected = sc.load(tmp_path / "svm-model").score(photos)
    got = load_bundle(tmp_path / "bundle").score(photos)
    for g, e in zip(got, expected, strict=True):
        assert max(abs(g["probabilities"][c] - e["probabilities"][c]) for c in e["probabilities"]) <= 1e-4
        assert g["class"] == e["class"] and abs(g["ood_score"] - e["ood_score"]) <= 1e-4


def test_a_head_json_that_does_not_fit_is_refused(tmp_path):
    from sigclass.runtime.heads import LinearHead

    document = {"kind": "calibrated_linear", "classes": ["a", "b", "c"], "coef": [[1.0]] * 3,
                "intercept": [0.0] * 3, "calibration": [{"a": -1.0, "b": 0.0}] * 3, "columns": [0, 1, 1]}
    (tmp_path / "head.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="'columns' must be 3 entries.*fix: export the bundle again"):
        LinearHead.read(tmp_path / "head.json", ["a", "b", "c"])


def test_the_runtime_imports_no_heavy_library(image_bundle, fridge):
    code = ("import sys; from sigclass.runtime.serving import BundleServedModel; "
            "from sigclass.serve.app import create_app; from sigclass.serve.settings import Settings; "
            f"served = BundleServedModel(Settings(model={str(image_bundle)!r})); "
            f"assert served.predictor.score([{str(_photos(fridge)[0])!r}])[0]['ood_score'] is not None; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _serve_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]


@pytest.fixture(scope="module")
def lean_python(tmp_path_factory) -> Path:
    """A new virtual environment with the ``serve`` extra only (sigclass itself from src/)."""
    venv = tmp_path_factory.mktemp("lean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *_serve_requirements()],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def test_a_bundle_is_served_from_a_venv_without_pytorch(lean_python, image_bundle, signal_bundle,
                                                        fridge, motions, tmp_path):
    missing = subprocess.run([str(lean_python), "-c", "import torch"], capture_output=True)
    assert missing.returncode != 0  # the environment really has no PyTorch
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": os.environ.get("PATH", "")}
    photo = _photos(fridge)[0]
    with running_server(image_bundle, python=lean_python, env=env) as (base, _):
        metadata = httpx.get(base + "/metadata", timeout=30).json()
        assert metadata["serving"]["runtime"] == "lean"
        assert metadata["serving"]["heavy_modules_loaded"] == []
        answer = httpx.post(base + "/predict", files={"file": (photo.name, photo.read_bytes(),
                                                               "image/jpeg")}, timeout=60).json()
        expected = load_bundle(image_bundle).predict_proba([photo])[0]
        got = np.array([answer["probabilities"][c] for c in metadata["classes"]])
        assert np.max(np.abs(got - expected)) < 1e-6
        assert set(answer) >= {"class", "confidence", "probabilities", "prediction_set", "model"}
        explained = httpx.post(base + "/predict?explain=true", timeout=60,
                               files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert explained.status_code == 200, explained.text
        explanation = explained.json()["explanation"]
        cam, width, height = np.array(explanation["map"]), *Image.open(photo).size
        scale = min(1.0, (262_144 / (width * height)) ** 0.5)  # the service's max_explain_pixels
        assert cam.shape == (int(height * scale), int(width * scale)) and cam.max() == 1 and cam.min() >= 0
        assert explanation["target"] == bundle_cam(load_bundle(image_bundle), photo, None)["target"]
        assert explanation["overlay_png_base64"] and explanation["method"] == "head_cam"
        assert httpx.get(base + "/metadata", timeout=30).json()["serving"]["heavy_modules_loaded"] == []
    # --reject-unknown: class null for the inputs the OOD score calls unknown, the same scores
    noise = _unusual_images(tmp_path / "unusual")[0]
    expected = {r["unknown"]: r for r in load_bundle(image_bundle).score([photo, noise])}
    assert set(expected) == {False, True}  # the photo is known, the noise unknown
    with running_server(image_bundle, "--reject-unknown", python=lean_python, env=env) as (base, _):
        for path in (photo, noise):
            answer = httpx.post(base + "/predict", files={"file": (path.name, path.read_bytes(),
                                                                   "image/png")}, timeout=60).json()
            record = expected[answer["unknown"]]
            assert abs(answer["ood_score"] - record["ood_score"]) < 1e-6
            assert (answer["class"] is None) == answer["unknown"]
        metrics = httpx.get(base + "/metrics", timeout=30).text
        assert "sigclass_unknown_inputs_total 1.0" in metrics
        assert httpx.get(base + "/metadata", timeout=30).json()["serving"]["heavy_modules_loaded"] == []
    with running_server(signal_bundle, python=lean_python, env=env) as (base, _):
        answer = httpx.post(base + "/predict", json=motions[0].tolist(), timeout=60).json()
        expected = load_bundle(signal_bundle).predict_proba(motions[:1])[0]
        classes = load_bundle(signal_bundle).classes
        assert np.max(np.abs(np.array([answer["probabilities"][c] for c in classes]) - expected)) < 1e-6
        assert answer["ood_score"] is not None
        explained = httpx.post(base + "/predict?explain=true", json=motions[0].tolist(), timeout=60)
        assert explained.status_code == 200, explained.text
        importance = explained.json()["explanation"]["channel_importance"]
        expected = bundle_cam(load_bundle(signal_bundle), motions[0], None)["channel_importance"]
        assert np.allclose(importance, expected, atol=1e-6)
        assert httpx.get(base + "/metadata", timeout=30).json()["serving"]["heavy_modules_loaded"] == []


def test_image_bundle_cam_matches_the_toolkit(runs, image_bundle, fridge):
    photos = _photos(fridge)[::17]
    expected = sc.explain(sc.load(runs[0]), photos, channel_importance=False)
    bundle = load_bundle(image_bundle)
    assert bundle.cam.kind == "head_cam"
    for photo, explanation in zip(photos, expected, strict=True):
        got = bundle_cam(bundle, photo, None)
        assert got["method"] == explanation.method and got["target"] == explanation.label
        cam = np.array(got["map"])
        assert cam.shape == explanation.map.shape and cam.min() >= 0 and cam.max() == 1
        assert np.max(np.abs(cam - explanation.map)) <= 1e-3
    other = next(c for c in bundle.classes if c != expected[0].label)
    assert bundle_cam(bundle, photos[0], other)["target"] == other


def test_signal_bundle_cam_matches_the_toolkit(runs, signal_bundle, motions):
    expected = sc.explain(sc.load(runs[1]), motions[:6])
    bundle = load_bundle(signal_bundle)
    for case, explanation in zip(motions[:6], expected, strict=True):
        got = bundle_cam(bundle, case, None)
        assert got["method"] == explanation.method == "cam" and got["target"] == explanation.label
        assert np.max(np.abs(np.array(got["map"]) - explanation.map)) <= 1e-3
        # each channel's importance by occlusion, as the toolkit's
        importance = np.array(got["channel_importance"])
        assert importance.shape == explanation.channel_importance.shape == (6,)
        assert np.max(np.abs(importance - explanation.channel_importance)) <= 1e-5
    other = next(c for c in bundle.classes if c != expected[0].label)
    assert len(bundle_cam(bundle, motions[0], other)["channel_importance"]) == 6


def test_a_bundle_without_cam_weights_refuses_explanations(signal_bundle, tmp_path):
    from sigclass.exceptions import ExplainError
    from sigclass.runtime.serving import BundleServedModel
    from sigclass.serve.settings import Settings

    folder = _copy(signal_bundle, tmp_path)
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["cam"] = None
    del manifest["files"]["cam.json"]
    (folder / "cam.json").unlink()
    (folder / "bundle.json").write_text(json.dumps(manifest))
    served = BundleServedModel(Settings(model=str(folder)))
    with pytest.raises(ExplainError, match="needs gradients"):
        served.explain(np.zeros((6, 100), dtype=np.float32), None)
