"""Test-time views: the dihedral group, averaging, the featurizer's choice, and maps that follow
the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sigclass as sc
from sigclass.data.image_preprocess import image_data_config
from sigclass.data.views import TTA_GROUPS, apply_view, invert_view, resolve_tta, views_of
from sigclass.exceptions import ConfigError
from sigclass.explain import explain
from sigclass.inference import infer
from sigclass.predictor import Predictor
from sigclass.training.image_featurizer import Featurizer
from sigclass.training.tta import AUTO_TTA_GROUPS, pick_tta_group


@pytest.mark.parametrize("view", TTA_GROUPS["dihedral"])
def test_each_view_is_undone_by_its_inverse_on_numpy_and_torch(view):
    array = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    np.testing.assert_array_equal(invert_view(apply_view(array, view), view), array)
    tensor = torch.from_numpy(array)
    seen = apply_view(tensor, view)
    np.testing.assert_array_equal(seen.numpy(), apply_view(array, view))
    np.testing.assert_array_equal(invert_view(seen, view).numpy(), array)


def test_the_dihedral_views_are_eight_different_images_and_groups_nest():
    image = np.arange(16).reshape(4, 4)
    seen = {apply_view(image, v).tobytes() for v in TTA_GROUPS["dihedral"]}
    assert len(seen) == 8
    for small, big in (("none", "hflip"), ("hflip", "flips"), ("flips", "dihedral")):
        assert set(TTA_GROUPS[small]) < set(TTA_GROUPS[big])


def test_tta_settings_and_old_model_folders():
    assert resolve_tta(True) == "hflip" and resolve_tta(False) == "none"
    with pytest.raises(ConfigError, match="'tta' option must be one of 'none', 'hflip'"):
        resolve_tta("rotate")
    assert views_of({"tta_hflip": True}) == ("id", "h")  # written before the groups existed
    assert views_of({"tta": "flips"}) == ("id", "h", "v", "hv")
    assert views_of({}) == ("id",)


def test_infer_averages_the_outputs_of_the_views():
    batch = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)

    def engine(b):  # the top-left pixel: a different value for each flip
        return b[:, 0, 0, :1].numpy().copy()

    flips = infer(engine, batch, TTA_GROUPS["flips"])
    corners = batch[:, 0, [0, 0, 2, 2], [0, 2, 0, 2]].numpy()
    np.testing.assert_allclose(flips[:, 0], corners.mean(axis=1))
    np.testing.assert_allclose(infer(engine, batch, True)[:, 0], corners[:, :2].mean(axis=1))


def test_featurizer_averages_views_and_caches_each_view(colour_folder, tmp_path):
    files = sorted(str(p) for p in colour_folder.glob("*/*.png"))[:6]
    flips = Featurizer("efficientnet_lite0", image_size=64, backend="torch", cache_dir=tmp_path,
                       tta="flips").fit()
    per_view = flips.view_features(files, TTA_GROUPS["flips"])
    np.testing.assert_allclose(flips.transform(files), per_view.mean(axis=0), rtol=1e-6)
    assert not np.allclose(per_view[0], per_view[2])  # a vertical flip is another input
    hflip = Featurizer("efficientnet_lite0", image_size=64, backend="torch", cache_dir=tmp_path,
                       tta="hflip").fit()
    assert hflip.cache_key_ == flips.cache_key_  # the views are cached, not the groups
    np.testing.assert_allclose(hflip.transform(files), per_view[:2].mean(axis=0), rtol=1e-6)
    assert hflip.engine_ is None  # every view came from the cache


def test_auto_needs_labels_and_chooses_by_its_scores(colour_folder, tmp_path):
    data = sc.ImageDataset.from_folder(colour_folder)
    files = [str(p) for p in data.paths]
    with pytest.raises(ConfigError, match=r"call fit\(X, y\)"):
        Featurizer("efficientnet_lite0", image_size=64, tta="auto", cache_dir=tmp_path).fit(files)
    auto = Featurizer("efficientnet_lite0", image_size=64, backend="torch", tta="auto",
                      cache_dir=tmp_path).fit(files, data.labels)
    assert list(auto.tta_scores_) == list(AUTO_TTA_GROUPS)
    assert all(0.9 <= score <= 1.0 for score in auto.tta_scores_.values())  # colours: easy
    assert auto.tta_ == pick_tta_group(auto.tta_scores_) == auto.data_config_["tta"]
    np.testing.assert_allclose(auto.transform(files[:3]),
                               auto.view_features(files[:3], TTA_GROUPS[auto.tta_]).mean(axis=0))


def test_more_views_must_score_higher_by_a_margin():
    assert pick_tta_group({"none": 0.80, "hflip": 0.803, "flips": 0.84}) == "flips"
    assert pick_tta_group({"none": 0.80, "hflip": 0.803, "flips": 0.804}) == "none"
    assert pick_tta_group({"none": 0.80, "hflip": 0.82, "flips": 0.823}) == "hflip"


def test_maps_under_flip_averaging_follow_a_mirrored_image():
    network = sc.create_model("simple_cnn_gap", n_classes=3, input_size=32).eval()
    predictor = Predictor(network, ["a", "b", "c"], image_data_config(network, tta="flips"),
                          device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    for method in ("cam", "gradcam", "layercam"):
        (ex,), (ex_m,) = explain(predictor, [image], method=method), explain(predictor, [mirrored], method=method)
        np.testing.assert_allclose(ex_m.map, ex.map[:, ::-1], atol=1e-4)
        np.testing.assert_allclose(ex_m.probabilities, ex.probabilities, atol=1e-5)
    np.testing.assert_allclose(predictor.predict_proba([image]), predictor.predict_proba([mirrored]),
                               atol=1e-5)


def test_cli_tta_flag_takes_a_group():
    from sigclass.cli import build_parser

    parser = build_parser()
    assert vars(parser.parse_args(["train", "d", "--tta"]))["cfg:tta"] == "hflip"
    assert vars(parser.parse_args(["train", "d", "--tta", "flips"]))["cfg:tta"] == "flips"
