"""Hyperparameter search: workers sharing a SQLite study, best.yaml reproducing a trial, pruning."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sigclass as sc
from servers import stopped
from sigclass.config import RunConfig, load_config
from sigclass.exceptions import ConfigError
from sigclass.workflows.tune import PruningCallback, tune

# two tune workers of up to 10 minutes in a fixture: more than the default timeout
pytestmark = pytest.mark.timeout(1800)

HEADLESS = ["--mode", "headless", "--model", "efficientnet_lite0", "--image-size", "32",
            "--backend", "torch", "-q"]
STUDY = "colours"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sigclass", *args]


def _colours(root: Path) -> Path:
    """3 classes told apart by colour, 12 noisy 32 px images each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, rgb in {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}.items():
        (root / name).mkdir(parents=True)
        for i in range(12):
            noise = rng.integers(-60, 60, (32, 32, 3))
            array = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(array).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory):
    """Two `sigclass tune` workers started together on one SQLite study of 6 headless trials."""
    tmp = tmp_path_factory.mktemp("tune")
    data = _colours(tmp / "colours")
    out = tmp / "study"
    env = {**os.environ, "SIGCLASS_TRACKING": "off",
           "SIGCLASS_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "cache")}
    args = _cli("tune", str(data), "--trials", "6", "--study", STUDY, "--out", str(out), *HEADLESS)
    workers = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    with stopped(*workers):
        try:
            outputs = [w.communicate(timeout=600) for w in workers]
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            tails = [w.communicate()[1][-2000:] for w in workers]
            pytest.fail("a tune worker ran past 600 s; stderr tails:\n" + "\n---\n".join(tails))
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    return data, out, {f"{socket.gethostname()}:{w.pid}": stdout
                       for w, (stdout, _) in zip(workers, outputs, strict=True)}


def _trials(out: Path):
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'study.db'}")
    return [t for t in study.get_trials() if not t.user_attrs.get("surplus")]


def test_two_workers_complete_every_trial_once(shared_study):
    _, out, reports = shared_study
    trials = _trials(out)
    assert sorted(t.number for t in trials) == list(range(6))  # none lost, none twice
    assert all(t.state == TrialState.COMPLETE for t in trials)
    folders = sorted((out / "trials" / STUDY).iterdir())
    assert [f.name for f in folders] == [f"trial-{n:04d}" for n in range(6)]
    assert all(json.loads((f / "run.json").read_text())["status"] == "finished" for f in folders)
    # every trial ran in one of the two workers, and each of them saw the whole shared study
    # (how the trials fall between them is a race: the first may run all six before the other
    # has loaded PyTorch; a worker that ends first may see the other's last trial running)
    assert {t.user_attrs["worker"] for t in trials} <= set(reports)
    for stdout in reports.values():
        line = next(x for x in stdout.splitlines() if x.startswith(f"study {STUDY}: "))
        seen = {state: int(n) for n, state in (c.split() for c in line.split(": ", 1)[1].split(", "))}
        assert sum(seen.values()) == 6 and set(seen) <= {"complete", "running"}, stdout
    for trial in trials:  # the objective is the cross-validated accuracy, never the test part
        run_dir = Path(trial.user_attrs["run_dir"])
        saved = load_config(run_dir / "config.yaml")
        assert saved["head"] == trial.params["head"]
        assert set(saved["head_params"]) == ({"alpha"} if trial.params["head"] == "ridge" else {"C"})
        assert trial.value == pytest.approx(sc.load(run_dir).info["head"]["cv_accuracy"])
    summary = json.loads((out / "study.json").read_text())
    assert summary["counts"] == {"COMPLETE": 6}
    assert summary["best"]["value"] == max(t.value for t in trials)


def test_best_yaml_reproduces_the_best_trial(shared_study, tmp_path):
    data, out, _ = shared_study
    summary = json.loads((out / "study.json").read_text())
    best = RunConfig.from_dict(load_config(out / "best.yaml"))
    assert best.split == str((out / "split.json").resolve())
    assert best.head == summary["best"]["params"]["head"]
    done = subprocess.run(_cli("train", "--config", str(out / "best.yaml"), "--out",
                               str(tmp_path / "again"), "-q"),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    again = sc.load(tmp_path / "again")
    assert again.info["head"]["cv_accuracy"] == pytest.approx(summary["best"]["value"], abs=1e-9)
    first = sc.load(summary["best"]["run_dir"])
    assert again.info["test_metrics"] == pytest.approx(first.info["test_metrics"])


def test_running_again_continues_the_study(shared_study, tmp_path):
    data, shared, _ = shared_study
    out = tmp_path / "study"  # a copy: the other tests see the six trials whatever the order
    shutil.copytree(shared, out)
    result = tune(data, out, trials=6, study_name=STUDY, mode="headless",
                  model="efficientnet_lite0", image_size=32, backend="torch")
    assert result.counts == {"COMPLETE": 6}  # already done: nothing new
    result = tune(data, out, trials=7, study_name=STUDY, mode="headless",
                  model="efficientnet_lite0", image_size=32, backend="torch")
    assert result.counts == {"COMPLETE": 7}
    numbers = sorted(t.number for t in _trials(out))
    # the first six are kept; the new one may skip a number that a surplus trial of the two
    # racing workers took
    assert numbers[:6] == list(range(6)) and len(numbers) == 7 and numbers[6] >= 6


def test_a_study_of_another_mode_is_refused(shared_study):
    data, out, _ = shared_study
    with pytest.raises(ConfigError, match="Use another --study name"):
        tune(data, out, trials=1, study_name=STUDY, mode="scratch", model="simple_cnn_gap",
             image_size=32)


def test_unreachable_storage_is_a_clear_error(shared_study, tmp_path):
    data, _, _ = shared_study
    with pytest.raises(ConfigError, match="Cannot open the study storage") as info:
        tune(data, tmp_path / "s", trials=1, storage="postgresql://me:secret@127.0.0.1:1/db",
             mode="headless", model="efficientnet_lite0", image_size=32, backend="torch")
    assert "secret" not in str(info.value)


def test_network_trials_report_every_epoch_and_can_be_pruned(colour_folder, tmp_path):
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1.5, n_warmup_steps=0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        sc.train(colour_folder, mode="scratch", model="simple_cnn_gap", image_size=32,
                 out=tmp_path / "pruned", progress=False, **{"train.epochs": 3},
                 callbacks=(PruningCallback(trial, "val_accuracy"),))
    history = json.loads((tmp_path / "pruned" / "run.json").read_text())
    assert history["status"] == "failed" and "TrialPruned" in history["error"]
    assert not (tmp_path / "pruned" / "model").exists()


def test_scratch_search_tunes_width_and_learning_rate(colour_folder, tmp_path):
    result = tune(colour_folder, tmp_path / "study", trials=2, mode="scratch",
                  model="simple_cnn_gap", image_size=32, sampler_seed=0, **{"train.epochs": 2})
    assert result.counts == {"COMPLETE": 2}
    assert result.metric == "val_loss_ema" and result.best_value > 0.0  # monitor auto: smoothed loss
    assert {"lr", "batch_size", "width", "drop_rate", "augment"} <= set(result.best_params)
    best = RunConfig.from_dict(load_config(result.best_config))
    assert best.model_args["width"] == result.best_params["width"]
    assert best.train.lr == pytest.approx(result.best_params["lr"])
    history = json.loads((result.best_run_dir / "history.json").read_text())
    assert result.best_value == pytest.approx(min(h["val_loss_ema"] for h in history))


POSTGRES = os.environ.get("SIGCLASS_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES, reason="no PostgreSQL server: set SIGCLASS_TEST_POSTGRES_URL="
                    "postgresql://USER:PASSWORD@HOST/DB (an empty database) to run this test")
def test_two_workers_share_a_postgresql_study(colour_folder, tmp_path):
    """The several-machines setting: two workers, each with its own folder, one PostgreSQL study."""
    study = f"colours-pg-{os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "SIGCLASS_TRACKING": "off", "SIGCLASS_CACHE_DIR": str(tmp_path / "cache")}
    workers = [subprocess.Popen(_cli("tune", str(colour_folder), "--trials", "4", "--study", study,
                                     "--storage", POSTGRES, "--out", str(tmp_path / f"worker{i}"),
                                     *HEADLESS),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    with stopped(*workers):
        for worker in workers:
            _, stderr = worker.communicate(timeout=600)
            assert worker.returncode == 0, stderr[-3000:]
    trials = [t for t in optuna.load_study(study_name=study, storage=POSTGRES).get_trials()
              if not t.user_attrs.get("surplus")]
    assert sorted(t.number for t in trials) == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(Path(t.user_attrs["run_dir"]).is_dir() for t in trials)
    optuna.delete_study(study_name=study, storage=POSTGRES)
