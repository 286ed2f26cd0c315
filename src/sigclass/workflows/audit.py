"""Label-error audit: which items' given label is most likely wrong (confident learning).

Out-of-fold class probabilities come from frozen features (the cached headless featurizer for
images, MiniRocket for signals) and a cross-validated logistic regression; cleanlab's
``find_label_issues`` (Northcutt et al., JAIR 2021) then ranks the items whose given label the
data contradicts. The result is a table (``label_issues.csv``: ``path,label`` hold the suggested
label, so the file can be edited and fed back as a manifest) and an HTML page of the suspects.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .._utils import atomic_write, write_json, write_text
from ..exceptions import DataError, Problem
from ..explain.report import html_page
from ..modalities import modality_of


def out_of_fold_proba(features: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Class probabilities of every item from a model that never saw it (``cross_val_predict``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    smallest = int(np.bincount(y).min())
    if smallest < 2:
        raise DataError(Problem("labels", "every class needs at least 2 items for the audit's "
                                "cross-validation; add items or remove the class"))
    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    # One BLAS thread: on 400 ELPV cells' features the folds took 9.3 s with threads that wait
    # for each other on shared cores and 1.6 s with one (as the heads, workflows/fit.py).
    with threadpool_limits(1, user_api="blas"):
        return cross_val_predict(head, features, y, cv=cv, method="predict_proba")


def dataset_features(dataset, model: str | None = None, cache_dir=None) -> np.ndarray:
    """Frozen features of every item: the cached image featurizer of ``model`` (``None``: the
    default headless backbone, whose features a default training run caches), or MiniRocket for
    signals."""
    modality = modality_of(dataset)
    return modality.audit_features(dataset, _backbone(modality, model), cache_dir)


def _backbone(modality, model: str | None) -> str:
    """``model``, or the modality's default headless backbone when it is ``None``."""
    return model or modality.default_model("headless")


def audit_labels(dataset, out: str | Path | None = None, model: str | None = None,
                 folds: int = 5, seed: int = 0, cache_dir=None) -> list[dict[str, Any]]:
    """Items whose given label is most likely wrong, most suspect first.

    Args:
        dataset: A labeled image or signal dataset.
        out: Folder for ``label_issues.csv``, ``label_issues.json`` and ``label_issues.html``.
        model: Image backbone of the features; ``None`` is the default headless one
            (EfficientNet-Lite2: on fridgeObjects with 10 % of the labels flipped, precision 0.72
            and recall 0.85 of the flipped photos against Lite0's 0.67 and 0.79; on 400 ELPV cells,
            0.29 and 0.88 against 0.27 and 0.87).
        folds: Cross-validation folds of the out-of-fold probabilities.
        seed: Seed of the folds.
        cache_dir: Feature cache folder.

    Returns:
        One dict per suspect: ``id``, ``path``, ``given``, ``suggested``, ``score`` (cleanlab's
        label quality, low = suspect).
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = dataset.y
    proba = out_of_fold_proba(dataset_features(dataset, model, cache_dir), y, folds, seed)
    # n_jobs=1: cleanlab's multiprocessing pool, forked from a process holding torch and
    # worker threads, can deadlock on terminate; the sets audited here are small.
    order = find_label_issues(y, proba, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = get_label_quality_scores(y, proba)
    paths = modality_of(dataset).item_paths(dataset)
    issues = [{"id": dataset.ids[i], "path": paths[i], "given": dataset.classes[y[i]],
               "suggested": dataset.classes[int(proba[i].argmax())], "score": float(quality[i])}
              for i in order]
    if out is not None:
        _write(issues, dataset, Path(out))
    return issues


_SECTIONS: dict[tuple, dict[str, Any]] = {}
MAX_PLOTS = 200  # signal plots on the audit page


def audit_section(dataset, model: str | None = None, cache_dir=None,
                  shown: int = 20) -> dict[str, Any]:
    """The ``label_audit`` section of a run's data report: counts and the most suspect items.

    Computed once per dataset (fingerprint) and model in a process, so the entries of one
    comparison share it; a dataset the audit cannot cross-validate gets the reason instead.
    """
    modality = modality_of(dataset)
    model = _backbone(modality, model)
    features = modality.audit_feature_name(model)
    key = (dataset.fingerprint(), tuple(dataset.ids), features)
    if key not in _SECTIONS:
        try:
            issues = audit_labels(dataset, model=model, cache_dir=cache_dir)
        except DataError as exc:
            _SECTIONS[key] = {"features": features, "skipped": str(exc)}
        else:
            _SECTIONS[key] = {"features": features, "method": "cleanlab find_label_issues, "
                              "out-of-fold logistic regression", "n_items": len(dataset),
                              "n_issues": len(issues), "issues": issues[:shown],
                              "see": "sigclass audit DATA --out DIR for every suspect and the page"}
    return dict(_SECTIONS[key])


def _write(issues: list[dict[str, Any]], dataset, out: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(issues, columns=["id", "path", "given", "suggested", "score"])
    table = pd.DataFrame({"path": frame["path"], "label": frame["suggested"], "given": frame["given"],
                          "score": frame["score"]})
    atomic_write(out / "label_issues.csv", lambda p: table.to_csv(p, index=False))
    write_json(out / "label_issues.json", {"n_items": len(dataset), "n_issues": len(issues),
                                           "issues": issues})
    modality = modality_of(dataset)
    figures = []
    position = {item_id: i for i, item_id in enumerate(dataset.ids)}
    for k, issue in enumerate(issues):
        caption = (f"{html.escape(issue['id'])}<br>given <b class='wrong'>{html.escape(issue['given'])}"
                   f"</b>, suggested <b>{html.escape(issue['suggested'])}</b>, "
                   f"score {issue['score']:.3f}")
        thumbnail = modality.thumbnail(dataset, position[issue["id"]], draw=k < MAX_PLOTS)
        if isinstance(thumbnail, Path):
            picture = f"<img src='{thumbnail.resolve().as_uri()}'>"
        elif thumbnail is not None:  # a picture drawn for the page
            name = f"plots/{k:04d}.png"
            atomic_write(out / name, lambda p, data=thumbnail: p.write_bytes(data))
            picture = f"<img src='{name}'>"
        else:
            picture = ""
        figures.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    body = [f"<p>{len(issues)} of {len(dataset)} items whose given label the data contradicts "
            "(confident learning, cleanlab). Edit label_issues.csv and use it as a manifest.</p>",
            *figures]
    write_text(out / "label_issues.html", html_page("Label issues", body))
