"""A hand-crafted image featurizer for headless mode: HOG and LBP texture features (scikit-image).

``hog_lbp`` is the non-deep baseline of the image leaderboard: histograms of oriented gradients
(Dalal & Triggs 2005) of the grey image, and uniform local binary pattern histograms (Ojala et al.
2002) at two radii over the whole image and a grid of regions. An SVM head classifies them.

It is an ``nn.Module`` in the registry like the frozen CNNs: ``forward(x)`` maps preprocessed
images ``(B, 3, H, W)`` to ``(B, num_features)``, so headless training, the
:class:`~sigclass.Predictor` and saving (no tensors to store, the options in ``model_spec``) are
the same code. Nothing is learned; it runs scikit-image on NumPy, so it is not exported to ONNX.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..exceptions import ConfigError
from .registry import register_model

_MEAN_STD = (0.5, 0.5, 0.5)


class HogLbpFeatures(nn.Module):
    """HOG + LBP features of grey images.

    Args:
        input_size: Side of the square image the features are computed on; other inputs are
            resized to it.
        orientations: HOG orientation bins.
        pixels_per_cell: HOG cell side in pixels.
        cells_per_block: HOG block side in cells (L2-Hys normalized).
        lbp_radii: Radii of the uniform LBP codes; ``8 * radius`` neighbours each.
        lbp_grid: The LBP histograms are taken over the whole image and a ``lbp_grid`` x
            ``lbp_grid`` grid of regions.
    """

    is_featurizer = True
    onnx_exportable = False

    def __init__(self, input_size: int = 128, orientations: int = 9, pixels_per_cell: int = 16,
                 cells_per_block: int = 2, lbp_radii: tuple[int, ...] = (1, 2), lbp_grid: int = 2):
        super().__init__()
        cells = input_size // pixels_per_cell
        if cells < cells_per_block:
            raise ConfigError(f"The HOG input_size {input_size} holds {cells} cells of "
                              f"{pixels_per_cell} pixels, fewer than a block of {cells_per_block}; "
                              "use a larger input_size or a smaller pixels_per_cell.")
        self.input_size = int(input_size)
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.lbp_radii = tuple(int(r) for r in lbp_radii)
        self.lbp_grid = lbp_grid
        blocks = cells - cells_per_block + 1
        self.n_hog = blocks * blocks * cells_per_block * cells_per_block * orientations
        self.n_lbp = (1 + lbp_grid * lbp_grid) * sum(8 * r + 2 for r in self.lbp_radii)
        self.num_features = self.n_hog + self.n_lbp
        self.pretrained_cfg = {
            "input_size": (3, self.input_size, self.input_size), "mean": _MEAN_STD, "std": _MEAN_STD,
            "interpolation": "bilinear", "crop_pct": 1.0,
        }

    def grey(self, x: torch.Tensor) -> np.ndarray:
        """Grey images ``(B, S, S)`` as ``uint8`` of preprocessed images ``(B, 3, H, W)``."""
        x = x.detach().float().cpu()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                          align_corners=False, antialias=True)
        grey = (x * 0.5 + 0.5).clamp(0, 1).mean(dim=1)
        return (grey * 255).round().to(torch.uint8).numpy()

    def features(self, image: np.ndarray) -> np.ndarray:
        """The feature vector of one grey ``uint8`` image."""
        from skimage.feature import hog, local_binary_pattern

        cell = (self.pixels_per_cell, self.pixels_per_cell)
        block = (self.cells_per_block, self.cells_per_block)
        parts = [hog(image, self.orientations, cell, block, block_norm="L2-Hys", feature_vector=True)]
        side = self.input_size // self.lbp_grid
        regions = [(slice(None), slice(None))] + [
            (slice(i * side, (i + 1) * side), slice(j * side, (j + 1) * side))
            for i in range(self.lbp_grid) for j in range(self.lbp_grid)
        ]
        for radius in self.lbp_radii:
            points = 8 * radius
            codes = local_binary_pattern(image, points, radius, method="uniform")
            for rows, cols in regions:
                counts = np.bincount(codes[rows, cols].astype(np.int64).ravel(), minlength=points + 2)
                parts.append(counts / max(1, counts.sum()))
        return np.concatenate(parts).astype(np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = self.grey(x)
        out = np.zeros((len(images), self.num_features), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = self.features(image)
        return torch.as_tensor(out, device=x.device)


@register_model("hog_lbp", modality="image",
                description="HOG + LBP texture features (scikit-image) for headless mode; the non-deep baseline")
def hog_lbp(n_classes: int = 0, pretrained: bool = False, in_chans: int | None = None, **kwargs):
    """HOG + LBP featurizer; ``pretrained`` is ignored (nothing is learned)."""
    if n_classes:
        raise ConfigError("'hog_lbp' is a featurizer for headless mode (features + an SVM head), not "
                          "a trainable network. Use --mode headless --model hog_lbp --head rbf_svm.")
    if in_chans not in (None, 3):
        raise ConfigError(f"'hog_lbp' reads RGB images (in_chans=3); got in_chans={in_chans}.")
    return HogLbpFeatures(**kwargs)
