"""The ensemble row of a comparison: the top entries by held-out score, soft voting with weights,
saved as one model folder that loads, predicts and scores files like any model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import sigclass as sc
from sigclass.ensemble import EnsemblePredictor, selection_score
from sigclass.exceptions import ArtifactError, ExplainError
from sigclass.workflows.compare import compare, parse_entries


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "gun"
    board = compare("aeon:GunPoint", out, parse_entries("headless:minirocket,headless:multirocket_hydra,scratch:fcn"),
                    progress=False, **{"train.epochs": 3, "tracking.enabled": False, "cam_examples": 0})
    return out, board


def test_the_leaderboard_has_an_ensemble_of_the_best_entries(compared):
    out, board = compared
    names = [row["name"] for row in board.rows]
    assert names[-1] == "ensemble" or "ensemble" in names
    ensemble = sc.load(out / "ensemble")
    # the two ROCKETs score near 1; the 3-epoch FCN is far below and is left out of the vote
    assert isinstance(ensemble, EnsemblePredictor)
    assert sorted(ensemble.names) == ["headless-minirocket", "headless-multirocket_hydra"]
    assert selection_score(out / "scratch-fcn") < max(selection_score(out / n) for n in ensemble.names) - 0.05
    scores = np.array([selection_score(out / name) for name in ensemble.names])
    assert ensemble.weights == pytest.approx(list((scores - 0.5) / np.sum(scores - 0.5)))
    data = sc.load_dataset("aeon:GunPoint")
    X = data.model_inputs()[:20]
    expected = sum(w * m.predict_proba(X) for w, m in zip(ensemble.weights, ensemble.members, strict=True))
    assert np.allclose(ensemble.predict_proba(X), expected, atol=1e-6)
    row = next(r for r in board.rows if r["name"] == "ensemble")
    metrics = json.loads((out / "ensemble" / "metrics.json").read_text())
    assert row["accuracy"] == metrics["accuracy"] > 0.7


def test_an_ensemble_scores_files_and_says_how_to_explain_it(compared, tmp_path):
    out, _ = compared
    data = sc.load_dataset("aeon:GunPoint")
    np.savez(tmp_path / "new.npz", X=data.X[:6, 0].astype(np.float64))
    done = subprocess.run([sys.executable, "-m", "sigclass", "predict", out / "ensemble",
                           tmp_path / "new.npz", "-o", tmp_path / "p.csv"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and all(r["predicted"] in ("1", "2") and r["error"] == "" for r in rows)
    with pytest.raises(ExplainError, match="Explain a member instead"):
        sc.explain(sc.load(out / "ensemble"), [data.X[0]])


def test_a_tampered_ensemble_is_refused(compared, tmp_path):
    import shutil

    out, _ = compared
    copy = tmp_path / "ens"
    shutil.copytree(out / "ensemble" / "model", copy)
    document = json.loads((copy / "model.json").read_text())
    document["members"][0]["folder"] = "../../elsewhere"
    (copy / "model.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="names a member outside the model folder"):
        sc.load(copy)
