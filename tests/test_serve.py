"""The scoring service against a real uvicorn process on 127.0.0.1: answers, bad input, fuzzing."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import sigclass as sc
from servers import png_bomb, running_server, stopped, train_image_model, train_signal_model

pytestmark = pytest.mark.slow
API_KEY = "test-key-123"


@pytest.fixture(scope="module", autouse=True)
def _module_env(tmp_path_factory):
    """Server processes and module fixtures share a temporary cache and tracking store."""
    out = tmp_path_factory.mktemp("serve-env")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_CACHE_DIR", str(out / "cache"))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
        yield


@pytest.fixture(scope="module")
def models(fridge, tmp_path_factory):
    """A tiny headless image model and a tiny signal model, trained once for the module."""
    out = tmp_path_factory.mktemp("serve-models")
    return train_image_model(fridge, out), train_signal_model(out, track=True)


@pytest.fixture(scope="module")
def registered_signal_model(models) -> str:
    """The signal model registered in MLflow, served by its alias."""
    from sigclass.tracking.registry import promote, register_run

    version = register_run(models[1], "basic-motions")
    promote("basic-motions", version.version, "prod")
    return "models:/basic-motions@prod"


@pytest.fixture(scope="module")
def image_server(models):
    with running_server(models[0], "--backend", "torch", "--max-wait-ms", "20",
                        "--max-request-bytes", "1000000") as (base, process):
        yield base, process


@pytest.fixture(scope="module")
def signal_server(registered_signal_model):
    with running_server(registered_signal_model, "--backend", "torch",
                        "--api-key", API_KEY) as (base, process):
        yield base, process


@pytest.fixture(scope="module")
def photos(fridge):
    return [sorted((fridge / c).iterdir())[-1] for c in ("can", "carton", "milk_bottle", "water_bottle")]


def _post_image(base, data: bytes, name="photo.jpg", path="/predict", **kwargs):
    return httpx.post(base + path, files={"file": (name, data, "image/jpeg")}, timeout=60, **kwargs)


def test_predict_image_matches_the_predictor(models, image_server, photos):
    base, _ = image_server
    predictor = sc.load(models[0])
    expected = predictor.predict_proba(photos)
    # the version of a model outside the registry: the checksum of its files' recorded checksums
    files = json.loads((models[0] / "model" / "model.json").read_text())["files"]
    assert set(files) == {"weights.safetensors", "head.skops", "ood.safetensors"}
    version = "sha256:" + hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    for photo, row in zip(photos, expected, strict=True):
        response = _post_image(base, photo.read_bytes(), photo.name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["input"] == photo.name
        assert body["class"] == predictor.classes[int(row.argmax())]
        assert list(body["probabilities"]) == predictor.classes
        np.testing.assert_allclose(list(body["probabilities"].values()), row, atol=1e-4)
        assert body["model"] == {"name": "image-run", "version": version}
        assert body["explanation"] is None
        assert body["prediction_set"] == predictor.prediction_sets(row[None])[0]
        assert body["prediction_set"][0] == body["class"]
        assert body["unknown"] == (body["ood_score"] > predictor.ood["threshold"])
    # a raw image/* body works as well as a form upload
    raw = httpx.post(base + "/predict", content=photos[0].read_bytes(),
                     headers={"content-type": "image/jpeg"}, timeout=60)
    assert raw.json()["probabilities"] == _post_image(base, photos[0].read_bytes()).json()["probabilities"]


def test_the_service_scores_a_linear_head_from_its_coefficients(models, photos):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from sigclass.serve.model import coefficient_head

    predictor = sc.load(models[0])
    features = predictor.transform(photos)
    head = coefficient_head(predictor)
    assert head is not None  # the run's logistic regression
    np.testing.assert_allclose(head.predict_proba(features), predictor.probabilities_from_outputs(features),
                               atol=1e-6)
    # a head with no coefficient form stays with scikit-learn
    rows = np.random.default_rng(0).standard_normal((40, features.shape[1])).astype(np.float32)
    labels = np.asarray(predictor.classes)[np.arange(40) % len(predictor.classes)]
    predictor.head = make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(rows, labels)
    assert coefficient_head(predictor) is None


def test_health_ready_metadata_and_docs(models, image_server):
    base, _ = image_server
    assert httpx.get(base + "/health").json() == {"status": "ok"}
    ready = httpx.get(base + "/ready").json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "image-run"
    meta = httpx.get(base + "/metadata").json()
    assert meta["classes"] == ["can", "carton", "milk_bottle", "water_bottle"]
    assert meta["modality"] == "image" and meta["mode"] == "headless"
    assert meta["network"] == "efficientnet_lite0"
    assert (meta["input"]["height"], meta["input"]["width"], meta["input"]["channels"]) == (64, 64, 3)
    assert meta["serving"]["backend"] == "torch" and meta["serving"]["max_batch_size"] == 16
    openapi = httpx.get(base + "/openapi.json").json()
    assert "/predict" in openapi["paths"]
    assert "prediction_set" in openapi["components"]["schemas"]["Prediction"]["properties"]
    assert httpx.get(base + "/docs").status_code == 200


def test_batch_endpoint_keeps_order(image_server, photos):
    base, _ = image_server
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[::-1]]
    response = httpx.post(base + "/predict/batch", files=files, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["input"] for p in predictions] == [p.name for p in photos[::-1]]
    single = _post_image(base, photos[0].read_bytes()).json()
    np.testing.assert_allclose(list(predictions[-1]["probabilities"].values()),
                               list(single["probabilities"].values()), atol=1e-5)


def test_concurrent_requests_share_batches(image_server, photos):
    base, _ = image_server
    data = [p.read_bytes() for p in photos]
    before = httpx.get(base + "/metadata").json()["serving"]["batches"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: _post_image(base, data[i % 4]), range(32)))
    assert all(r.status_code == 200 for r in responses)
    assert {r.json()["class"] for r in responses[:4]} == {r.json()["class"] for r in responses[4:8]}
    after = httpx.get(base + "/metadata").json()["serving"]["batches"]
    assert after["rows"] - before["rows"] == 32
    assert after["batches"] - before["batches"] < 32, "no two requests were ever batched"
    assert after["largest_batch"] > 1


def _jpeg(size=(48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", size).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_IMAGE_REQUESTS = {
    "not an image": (lambda: {"files": {"file": ("notes.txt", b"hello, I am text", "text/plain")}},
                     422, "notes.txt: is not an image"),
    "truncated image": (lambda: {"files": {"file": ("cut.jpg", _jpeg()[:300], "image/jpeg")}},
                        422, "cut.jpg: is truncated or corrupted"),
    "decompression bomb": (lambda: {"files": {"file": ("bomb.png", png_bomb(), "image/png")}},
                           422, "bomb.png: is too large to decode safely"),
    "over the pixel limit": (lambda: {"files": {"file": ("big.png", _png((8000, 6000)), "image/png")}},
                             422, "big.png: is 8000x6000 pixels (48,000,000); the service takes at most"),
    "empty body": (lambda: {"content": b"", "headers": {"content-type": "image/png"}},
                   400, "The request body is empty"),
    "empty file": (lambda: {"files": {"file": ("empty.jpg", b"", "image/jpeg")}},
                   422, "empty.jpg: is empty"),
    "wrong content type": (lambda: {"json": [[1.0, 2.0]]}, 415, "This image model cannot take "
                           "'application/json'; send the input as multipart form field 'file'"),
    "no content type": (lambda: {"content": b"abc"}, 415, "cannot take no Content-Type"),
    "form without file": (lambda: {"files": {"note": (None, "just text")}}, 422,
                          "The form holds no file"),
    "oversized request": (lambda: {"content": bytes(1_200_000), "headers": {"content-type": "image/png"}},
                          413, "larger than the service's limit of 1,000,000 bytes"),
    "bad explain flag": (lambda: {"params": {"explain": "maybe"},
                                  "files": {"file": ("a.jpg", _jpeg(), "image/jpeg")}},
                         422, "query.explain"),
    "unknown target": (lambda: {"params": {"target": "pizza"},
                                "files": {"file": ("a.jpg", _jpeg(), "image/jpeg")}},
                       422, "'pizza' is not one of the model's classes"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGE_REQUESTS))
def test_bad_image_requests_get_4xx_json(image_server, case):
    base, process = image_server
    make, status, message = BAD_IMAGE_REQUESTS[case]
    response = httpx.post(base + "/predict", timeout=60, **make())
    assert response.status_code == status, response.text
    body = response.json()
    assert message in body["message"], body
    assert body["error"]
    # the server is still up and still scores
    assert process.poll() is None
    assert _post_image(base, _jpeg()).status_code == 200


def test_streamed_oversized_body_is_refused(image_server):
    base, _ = image_server

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield bytes(100_000)

    response = httpx.post(base + "/predict", content=chunks(), timeout=60,
                          headers={"content-type": "image/png"})
    assert response.status_code == 413
    assert "larger than the service's limit" in response.json()["message"]


def test_batch_reports_every_bad_input(image_server, photos):
    base, _ = image_server
    files = [("files", ("good.jpg", photos[0].read_bytes(), "image/jpeg")),
             ("files", ("bad1.jpg", b"nope", "image/jpeg")),
             ("files", ("bad2.jpg", _jpeg()[:200], "image/jpeg"))]
    response = httpx.post(base + "/predict/batch", files=files, timeout=60)
    assert response.status_code == 422
    assert [p["path"] for p in response.json()["problems"]] == ["bad1.jpg", "bad2.jpg"]


@pytest.fixture(scope="module")
def basic_motions(models):
    """Cases of BasicMotions and the model's probabilities for them, computed in-process."""
    from aeon.datasets import load_classification

    X, _ = load_classification("BasicMotions", split="test")
    X = X[:4].astype(np.float64)
    return X, sc.load(models[1]).predict_proba(X)


def test_signal_json_and_csv_match_the_predictor(signal_server, basic_motions):
    base, _ = signal_server
    X, expected = basic_motions
    headers = {"X-API-Key": API_KEY}
    body = httpx.post(base + "/predict", json=X[0].tolist(), headers=headers, timeout=60).json()
    np.testing.assert_allclose(list(body["probabilities"].values()), expected[0], atol=1e-4)
    csv_text = "ch0,ch1,ch2,ch3,ch4,ch5\n" + "\n".join(",".join(str(float(v)) for v in row) for row in X[1].T)
    upload = httpx.post(base + "/predict", files={"file": ("case.csv", csv_text, "text/csv")},
                        headers=headers, timeout=60).json()
    np.testing.assert_allclose(list(upload["probabilities"].values()), expected[1], atol=1e-4)
    batch = httpx.post(base + "/predict/batch", json=X.tolist(), headers=headers, timeout=60).json()
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in batch["predictions"]],
                               expected, atol=1e-4)


def test_signal_api_key_is_required(signal_server, basic_motions):
    base, _ = signal_server
    X, _ = basic_motions
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = httpx.post(base + "/predict", json=X[0].tolist(), headers=headers)
        assert response.status_code == 401
        assert "X-API-Key" in response.json()["message"]
    assert httpx.get(base + "/metadata").status_code == 401
    assert httpx.get(base + "/health").status_code == 200  # probes need no key
    meta = httpx.get(base + "/metadata", headers={"X-API-Key": API_KEY}).json()
    assert meta["model"] == {"name": "basic-motions", "version": "1"}
    assert meta["source"] == "models:/basic-motions@prod"
    assert meta["input"]["n_channels"] == 6 and meta["input"]["n_timepoints"] == 100


def _nan_case(X):
    case = X[0].tolist()
    case[2][10] = None  # JSON has no NaN; null is a missing value
    return case


BAD_SIGNALS = {
    "wrong channel count": (lambda X: {"json": X[0][:4].tolist()},
                            "body: has 4 channel(s); the model expects 6"),
    "wrong length": (lambda X: {"json": X[0][:, :60].tolist()},
                     "body: has 60 timepoints; the model takes 100"),
    "NaN": (lambda X: {"json": _nan_case(X)}, "body: contains NaN at channel 2 ('ch2'), time 10"),
    "ragged channels": (lambda X: {"json": [X[0][0].tolist(), X[0][1, :50].tolist()]},
                        "body: has channels of different lengths [50, 100]"),
    "text values": (lambda X: {"json": [["a", "b"]]}, "body: holds a non-number value 'a'"),
    "invalid JSON": (lambda X: {"content": b"[1, 2,", "headers": {"content-type": "application/json"}},
                     "The body is not valid JSON"),
    "image to a signal model": (lambda X: {"content": _jpeg(),
                                           "headers": {"content-type": "image/jpeg"}},
                                "This signal model cannot take 'image/jpeg'"),
    "CSV with text": (lambda X: {"files": {"file": ("s.csv", "a,b\n1,x\n", "text/csv")}},
                      "s.csv: holds the non-number value 'x'"),
}


def test_explain_adds_the_map_and_overlay(image_server, signal_server, photos, basic_motions):
    import base64

    base, _ = image_server
    body = _post_image(base, photos[1].read_bytes(), params={"explain": "true"}).json()
    explanation = body["explanation"]
    width, height = Image.open(photos[1]).size
    assert explanation["target"] == body["class"]
    assert explanation["method"] == "head_cam"
    assert np.asarray(explanation["map"]).shape == (height, width)
    assert np.min(explanation["map"]) >= 0.0 and np.max(explanation["map"]) <= 1.0
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png_base64"])))
    assert overlay.format == "PNG"
    other = _post_image(base, photos[1].read_bytes(), params={"explain": "true", "target": "carton"})
    assert other.json()["explanation"]["target"] == "carton"
    X, _ = basic_motions
    signal_body = httpx.post(signal_server[0] + "/predict", params={"explain": "true"},
                             json=X[2].tolist(), headers={"X-API-Key": API_KEY}, timeout=60).json()
    assert np.asarray(signal_body["explanation"]["map"]).shape == (100,)
    assert len(signal_body["explanation"]["channel_importance"]) == 6


@pytest.mark.parametrize("case", list(BAD_SIGNALS))
def test_bad_signals_get_4xx_json(signal_server, basic_motions, case):
    base, process = signal_server
    X, _ = basic_motions
    make, message = BAD_SIGNALS[case]
    kwargs = make(X)
    kwargs["headers"] = {**kwargs.get("headers", {}), "X-API-Key": API_KEY}
    response = httpx.post(base + "/predict", timeout=60, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["message"], response.json()
    assert process.poll() is None
    ok = httpx.post(base + "/predict", json=X[0].tolist(), headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200


def _fuzz(base: str, headers: dict, max_examples: int) -> list[str]:
    """Schemathesis cases over every operation of /openapi.json; returns the 5xx answers."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = result.ok().as_strategy(generation_mode=mode)
            _fuzz_operation(strategy, base, headers, max_examples, failures)
    return failures


def _fuzz_operation(strategy, base, headers, max_examples, failures) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    @settings(max_examples=max_examples, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call(base_url=base, headers=headers, timeout=60)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.path} {case.media_type}: "
                            f"{response.status_code} {response.text[:300]}")
        else:
            kind = response.headers.get("content-type") or [""]
            kind = kind[0] if isinstance(kind, list) else kind
            text = case.path == "/metrics" and kind.startswith("text/plain")  # Prometheus' format
            assert text or kind.startswith(("application/json", "text/html")), (case.path, kind)

    with contextlib.suppress(Unsatisfiable):  # no negative cases without parameters
        run()


def test_fuzzing_the_schema_finds_no_server_error(image_server, signal_server):
    failures = _fuzz(image_server[0], {}, max_examples=15)
    failures += _fuzz(signal_server[0], {"X-API-Key": API_KEY}, max_examples=15)
    assert not failures, "\n".join(failures[:10])
    assert image_server[1].poll() is None and signal_server[1].poll() is None


@pytest.mark.parametrize("flags", [(), ("--backend", "onnx")], ids=["default", "onnx"])
def test_default_and_onnx_backends_answer_like_torch(models, image_server, photos, flags):
    """The default backend (``auto``: on a CPU it times both engines and keeps the faster) and
    ONNX Runtime give the torch server's answers, and /metadata says which engine runs."""
    import torch

    with running_server(models[0], *flags) as (base, _):
        serving = httpx.get(base + "/metadata").json()["serving"]
        if flags:
            assert (serving["backend"], serving["chosen_by"]) == ("onnx", "setting")
        elif torch.cuda.is_available():
            assert (serving["backend"], serving["chosen_by"]) == ("torch", "setting")
        else:
            assert serving["chosen_by"] == "timing"
            assert set(serving["one_input_ms"]) == {"torch", "onnx"}
            timings = serving["one_input_ms"]
            assert serving["backend"] == min(timings, key=timings.get)
        for photo in photos:
            expected = _post_image(image_server[0], photo.read_bytes(), photo.name).json()
            body = _post_image(base, photo.read_bytes(), photo.name).json()
            assert body["class"] == expected["class"]
            np.testing.assert_allclose(list(body["probabilities"].values()),
                                       list(expected["probabilities"].values()), atol=1e-4)
        # concurrent requests (micro-batched together) answer as each alone
        data = [p.read_bytes() for p in photos]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: _post_image(base, data[i % len(data)]).json(), range(24)))
        for i, answer in enumerate(answers):
            alone = _post_image(base, data[i % len(data)]).json()
            np.testing.assert_allclose(list(answer["probabilities"].values()),
                                       list(alone["probabilities"].values()), atol=1e-5)


def test_export_onnx_matches_pytorch(models, tmp_path):
    import torch

    from sigclass.cli import main
    from sigclass.inference import OnnxEngine

    target = tmp_path / "signal.onnx"
    assert main(["export", str(models[1]), "--format", "onnx", "-o", str(target)]) == 0
    predictor = sc.load(models[1])
    batch = torch.from_numpy(np.random.default_rng(3).standard_normal((5, 6, 100), dtype=np.float32))
    with torch.inference_mode():
        expected = predictor.network.eval()(batch).numpy()
    np.testing.assert_allclose(OnnxEngine(target)(batch.numpy()), expected, atol=1e-4, rtol=1e-4)


def _run_predict(model, inputs, output, *flags) -> subprocess.Popen:
    command = [sys.executable, "-m", "sigclass", "predict", str(model), *map(str, inputs),
               "-o", str(output), "-q", *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 180.0) -> None:
    """SIGKILL ``process`` once ``ready()``: it is stopped (SIGSTOP) first, so what the caller
    reads afterwards is what the process had written when ``ready()`` became true."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"finished before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no rows were written in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _rows(path: Path) -> int:
    return max(0, len(path.read_bytes().splitlines()) - 1) if path.is_file() else 0


@pytest.mark.parametrize("suffix", [".parquet"])  # Parquet streams through the CSV journal
def test_batch_scoring_resumes_after_a_kill(models, tmp_path, suffix):
    import pandas as pd

    from sigclass.data.image_files import expand_image_inputs
    from sigclass.workflows.predict_files import journal_path

    photos = tmp_path / "photos"  # the 32 photos the model was trained on, 4 times: 128 files,
    for copy in range(4):  # far more than are scored in the 20 ms between two looks at the journal
        for path in (models[0].parent / "data").glob("*/*"):
            target = photos / path.parent.name / f"{copy}-{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    output = tmp_path / f"scores{suffix}"
    journal = journal_path(output) if suffix == ".parquet" else output
    process = _run_predict(models[0], [photos], output, "--batch-size", "1", "--backend", "torch")
    with stopped(process):
        _kill_when(process, lambda: _rows(journal) >= 3)
    scored_before = _rows(journal)
    files = expand_image_inputs([photos])
    assert 3 <= scored_before < len(files)
    assert not (suffix == ".parquet" and output.exists()), "a Parquet file appeared before the end"
    finished = _run_predict(models[0], [photos], output, "--batch-size", "8", "--backend", "torch")
    with stopped(finished):
        assert finished.wait(timeout=300) == 0, finished.stderr.read()
    table = pd.read_csv(output) if suffix == ".csv" else pd.read_parquet(output)
    assert not journal_path(output).exists() or suffix == ".csv"
    assert table["input"].is_unique, "an input was scored twice"
    assert sorted(table["input"]) == sorted(files), "an input was lost"
    assert (table["error"].fillna("") == "").all()
    # the rows match the model scored in-process
    predictor = sc.load(models[0])
    some = sorted(files)[::40]
    expected = predictor.predict_proba(some)
    got = table.set_index("input").loc[some, [f"p_{c}" for c in predictor.classes]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_batch_scoring_onnx_backend_and_bad_files(models, fridge, tmp_path):
    """The default backend on a CPU is ONNX Runtime; its graph gives PyTorch's outputs."""
    import pandas as pd
    import torch

    from sigclass.inference import OnnxEngine
    from sigclass.serve.model import onnx_cache_path

    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((fridge / "can").iterdir())[:3]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    output = tmp_path / "scores.parquet"
    process = _run_predict(models[0], [folder], output)  # default backend: ONNX Runtime on a CPU
    with stopped(process):
        assert process.wait(timeout=300) == 0, process.stderr.read()
    table = pd.read_parquet(output).set_index("input")
    assert "cannot be read as an image" in table.loc[str(folder / "broken.jpg"), "error"]
    predictor = sc.load(models[0])
    np.testing.assert_allclose(
        table.loc[[str(p) for p in sorted(folder.glob("can*"))], [f"p_{c}" for c in predictor.classes]],
        predictor.predict_proba(sorted(folder.glob("can*"))), atol=1e-4)
    graph = onnx_cache_path(predictor)
    assert graph.is_file(), "predict did not use ONNX Runtime"
    batch = torch.from_numpy(np.random.default_rng(4).standard_normal((3, 3, 64, 64), dtype=np.float32))
    with torch.inference_mode():
        expected = predictor.network.eval()(batch).numpy()
    np.testing.assert_allclose(OnnxEngine(graph)(batch.numpy()), expected, atol=1e-4, rtol=1e-4)
