"""Detection datasets: VOC, COCO and CSV layouts read alike, every problem reported with its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image
from sigclass.data.detection import DetectionDataset, detect_layout
from sigclass.exceptions import DataError

VOC_OBJECT = ("<object><name>{label}</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin>"
              "<xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>")


def write_voc(root: Path, name: str, boxes, size=(64, 48), image: bool = True) -> None:
    """An annotation ``Annotations/<name>.xml`` (and its image unless ``image=False``)."""
    objects = "".join(VOC_OBJECT.format(*box[:4], label=box[4]) for box in boxes)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.jpg</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objects}</annotation>")
    if image:
        write_image(root / "JPEGImages" / f"{name}.jpg", size=size, seed=len(name) + sum(map(ord, name)))


@pytest.fixture
def bad_voc(tmp_path) -> Path:
    root = tmp_path / "voc"
    write_voc(root, "good", [(4, 4, 30, 30, "cell"), (50, 10, 70, 40, "blob")])  # 2nd crosses x=64
    write_voc(root, "flat", [(4, 4, 30, 30, "cell"), (10, 10, 10, 20, "cell")])
    write_voc(root, "nolabel", [(4, 4, 30, 30, "")])
    write_voc(root, "noimage", [(4, 4, 30, 30, "cell")], image=False)
    write_voc(root, "broken", [(4, 4, 30, 30, "cell")], image=False)
    (root / "JPEGImages" / "broken.jpg").write_bytes(b"not a jpeg at all")
    write_image(root / "JPEGImages" / "orphan.jpg", size=(64, 48))
    return root


def test_voc_reports_every_problem_naming_its_file(bad_voc):
    with pytest.raises(DataError) as caught:
        DetectionDataset.load(bad_voc)
    text = str(caught.value)
    assert len(caught.value.problems) == 5
    assert "Annotations/flat.xml object 2: box of zero or negative area (10, 10, 10, 20)" in text
    assert "Annotations/nolabel.xml object 1: empty label" in text
    assert "Annotations/noimage.xml: its image JPEGImages/noimage.jpg: file not found" in text
    assert "JPEGImages/broken.jpg: not an image" in text
    assert "JPEGImages/orphan.jpg: image without annotation" in text
    assert "--on-bad-file skip" in text


def test_skip_keeps_the_good_images_and_counts_clipped_boxes(bad_voc):
    with pytest.warns(UserWarning, match="Skipped 4 image"):
        dataset = DetectionDataset.load(bad_voc, on_bad_file="skip")
    assert dataset.ids == ["JPEGImages/good.jpg"]
    assert dataset.classes == ["blob", "cell"]
    np.testing.assert_array_equal(dataset.items[0].boxes, [[4, 4, 30, 30], [50, 10, 64, 40]])
    assert dataset.clipped == ["Annotations/good.xml object 2"]
    assert dataset.report()["clipped_boxes"] == 1
    assert len(dataset.skipped) == 5


def test_unknown_label_against_given_classes(tmp_path):
    root = tmp_path / "voc"
    write_voc(root, "a", [(4, 4, 30, 30, "cell")])
    write_voc(root, "b", [(4, 4, 30, 30, "dog")])
    with pytest.raises(DataError, match=r"b.xml object 1: unknown label 'dog'; the classes are \['cell'\]"):
        DetectionDataset.load(root, classes=["cell"])


def test_voc_image_sets_are_the_split(tmp_path):
    root = tmp_path / "voc"
    names = [f"im{i}" for i in range(6)]
    for name in names:
        write_voc(root, name, [(4, 4, 30, 30, "cell")])
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("im0\nim1\nim2\n")
    (sets / "val.txt").write_text("im3\n")
    (sets / "test.txt").write_text("im4\nim5\n")
    dataset = DetectionDataset.load(root)
    split = dataset.split(seed=3)
    assert {p: [dataset.ids[i] for i in idx] for p, idx in split.items()} == {
        "train": ["JPEGImages/im0.jpg", "JPEGImages/im1.jpg", "JPEGImages/im2.jpg"],
        "val": ["JPEGImages/im3.jpg"],
        "test": ["JPEGImages/im4.jpg", "JPEGImages/im5.jpg"]}


def test_coco_and_csv_give_the_voc_boxes(tmp_path):
    voc = tmp_path / "voc"
    write_voc(voc, "a", [(4, 4, 30, 30, "cell"), (10, 12, 40, 44, "blob")])
    write_voc(voc, "b", [(1, 2, 20, 22, "cell")])
    coco = tmp_path / "coco"
    (coco / "images").mkdir(parents=True)
    rows = ["path,xmin,ymin,xmax,ymax,label"]
    images, annotations = [], []
    for i, name in enumerate(("a", "b"), start=1):
        (coco / "images" / f"{name}.jpg").write_bytes((voc / "JPEGImages" / f"{name}.jpg").read_bytes())
        (tmp_path / f"{name}.jpg").write_bytes((voc / "JPEGImages" / f"{name}.jpg").read_bytes())
        images.append({"id": i, "file_name": f"{name}.jpg", "width": 64, "height": 48})
    for image_id, box, category in ((1, (4, 4, 30, 30), 7), (1, (10, 12, 40, 44), 9), (2, (1, 2, 20, 22), 7)):
        x0, y0, x1, y1 = box
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                            "bbox": [x0, y0, x1 - x0, y1 - y0]})
        rows.append(f"{'ab'[image_id - 1]}.jpg,{x0},{y0},{x1},{y1},{'cell' if category == 7 else 'blob'}")
    document = {"images": images, "annotations": annotations,
                "categories": [{"id": 7, "name": "cell"}, {"id": 9, "name": "blob"}]}
    (coco / "instances.json").write_text(json.dumps(document))
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    assert [detect_layout(p) for p in (voc, coco, tmp_path / "boxes.csv")] == ["voc", "coco", "csv"]
    read = [DetectionDataset.load(p) for p in (voc, coco, tmp_path / "boxes.csv")]
    for dataset in read:
        assert dataset.classes == ["blob", "cell"]
        assert [Path(k).name for k in dataset.ids] == ["a.jpg", "b.jpg"]
        np.testing.assert_array_equal(dataset.items[0].boxes, [[4, 4, 30, 30], [10, 12, 40, 44]])
        assert dataset.items[0].labels == ("cell", "blob")
    document["annotations"][1]["category_id"] = 3
    document["annotations"][2]["image_id"] = 5
    (coco / "instances.json").write_text(json.dumps(document))
    with pytest.raises(DataError) as caught:
        DetectionDataset.load(coco)
    assert [str(p) for p in caught.value.problems] == [
        "instances.json annotations[1]: unknown category_id 3; 'categories' lists ['7', '9']",
        "instances.json annotations[2]: names image_id 5, which is not in 'images'"]


def test_csv_bad_numbers_and_a_folder_that_is_no_detection_data(tmp_path):
    write_image(tmp_path / "a.jpg", size=(64, 48))
    (tmp_path / "boxes.csv").write_text("path,xmin,ymin,xmax,ymax,label\na.jpg,4,x,30,30,cell\n"
                                        "missing.jpg,1,1,5,5,cell\n")
    with pytest.raises(DataError) as caught:
        DetectionDataset.load(tmp_path / "boxes.csv")
    assert [str(p) for p in caught.value.problems] == [
        "boxes.csv line 2: 'ymin' is not a number (got 'x')",
        "boxes.csv line 3: its image missing.jpg: file not found"]
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a detection dataset"):
        DetectionDataset.load(tmp_path / "plain")


def test_box_dataset_flips_boxes_with_the_pixels(tmp_path):
    import torch

    root = tmp_path / "voc"
    write_voc(root, "a", [(4, 4, 30, 30, "cell")])
    dataset = DetectionDataset.load(root)
    plain = dataset.to_torch(train=False)
    image, target = plain[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32 and float(image.max()) <= 1
    assert target["labels"].tolist() == [1]
    flipped = dataset.to_torch(train=True)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        seen.add(tuple(flipped[0][1]["boxes"][0].tolist()))
    assert seen == {(4.0, 4.0, 30.0, 30.0), (34.0, 4.0, 60.0, 30.0)}
