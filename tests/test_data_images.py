"""Image datasets: formats, bad data reported all at once with exact messages, manifests."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import write_image
from sigclass.data.image_preprocess import load_image
from sigclass.data.images import ImageDataset
from sigclass.exceptions import ConfigError, DataError


def reasons(error: DataError) -> dict[str, str]:
    return {p.path: p.reason for p in error.problems}


@pytest.mark.parametrize(
    ("name", "mode", "fmt"),
    [
        ("a.jpg", "RGB", None), ("b.png", "RGBA", None), ("c.bmp", "RGB", None),
        ("d.tif", "L", None), ("e.webp", "RGB", None), ("f.png", "P", None),
        ("g.png", "I;16", None), ("h.tiff", "RGB", "TIFF"), ("i.png", "LA", None),
    ],
)
def test_every_supported_format_and_mode_loads(tmp_path, name, mode, fmt):
    path = write_image(tmp_path / name, size=(37, 23), mode=mode, fmt=fmt)
    rgb = load_image(path, channels=3)
    gray = load_image(path, channels=1)
    assert rgb.mode == "RGB" and rgb.size == (37, 23)
    assert gray.mode == "L" and gray.size == (37, 23)


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:, :4] = 257 * 100
    Image.fromarray(array).save(tmp_path / "x.png")
    values = np.asarray(load_image(tmp_path / "x.png", channels=1))
    assert values[0, 0] == 100 and values[0, 7] == 255


def test_transparent_pixels_become_white(tmp_path):
    from PIL import Image

    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png")).min() == 255


def test_arrays_of_any_kind_load():
    assert load_image(np.zeros((5, 6), dtype=np.uint8)).size == (6, 5)
    assert load_image(np.ones((5, 6, 3), dtype=np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((5, 6, 1), 65535, dtype=np.uint16), channels=1).getpixel((0, 0)) == 255
    with pytest.raises(DataError, match=r"image array contains NaN or infinite values"):
        load_image(np.full((4, 4), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match=r"got \(4, 4, 2\)"):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))


def test_folder_dataset(image_folder):
    data = ImageDataset.from_folder(image_folder)
    assert data.classes == ["cat", "dog", "fox"]
    assert len(data) == 18
    assert data.ids[0] == "cat/cat_0.png"
    assert list(data.y[:6]) == [0] * 6
    assert data.report()["class_counts"] == {"cat": 6, "dog": 6, "fox": 6}


def test_fridge_objects_read_as_four_classes(fridge):
    data = ImageDataset.from_folder(fridge)
    assert data.classes == ["can", "carton", "milk_bottle", "water_bottle"]
    assert len(data) == 134
    assert [p.path for p in data.ignored] == ["README.md"]


def make_bad_folder(root):
    """A folder with one of each kind of bad file, next to good ones."""
    for c in ("cat", "dog"):
        for i in range(4):
            write_image(root / c / f"{c}_{i}.png", seed=10 * ord(c[0]) + i)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "fake.jpg").write_bytes(b"this is text, not a JPEG")
    good = (root / "dog" / "dog_0.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "empty.png").write_bytes(b"")
    shutil.copy(root / "cat" / "cat_0.png", root / "cat" / "cat_copy.png")
    shutil.copy(root / "cat" / "cat_1.png", root / "dog" / "looks_like_cat.png")
    (root / "bird").mkdir()
    (root / ".DS_Store").write_text("x")


def test_bad_files_are_all_reported_at_once(tmp_path):
    make_bad_folder(tmp_path)
    with pytest.raises(DataError) as caught:
        ImageDataset.from_folder(tmp_path)
    found = reasons(caught.value)
    assert found["cat/notes.txt"] == (
        "not an image file (extension '.txt'; accepted: jpg, png, bmp, tiff, webp)")
    assert found["cat/fake.jpg"] == (
        "not an image: the content cannot be decoded as JPEG, PNG, BMP, TIFF or WebP")
    assert found["dog/cut.png"].startswith("truncated or corrupted image:")
    assert found["dog/empty.png"] == "empty file (0 bytes)"
    assert found["cat/cat_copy.png"] == (
        "exact duplicate of cat/cat_0.png in class 'cat': copies leak across the split; remove one")
    assert found["cat/cat_1.png"] == (
        "exact duplicate across classes: same content as dog/looks_like_cat.png ('dog'); "
        "contradicting labels, keep one copy in the right class")
    assert found["dog/looks_like_cat.png"].startswith("exact duplicate across classes")
    assert found["bird/"] == "empty class folder: it holds no files; add images or remove it"
    assert len(caught.value.problems) == 8
    message = str(caught.value)
    assert message.startswith("8 problem(s) found in the data:")
    assert "--on-bad-file skip" in message


def test_skip_leaves_bad_files_out_and_lists_them(tmp_path):
    make_bad_folder(tmp_path)
    with pytest.warns(UserWarning, match="Skipped 8 bad file"):
        data = ImageDataset.from_folder(tmp_path, on_bad_file="skip")
    assert data.classes == ["cat", "dog"]
    kept = set(data.ids)
    assert "cat/cat_0.png" in kept and "cat/cat_copy.png" not in kept
    assert "cat/cat_1.png" not in kept and "dog/looks_like_cat.png" not in kept
    report = data.report()
    assert {s["path"] for s in report["skipped"]} == {
        "cat/notes.txt", "cat/fake.jpg", "dog/cut.png", "dog/empty.png", "cat/cat_copy.png",
        "cat/cat_1.png", "dog/looks_like_cat.png", "bird/"}
    assert report["ignored"] == [{"path": ".DS_Store", "reason": "file outside any class folder"}]


def test_class_too_small_for_the_split(image_folder):
    for extra in list((image_folder / "fox").iterdir())[2:]:
        extra.unlink()
    with pytest.raises(DataError) as caught:
        ImageDataset.from_folder(image_folder, min_per_class=3)
    assert reasons(caught.value) == {"fox/": (
        "class too small for the split: 2 usable image(s), at least 3 needed; add images, merge "
        "or remove the class, or lower --val-size/--test-size")}


def test_manifest_with_escaping_missing_and_unlabeled_rows(image_folder, tmp_path):
    outside = write_image(tmp_path / "outside.png", seed=99)
    manifest = image_folder / "manifest.csv"
    rows = ["path,label"] + [f"{p.relative_to(image_folder).as_posix()},{p.parent.name}"
                             for p in sorted(image_folder.glob("*/*.png"))]
    rows += ["../outside.png,cat", f"{outside},cat", "cat/missing.png,cat", "cat/cat_0.png,", ",dog"]
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as caught:
        ImageDataset.from_manifest(manifest)
    found = reasons(caught.value)
    root = image_folder.resolve()
    assert found["../outside.png"] == (
        f"path escapes the dataset root '{root}' (manifest.csv line 20); keep every file under "
        "the root or pass a wider --root")
    assert found[str(outside)].startswith(f"path escapes the dataset root '{root}' (manifest.csv line 21)")
    assert found["cat/missing.png"] == "file not found"
    assert found["cat/cat_0.png"] == "empty label (manifest.csv line 23)"
    assert found["manifest.csv line 24"] == "empty path"
    assert len(found) == 5


def test_manifest_reads_relative_to_its_root(image_folder, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("Path,Label\n" + "\n".join(
        f"{p.relative_to(image_folder).as_posix()},{'a' if 'cat' in p.name else 'b'}"
        for p in sorted(image_folder.glob("*/*.png"))))
    data = ImageDataset.from_manifest(manifest, root=image_folder)
    assert data.classes == ["a", "b"] and len(data) == 18


def test_manifest_needs_path_and_label_columns(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,class\nx.png,a\n")
    with pytest.raises(DataError, match=r"manifest header must name the columns 'path' and 'label'; "
                       r"found \['file', 'class'\]"):
        ImageDataset.from_manifest(manifest)


def test_unknown_policy_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"must be one of 'error', 'skip'. Got 'ignore'"):
        ImageDataset.from_folder(tmp_path, on_bad_file="ignore")
    with pytest.raises(DataError, match="dataset folder does not exist or is not a folder"):
        ImageDataset.from_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no class subfolders found"):
        ImageDataset.from_folder(tmp_path)


@pytest.mark.parametrize("size, crop_pct", [((150, 113), 0.875), ((1200, 900), 0.875),
                                             ((300, 300), 1.0), ((90, 400), 0.9), ((200, 150), 1.15)])
def test_the_centre_crop_resizes_only_the_kept_region_as_torchvision_would(size, crop_pct):
    """One Pillow resize of the crop's source region gives torchvision's Resize + CenterCrop
    within one grey level (upscaled, downscaled, already at size, tall, and a crop larger than
    the resized image, which torchvision pads)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode, v2

    from sigclass.data.image_resize import center_crop_pil

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(smooth).resize(size, Image.Resampling.BILINEAR)
    image = Image.fromarray(np.clip(np.asarray(image, int) + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255).astype(np.uint8))
    short = int(round(224 / crop_pct))
    reference = v2.Compose([v2.Resize(short, interpolation=InterpolationMode.BICUBIC, antialias=True),
                            v2.CenterCrop((224, 224))])(image)
    ours = center_crop_pil(image, 224, 224, crop_pct, Image.Resampling.BICUBIC)
    assert ours.size == reference.size == (224, 224)
    difference = np.abs(np.asarray(ours, int) - np.asarray(reference, int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001


@pytest.mark.parametrize("resize, far_resize", [("center_crop", "squash"), ("squash", None),
                                                 ("letterbox", None)])
def test_grey_images_give_the_input_of_their_rgb_conversion_to_the_bit(tmp_path, resize, far_resize):
    """A grey image for a colour network stays one plane through the resize (half the time) and
    is spread over the channels when normalized: the training side and the lean runtime give
    exactly the input of the image converted to RGB first, near-square and far from square.
    Letterbox pads with the mean colour, whose channels differ: grey images are converted first."""
    from PIL import Image

    from sigclass.data.image_preprocess import ImagePreprocessor
    from sigclass.modalities.image_lean import ImageInputs

    rng = np.random.default_rng(0)
    paths = []
    for k, size in enumerate([(150, 113), (300, 300), (320, 100)]):
        grey = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), mode="L")
        paths.append(tmp_path / f"grey{k}.png")
        grey.save(paths[-1])
    config = {"input_size": [3, 64, 64], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "interpolation": "bicubic", "crop_pct": 0.875, "tta": "none", "resize": resize,
              "far_resize": far_resize, "far_aspect": 1.5}
    for kind in (ImagePreprocessor, ImageInputs):
        preprocess = kind(config)
        assert preprocess.keep_gray is (resize != "letterbox")
        from_grey = np.asarray(preprocess([str(p) for p in paths]))
        from_rgb = np.asarray(preprocess([Image.open(p).convert("RGB") for p in paths]))
        assert from_grey.shape == (3, 3, 64, 64)
        np.testing.assert_array_equal(from_grey, from_rgb)
        assert not np.array_equal(from_grey[:, 0], from_grey[:, 1])  # each channel its own mean and std
    assert load_image(str(paths[0]), 3, keep_gray=True).mode == "L"
    assert load_image(str(paths[0]), 3).mode == "RGB"
