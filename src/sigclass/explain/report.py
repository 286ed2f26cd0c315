"""Explanations on disk: a PNG and a ``.npy`` map per input, and an HTML report for a test set.

``explain_files`` writes, for every input, ``<n>_<name>.png`` (overlay) and ``<n>_<name>.npy``
(the raw normalized map), plus ``explanations.json`` (class, probabilities, method, channel
importance, files; an ``error`` instead for an input that could not be read).

``explain_report`` scores a labeled set, explains its most confident correct predictions and its
worst mistakes (wrong and most confident), and writes ``report.html`` beside the pictures.
"""

from __future__ import annotations

import html
import io
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write, write_json, write_text
from ..exceptions import DataError
from ..modalities import modality_of
from .engine import explain
from .render import render_overlay

logger = logging.getLogger(__name__)


def file_stem(index: int, name: str | None) -> str:
    """A file-name stem: the position, then the input's name (``file-case`` for signal cases)."""
    text = str(name or "input")
    if "#" in text:
        source, case = text.rsplit("#", 1)
        base = f"{Path(source).stem}-{case}"
    else:
        base = Path(text).stem
    return f"{index:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', base)[:60]}"


def write_explanation(predictor, explanation, item, folder: Path, stem: str) -> dict[str, Any]:
    """Write the overlay PNG and the map ``.npy`` of one explanation; return its summary."""
    png = render_overlay(explanation, item, classes=predictor.classes,
                         channel_names=predictor.data_config.get("channel_names"))
    atomic_write(folder / f"{stem}.png", lambda p: p.write_bytes(png))
    buffer = io.BytesIO()  # np.save on a path would append ".npy" to the temporary name
    np.save(buffer, explanation.map, allow_pickle=False)
    atomic_write(folder / f"{stem}.npy", lambda p: p.write_bytes(buffer.getvalue()))
    summary = explanation.to_dict(predictor.classes)
    summary.update({"png": f"{stem}.png", "map": f"{stem}.npy"})
    return summary


def _inputs(predictor, files) -> tuple[list[str], list]:
    """Names and model inputs of files: image paths, or the cases of signal files."""
    inputs = modality_of(predictor).read_files(files, predictor.data_config)
    return list(inputs), list(inputs.values())


def explain_files(predictor, files, out: str | Path, target=None, method: str = "auto",
                  batch_size: int = 16) -> list[dict[str, Any]]:
    """Explain image files (or the cases of signal files) into the folder ``out``.

    An input that cannot be read gets an ``error`` entry in ``explanations.json`` and the others
    go on.

    Returns:
        One summary per input (also written to ``out/explanations.json``).
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    names, items = _inputs(predictor, files)
    summaries: list[dict[str, Any]] = []
    for begin in range(0, len(items), batch_size):
        chunk = list(range(begin, min(begin + batch_size, len(items))))
        try:
            done = explain(predictor, [items[i] for i in chunk], target=target, method=method)
        except DataError:
            done = []
            for i in chunk:  # find the unreadable inputs one by one
                try:
                    done += explain(predictor, [items[i]], target=target, method=method)
                except DataError as exc:
                    done.append(exc)
        for i, result in zip(chunk, done, strict=True):
            if isinstance(result, DataError) or isinstance(items[i], DataError):
                summaries.append({"name": names[i], "error": str(result)})
                continue
            result.name = names[i]
            summaries.append(write_explanation(predictor, result, items[i], folder,
                                               file_stem(i, names[i])))
    write_json(folder / "explanations.json", summaries)
    return summaries


def explain_report(predictor, dataset, indices=None, out: str | Path = "explain-report",
                   n_each: int = 8, method: str = "auto", batch_size: int = 32,
                   proba: np.ndarray | None = None, calibration: dict[str, Any] | None = None,
                   calibration_png: str | None = None) -> Path:
    """An HTML page with the maps of a labeled set's best and worst predictions.

    Args:
        predictor: The model.
        dataset: A labeled :class:`~sigclass.ImageDataset` or :class:`~sigclass.SignalDataset`.
        indices: Positions to use (e.g. a split's test part); ``None`` uses all.
        out: Folder for ``report.html``, the PNGs, the maps and ``report.json``.
        n_each: How many confident correct predictions and how many mistakes to show.
        method: ``"auto"``, ``"cam"`` or ``"gradcam"``.
        batch_size: Inference batch size.
        proba: The predictor's class probabilities for these items, when already computed
            (e.g. by :func:`~sigclass.evaluate`); ``None`` scores them.
        calibration: ECE and Brier score of these items (``metrics.json``'s ``calibration``),
            shown at the top of the page with ``calibration_png``, the reliability diagram's
            path relative to ``out``.

    Returns:
        The path of ``report.html``.
    """
    folder = Path(out)  # made with its first file: a model without maps leaves no empty folder
    positions = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    inputs = dataset.model_inputs()
    items = [inputs[int(i)] for i in positions]
    names = [str(dataset.ids[int(i)]) for i in positions]
    truth = np.asarray(dataset.labels, dtype=object)[positions].astype(str)
    if proba is None:
        proba = predictor.predict_proba(items, batch_size=batch_size)
    elif len(proba) != len(items):
        raise ValueError(f"'proba' has {len(proba)} rows for {len(items)} items")
    predicted = np.asarray(predictor.classes, dtype=object)[proba.argmax(axis=1)].astype(str)
    confidence = proba.max(axis=1)
    correct = predicted == truth
    order = np.argsort(-confidence, kind="stable")
    best = [int(i) for i in order if correct[i]][:n_each]
    worst = [int(i) for i in order if not correct[i]][:n_each]
    sections: dict[str, list[dict[str, Any]]] = {}
    for title, chosen in (("Most confident correct predictions", best), ("Worst mistakes", worst)):
        entries = []
        explained = explain(predictor, [items[i] for i in chosen], method=method) if chosen else []
        for i, ex in zip(chosen, explained, strict=True):
            ex.name = names[i]
            summary = write_explanation(predictor, ex, items[i], folder, file_stem(i, names[i]))
            summary["true_label"] = str(truth[i])
            if truth[i] in predictor.classes:  # the true class's map shows what was missed
                (true_ex,) = explain(predictor, [items[i]], target=str(truth[i]), method=method)
                if true_ex.target != ex.target:
                    true_ex.name = names[i]
                    extra = write_explanation(predictor, true_ex, items[i], folder,
                                              file_stem(i, names[i]) + "_true")
                    summary["true_png"] = extra["png"]
                    summary["true_map"] = extra["map"]
            entries.append(summary)
        sections[title] = entries
    accuracy = float(correct.mean()) if len(correct) else float("nan")
    write_json(folder / "report.json", {"n_items": int(len(items)), "accuracy": accuracy,
                                        "n_mistakes": int((~correct).sum()), "sections": sections})
    page = _html(predictor, len(items), accuracy, int((~correct).sum()), sections,
                 _calibration_html(calibration, calibration_png))
    return write_text(folder / "report.html", page)


def _calibration_html(calibration: dict[str, Any] | None, png: str | None) -> list[str]:
    """The page's calibration section: ECE and Brier score (before and after temperature
    scaling for a network) and the reliability diagram."""
    if not calibration:
        return []
    esc = html.escape
    line = (f"Expected calibration error (ECE, {calibration.get('bins', 15)} bins) "
            f"{calibration['ece']:.3f}, Brier score {calibration['brier']:.3f}")
    if "ece_uncalibrated" in calibration:
        line += (f"; before temperature scaling (T = {calibration['temperature']:.2f}) ECE "
                 f"{calibration['ece_uncalibrated']:.3f}, Brier {calibration['brier_uncalibrated']:.3f}")
    parts = ["<h2>Calibration</h2>", f"<p>{esc(line)}.</p>"]
    if png:
        parts.append(f"<figure><img src='{esc(png)}' alt='reliability diagram'><figcaption>"
                     "Reliability diagram: accuracy per confidence bin against the diagonal."
                     "</figcaption></figure>")
    return parts


def _html(predictor, n_items: int, accuracy: float, n_mistakes: int,
          sections: dict[str, list[dict[str, Any]]], preamble: list[str]) -> str:
    esc = html.escape
    name = esc(str(predictor.info.get("name") or predictor.model_name))
    parts = [
        f"<p>{n_items} items, accuracy {accuracy:.3f}, {n_mistakes} mistakes. Model mode "
        f"{esc(predictor.mode)}, modality {esc(predictor.modality)}. Each picture shows the map of "
        "the predicted class; for mistakes the map of the true class follows.</p>",
        *preamble,
    ]
    for title, entries in sections.items():
        parts.append(f"<h2>{esc(title)}</h2>")
        if not entries:
            parts.append("<p>None.</p>")
        for e in entries:
            wrong = e["predicted_label"] != e["true_label"]
            caption = (f"<b>{esc(str(e['name']))}</b><br>predicted <span class="
                       f"'{'wrong' if wrong else ''}'>{esc(e['predicted_label'])}</span> "
                       f"({e['confidence']:.2f}), true {esc(e['true_label'])}, {esc(e['method'])}")
            if e.get("channel_importance") is not None:
                names = predictor.data_config.get("channel_names") or []
                ranked = sorted(enumerate(e["channel_importance"]), key=lambda t: -t[1])[:3]
                caption += "<br>channels: " + ", ".join(
                    f"{esc(names[c] if c < len(names) else str(c))} {v:+.2f}" for c, v in ranked)
            images = f"<img src='{esc(e['png'])}' alt='map'>"
            if e.get("true_png"):
                images += f"<br><img src='{esc(e['true_png'])}' alt='map of the true class'>"
            parts.append(f"<figure>{images}<figcaption>{caption}</figcaption></figure>")
    return html_page(f"Class activation maps: {name}", parts)


def html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page of picture figures; ``title`` is already escaped."""
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{title}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:.5em;"
        "vertical-align:top;max-width:420px}img{max-width:400px;border:1px solid #ccc}"
        "figcaption{font-size:.85em}.wrong{color:#b00}</style></head><body>",
        f"<h1>{title}</h1>",
        *body,
        "</body></html>",
    ])
