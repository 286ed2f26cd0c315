"""Class activation maps: shapes, CAM == Grad-CAM on GAP networks, headless CAM, clear refusals,
and a quality check on generated data whose right answer is known.

The quality data: the class is decided only by a small pattern (stripes in an image, a waveform
in one channel of a signal) at a random position that the generator records. A trained network's
map must peak inside that box or window, and blanking the map's top region must hurt the
prediction more than blanking a random region of the same size.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import sigclass as sc
from sigclass.exceptions import ExplainError
from sigclass.explain import Explanation, explain, render_overlay
from sigclass.predictor import Predictor

IMAGE = 40  # px
BOX = 10  # pattern side, px
BACKGROUND = 90  # brightest background value (uniform noise 0..BACKGROUND)
LENGTH = 128  # timepoints
WINDOW = 16  # waveform length


# ------------------------------------------------------------------------------- generators

def _pattern(kind: str) -> np.ndarray:
    """A BOX x BOX mask of 2-px stripes, horizontal ("rows") or vertical ("cols")."""
    stripes = (np.arange(BOX) // 2) % 2 == 0
    mask = np.repeat(stripes[:, None], BOX, axis=1)
    return mask if kind == "rows" else mask.T


def make_image(kind: str, rng) -> tuple[np.ndarray, tuple[int, int]]:
    """A noisy RGB image with the pattern at a random place; returns (image, (top, left))."""
    image = rng.integers(0, BACKGROUND, (IMAGE, IMAGE, 3)).astype(np.uint8)
    top, left = (int(v) for v in rng.integers(0, IMAGE - BOX + 1, 2))
    patch = image[top:top + BOX, left:left + BOX]
    patch[_pattern(kind)] = 255
    return image, (top, left)


def write_image_set(root, n_per_class: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for kind in ("rows", "cols"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(make_image(kind, rng)[0]).save(root / kind / f"{kind}_{i}.png")
    return root


def make_signal(kind: str, rng) -> tuple[np.ndarray, int]:
    """Two noisy channels; channel 0 carries a one-period sine burst ("up") or its negative."""
    case = rng.normal(0.0, 0.5, (2, LENGTH)).astype(np.float32)
    start = int(rng.integers(0, LENGTH - WINDOW + 1))
    phase = np.linspace(0, 2 * np.pi, WINDOW)
    wave = 3.0 * np.sin(phase) * np.hanning(WINDOW)  # a smooth burst, ~0 at both window ends
    case[0, start:start + WINDOW] += wave if kind == "up" else -wave
    return case, start


def make_signal_set(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    cases, labels, starts = [], [], []
    for kind in ("up", "down"):
        for _ in range(n_per_class):
            case, start = make_signal(kind, rng)
            cases.append(case)
            labels.append(kind)
            starts.append(start)
    return np.stack(cases), np.asarray(labels, dtype=object), np.asarray(starts)


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """simple_cnn_gap trained from scratch on generated pattern images (40 px)."""
    root = write_image_set(tmp_path_factory.mktemp("patterns") / "data", 80, seed=0)
    return sc.train(root, mode="scratch", model="simple_cnn_gap", image_size=IMAGE, seed=0,
                    out=tmp_path_factory.mktemp("runs") / "img", progress=False,
                    **{"train.epochs": 12, "train.lr": 5e-3, "train.batch_size": 16,
                       "train.patience": 0, "train.label_smoothing": 0.0, "augment.enabled": False,
                       "tracking.enabled": False})


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory):
    """A small FCN trained from scratch on generated two-channel waveforms."""
    from sigclass.data.signals import SignalDataset

    X, labels, _ = make_signal_set(60, seed=1)
    data = SignalDataset(X=X, label_values=labels, classes=["down", "up"],
                         case_ids=[f"case{i}" for i in range(len(X))], channel_names=["carrier", "noise"],
                         source="generated")
    return sc.train(data, mode="scratch", model="fcn", seed=0, progress=False,
                    out=tmp_path_factory.mktemp("runs") / "sig",
                    **{"model_args": {"width": 16}, "train.epochs": 15, "train.lr": 5e-3,
                       "train.batch_size": 16, "train.patience": 0, "train.label_smoothing": 0.0,
                       "tracking.enabled": False})


@pytest.fixture(scope="module")
def image_tests():
    rng = np.random.default_rng(123)
    kinds = ["rows", "cols"] * 20
    made = [make_image(kind, rng) for kind in kinds]
    return kinds, [m[0] for m in made], [m[1] for m in made]


def _blank_box(image: np.ndarray, top: int, left: int) -> np.ndarray:
    out = image.copy()
    out[max(0, top):top + BOX, max(0, left):left + BOX] = BACKGROUND // 2
    return out


# ------------------------------------------------------------------------------- quality

def test_image_cam_peaks_inside_the_pattern(image_run, image_tests):
    kinds, images, boxes = image_tests
    predictor = image_run.predictor
    assert image_run.metrics["accuracy"] >= 0.9
    explanations = explain(predictor, images, target=kinds)
    hits = 0
    for ex, (top, left) in zip(explanations, boxes, strict=True):
        assert ex.map.shape == (IMAGE, IMAGE) and ex.method == "cam"
        y, x = np.unravel_index(np.argmax(ex.map), ex.map.shape)
        hits += top <= y < top + BOX and left <= x < left + BOX
    assert hits / len(images) >= 0.9, f"CAM peak inside the pattern for {hits}/{len(images)}"


def test_image_blanking_top_cam_region_hurts_more_than_random(image_run, image_tests):
    kinds, images, _ = image_tests
    predictor = image_run.predictor
    rng = np.random.default_rng(7)
    explanations = explain(predictor, images)
    top_blanked, random_blanked = [], []
    for ex, image in zip(explanations, images, strict=True):
        y, x = np.unravel_index(np.argmax(ex.map), ex.map.shape)
        top_blanked.append(_blank_box(image, y - BOX // 2, x - BOX // 2))
        ry, rx = rng.integers(0, IMAGE - BOX + 1, 2)
        random_blanked.append(_blank_box(image, ry, rx))
    targets = [ex.target for ex in explanations]
    rows = np.arange(len(images))
    base = np.array([ex.confidence for ex in explanations])
    drop_top = base - predictor.predict_proba(top_blanked)[rows, targets]
    drop_random = base - predictor.predict_proba(random_blanked)[rows, targets]
    assert drop_top.mean() > drop_random.mean() + 0.03, (drop_top.mean(), drop_random.mean())
    assert (drop_top > drop_random).mean() >= 0.8, (drop_top, drop_random)


def test_signal_cam_peaks_inside_the_window_and_names_the_channel(signal_run):
    predictor = signal_run.predictor
    assert signal_run.metrics["accuracy"] >= 0.9
    X, labels, starts = make_signal_set(20, seed=99)
    explanations = explain(predictor, X, target=list(labels))
    peaks = np.array([np.argmax(ex.map) for ex in explanations])
    inside = (peaks >= starts) & (peaks < starts + WINDOW)
    assert inside.mean() >= 0.9, f"CAM peak inside the window for {inside.sum()}/{len(X)}"
    assert all(ex.map.shape == (LENGTH,) and ex.method == "cam" for ex in explanations)
    importance = np.stack([ex.channel_importance for ex in explanations])
    assert importance.shape == (len(X), 2)
    assert (importance[:, 0] > importance[:, 1]).mean() >= 0.9  # the carrier channel matters


def test_signal_blanking_top_cam_window_hurts_more_than_random(signal_run):
    predictor = signal_run.predictor
    X, _, _ = make_signal_set(20, seed=98)
    rng = np.random.default_rng(5)
    explanations = explain(predictor, X, channel_importance=False)
    mean = np.asarray(predictor.data_config["mean"], dtype=np.float32)[:, None]
    top_blanked, random_blanked = X.copy(), X.copy()
    for i, ex in enumerate(explanations):
        peak = int(np.argmax(ex.map))
        begin = int(np.clip(peak - WINDOW // 2, 0, LENGTH - WINDOW))
        top_blanked[i, :, begin:begin + WINDOW] = mean
        begin = int(rng.integers(0, LENGTH - WINDOW + 1))
        random_blanked[i, :, begin:begin + WINDOW] = mean
    rows = np.arange(len(X))
    targets = [ex.target for ex in explanations]
    base = np.array([ex.confidence for ex in explanations])
    drop_top = base - predictor.predict_proba(top_blanked)[rows, targets]
    drop_random = base - predictor.predict_proba(random_blanked)[rows, targets]
    assert drop_top.mean() > drop_random.mean() + 0.03, (drop_top.mean(), drop_random.mean())
    assert (drop_top > drop_random).mean() >= 0.8, (drop_top, drop_random)


# ------------------------------------------------------------------------------- contract

def _image_predictor(name: str, n_classes: int = 3, **config):
    from sigclass.data.image_preprocess import image_data_config

    kwargs = {"input_size": 32} if name.startswith("simple") else {}
    network = sc.create_model(name, n_classes=n_classes, **kwargs).eval()
    classes = [f"c{i}" for i in range(n_classes)]
    return Predictor(network, classes, image_data_config(network, **config), device="cpu")


def _images(n=3, shape=(50, 70, 3)):
    return [np.random.default_rng(i).integers(0, 255, shape, dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("name", ["simple_cnn_gap", "vgg_like_2"])
def test_cam_equals_gradcam_on_gap_networks(name):
    predictor = _image_predictor(name)
    images = _images()
    cam = explain(predictor, images)
    grad = explain(predictor, images, method="gradcam")
    for a, b in zip(cam, grad, strict=True):
        assert a.method == "cam" and b.method == "gradcam"
        assert a.target == b.target
        # Grad-CAM's weights on a GAP + linear head are the class weights / (H * W).
        ratio = a.raw.ravel() @ b.raw.ravel() / (np.linalg.norm(a.raw) * np.linalg.norm(b.raw))
        assert ratio == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(a.map, b.map, atol=1e-5)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_maps_have_the_input_shape_and_probabilities_match_predict():
    predictor = _image_predictor("simple_cnn_gap")
    images = _images(2, (50, 70, 3)) + _images(1, (64, 31, 3))
    explanations = explain(predictor, images)
    assert [ex.map.shape for ex in explanations] == [(50, 70), (50, 70), (64, 31)]
    for ex in explanations:
        assert ex.map.dtype == np.float32 and ex.map.min() >= 0.0 and ex.map.max() <= 1.0
        assert ex.label == predictor.classes[ex.target] and ex.target == ex.predicted
    np.testing.assert_allclose(np.stack([ex.probabilities for ex in explanations]),
                               predictor.predict_proba(images), atol=1e-5)


def test_center_crop_maps_are_zero_outside_the_crop():
    predictor = _image_predictor("simple_cnn_gap", resize="center_crop", crop_pct=0.5)
    (ex,) = explain(predictor, _images(1, (40, 80, 3)))
    assert ex.map.shape == (40, 80)
    # Shorter side 40 -> 64 px, crop 32 px of 128: the model saw columns 20..60, rows 10..30.
    assert ex.map[:, :19].max() == 0 and ex.map[:, 61:].max() == 0
    assert ex.map[:9].max() == 0 and ex.map[31:].max() == 0
    assert ex.map[10:30, 20:60].max() > 0


def test_flatten_head_falls_back_to_gradcam_and_cam_is_refused():
    predictor = _image_predictor("simple_cnn")
    images = _images(2, (32, 32, 3))
    explanations = explain(predictor, images)
    assert {ex.method for ex in explanations} == {"gradcam"}
    assert explanations[0].map.shape == (32, 32)
    with pytest.raises(ExplainError, match="method='gradcam'"):
        explain(predictor, images, method="cam")


def test_targets_by_name_index_and_bad_values():
    predictor = _image_predictor("simple_cnn_gap")
    images = _images(2)
    assert [ex.target for ex in explain(predictor, images, target="c2")] == [2, 2]
    assert [ex.label for ex in explain(predictor, images, target=[0, "c1"])] == ["c0", "c1"]
    with pytest.raises(ExplainError, match="Unknown target class 'zebra'. The model's classes are: c0, c1, c2."):
        explain(predictor, images, target="zebra")
    with pytest.raises(ExplainError, match="out of range"):
        explain(predictor, images, target=7)
    with pytest.raises(ExplainError, match="one class per input"):
        explain(predictor, images, target=[0])


def test_signal_maps_follow_the_original_length():
    network = sc.create_model("simple_cnn1d", n_classes=2, in_chans=3).eval()
    config = {"n_channels": 3, "n_timepoints": 60, "mean": [0.0] * 3, "std": [1.0] * 3,
              "channel_names": ["x", "y", "z"], "length_policy": "pad"}
    predictor = Predictor(network, ["a", "b"], config, modality="signal", device="cpu")
    rng = np.random.default_rng(0)
    short, long_ = rng.normal(size=(3, 45)), rng.normal(size=(3, 60))
    explanations = explain(predictor, [short, long_])
    assert [ex.map.shape for ex in explanations] == [(45,), (60,)]
    assert explanations[0].channel_importance.shape == (3,)
    cam, grad = explain(predictor, [long_]), explain(predictor, [long_], method="gradcam")
    np.testing.assert_allclose(cam[0].map, grad[0].map, atol=1e-5)


def test_headless_linear_head_folds_the_scaler_into_the_weights():
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sigclass.data.image_preprocess import image_data_config

    network = sc.create_model("simple_cnn_gap", n_classes=0, input_size=32).eval()
    config = image_data_config(network)
    featurizer = Predictor(network, ["f"], config, device="cpu")
    images = _images(12, (32, 32, 3))
    labels = np.array(["a", "b", "c"] * 4)
    features = featurizer.transform(images)
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features, labels)
    predictor = Predictor(network, ["a", "b", "c"], config, mode="headless", head=head, device="cpu")
    explanations = explain(predictor, images[:4])
    assert {ex.method for ex in explanations} == {"head_cam"}
    np.testing.assert_allclose(np.stack([ex.probabilities for ex in explanations]),
                               head.predict_proba(features[:4]), atol=1e-5)
    # The same weights as a torch linear layer (coef / scale) give the same maps.
    linear = sc.create_model("simple_cnn_gap", n_classes=3, input_size=32).eval()
    linear.load_state_dict(network.state_dict(), strict=False)
    scaler, clf = head[0], head[-1]
    with torch.no_grad():
        linear.fc.weight.copy_(torch.as_tensor(clf.coef_ / scaler.scale_, dtype=torch.float32))
    reference = explain(Predictor(linear, ["a", "b", "c"], config, device="cpu"), images[:4],
                        target=[ex.target for ex in explanations])
    for ours, ref in zip(explanations, reference, strict=True):
        np.testing.assert_allclose(ours.map, ref.map, atol=1e-4)


@pytest.mark.parametrize("which", ["image", "signal"])
def test_runs_keep_the_maps_of_their_best_and_worst_test_predictions(which, image_run, signal_run):
    run = image_run if which == "image" else signal_run
    assert json.loads((run.dir / "run.json").read_text())["cam_examples"] == "cam/report.html"
    report = json.loads((run.dir / "cam" / "report.json").read_text())
    n_test = len(json.loads((run.dir / "split.json").read_text())["test"])
    assert report["n_items"] == n_test == run.metrics["n"]
    assert report["accuracy"] == pytest.approx(run.metrics["accuracy"])
    best = report["sections"]["Most confident correct predictions"]
    worst = report["sections"]["Worst mistakes"]
    assert 0 < len(best) <= 4 and len(worst) <= 4
    assert all(e["predicted_label"] == e["true_label"] for e in best)
    assert all(e["predicted_label"] != e["true_label"] for e in worst)
    confidences = [e["confidence"] for e in best]
    assert confidences == sorted(confidences, reverse=True)
    for entry in best + worst:
        assert (run.dir / "cam" / entry["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        values = np.load(run.dir / "cam" / entry["map"])
        assert values.ndim == (2 if which == "image" else 1) and 0 <= values.min() <= values.max() <= 1
    # the page opens with the test part's calibration and its reliability diagram
    page = (run.dir / "cam" / "report.html").read_text()
    ece = run.metrics["calibration"]["ece"]
    assert f"(ECE, 15 bins) {ece:.3f}" in page
    assert "src='../calibration.png'" in page and (run.dir / "calibration.png").is_file()


def test_no_map_for_minirocket_or_a_tree_head():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    config = {"n_channels": 1, "n_timepoints": 50, "mean": [0.0], "std": [1.0]}
    rocket = sc.create_model("minirocket", n_classes=0, in_chans=1, n_timepoints=50)
    predictor = Predictor(rocket, ["a", "b"], config, modality="signal", mode="headless",
                          head=object(), device="cpu")
    with pytest.raises(ExplainError, match="'minirocket' has no feature map"):
        explain(predictor, np.zeros((2, 1, 50)))
    network = sc.create_model("fcn", n_classes=0, in_chans=1, width=8).eval()
    X = np.random.default_rng(0).normal(size=(10, 1, 50))
    features = Predictor(network, ["f"], config, modality="signal", device="cpu").transform(X)
    forest = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0))
    forest.fit(features, np.array(["a", "b"] * 5))
    predictor = Predictor(network, ["a", "b"], config, modality="signal", mode="headless",
                          head=forest, device="cpu")
    with pytest.raises(ExplainError, match=r"\(RandomForestClassifier\) is not linear.*--head logreg"):
        explain(predictor, X)


def test_overlays_are_pngs_and_maps_save_as_npy(tmp_path):
    from PIL import Image

    predictor = _image_predictor("simple_cnn_gap")
    image = _images(1)[0]
    (ex,) = explain(predictor, [image])
    png = render_overlay(ex, image, classes=predictor.classes)
    picture = Image.open(__import__("io").BytesIO(png))
    assert picture.format == "PNG" and picture.width == 70 and picture.height > 50
    path = ex.save_map(tmp_path / "map.npy")
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), ex.map)
    with pytest.raises(ValueError, match="pass the input that was explained"):
        render_overlay(ex, _images(1, (20, 20, 3))[0])
    signal = Explanation(map=np.linspace(0, 1, 30, dtype=np.float32), target=0, label="a",
                         probabilities=np.array([0.7, 0.3]), method="cam",
                         channel_importance=np.array([0.4, -0.1]))
    png = render_overlay(signal, np.random.default_rng(0).normal(size=(2, 30)))
    assert Image.open(__import__("io").BytesIO(png)).format == "PNG"


# ------------------------------------------------------------------------------- CLI and report

def test_cli_explain_files_and_report(image_run, tmp_path, capsys):
    import re

    from PIL import Image

    from sigclass.cli import main

    folder = write_image_set(tmp_path / "new", 2, seed=5)
    (folder / "rows" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "maps"
    code = main(["explain", str(image_run.dir), str(folder), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 1  # one unreadable file, named; the others written
    assert "broken.png" in printed.err and "4 explanations written" in printed.out
    summaries = json.loads((out / "explanations.json").read_text())
    good = [s for s in summaries if "error" not in s]
    assert len(good) == 4 and all(s["method"] == "cam" for s in good)
    for entry in good:
        assert np.load(out / entry["map"], allow_pickle=False).shape == (IMAGE, IMAGE)
        assert Image.open(out / entry["png"]).format == "PNG"
    report = tmp_path / "report"
    # the broken file stops loading labeled data, with its name
    assert main(["explain", str(image_run.dir), "--report", str(folder), "--out", str(report)]) == 2
    assert "broken.png" in capsys.readouterr().err
    (folder / "rows" / "broken.png").unlink()
    assert main(["explain", str(image_run.dir), "--report", str(folder), "--out", str(report),
                 "--n", "2"]) == 0
    page = (report / "report.html").read_text()
    assert "Most confident correct predictions" in page and "Worst mistakes" in page
    sources = re.findall(r"src='([^']+)'", page)
    assert len(sources) >= 2 and all((report / src).is_file() for src in sources)


def test_signal_report_shows_channel_importance(signal_run, tmp_path):
    from sigclass.data.signals import SignalDataset
    from sigclass.explain.report import explain_report

    X, labels, _ = make_signal_set(4, seed=11)
    data = SignalDataset(X=X, label_values=labels, classes=["down", "up"],
                         case_ids=[f"t{i}" for i in range(len(X))], channel_names=["carrier", "noise"])
    page = explain_report(signal_run.predictor, data, out=tmp_path / "rep", n_each=2)
    text = page.read_text()
    assert "channels: carrier" in text and text.count("<img") >= 2


# ------------------------------------------------------------------------------- Layer-CAM

def test_image_layercam_peaks_inside_the_pattern(image_run, image_tests):
    kinds, images, boxes = image_tests
    explanations = explain(image_run.predictor, images, target=kinds, method="layercam")
    hits = 0
    for ex, (top, left) in zip(explanations, boxes, strict=True):
        assert ex.map.shape == (IMAGE, IMAGE) and ex.method == "layercam"
        assert ex.raw.shape == (IMAGE, IMAGE)  # combined at the input resolution, not 10x10
        y, x = np.unravel_index(np.argmax(ex.map), ex.map.shape)
        hits += top <= y < top + BOX and left <= x < left + BOX
    assert hits / len(images) >= 0.9, f"Layer-CAM peak inside the pattern for {hits}/{len(images)}"


def test_signal_layercam_peaks_inside_the_window(signal_run):
    X, labels, starts = make_signal_set(20, seed=99)
    explanations = explain(signal_run.predictor, X, target=list(labels), method="layercam",
                           channel_importance=False)
    assert all(ex.map.shape == (LENGTH,) and ex.method == "layercam" for ex in explanations)
    peaks = np.array([np.argmax(ex.map) for ex in explanations])
    inside = (peaks >= starts) & (peaks < starts + WINDOW)
    assert inside.mean() >= 0.9, f"Layer-CAM peak inside the window for {inside.sum()}/{len(X)}"


def test_layercam_matches_pytorch_grad_cam():
    from pytorch_grad_cam import LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    predictor = _image_predictor("simple_cnn_gap")
    images = _images(2, (32, 32, 3))
    ours = explain(predictor, images, method="layercam", layers=["features.2", "features.6"])
    network = predictor.network
    with LayerCAM(model=network, target_layers=[network.features[2], network.features[6]]) as cam:
        theirs = cam(input_tensor=predictor.preprocessor(images),
                     targets=[ClassifierOutputTarget(ex.target) for ex in ours])
    for ex, ref in zip(ours, theirs, strict=True):
        assert np.corrcoef(ex.map.ravel(), ref.ravel())[0, 1] > 0.99


def test_layercam_layers_option():
    predictor = _image_predictor("simple_cnn_gap")
    (one,) = explain(predictor, _images(1), method="layercam", layers=1)
    (full,) = explain(predictor, _images(1), method="layercam", layers=3)
    assert one.map.shape == full.map.shape == (50, 70) and not np.allclose(one.map, full.map)
    with pytest.raises(ExplainError, match="Unknown layers \\['nope'\\].*features.2, features.6"):
        explain(predictor, _images(1), method="layercam", layers=["nope"])
    with pytest.raises(ExplainError, match="belongs to method='layercam'"):
        explain(predictor, _images(1), layers=2)


def test_headless_layercam_uses_the_linear_head():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sigclass.data.image_preprocess import image_data_config

    network = sc.create_model("simple_cnn_gap", n_classes=0, input_size=32).eval()
    config = image_data_config(network)
    images = _images(12, (32, 32, 3))
    features = network(Predictor(network, ["a"], config).preprocessor(images)).detach().numpy()
    labels = np.array(["a", "b", "c"] * 4)
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    predictor = Predictor(network, ["a", "b", "c"], config, mode="headless", head=head, device="cpu")
    explanations = explain(predictor, images[:3], method="layercam")
    assert all(ex.method == "layercam" and ex.map.shape == (32, 32) for ex in explanations)
    np.testing.assert_allclose(np.stack([ex.probabilities for ex in explanations]),
                               head.predict_proba(features[:3]), atol=1e-5)


# ------------------------------------------------------------------------------- letterbox

def test_letterbox_keeps_the_whole_image_and_its_map_fits_it():
    from PIL import Image

    from sigclass.data.image_preprocess import build_image_transform
    from sigclass.data.image_resize import letterbox_padding

    assert letterbox_padding(40, 80) == (0, 20, 0, 20)
    assert letterbox_padding(81, 40) == (20, 0, 21, 0)
    predictor = _image_predictor("simple_cnn_gap", resize="letterbox")
    white = np.full((20, 40, 3), 255, np.uint8)
    x = build_image_transform(predictor.data_config)(Image.fromarray(white))
    assert tuple(x.shape) == (3, 32, 32)
    rows = x[0, :, 16].numpy()  # one column: padding (the mean: 0 after normalization), image, padding
    assert np.allclose(rows[:7], 0, atol=0.01) and np.allclose(rows[-7:], 0, atol=0.01)
    assert np.allclose(rows[9:23], rows.max()) and rows.max() > 0.9
    assert np.allclose(x[0, 9:23, :].numpy(), rows.max())  # every column of the image is kept
    (ex,) = explain(predictor, [white])
    assert ex.map.shape == (20, 40)
    # The map over the padded square (40 x 40), with the padding rows cut off: nothing else cut.
    from sigclass.data.image_preprocess import resize_map as _resize
    from sigclass.explain import normalize_map

    np.testing.assert_allclose(ex.map, normalize_map(_resize(ex.raw, (40, 40))[10:30]), atol=1e-6)


def test_default_resize_switches_for_images_far_from_square():
    from PIL import Image

    from sigclass.data.image_preprocess import FAR_RESIZE, build_image_transform, resize_for

    network = sc.create_model("efficientnet_lite0", n_classes=2).eval()
    default = image_data_config_for(network)
    assert default["resize"] == "center_crop" and default["far_resize"] == FAR_RESIZE
    assert resize_for(default, 100, 130) == "center_crop" and resize_for(default, 100, 160) == FAR_RESIZE
    assert image_data_config_for(network, resize="center_crop")["far_resize"] is None
    far = dict(default, resize=FAR_RESIZE, far_resize=None)
    near = dict(default, far_resize=None)
    for shape, expected in (((100, 160, 3), far), ((100, 130, 3), near), ((160, 100, 3), far)):
        image = Image.fromarray(_images(1, shape)[0])
        np.testing.assert_array_equal(build_image_transform(default)(image).numpy(),
                                      build_image_transform(expected)(image).numpy())
    predictor = Predictor(network, ["a", "b"], default, device="cpu")
    wide, square = explain(predictor, [_images(1, (60, 100, 3))[0], _images(1, (60, 60, 3))[0]])
    assert wide.map.shape == (60, 100) and square.map.shape == (60, 60)
    assert square.map[:, :2].max() == 0  # centre-cropped: the border was not seen


def image_data_config_for(network, **kwargs):
    from sigclass.data.image_preprocess import image_data_config

    return image_data_config(network, image_size=64, **kwargs)
