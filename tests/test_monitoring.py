"""The service's monitoring (issue 16): ``GET /metrics`` read with Prometheus' own parser, the
drift statistic against the reference saved at training time, and a real Prometheus scraping
the service (where the ``prometheus`` binary is installed).

A small FCN is trained on BasicMotions; its servers run on 127.0.0.1 with a drift window of
40 inputs, the size of the dataset's test part.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import sigclass as sc
from model_folders import own_cache
from servers import free_port, running_server, train_signal_model
from sigclass.artifacts import read_model_json
from sigclass.evaluation.drift import fit_bins, noise_floor, psi
from sigclass.exceptions import ArtifactError
from sigclass.serve.monitoring import Monitor

pytestmark = pytest.mark.slow

WINDOW = 40


@pytest.fixture(scope="module", autouse=True)
def _module_env(tmp_path_factory):
    with own_cache(tmp_path_factory.mktemp("monitoring-env")):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_signal_model(tmp_path_factory.mktemp("monitoring-model"))


@pytest.fixture(scope="module")
def cases() -> np.ndarray:
    from aeon.datasets import load_classification

    X, _ = load_classification("BasicMotions", split="test")
    return X


@pytest.fixture(scope="module")
def server(run):
    with running_server(run, "--backend", "onnx", "--drift-window", str(WINDOW),
                        "--max-wait-ms", "5") as (base, _):
        yield base


def scrape(base: str, **headers) -> dict[tuple, float]:
    """Every sample of ``/metrics``, keyed by ``(name, sorted labels)``."""
    answer = httpx.get(base + "/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(key[1])[label]: v for key, v in samples.items() if key[0] == name}


def test_requests_errors_latency_batches_and_classes_are_counted(server, cases):
    before = scrape(server)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: httpx.post(server + "/predict", json=x.tolist(), timeout=30),
                                cases[:12]))
    assert [a.status_code for a in answers] == [200] * 12
    batch = httpx.post(server + "/predict/batch", json=cases[12:17].tolist(), timeout=30)
    assert batch.status_code == 200
    bad = httpx.post(server + "/predict", json=[[1.0, 2.0, 3.0]], timeout=30)  # 1 channel of 6
    assert bad.status_code == 422
    assert httpx.get(server + "/no-such-page", timeout=10).status_code == 404
    after = scrape(server)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sigclass_requests_total", endpoint="/predict", method="POST", status="200") == 12
    assert delta("sigclass_requests_total", endpoint="/predict/batch", method="POST", status="200") == 1
    assert delta("sigclass_requests_total", endpoint="/predict", method="POST", status="422") == 1
    assert delta("sigclass_request_errors_total", endpoint="/predict", status="422") == 1
    assert delta("sigclass_request_errors_total", endpoint="other", status="404") == 1
    assert delta("sigclass_requests_total", endpoint="/metrics", method="GET", status="200") == 1
    # the latency histogram: every /predict request, in its buckets and its sum
    assert delta("sigclass_request_duration_seconds_count", endpoint="/predict") == 13
    assert delta("sigclass_request_duration_seconds_bucket", endpoint="/predict", le="+Inf") == 13
    assert delta("sigclass_request_duration_seconds_sum", endpoint="/predict") > 0
    # the batches: 17 rows scored in at most 13 passes
    assert delta("sigclass_batch_size_sum") == 17
    assert 1 <= delta("sigclass_batch_size_count") <= 13
    # one count per prediction, labelled only by the model's classes
    classes = httpx.get(server + "/metadata", timeout=10).json()["classes"]
    counts = total(after, "sigclass_predictions_total", "class")
    assert sorted(counts) == sorted(classes)
    assert sum(counts.values()) - sum(total(before, "sigclass_predictions_total", "class").values()) == 17
    assert 1 / len(classes) <= value(after, "sigclass_confidence_mean") <= 1
    # unknown inputs: counted as the answers say
    flagged = sum(a.json()["unknown"] for a in answers)
    assert delta("sigclass_unknown_inputs_total") == flagged + sum(
        r["unknown"] for r in batch.json()["predictions"])
    endpoints = {dict(k[1])["endpoint"] for k in after if k[0] == "sigclass_requests_total"}
    assert endpoints <= {"/predict", "/predict/batch", "/metadata", "/metrics", "/ready", "/health",
                         "/", "other"}


def test_drift_stays_low_on_the_test_cases_and_rises_on_shifted_inputs(server, cases):
    threshold = value(scrape(server), "sigclass_drift_threshold")
    assert threshold == 0.25
    answer = httpx.post(server + "/predict/batch", json=cases[:WINDOW].tolist(), timeout=60)
    assert answer.status_code == 200
    samples = scrape(server)
    assert value(samples, "sigclass_drift_window_inputs") == WINDOW
    in_distribution = total(samples, "sigclass_drift_psi", "score")
    assert sorted(in_distribution) == ["confidence", "input_rms"]
    assert all(v < threshold for v in in_distribution.values()), in_distribution
    drift = httpx.get(server + "/metadata", timeout=10).json()["monitoring"]["drift"]
    assert drift["drifting"] is False
    assert drift["window"] == {"size": WINDOW, "inputs": WINDOW, "full": True}
    assert drift["reference"]["part"] == "test" and drift["reference"]["n_inputs"] == len(cases)
    assert drift["threshold"] == threshold and drift["statistic"] == "psi"

    known_rate = value(samples, "sigclass_unknown_rate")
    assert known_rate == np.mean([r["unknown"] for r in answer.json()["predictions"]])

    shifted = cases[:WINDOW] * 5 + 3  # a sensor with another gain and offset
    answer = httpx.post(server + "/predict/batch", json=shifted.tolist(), timeout=60)
    assert answer.status_code == 200
    unknown_rate = value(scrape(server), "sigclass_unknown_rate")
    assert unknown_rate == np.mean([r["unknown"] for r in answer.json()["predictions"]])
    assert unknown_rate > known_rate, (known_rate, unknown_rate)
    drifted = total(scrape(server), "sigclass_drift_psi", "score")
    assert drifted["input_rms"] > threshold, drifted
    drift = httpx.get(server + "/metadata", timeout=10).json()["monitoring"]["drift"]
    assert drift["drifting"] is True
    assert drift["current"]["input_rms"] == pytest.approx(drifted["input_rms"], abs=1e-5)


def test_a_model_without_reference_has_no_drift_and_metrics_take_the_api_key(run, cases, tmp_path):
    folder = shutil.copytree(run / "model", tmp_path / "old-model")
    document = json.loads((folder / "model.json").read_text())
    del document["drift_reference"]  # as saved before the reference was recorded
    (folder / "model.json").write_text(json.dumps(document))
    with running_server(folder, "--backend", "onnx", "--api-key", "s3cret") as (base, _):
        assert httpx.get(base + "/metrics", timeout=10).status_code == 401
        samples = scrape(base, Authorization="Bearer s3cret")
        assert not any(name.startswith("sigclass_drift") for name, _ in samples)
        assert value(samples, "sigclass_request_errors_total", endpoint="/metrics", status="401") == 1
        assert math.isnan(value(samples, "sigclass_confidence_mean"))
        headers = {"X-API-Key": "s3cret"}
        assert httpx.post(base + "/predict", json=cases[0].tolist(), headers=headers,
                          timeout=30).status_code == 200
        assert sum(total(scrape(base, **headers), "sigclass_predictions_total", "class").values()) == 1
        drift = httpx.get(base + "/metadata", headers=headers, timeout=10).json()["monitoring"]["drift"]
        assert drift["reference"] is None and drift["drifting"] is None
        assert drift["status"].startswith("no reference")


def test_prometheus_scrapes_the_service(server, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sigclass\n"
                      f"    static_configs:\n      - targets: ['{server.removeprefix('http://')}']\n")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline, targets, found = time.monotonic() + 90, [], []
        while time.monotonic() < deadline and not found:
            time.sleep(1)
            try:
                targets = httpx.get(api + "/targets", timeout=5).json()["data"]["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    found = httpx.get(api + "/query", params={"query": "sigclass_requests_total"},
                                      timeout=5).json()["data"]["result"]
            except httpx.HTTPError:
                continue
        assert targets and targets[0]["health"] == "up", targets
        assert any(r["metric"]["endpoint"] == "/metrics" for r in found), found
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_psi_is_small_for_one_distribution_and_large_for_a_shifted_one():
    rng = np.random.default_rng(0)
    reference = fit_bins(rng.normal(size=400))
    assert len(reference["proportions"]) == 10 and sum(reference["proportions"]) == pytest.approx(1)
    edges, expected = np.array(reference["edges"]), np.array(reference["proportions"])

    def window_psi(values):
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(expected))
        return psi(expected, counts)

    same = [window_psi(rng.normal(size=500)) for _ in range(20)]
    assert np.mean(same) < 2 * noise_floor(10, 500, 400) < 0.25
    assert window_psi(rng.normal(size=500) * 5 + 3) > 1  # four times the threshold
    assert len(fit_bins(rng.normal(size=40))["proportions"]) == 2  # few bins for a small part


def test_two_apps_in_one_process_keep_their_own_metrics():
    first, second = Monitor(10, 0.25), Monitor(10, 0.25)
    reference = {"statistic": "psi", "part": "test", "n_inputs": 4,
                 "scores": {"confidence": {"edges": [0.5], "proportions": [0.5, 0.5]}}}
    for monitor in (first, second):
        monitor.attach(["a", "b"], reference, 16)
    first.observe_predictions(np.zeros((3, 2)), np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]))
    first.observe_request("/predict", "POST", 200, 0.01)
    assert b'sigclass_predictions_total{class="a"} 2.0' in first.exposition()
    assert b'sigclass_predictions_total{class="a"} 0.0' in second.exposition()
    assert b"sigclass_requests_total{" not in second.exposition()


def test_the_drift_reference_is_saved_checked_and_loaded(run):
    folder = run / "model"
    document = json.loads((folder / "model.json").read_text())
    reference = document["drift_reference"]
    assert reference["statistic"] == "psi" and reference["n_inputs"] == 40
    assert set(reference["scores"]) == {"input_rms", "confidence"}
    assert sc.load(run).drift_reference == reference
    document["drift_reference"]["scores"]["confidence"]["proportions"] = [0.9, 0.9]
    document["drift_reference"]["extra"] = 1
    (folder.parent / "broken").mkdir()
    broken = folder.parent / "broken"
    for path in folder.iterdir():
        shutil.copy(path, broken / path.name)
    (broken / "model.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError) as error:
        read_model_json(broken)
    message = str(error.value)
    assert "field 'drift_reference.scores.confidence': the proportions add up to 1.8000, not 1" in message
    assert "field 'drift_reference.extra': unknown field" in message
