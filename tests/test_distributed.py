"""Distributed data-parallel training: two CPU processes under torchrun (gloo) against one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.resuming import assert_resumed, saved_history

import sigclass as sc
from servers import stopped

# torchrun runs of up to 10 minutes each, one fixture and a resumed run: more than the default
pytestmark = pytest.mark.timeout(1800)

ARGS = ["--mode", "scratch", "--model", "simple_cnn_gap", "--image-size", "32", "--epochs", "3",
        "--batch-size", "16", "--patience", "0", "-q"]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "sigclass", *args]


def _env(tmp: Path, tracking: bool) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if tracking:
        env["SIGCLASS_TRACKING"] = "on"
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same scratch run on the same split: one process, then two under torchrun."""
    from tests.test_tune import _colours

    tmp = tmp_path_factory.mktemp("ddp")
    data = _colours(tmp / "colours")
    one = sc.train(data, out=tmp / "one", progress=False, mode="scratch", model="simple_cnn_gap",
                   image_size=32, **{"train.epochs": 3, "train.batch_size": 16, "train.patience": 0})
    done = subprocess.run(_torchrun("train", str(data), *ARGS, "--split", str(tmp / "one" / "split.json"),
                                    "--out", str(tmp / "ddp")),
                          env=_env(tmp, tracking=True), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return data, tmp, one, done


def test_two_processes_train_one_run(runs):
    data, tmp, _, done = runs
    out = tmp / "ddp"
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]
    folders = {p.name for p in tmp.iterdir() if p.is_dir()} - {"mlartifacts"}
    assert folders == {"colours", "ddp", "one"}  # one run folder, no per-process copies
    assert done.stdout.count("run folder:") == 1  # only rank 0 reports
    assert "rank 1 of 2 (gloo)" in done.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    predictor = sc.load(out)
    assert predictor.predict(sorted(data.glob("red/*.png"))[:2]).shape == (2,)


def test_the_processes_end_with_identical_weights(runs):
    """Each process trains on its own shard: only all-reduced gradients keep the copies equal."""
    _, tmp, one, _ = runs
    digests = json.loads((tmp / "ddp" / "run.json").read_text())["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    history = json.loads((tmp / "ddp" / "history.json").read_text())
    assert [h["step"] for h in history] == [h["step"] for h in one.history]  # the global batch


def test_accuracy_matches_one_process(runs):
    _, tmp, one, _ = runs
    ddp = json.loads((tmp / "ddp" / "metrics.json").read_text())
    assert json.loads((tmp / "ddp" / "split.json").read_text()) == json.loads(
        (tmp / "one" / "split.json").read_text())
    assert abs(ddp["accuracy"] - one.metrics["accuracy"]) <= 0.25  # 8 test images: 2 may differ
    first = json.loads((tmp / "ddp" / "history.json").read_text())[0]
    assert first["train_loss"] == pytest.approx(one.history[0]["train_loss"], rel=0.2)


def test_exactly_one_mlflow_run(runs):
    from mlflow.tracking import MlflowClient

    _, tmp, _, _ = runs
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    found = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(found) == 1
    assert found[0].info.status == "FINISHED"
    assert "test_accuracy" in found[0].data.metrics


def test_an_interrupted_distributed_run_resumes(runs, tmp_path):
    data, tmp, _, _ = runs
    out = tmp_path / "resumed"  # not in the module's folder, whose listing another test checks
    args = ["train", str(data), *ARGS, "--out", str(out)]
    args[args.index("3")] = "12"  # --epochs 12
    process = subprocess.Popen(_torchrun(*args), env=_env(tmp, tracking=False),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = out / "checkpoints" / "last.pt"
    with stopped(process):
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert checkpoint.exists(), f"no checkpoint within 300 s (exit code {process.poll()})"
        process.send_signal(signal.SIGTERM)  # as a preempted job: torchrun stops both workers
        _, killed = process.communicate(timeout=120)
    # SIGTERM stops a sigclass command as Ctrl-C does: the run says it was interrupted
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert not (out / "model").exists()
    before = saved_history(checkpoint)
    done = subprocess.run(_torchrun("train", "--resume", "--out", str(out), "-q"),
                          env=_env(tmp, tracking=False), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stderr[-3000:], killed.decode()[-2000:])
    summary = json.loads((out / "run.json").read_text())
    assert summary["status"] == "finished"
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert_resumed(before, history, checkpoint)
    assert len(set(summary["replica_digests"])) == 1 and len(summary["replica_digests"]) == 2
    assert sc.load(out).predict(sorted(data.glob("blue/*.png"))[:1]).shape == (1,)
