"""``sigclass update``: a headless model learns a new class (or more examples of an old one) by
refitting its head on cached features; bad inputs are refused before anything is written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import sigclass as sc
from sigclass.cli import main
from sigclass.data.split import Split
from sigclass.exceptions import ArtifactError, ConfigError, DataError
from sigclass.training.feature_cache import FeatureCache

SMALL = {"mode": "headless", "model": "efficientnet_lite0", "image_size": 64, "head": "logreg",
         "backend": "torch", "tta": "none", "pooling": "final", "cv_folds": 3, "cam_examples": 0,
         "audit": False, "progress": False, "tracking.enabled": False}


def _copy(fridge: Path, target: Path, name: str, images: slice, as_name: str | None = None) -> None:
    (target / (as_name or name)).mkdir(parents=True, exist_ok=True)
    for path in sorted((fridge / name).iterdir())[images]:
        shutil.copy(path, target / (as_name or name) / path.name)


@pytest.fixture(scope="module")
def base_run(fridge, tmp_path_factory):
    """A headless model of three fridgeObjects classes (12 photos each, 32 px) and the
    milk_bottle photos it never saw."""
    root = tmp_path_factory.mktemp("update")
    for name in ("can", "carton", "water_bottle"):
        _copy(fridge, root / "base", name, slice(0, 12))
    _copy(fridge, root / "new", "milk_bottle", slice(0, 12))
    run = sc.train(root / "base", out=root / "run", seed=0, **SMALL)
    return {"root": root, "run": run.dir, "accuracy": run.metrics["accuracy"]}


def _feature_count(cache_root: Path) -> int:
    return sum(len(FeatureCache(folder)) for folder in (cache_root / "features").iterdir())


def test_update_adds_a_new_class_keeping_the_old_test_items(base_run, tmp_path):
    cache = Path(os.environ["SIGCLASS_CACHE_DIR"])
    before = _feature_count(cache)
    result = sc.update(base_run["run"], base_run["root"] / "new", tmp_path / "run2", progress=False)
    # the training items' features came from the cache: only the 12 new photos and the old test
    # photos (evaluated, never cached) were featurized
    old_split = Split.load(base_run["run"] / "split.json")
    assert _feature_count(cache) - before <= 12 + len(old_split.test)
    summary = result.summary
    assert summary["new_classes"] == ["milk_bottle"] and summary["more_examples_of"] == []
    assert summary["classes_after"] == ["can", "carton", "milk_bottle", "water_bottle"]
    new_split = Split.load(tmp_path / "run2" / "split.json")
    assert set(old_split.test) <= set(new_split.test)
    assert set(old_split.train) <= set(new_split.train) and set(old_split.val) <= set(new_split.val)
    added = {part: [i for i in new_split.part(part) if i.startswith("added1/")]
             for part in ("train", "val", "test")}
    assert all(added.values()), added  # the new class is trained on, validated and tested
    assert summary["old_test_accuracy_before"] == pytest.approx(base_run["accuracy"])
    # a run folder like train's, and a model that loads and knows the new class
    for name in ("config.yaml", "metrics.json", "data_report.json", "predictions.csv", "run.json",
                 "update.json"):
        assert (tmp_path / "run2" / name).is_file(), name
    model = sc.load(tmp_path / "run2")
    assert model.classes == ["can", "carton", "milk_bottle", "water_bottle"]
    assert model.conformal is not None and model.conformal["qhat"] is not None
    assert model.drift_reference is not None
    assert model.info["update"]["base_run"] == str(base_run["run"].resolve())
    test_items = [base_run["root"] / "new" / i.split("/", 1)[1] for i in added["test"]]
    predicted = model.predict(test_items)
    assert (predicted == "milk_bottle").sum() >= len(test_items) / 2, predicted
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert "milk_bottle" in metrics["per_class"]
    # an update of the update reads the first addition back through update.json
    again = sc.update(tmp_path / "run2", base_run["root"] / "new", tmp_path / "run3", progress=False)
    assert again.summary["added"]["prefix"] == "added2/"
    assert again.summary["duplicates_of_training_items"] == 12
    assert len(again.summary["additions"]) == 2


def test_update_with_more_examples_of_an_old_class(base_run, fridge, tmp_path):
    _copy(fridge, tmp_path / "more", "can", slice(12, 20))
    _copy(fridge, tmp_path / "more", "can", slice(20, 26), as_name="Can")
    result = sc.update(base_run["run"], tmp_path / "more", tmp_path / "run2", progress=False)
    summary = result.summary
    assert summary["more_examples_of"] == ["can"]
    assert summary["confusable_names"] == {"Can": "can"}  # reported, not refused
    assert any("looks like the old class 'can'" in note for note in summary["notes"])
    assert result.predictor.classes == ["Can", "can", "carton", "water_bottle"]
    counts = json.loads((tmp_path / "run2" / "data_report.json").read_text())["class_counts"]
    assert counts["can"] == 12 + 8


def test_update_refuses_bad_input_before_writing(base_run, tmp_path):
    new = base_run["root"] / "new"
    with pytest.raises(ArtifactError, match=r"is not a sigclass run folder: it has no config.yaml"):
        sc.update(base_run["run"] / "model", new, tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match=r"'.*busy' already exists and is not empty; nothing was"):
        sc.update(base_run["run"], new, busy)
    assert (busy / "keep.txt").read_text() == "precious" and len(list(busy.iterdir())) == 1
    with pytest.raises(ConfigError, match=r"cannot change 'image_size'"):
        sc.update(base_run["run"], new, tmp_path / "b", image_size=64)
    signals = tmp_path / "signals.npz"
    np.savez(signals, X=np.random.default_rng(0).normal(size=(6, 1, 20)).astype(np.float32),
             y=np.array(["a"] * 6))
    with pytest.raises(DataError, match=r"holds signal data, but the model takes image data"):
        sc.update(base_run["run"], signals, tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_update_refuses_a_network_model(base_run, tmp_path):
    run = sc.train(base_run["root"] / "base", mode="scratch", model="simple_cnn", image_size=32,
                   out=tmp_path / "scratch", cam_examples=0, audit=False, progress=False,
                   **{"train.epochs": 1, "tracking.enabled": False})
    with pytest.raises(ConfigError, match=r"holds a scratch model; update refits only the head "
                       r"of a headless model"):
        sc.update(run.dir, base_run["root"] / "new", tmp_path / "out")


def _signals(path: Path, classes: dict[str, float], n: int = 10, length: int = 60, seed: int = 0):
    """Sine waves of one frequency per class, with noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    X = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) + 0.1 * rng.normal(size=length)
                  for f in classes.values() for _ in range(n)])[:, None, :].astype(np.float32)
    y = np.array([c for c in classes for _ in range(n)])
    np.savez(path, X=X, y=y)
    return path


def test_update_of_a_signal_model_and_its_length_check(tmp_path):
    base = _signals(tmp_path / "base.npz", {"slow": 2.0, "fast": 9.0})
    run = sc.train(base, mode="headless", model="minirocket", head="ridge", cv_folds=3,
                   out=tmp_path / "run", cam_examples=0, audit=False, progress=False,
                   model_args={"n_kernels": 84 * 8})
    new = _signals(tmp_path / "new.npz", {"medium": 5.0}, seed=1)
    result = sc.update(run.dir, new, tmp_path / "run2", progress=False)
    assert result.predictor.classes == ["fast", "medium", "slow"]
    assert result.metrics["accuracy"] >= 0.8
    assert result.summary["old_test_accuracy_after"] >= result.summary["old_test_accuracy_before"]
    longer = _signals(tmp_path / "longer.npz", {"medium": 5.0}, length=80)
    with pytest.raises(DataError, match=r"1 channel\(s\) x 80 timepoints per case, the model takes "
                       r"1 x 60"):
        sc.update(run.dir, longer, tmp_path / "run3")


def test_cli_update_exit_codes(base_run, tmp_path, capsys):
    new = str(base_run["root"] / "new")
    assert main(["update", str(base_run["run"]), new, "--out", str(tmp_path / "r"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "(new: milk_bottle)" in out and "head refitted in" in out
    assert main(["update", str(base_run["run"]), new, "--out", str(tmp_path / "r"), "-q"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["update", str(tmp_path / "nowhere"), new, "--out", str(tmp_path / "s")]) == 2
    assert "is not a sigclass run folder" in capsys.readouterr().err


def test_update_is_a_new_mlflow_run_and_registry_version(base_run, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("SIGCLASS_TRACKING", "on")
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    track = {"tracking.enabled": True, "tracking.uri": uri}
    new = base_run["root"] / "new"
    first = sc.update(base_run["run"], new, tmp_path / "run2", progress=False, register="fridge",
                      **track)
    assert first.summary["registered"] == [{"name": "fridge", "version": 1}]
    # an update of a registered model is a new version of it, with no name given
    second = sc.update(tmp_path / "run2", new, tmp_path / "run3", progress=False, **track)
    assert second.summary["registered"] == [{"name": "fridge", "version": 2}]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = json.loads((tmp_path / "run3" / "tracking.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.tags["sigclass.kind"] == "update"
    assert run.data.tags["sigclass.base_run"] == str((tmp_path / "run2").resolve())
    assert run.data.metrics["test_accuracy"] == pytest.approx(second.metrics["accuracy"])
    assert client.get_model_version("fridge", "2").run_id == run_id
    with pytest.raises(ConfigError, match=r"--register 'x' needs tracking"):
        sc.update(base_run["run"], new, tmp_path / "run4", register="x",
                  **{"tracking.enabled": False})
