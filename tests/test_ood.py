"""Unknown inputs: the out-of-distribution scores and their threshold, a network run and a
headless run that keep them in the model folder, `sigclass predict` and the service that
report them, --reject-unknown, and model folders saved without them or tampered with."""

from __future__ import annotations

import csv
import json
import shutil

import httpx
import numpy as np
import pytest

import sigclass as sc
from servers import running_server, train_image_model
from sigclass.cli import main
from sigclass.evaluation import ood
from sigclass.exceptions import ArtifactError, ConfigError


def _blobs(rng, n, centres):
    labels = rng.integers(0, len(centres), n)
    return centres[labels] + rng.normal(0, 1, (n, centres.shape[1])), labels


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_scores_separate_far_items_and_the_threshold_passes_95_percent(method):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 16))
    train, labels = _blobs(rng, 300, centres)
    reference = ood.fit_reference(train, labels, method)
    k = 5 if method == "knn" else None
    val = ood.scores(reference, method, k, _blobs(rng, 200, centres)[0])
    found = ood.fit_threshold(val)
    assert found["n"] == 200 and found["calibrated_on"] == "200 validation item(s)"
    assert found["threshold"] == np.sort(val)[190]  # rank ceil(201 * 0.95) = 191
    inside = ood.scores(reference, method, k, _blobs(rng, 2000, centres)[0])
    assert 0.93 <= np.mean(inside <= found["threshold"]) <= 0.97
    far = ood.scores(reference, method, k, rng.normal(0, 4, (200, 16)) + 20 * rng.choice([-1, 1], (200, 16)))
    assert ood.auroc(inside, far) > 0.99 and ood.fpr_at_tpr(inside, far) < 0.02
    assert ood.auroc(inside, inside) == pytest.approx(0.5)


def test_a_small_validation_part_is_joined_by_leave_one_out_scores_and_says_so():
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, (40, 8))
    reference = ood.fit_reference(train, np.zeros(40, dtype=int), "knn")
    loo = ood.leave_one_out_scores(reference, "knn", 3, train)
    assert np.all(loo > 0)  # an item is never its own neighbour
    found = ood.fit_threshold(ood.scores(reference, "knn", 3, rng.normal(0, 1, (5, 8))), loo)
    assert found["n"] == 45
    assert found["calibrated_on"] == ("5 validation item(s) (fewer than the 19 a 0.95 quantile "
                                      "needs) and the leave-one-out scores of 40 training item(s)")


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory):
    """A 1D CNN on GunPoint with 20 validation cases to fit the threshold on."""
    return sc.train("aeon:GunPoint", mode="scratch", model="simple_cnn1d", seed=0, progress=False,
                    out=tmp_path_factory.mktemp("ood") / "run", val_size=0.4,
                    **{"train.epochs": 3, "tracking.enabled": False, "cam_examples": 0})


def test_a_network_run_keeps_its_score_and_tells_noise_from_its_test_part(signal_run):
    spec = json.loads((signal_run.dir / "model" / "model.json").read_text())["ood"]
    assert spec["method"] == "knn" and spec["k"] == 5 and spec["n"] == 20
    assert spec["calibrated_on"] == "20 validation item(s)" and spec["file"] == "ood.safetensors"
    assert spec["n_reference"] == 30 and spec["dim"] == signal_run.predictor.network.num_features
    assert 0.8 <= signal_run.metrics["ood"]["test_pass_rate"] <= 1.0
    loaded = sc.load(signal_run.dir)
    from aeon.datasets import load_gunpoint

    test, _ = load_gunpoint(split="test")
    inside = [r["ood_score"] for r in loaded.score(list(test[:60]))]
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, 3, test[0].shape) for _ in range(30)]
    records = loaded.score(noise, reject_unknown=True)
    assert ood.auroc(inside, [r["ood_score"] for r in records]) >= 0.95
    assert sum(r["unknown"] for r in records) >= 27
    assert all(r["class"] is None for r in records if r["unknown"])
    assert list(loaded.predict(noise[:3], reject_unknown=True)) == [r["class"] for r in records[:3]]


def _copy(run, tmp_path):
    return shutil.copytree(run.dir / "model", tmp_path / "model")


def _edit(folder, change):
    document = json.loads((folder / "model.json").read_text())
    change(document)
    (folder / "model.json").write_text(json.dumps(document))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["ood"].update(threshold=-1.0), "field 'ood.threshold'"),
    (lambda d: d["ood"].update(method="lof"), "field 'ood.method'"),
    (lambda d: d["ood"].update(dim=d["ood"]["dim"] + 1), "does not fit field 'ood'"),
    (lambda d: d["ood"].update(n_reference=7), "does not fit field 'ood'"),
    (lambda d: d["files"].pop("ood.safetensors"), "field 'ood.file': 'ood.safetensors' is not listed"),
    (lambda d: d["ood"].update(file="weights.safetensors"), "field 'ood.file'"),
])
def test_a_tampered_ood_spec_is_refused(signal_run, tmp_path, change, message):
    folder = _copy(signal_run, tmp_path)
    _edit(folder, change)
    with pytest.raises(ArtifactError, match=message):
        sc.load(folder)


def test_a_model_saved_without_ood_data_loads_and_reject_unknown_asks_to_retrain(signal_run, tmp_path, capsys):
    folder = _copy(signal_run, tmp_path)
    (folder / "ood.safetensors").unlink()

    def older(document):
        del document["ood"]
        del document["files"]["ood.safetensors"]

    _edit(folder, older)
    loaded = sc.load(folder)
    assert loaded.ood is None
    record = loaded.score([np.zeros(150)])[0]
    assert record["ood_score"] is None and record["unknown"] is None and record["class"]
    with pytest.raises(ConfigError, match="Retrain it"):
        loaded.score([np.zeros(150)], reject_unknown=True)
    cases = tmp_path / "cases.npz"
    np.savez(cases, X=np.zeros((2, 1, 150)))
    code = main(["predict", str(folder), str(cases), "-o", str(tmp_path / "p.csv"), "-q",
                 "--reject-unknown"])
    err = capsys.readouterr().err
    assert code == 2 and "--reject-unknown needs the out-of-distribution data" in err
    assert "Retrain it" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def image_model(fridge, tmp_path_factory):
    out = tmp_path_factory.mktemp("ood-image")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_CACHE_DIR", str(out / "cache"))
        return train_image_model(fridge, out)


@pytest.fixture(scope="module")
def noise_images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3)).astype(np.uint8)).save(folder / f"noise_{i}.png")
    return folder


def test_predict_writes_ood_columns_and_rejects_unknown_inputs(image_model, fridge, noise_images, tmp_path):
    output = tmp_path / "scores.csv"
    inputs = [str(sorted((fridge / "can").iterdir())[-1]), str(noise_images)]
    assert main(["predict", str(image_model), *inputs, "-o", str(output), "-q", "--reject-unknown"]) == 0
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-3:] == ["ood_score", "unknown", "error"]
    threshold = sc.load(image_model).ood["threshold"]
    for row in rows:
        assert row["unknown"] == str(float(row["ood_score"]) > threshold).lower()
        assert (row["predicted"] == "") == (row["unknown"] == "true")
    noise = [row for row in rows if "noise_" in row["input"]]
    assert len(noise) == 4 and all(row["unknown"] == "true" for row in noise)
    assert rows[0]["unknown"] == "false" and rows[0]["predicted"] == "can"


def test_the_service_returns_ood_score_and_unknown_and_rejects_with_the_option(
        image_model, fridge, noise_images):
    photo = sorted((fridge / "carton").iterdir())[-1]
    noise = noise_images / "noise_0.png"
    with running_server(image_model, "--backend", "torch", "--reject-unknown") as (base, _):
        known = httpx.post(base + "/predict", files={"file": (photo.name, photo.read_bytes())},
                           timeout=60).json()
        batch = httpx.post(base + "/predict/batch", timeout=60, files=[
            ("files", (photo.name, photo.read_bytes())), ("files", (noise.name, noise.read_bytes()))]).json()
        schema = httpx.get(base + "/openapi.json", timeout=30).json()["components"]["schemas"]
    top = max(known["probabilities"], key=known["probabilities"].get)
    assert known["unknown"] is False and known["class"] == top and known["ood_score"] > 0
    first, second = batch["predictions"]
    assert first["ood_score"] == pytest.approx(known["ood_score"], rel=1e-4)
    assert second["unknown"] is True and second["class"] is None and second["probabilities"]
    assert {"ood_score", "unknown"} <= set(schema["Prediction"]["properties"])


def test_serving_a_model_without_ood_data_with_reject_unknown_fails_at_start(signal_run, tmp_path, capsys):
    folder = _copy(signal_run, tmp_path)
    _edit(folder, lambda d: (d.pop("ood"), d["files"].pop("ood.safetensors")))
    assert main(["serve", str(folder), "--reject-unknown", "--port", "0"]) == 2
    assert "Retrain it" in capsys.readouterr().err


def test_knn_scores_are_exact_and_the_same_alone_and_in_a_batch():
    """Close neighbours (distance about 0.01) lose most digits in the dot-product form; the
    rechecked distances match float64 ones and do not depend on the batch a query is in."""
    from sigclass.evaluation.ood import normalize, scores

    rng = np.random.default_rng(0)
    bank = normalize(1.0 + 0.01 * rng.normal(size=(300, 96)))
    queries = normalize(bank[:30] + 2e-3 * rng.normal(size=(30, 96)))
    batch = scores({"bank": bank}, "knn", 5, queries)
    alone = np.array([scores({"bank": bank}, "knn", 5, queries[i:i + 1])[0] for i in range(30)])
    scored = normalize(queries).astype(np.float64)  # what scores() compares
    exact = np.sort(np.linalg.norm(scored[:, None, :] - bank[None].astype(np.float64), axis=2),
                    axis=1)[:, 4]
    assert np.array_equal(batch, alone)
    np.testing.assert_allclose(batch, exact, rtol=1e-12)
    assert exact.max() < 0.05  # close neighbours: where float32 dot products keep few digits
