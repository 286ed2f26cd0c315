"""The three modes really learn, the featurizer is a scikit-learn transformer with a disk cache,
and an interrupted run resumes to a finished one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from tests.resuming import assert_resumed, saved_history

import sigclass as sc
from servers import default_signal_handling, stopped
from sigclass.training.image_featurizer import Featurizer


@pytest.mark.slow
def test_headless_reaches_95_percent_on_fridge_objects(fridge, tmp_path):
    run = sc.train(fridge, mode="headless", model="efficientnet_lite2", seed=0,
                   out=tmp_path / "run", progress=False)
    assert run.metrics["accuracy"] >= 0.95, run.metrics["confusion_matrix"]
    assert run.metrics["n"] == 26
    assert (tmp_path / "run" / "model" / "head.skops").is_file()


def test_featurizer_is_a_transformer_with_a_content_keyed_cache(colour_folder, tmp_path):
    data = sc.ImageDataset.from_folder(colour_folder)
    files = [str(p) for p in data.paths]
    featurizer = Featurizer("efficientnet_lite0", image_size=64, backend="torch", cache_dir=tmp_path)
    pipeline = make_pipeline(featurizer, LogisticRegression(max_iter=500)).fit(files, data.labels)
    assert (pipeline.predict(files) == data.labels).mean() == 1.0
    first = featurizer.transform(files)
    assert first.shape == (36, 1280) and np.isfinite(first).all()
    again = Featurizer("efficientnet_lite0", image_size=64, backend="torch", cache_dir=tmp_path).fit()
    renamed = tmp_path / "renamed.png"
    renamed.write_bytes(data.paths[0].read_bytes())
    cached = again.transform(files + [str(renamed)])
    assert again.engine_ is None  # every vector came from the cache: the network never ran
    np.testing.assert_array_equal(cached[:36], first)
    np.testing.assert_array_equal(cached[36], first[0])  # keyed by content, not by name
    other_size = Featurizer("efficientnet_lite0", image_size=96, backend="torch", cache_dir=tmp_path).fit()
    assert other_size.cache_key_ != again.cache_key_


def test_onnx_and_torch_featurizers_agree(colour_folder, tmp_path):
    files = sorted(str(p) for p in colour_folder.glob("*/*_0.png"))
    torch_features = Featurizer("efficientnet_lite0", image_size=64, backend="torch", cache_dir=False,
                                device="cpu").fit().transform(files)  # float32: CUDA would run bf16
    onnx_features = Featurizer("efficientnet_lite0", image_size=64, backend="onnx",
                               cache_dir=tmp_path).fit().transform(files)
    np.testing.assert_allclose(onnx_features, torch_features, atol=2e-4)


def test_finetune_learns(colour_folder, tmp_path):
    run = sc.train(colour_folder, mode="finetune", model="efficientnet_lite0", image_size=64,
                   out=tmp_path / "ft", progress=False,
                   **{"train.epochs": 4, "train.lr": 1e-2, "train.batch_size": 8})
    assert run.metrics["accuracy"] >= 0.8  # 6 test images, chance 0.33: at most one miss
    assert len(run.history) == 4 and run.history[0]["epoch"] == 1
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"} <= set(run.history[0])
    assert (tmp_path / "ft" / "curves.png").is_file()


def test_headless_class_weights_reach_the_saved_head(colour_folder, tmp_path):
    from sigclass.cli import build_parser, resolve_config

    args = build_parser().parse_args(["train", str(colour_folder), "--class-weights"])
    config = resolve_config(args).updated({"model": "efficientnet_lite0", "image_size": 32,
                                           "backend": "torch", "cache_dir": str(tmp_path / "cache")})
    assert config.train.class_weights is True
    run = sc.train(colour_folder, out=tmp_path / "hl", config=config, progress=False)
    head = sc.load(tmp_path / "hl").head  # through the skops file
    assert head.named_steps["clf"].class_weight == "balanced"
    assert run.metrics["accuracy"] >= 0.8
    plain = sc.train(colour_folder, out=tmp_path / "plain", progress=False,
                     config=config.updated({"train.class_weights": False}))
    assert plain.predictor.head.named_steps["clf"].class_weight is None


def test_scratch_learns_with_class_weights(colour_folder, tmp_path):
    run = sc.train(colour_folder, mode="scratch", model="simple_cnn_gap", image_size=32,
                   out=tmp_path / "sc", progress=False,
                   **{"train.epochs": 12, "train.lr": 5e-3, "train.batch_size": 8,
                      "train.class_weights": True, "train.patience": 0, "train.monitor": "val_accuracy"})
    assert run.metrics["accuracy"] >= 0.85
    best = max(run.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))  # ties: lower loss
    assert json.loads((tmp_path / "sc" / "run.json").read_text())["best_epoch"] == best["epoch"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sigclass", *args]


EPOCHS = 150


@pytest.mark.timeout(1800)  # an interrupted run, then up to 10 minutes of resumed training
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_training_resumes_to_a_finished_run(colour_folder, tmp_path, stop):
    out = tmp_path / "run"
    # enough epochs that the run cannot end between its first checkpoint and the signal, even on
    # a loaded machine where this process waits for a core (40 epochs of 36 tiny images did)
    args = ["train", str(colour_folder), "--mode", "scratch", "--model", "vgg_like_1",
            "--image-size", "32", "--epochs", str(EPOCHS), "--patience", "0", "--out", str(out), "-q"]
    process = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=default_signal_handling)
    checkpoint = out / "checkpoints" / "last.pt"
    with stopped(process):
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert checkpoint.exists(), f"no checkpoint within 120 s (exit code {process.poll()})"
        assert process.poll() is None, "the run finished before it could be interrupted"
        os.kill(process.pid, stop)
        _, stderr = process.communicate(timeout=60)
    status = json.loads((out / "run.json").read_text())["status"]
    if stop == signal.SIGINT:
        assert process.returncode == 130 and status == "interrupted"
        assert b"--resume" in stderr
    else:
        assert status == "running"  # killed without a chance to write anything
    assert not (out / "model").exists()
    before = saved_history(checkpoint)
    done = subprocess.run(_cli("train", "--resume", "--out", str(out), "-q"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert_resumed(before, history, checkpoint)
    assert sc.load(out).predict(sorted(colour_folder.glob("red/*.png"))[:1]).shape == (1,)
