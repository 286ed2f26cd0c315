"""Layer-CAM: class activation maps from several stages of a network, finer than the last map.

Layer-CAM (Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization") weighs every location of a stage's activations ``A`` by the positive part of the
gradient of the class score there, ``relu(sum_c relu(dS/dA[c]) * A[c])``, so an early stage (a
finer grid) gives a sharp map where the late stage gives a coarse one. The maps of the chosen
stages are each upsampled to the model input, divided by their maximum and averaged, as
pytorch-grad-cam combines several target layers (``pytorch_grad_cam.LayerCAM``).

The same code serves images ``(B, C, H, W)`` and signals ``(B, C, T)``. The stages are found
from the network itself: timm's ``feature_info`` (the blocks where the resolution drops), the
children of a ``features`` sequence for sigclass's own networks, and always the last feature
map (the one plain CAM uses). The class score is the network's logit, or, for a headless
predictor, the linear head's decision function on the pooled features (see :mod:`.heads`).
"""

from __future__ import annotations

import numpy as np

from ..exceptions import ExplainError

FINAL = "forward_features"  # name of the last feature map in :func:`stage_names`
DEFAULT_STAGES = 3  # the last feature map and the two stages before it (chosen on BCCD)


def _activations():
    from torch import nn

    return (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Hardswish, nn.Mish)


def stage_names(network) -> list[str]:
    """Module names whose outputs Layer-CAM can combine, from the input side to the output side;
    the last entry is always :data:`FINAL`, the map ``forward_features`` returns."""
    from torch import nn

    names: list[str] = []
    info = getattr(network, "feature_info", None)
    if info is not None:
        dicts = info.get_dicts() if callable(getattr(info, "get_dicts", None)) else info
        prefix = getattr(network, "stage_prefix", "")
        names = [prefix + str(d["module"]) for d in dicts if isinstance(d, dict) and "module" in d]
    elif isinstance(getattr(network, "features", None), nn.Sequential):
        # Stage outputs: blocks (modules of their own) and activations, not the single
        # convolutions, norms, poolings or dropouts between them; the last child is FINAL.
        children = list(network.features.named_children())
        names = [f"features.{name}" for name, child in children[:-1]
                 if any(True for _ in child.children()) or isinstance(child, _activations())]
    modules = dict(network.named_modules())
    return [n for n in names if n in modules] + [FINAL]


def resolve_stages(network, layers) -> list[str]:
    """``layers``: ``None`` (the last :data:`DEFAULT_STAGES`), a number ``n`` (the last ``n``
    stages) or a list of module names (``"forward_features"`` for the last map)."""
    available = stage_names(network)
    if layers is None:
        layers = DEFAULT_STAGES
    if isinstance(layers, int | np.integer) and not isinstance(layers, bool):
        if int(layers) < 1:
            raise ExplainError(f"The 'layers' option must be at least 1. Got {layers}.")
        return available[-int(layers):]
    if isinstance(layers, str):
        layers = [layers]
    modules = dict(network.named_modules())
    unknown = [name for name in layers if name != FINAL and name not in modules]
    if unknown:
        raise ExplainError(f"Unknown layers {unknown} for Layer-CAM. Stages of this network: "
                           f"{', '.join(available)} (or any module name of the network).")
    return list(layers)


def layer_cam(network, x, layers: list[str], class_scores, fill_targets, targets):
    """Layer-CAM of a batch.

    Args:
        network: The network (backbone/head contract).
        x: Model inputs ``(B, C, *spatial)``.
        layers: Module names from :func:`resolve_stages`.
        class_scores: ``f(feats, outputs) -> (B, n_classes)`` scores to differentiate.
        fill_targets: ``f(outputs_numpy, targets) -> list[int]`` (the predicted class where a
            target is ``None``).
        targets: One class index or ``None`` per input.

    Returns:
        ``(outputs, raw, targets)``: the head's outputs (numpy), maps ``(B, *spatial of x)`` in
        ``[0, 1]`` and the explained classes.
    """
    import torch
    import torch.nn.functional as F

    modules = dict(network.named_modules())
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(_capture(captured, name))
             for name in layers if name != FINAL]
    try:
        with torch.enable_grad():
            leaf = x.detach().clone().requires_grad_(True)  # gradients flow through frozen weights
            feats = network.forward_features(leaf)
            outputs = network.forward_head(feats)
            outputs_np = outputs.detach().float().cpu().numpy()
            targets = fill_targets(outputs_np, targets)
            scores = class_scores(feats, outputs).float()
            index = torch.as_tensor(targets, device=scores.device)[:, None]
            acts = [feats if name == FINAL else captured[name] for name in layers]
            grads = torch.autograd.grad(scores.gather(1, index).sum(), acts)
    finally:
        for hook in hooks:
            hook.remove()
    size = tuple(x.shape[2:])
    mode = "linear" if len(size) == 1 else "bilinear"
    combined = torch.zeros((x.shape[0], *size), dtype=torch.float32, device=x.device)
    for act, grad in zip(acts, grads, strict=True):
        cam = torch.relu((torch.relu(grad.float()) * act.detach().float()).sum(dim=1))
        cam = F.interpolate(cam[:, None], size=size, mode=mode, align_corners=False)[:, 0]
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).reshape(-1, *([1] * len(size)))
        combined += cam / peak
    return outputs_np, (combined / len(acts)).cpu().numpy(), targets


def _capture(store: dict, name: str):
    def hook(_module, _inputs, output):
        store[name] = output[0] if isinstance(output, tuple | list) else output
    return hook
