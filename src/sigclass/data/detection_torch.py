"""The torch side of detection data: images with box targets, box-aware augmentation, batching.

Images are returned as float tensors in ``[0, 1]`` at their own size: the detector resizes and
normalizes them itself (torchvision's ``GeneralizedRCNNTransform``), so boxes stay in the
image's pixels. Augmentation (training only) is ``torchvision.transforms.v2``, which moves the
boxes with the pixels: a horizontal flip and a mild colour jitter. Scale jitter comes from the
detector's training sizes (see :mod:`sigclass.models.detection`).
"""

from __future__ import annotations

__all__ = ["BoxDataset", "collate_boxes", "read_rgb"]


def read_rgb(path):
    """The image at ``path`` as an RGB uint8 tensor ``(3, H, W)``."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    with Image.open(path) as image:
        return F.pil_to_tensor(image.convert("RGB"))


def collate_boxes(batch):
    """A list of ``(image, target)`` pairs as ``(images, targets)`` lists (sizes differ)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class BoxDataset:
    """``(image, {"boxes", "labels"})`` pairs; labels are 1-based (0 is the background).

    Args:
        items: :class:`~sigclass.data.detection.DetectionItem` records.
        classes: Class names; a label's index in it plus one is its target.
        train: Apply the augmentation.
        hflip: Flip horizontally at random in training (off for data whose left and right differ).
    """

    def __init__(self, items, classes: list[str], train: bool = False, hflip: bool = True):
        self.items = list(items)
        self.classes = list(classes)
        self.train = train
        self.hflip = hflip
        self._transform = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> list:
        return [len(item.labels) for item in self.items]

    def transform(self):
        import torch
        from torchvision.transforms import v2

        if self._transform is None:
            steps = []
            if self.train:
                if self.hflip:
                    steps.append(v2.RandomHorizontalFlip(0.5))
                steps.append(v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1))
            steps += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes(min_size=1.0)]
            self._transform = v2.Compose(steps)
        return self._transform

    def __getitem__(self, index: int):
        import torch
        from torchvision import tv_tensors

        item = self.items[index]
        image = tv_tensors.Image(read_rgb(item.path))
        index_of = {name: i + 1 for i, name in enumerate(self.classes)}
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.as_tensor(item.boxes, dtype=torch.float32),
                                              format="XYXY", canvas_size=image.shape[-2:]),
            "labels": torch.tensor([index_of[name] for name in item.labels], dtype=torch.int64),
        }
        image, target = self.transform()(image, target)
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).reshape(-1, 4),
            "labels": target["labels"],
        }
