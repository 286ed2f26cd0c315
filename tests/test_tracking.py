"""Tracking and registry against real MLflow SQLite stores in temporary folders."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tests.resuming import assert_resumed, saved_history

import sigclass as sc
from servers import default_signal_handling, stopped
from sigclass.exceptions import TrackingError
from sigclass.training.callbacks import Callback

TINY = {"train.epochs": 2, "image_size": 32, "train.batch_size": 16}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "SIGCLASS_TRACKING": "on"}


def _uri(folder: Path) -> str:
    return f"sqlite:///{(folder / 'mlflow.db').as_posix()}"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "tracking.json").read_text())["run_id"]


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.fixture
def tracking_on(monkeypatch):
    monkeypatch.setenv("SIGCLASS_TRACKING", "on")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, fridge):
    """One tiny scratch run on fridgeObjects recorded in a fresh store."""
    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_TRACKING", "on")
        patch.setenv("SIGCLASS_CACHE_DIR", str(folder / "cache"))
        result = sc.train(str(fridge), mode="scratch", model="simple_cnn_gap", out=folder / "run",
                          progress=False, **TINY, **{"tracking.uri": _uri(folder)})
    return result, _uri(folder), folder


def test_run_records_params_epochs_metrics_tags_and_files(recorded):
    result, uri, _ = recorded
    client = _client(uri)
    run = client.get_run(_run_id(result.dir))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run"
    params = run.data.params
    assert (params["mode"], params["model"], params["image_size"]) == ("scratch", "simple_cnn_gap", "32")
    assert params["train.epochs"] == "2" and params["train.lr"] == "0.001"
    history = json.loads((result.dir / "history.json").read_text())
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == [1, 2]
        assert [m.value for m in logged] == pytest.approx([h[key] for h in history])
    metrics = json.loads((result.dir / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test_f1_macro"] == pytest.approx(metrics["f1_macro"])
    tags = run.data.tags
    assert tags["sigclass.dataset_fingerprint"] == result.predictor.info["dataset_fingerprint"]
    assert tags["sigclass.split_fingerprint"] == result.predictor.info["split_fingerprint"]
    assert tags["sigclass.device"] == "cpu" or tags["sigclass.device"].startswith("cuda")
    assert tags["sigclass.version.torch"] and tags["sigclass.version.sigclass"] == sc.__version__
    assert run.inputs.dataset_inputs[0].dataset.digest == tags["sigclass.dataset_fingerprint"][:36]
    files = _artifacts(client, run.info.run_id)
    for name in ("config.yaml", "split.json", "data_report.json", "history.json", "curves.png",
                 "confusion_matrix.png", "predictions.csv", "model/MLmodel",
                 "model/artifacts/model/model.json", "model/artifacts/model/weights.safetensors"):
        assert name in files
    assert not any(f.startswith("checkpoints") for f in files)
    assert not any(f.endswith((".pkl", ".pickle")) for f in files)  # models from code, no pickle
    cam_report = json.loads((result.dir / "cam" / "report.json").read_text())
    pictures = {f"cam/{e['png']}" for entries in cam_report["sections"].values() for e in entries}
    assert "cam/report.html" in files and pictures and pictures <= files


def test_register_promote_list_and_load_by_name(recorded, fridge, capsys):
    from sigclass.cli import main
    from sigclass.tracking import list_versions, promote, register_run

    result, uri, _ = recorded
    first = register_run(result.dir, "fridge-scratch", uri)
    second = register_run(_run_id(result.dir), "fridge-scratch", uri)
    assert (int(first.version), int(second.version)) == (1, 2)
    assert first.tags["run_id"] == _run_id(result.dir)
    assert first.tags["dataset_fingerprint"] == result.predictor.info["dataset_fingerprint"]
    assert float(first.tags["test_accuracy"]) == pytest.approx(result.metrics["accuracy"], abs=1e-5)
    assert "test accuracy" in first.description

    promote("fridge-scratch", 1, "champion", uri)
    assert main(["promote", "fridge-scratch", "2", "--alias", "champion", "--tracking-uri", uri]) == 0
    rows = {r["version"]: r for r in list_versions("fridge-scratch", uri)}
    assert rows[2]["aliases"] == ["champion"] and rows[1]["aliases"] == []
    capsys.readouterr()
    assert main(["models", "--tracking-uri", uri]) == 0
    listing = capsys.readouterr().out
    assert "champion" in listing and f"{result.metrics['accuracy']:.4f}" in listing

    files = sorted(str(p) for p in (fridge / "can").iterdir())[:6]
    expected = result.predictor.predict_proba(files)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # as a user points predict/evaluate at a store
    try:
        by_alias = sc.load("models:/fridge-scratch@champion")
        by_version = sc.load("models:/fridge-scratch/1")
        np.testing.assert_allclose(by_alias.predict_proba(files), expected, atol=1e-6)
        np.testing.assert_allclose(by_version.predict_proba(files), expected, atol=1e-6)
        assert by_alias.classes == result.predictor.classes
        with pytest.raises(TrackingError, match="has no alias 'nope'.*sigclass models"):
            sc.load("models:/fridge-scratch@nope")
        with pytest.raises(TrackingError, match="No registered model named 'other'"):
            sc.load("models:/other/1")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]


def test_cli_predict_and_evaluate_take_a_registry_uri(recorded, fridge, tmp_path, monkeypatch):
    from sigclass.cli import main
    from sigclass.tracking import promote, register_run

    result, uri, _ = recorded
    version = register_run(result.dir, "fridge-cli", uri)
    promote("fridge-cli", version.version, "prod", uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["predict", "models:/fridge-cli@prod", str(fridge / "can"), "-o",
                 str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + len(list((fridge / "can").iterdir()))
    split = result.dir / "split.json"
    assert main(["evaluate", "models:/fridge-cli@prod", str(fridge), "--split", str(split),
                 "--out", str(tmp_path / "ev")]) == 0
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(result.metrics["accuracy"])


def test_mlflow_models_predict_scores_a_registered_model(recorded, fridge, tmp_path):
    import pandas as pd

    from sigclass.tracking import register_run

    result, uri, _ = recorded
    version = register_run(result.dir, "fridge-pyfunc", uri)
    files = sorted(str(p) for p in (fridge / "milk_bottle").iterdir())[:5]
    pd.DataFrame({"path": files}).to_csv(tmp_path / "batch.csv", index=False)
    out = tmp_path / "scores.json"
    completed = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "predict", "-m",
         f"models:/fridge-pyfunc/{version.version}", "-i", str(tmp_path / "batch.csv"), "-t", "csv",
         "--env-manager", "local", "-o", str(out)],
        env={**ENV, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    scored = pd.DataFrame(json.loads(out.read_text())["predictions"])
    assert list(scored["label"]) == list(result.predictor.predict(files))
    probabilities = scored[[f"p_{c}" for c in result.predictor.classes]].to_numpy()
    np.testing.assert_allclose(probabilities, result.predictor.predict_proba(files), atol=1e-5)


def test_unreachable_store_is_reported_before_training(colour_folder, tmp_path, tracking_on, capsys):
    from sigclass.cli import main

    with pytest.raises(TrackingError, match=r"'http://127.0.0.1:9' cannot be reached.*--no-track"):
        sc.train(colour_folder, mode="scratch", model="simple_cnn_gap", out=tmp_path / "a",
                 progress=False, **TINY, **{"tracking.uri": "http://127.0.0.1:9"})
    assert not (tmp_path / "a" / "config.yaml").exists()  # nothing was trained

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    code = main(["train", str(colour_folder), "--mode", "scratch", "--model", "simple_cnn_gap",
                 "--out", str(tmp_path / "b"), "--tracking-uri", f"sqlite:///{blocker}/mlflow.db",
                 "-q"])
    assert code == 2
    assert f"Tracking store 'sqlite:///{blocker}/mlflow.db' cannot be created" in capsys.readouterr().err
    assert not (tmp_path / "b" / "model").exists()

    from sigclass.tracking import check_store

    with pytest.raises(TrackingError, match=r"is not an SQLite database.*--no-track"):
        check_store(f"sqlite:///{blocker}")


def test_no_track_records_nothing(colour_folder, tmp_path, tracking_on):
    from sigclass.cli import main

    store = tmp_path / "store"
    code = main(["train", str(colour_folder), "--mode", "scratch", "--model", "simple_cnn_gap",
                 "--epochs", "1", "--image-size", "32", "--out", str(tmp_path / "run"),
                 "--tracking-uri", _uri(store), "--no-track", "-q"])
    assert code == 0 and (tmp_path / "run" / "model" / "model.json").is_file()
    assert not (tmp_path / "run" / "tracking.json").exists() and not store.exists()


def test_register_records_a_run_folder_trained_without_tracking(recorded, colour_folder, tmp_path):
    from sigclass.tracking import register_run

    _, uri, _ = recorded
    result = sc.train(colour_folder, mode="scratch", model="simple_cnn_gap", out=tmp_path / "run",
                      progress=False, **TINY)  # tracking is off
    version = register_run(tmp_path / "run", "colours-late", uri)
    client = _client(uri)
    run = client.get_run(version.run_id)
    assert run.data.params["model"] == "simple_cnn_gap"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert version.tags["dataset_fingerprint"] == result.predictor.info["dataset_fingerprint"]
    files = sorted(str(p) for p in (colour_folder / "red").iterdir())[:4]
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        loaded = sc.load(f"models:/colours-late/{version.version}")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    np.testing.assert_allclose(loaded.predict_proba(files), result.predictor.predict_proba(files),
                               atol=1e-6)
    (tmp_path / "run" / "tracking.json").unlink()
    (tmp_path / "run" / "run.json").write_text('{"status": "failed"}')
    with pytest.raises(TrackingError, match="has status 'failed'; --resume it"):
        register_run(tmp_path / "run", "colours-late", uri)


class _Crash(Callback):
    def on_epoch_end(self, trainer, logs):
        if logs["epoch"] == 2:
            raise RuntimeError("disk full")


def test_crashed_run_is_failed_with_its_logs_kept_and_resumes(colour_folder, tmp_path, tracking_on, recorded):
    uri = recorded[1]  # the module's store: one more run in it
    with pytest.raises(RuntimeError, match="disk full"):
        sc.train(colour_folder, mode="scratch", model="simple_cnn_gap", out=tmp_path / "run",
                 progress=False, callbacks=(_Crash(),), **{**TINY, "train.epochs": 3},
                 **{"tracking.uri": uri})
    client = _client(uri)
    run = client.get_run(_run_id(tmp_path / "run"))
    assert run.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
    assert run.data.params["train.epochs"] == "3"
    files = _artifacts(client, run.info.run_id)
    assert {"config.yaml", "split.json", "run.json"} <= files
    assert "failed" in (tmp_path / "run" / "run.json").read_text()
    before = saved_history(tmp_path / "run" / "checkpoints" / "last.pt")

    sc.train(colour_folder, out=tmp_path / "run", resume=True, progress=False)  # same MLflow run
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert_resumed(before, history, tmp_path / "run" / "checkpoints" / "last.pt")
    logged = client.get_metric_history(run.info.run_id, "optimizer_step")
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == [h["optimizer_step"] for h in history]


def test_compare_is_a_parent_run_with_a_child_per_entry(colour_folder, tmp_path, tracking_on, recorded):
    from sigclass.workflows.compare import Entry, compare

    uri = recorded[1]  # the module's store: one more run in it
    entries = [Entry("slow", "scratch", "simple_cnn_gap", {"train.lr": 1e-4}),
               Entry("fast", "scratch", "simple_cnn_gap", {"train.lr": 3e-3})]
    compare(colour_folder, tmp_path / "cmp", entries, progress=False,
            **{**TINY, "train.epochs": 1, "tracking.uri": uri})
    client = _client(uri)
    parent = client.get_run(_run_id(tmp_path / "cmp"))
    assert parent.info.status == "FINISHED" and parent.data.tags["sigclass.kind"] == "compare"
    children = {}
    for name in ("slow", "fast"):
        child = client.get_run(_run_id(tmp_path / "cmp" / name))
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        children[name] = child
    assert children["slow"].data.params["train.lr"] == "0.0001"
    assert children["fast"].data.params["train.lr"] == "0.003"
    assert parent.data.metrics["fast.test_accuracy"] == pytest.approx(
        children["fast"].data.metrics["test_accuracy"])
    assert "leaderboard.md" in _artifacts(client, parent.info.run_id)


def test_two_processes_write_to_one_sqlite_store_at_once(colour_folder, tmp_path):
    store = tmp_path / "shared-store"
    commands = [[sys.executable, "-m", "sigclass", "train", str(colour_folder), "--mode", "scratch",
                 "--model", "simple_cnn_gap", "--epochs", "2", "--image-size", "32",
                 "--seed", str(seed), "--out", str(tmp_path / f"run{seed}"), "--tracking-uri",
                 _uri(store), "-q"] for seed in (1, 2)]
    processes = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for c in commands]
    with stopped(*processes):
        outputs = [p.communicate(timeout=400)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert all("MLflow run: " in output for output in outputs)
    client = _client(_uri(store))
    for seed in (1, 2):
        run = client.get_run(_run_id(tmp_path / f"run{seed}"))
        assert run.info.status == "FINISHED" and run.data.params["seed"] == str(seed)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
        assert "model/artifacts/model/model.json" in _artifacts(client, run.info.run_id)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_ui(uri: str, tries: int = 3):
    """``sigclass ui`` on a free port; returns ``(process, port, status, body)`` once it answers.

    The port is free when picked but released before the server binds it; should another
    process take it meanwhile, the server exits and is started again on another port.
    """
    for _ in range(tries):
        port = _free_port()
        # the server's log goes to a file: a pipe nobody reads fills up and blocks the server
        # and `sigclass ui` itself (its last flush on the way out)
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - open as long as the server runs
        process = subprocess.Popen([sys.executable, "-m", "sigclass", "ui", "--port", str(port),
                                    "--tracking-uri", uri], env=ENV, stdout=log,
                                   stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=default_signal_handling)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    return process, port, response.status, response.read()
            except OSError:
                time.sleep(1)
        if process.poll() is None:  # alive but silent: not a lost port
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
            raise AssertionError("the MLflow UI did not answer within 240 s")
        log.seek(0)
        output = log.read()
        if "address already in use" not in output.lower():
            raise AssertionError(output)
    raise AssertionError(f"no free port found in {tries} tries")


def test_ui_serves_the_store_over_http_and_takes_runs(recorded, colour_folder, tmp_path,
                                                     tracking_on):
    _, uri, _ = recorded
    process, port, status, body = _start_ui(uri)
    try:
        assert status == 200
        assert b"MLflow" in body or b"mlflow" in body
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            names = {e["name"] for e in json.loads(response.read())["experiments"]}
        assert "fridgeObjects" in names

        server = f"http://127.0.0.1:{port}"  # the same server as a team's tracking server
        result = sc.train(colour_folder, mode="scratch", model="simple_cnn_gap", out=tmp_path / "r",
                          progress=False, **{**TINY, "train.epochs": 1, "tracking.uri": server})
        client = _client(server)
        run = client.get_run(_run_id(tmp_path / "r"))
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test_accuracy"] == pytest.approx(result.metrics["accuracy"])
        assert "model/artifacts/model/model.json" in _artifacts(client, run.info.run_id)
    finally:  # Ctrl-C: `sigclass ui` stops its MLflow server (SIGTERM would leave it running)
        process.send_signal(signal.SIGINT)
        try:  # at most the 10 s grace of its children, then their SIGKILL, then its own exit
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            pytest.fail("`sigclass ui` did not stop within 60 s of Ctrl-C")


def test_signal_model_scores_through_pyfunc_rows(tmp_path, tracking_on, recorded):
    """Signals: one DataFrame row per case, values channel by channel (BasicMotions: 6 x 100)."""
    import mlflow.pyfunc
    import pandas as pd

    from sigclass.exceptions import DataError

    uri = recorded[1]  # the module's store: one more run in it
    data = sc.load_signals("aeon:BasicMotions")
    result = sc.train(data, mode="headless", out=tmp_path / "run", progress=False,
                      **{"tracking.uri": uri, "model_args": {"n_kernels": 840}})
    cases = data.X[:8]
    frame = pd.DataFrame(cases.reshape(len(cases), -1))
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{_run_id(tmp_path / 'run')}/model")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    scored = model.predict(frame)
    assert list(scored["label"]) == list(result.predictor.predict(cases))
    np.testing.assert_allclose(scored.drop(columns="label").to_numpy(),
                               result.predictor.predict_proba(cases), atol=1e-6)
    with pytest.raises(DataError, match="599 numeric columns cannot hold 6 channel"):
        model.predict(frame.iloc[:, :-1])


def test_any_class_name_makes_a_valid_metric_name(recorded, tracking_on):
    from sigclass.tracking import start_run
    from sigclass.tracking.store import TrackingSettings

    _, uri, _ = recorded
    settings = TrackingSettings(True, uri, "names")
    with start_run("names", settings=settings) as run:
        run.log_metrics({"test_per_class": {"milk+bottle (1/2)": {"f1": 0.5}, "été..x": 0.25}})
        run.log_params({"model_args": {"weird/key?": 1}})
    logged = _client(uri).get_run(run.run_id).data
    assert logged.metrics == {"test_per_class.milk_bottle _1_2_.f1": 0.5, "test_per_class.été._x": 0.25}
    assert logged.params == {"model_args.weird_key_": "1"}
