"""Label-error audit: deliberately flipped fridgeObjects labels are found."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd

from sigclass.data.images import ImageDataset


def test_audit_finds_flipped_labels(fridge, tmp_path):
    rng = np.random.default_rng(0)
    photos = sorted(p for p in fridge.rglob("*.jpg"))
    classes = sorted({p.parent.name for p in photos})
    flipped = set(rng.choice(len(photos), size=len(photos) // 10, replace=False).tolist())
    rows = []
    for i, photo in enumerate(photos):
        label = photo.parent.name
        if i in flipped:
            label = classes[(classes.index(label) + 1 + int(rng.integers(3))) % len(classes)]
        rows.append({"path": photo.relative_to(fridge).as_posix(), "label": label})
    manifest = tmp_path / "noisy.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "audit"
    done = subprocess.run([sys.executable, "-m", "sigclass", "audit", manifest, "--root", fridge,
                           "--out", out], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = pd.read_csv(out / "label_issues.csv")
    suspects = {str(p) for p in found["path"]}
    truth = {str(photos[i]) for i in flipped}
    recall = len(suspects & truth) / len(truth)
    assert recall >= 0.6, (recall, done.stdout)
    assert len(suspects - truth) <= len(truth)  # not a list of everything
    fixed = {str(p): label for p, label in zip(found["path"], found["label"], strict=True)}
    assert sum(fixed[str(photos[i])] == photos[i].parent.name for i in flipped if str(photos[i]) in fixed) >= 0.5 * len(suspects & truth)
    assert (out / "label_issues.html").read_text().count("<figure>") == len(found)
    edited = ImageDataset.from_manifest(out / "label_issues.csv", root="/")  # feeds back as a manifest
    assert len(edited) == len(found)


def test_signal_audit_plots_the_suspects_and_every_run_reports_it(tmp_path):
    import json

    import sigclass as sc
    from sigclass.audit import audit_labels
    from sigclass.data.signals import load_signals

    gun = load_signals("aeon:GunPoint")
    rng = np.random.default_rng(1)
    y = gun.labels.astype(str)
    flipped = rng.choice(len(y), size=10, replace=False)
    y[flipped] = np.where(y[flipped] == "1", "2", "1")
    np.savez(tmp_path / "noisy.npz", X=gun.X, y=y)
    noisy = load_signals(str(tmp_path / "noisy.npz"))
    truth = {noisy.ids[i] for i in flipped}
    issues = audit_labels(noisy, out=tmp_path / "audit")
    found = {issue["id"] for issue in issues}
    assert len(found & truth) >= 7 and len(found - truth) <= 10
    page = (tmp_path / "audit" / "label_issues.html").read_text()
    assert page.count("<img src='plots/") == len(issues)
    assert (tmp_path / "audit" / "plots" / "0000.png").read_bytes()[:4] == b"\x89PNG"
    run = sc.train(noisy, mode="headless", out=tmp_path / "run", progress=False,
                   **{"tracking.enabled": False, "cam_examples": 0})
    assert run.metrics["accuracy"] > 0.7
    section = json.loads((tmp_path / "run" / "data_report.json").read_text())["label_audit"]
    assert section["features"] == "minirocket" and section["n_issues"] == len(issues)
    assert {issue["id"] for issue in section["issues"]} <= found
