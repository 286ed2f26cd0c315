"""Saved models: same predictions after save and load, no pickle, tampering caught."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import sigclass as sc
from sigclass.exceptions import ArtifactError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finetuned and a headless run on a small colour dataset."""
    from conftest import write_image  # noqa: F401 - conftest helpers are importable

    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(1)
    for name, rgb in {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}.items():
        (root / name).mkdir()
        for i in range(9):
            array = np.clip(np.array(rgb) + rng.integers(-30, 30, (24, 24, 3)), 0, 255)
            Image.fromarray(array.astype(np.uint8)).save(root / name / f"{i}.png")
    out = tmp_path_factory.mktemp("runs")
    finetune = sc.train(root, mode="finetune", model="efficientnet_lite0", image_size=48,
                        out=out / "ft", progress=False, **{"train.epochs": 1})
    headless = sc.train(root, mode="headless", model="efficientnet_lite0", image_size=48,
                        head="random_forest", backend="torch", out=out / "hl", progress=False)
    return root, finetune, headless


@pytest.mark.parametrize("which", ["finetune", "headless"])
def test_round_trip_gives_the_same_predictions(trained, which):
    root, finetune, headless = trained
    run = finetune if which == "finetune" else headless
    files = sorted(root.glob("*/*.png"))
    before = run.predictor.predict_proba(files)
    loaded = sc.load(run.dir)
    np.testing.assert_allclose(loaded.predict_proba(files), before, atol=1e-5)
    assert loaded.classes == ["blue", "green", "red"]
    assert loaded.data_config == run.predictor.data_config
    # the same image as a path, a PIL image and an array gives the same answer
    image = Image.open(files[0])
    np.testing.assert_allclose(loaded.predict_proba([files[0], image, np.asarray(image)]),
                               np.repeat(before[:1], 3, axis=0), atol=1e-5)
    assert loaded.predict(files[0]).shape == (1,)


def test_model_folder_holds_no_pickle(trained):
    _, finetune, headless = trained
    for run in (finetune, headless):
        folder = run.dir / "model"
        names = sorted(p.name for p in folder.iterdir())
        assert set(names) <= {"model.json", "weights.safetensors", "head.skops", "ood.safetensors"}
        for path in folder.iterdir():
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"
        document = json.loads((folder / "model.json").read_text())
        assert document["format"] == "sigclass-model"
        assert set(document["files"]) == set(names) - {"model.json"}


def _copy(run, tmp_path):
    import shutil

    return shutil.copytree(run.dir / "model", tmp_path / "model")


def test_tampered_weights_are_refused(trained, tmp_path):
    folder = _copy(trained[1], tmp_path)
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"weights.safetensors' does not match its recorded "
                       r"checksum: it is corrupted or was modified after saving"):
        sc.load(folder)


def test_corrupted_description_and_missing_files(trained, tmp_path):
    folder = _copy(trained[1], tmp_path)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"model.json' is corrupted"):
        sc.load(folder)
    with pytest.raises(ArtifactError, match="No sigclass model at"):
        sc.load(tmp_path / "nowhere")


def test_a_head_with_untrusted_types_is_not_loaded(trained, tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    from sigclass._utils import sha256_file

    folder = _copy(trained[2], tmp_path)
    sio.dump(FunctionTransformer(func=eval), folder / "head.skops")  # a forged head
    document = json.loads((folder / "model.json").read_text())
    document["files"]["head.skops"] = sha256_file(folder / "head.skops")  # checksum forged too
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"holds types sigclass does not trust: \['builtins.eval'\]"):
        sc.load(folder)
