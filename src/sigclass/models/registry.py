"""One registry of networks: the entries architectures register, and building one by name.

:func:`register_model` adds a builder; :func:`build_model` builds a registered network (or any
timm architecture) with the contract below. The public :func:`sigclass.create_model`
(:mod:`sigclass.models.catalog`) is this registry with every built-in architecture registered.

Every network created here follows one backbone/head contract (after timm's):

- ``forward_features(x)`` returns the last feature map, ``(B, C, H, W)`` for images and
  ``(B, C, T)`` for signals;
- ``forward_head(features, pre_logits=False)`` pools it (global average pooling for every network
  registered here) and applies the linear classifier; ``pre_logits=True`` returns the pooled vector;
- ``get_classifier()`` returns the final linear layer, ``reset_classifier(n_classes)`` replaces it
  (``n_classes=0`` turns the network into a featurizer whose output is the pooled vector);
- ``num_features`` is the width of the pooled vector;
- ``pretrained_cfg`` holds the input size, mean and std the network expects.

Names registered by sigclass come first; any other timm architecture name works too.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..choices import DEFAULT_MODALITY
from ..exceptions import ArtifactError, ConfigError, ModelNotFoundError, WeightsNotFoundError
from .stage_pool import FEATURE_POOLS, StagePooled, supports_stages

__all__ = ["ModelEntry", "build_model", "register_model", "registered"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered network.

    Attributes:
        name: Registry name, e.g. ``"efficientnet_lite0"``.
        fn: Builder called as ``fn(n_classes=..., pretrained=..., in_chans=..., **kwargs)``.
        modality: ``"image"`` or ``"signal"``.
        has_pretrained: Whether pretrained weights ship with sigclass (offline).
        description: One line for ``sigclass models --list``.
    """

    name: str
    fn: Callable[..., Any]
    modality: str
    has_pretrained: bool
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str | None = None,
    *,
    modality: str = DEFAULT_MODALITY,
    has_pretrained: bool = False,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that adds a network builder to the registry."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[key] = ModelEntry(key, fn, modality, has_pretrained, doc)
        return fn

    return decorator


def registered() -> list[ModelEntry]:
    """Every registered entry, in registration order."""
    return list(_REGISTRY.values())


def build_model(
    name: str,
    n_classes: int,
    pretrained: bool = False,
    in_chans: int | None = None,
    weights: str | Path | None = None,
    **kwargs: Any,
):
    """Build a registered network, or any timm architecture, by name.

    The arguments and the result are those of :func:`sigclass.models.create_model`, which is
    this function with every built-in architecture registered.
    """
    pool = kwargs.pop("feature_pool", "final")
    entry = _REGISTRY.get(name)
    if entry is not None:
        model = entry.fn(
            n_classes=n_classes,
            pretrained=pretrained and weights is None,
            in_chans=in_chans,
            **kwargs,
        )
        modality = entry.modality
    else:
        import timm

        if not timm.is_model(name):
            raise ModelNotFoundError(_unknown_model_message(name))
        model = _create_timm(name, n_classes, pretrained and weights is None, in_chans, **kwargs)
        modality = DEFAULT_MODALITY  # timm's architectures are image networks
    if weights is not None:
        load_weights(model, weights)
    if pool != "final":
        model = _pool_stages(model, name, n_classes, pool)
        kwargs["feature_pool"] = pool
    model.model_spec = {
        "name": name,
        "n_classes": int(n_classes),
        "in_chans": in_chans,
        "modality": modality,
        "kwargs": dict(kwargs),
    }
    return model


def _pool_stages(model, name: str, n_classes: int, pool: str):
    if pool not in FEATURE_POOLS:
        raise ConfigError(f"The 'feature_pool' option must be one of "
                          f"{', '.join(map(repr, FEATURE_POOLS))}. Got {pool!r}.")
    if n_classes != 0 or not supports_stages(model):
        raise ConfigError(f"feature_pool='stages' needs a featurizer (n_classes=0) of a network "
                          f"with stage maps (timm forward_intermediates); '{name}' with "
                          f"n_classes={n_classes} is not one. Use feature_pool='final'.")
    return StagePooled(model)


def _unknown_model_message(name: str) -> str:
    import timm

    close = difflib.get_close_matches(name, sorted(_REGISTRY), n=3, cutoff=0.6)
    close += [m for m in difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
              if m not in close]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return (
        f"Unknown model '{name}'.{hint} sigclass.list_models() lists the registered networks; "
        "timm.list_models() lists every timm architecture, which works too."
    )


def _create_timm(name: str, n_classes: int, pretrained: bool, in_chans: int | None, **kwargs: Any):
    import timm

    extra = {"in_chans": in_chans} if in_chans is not None else {}
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=n_classes, **extra, **kwargs)
    cached = _hf_cached_weights(name)
    if cached is None:
        raise WeightsNotFoundError(
            f"Pretrained weights for '{name}' are not available offline. Supply them with "
            f"--weights PATH (Python: create_model(..., weights=PATH)), a .safetensors or .pth "
            f"state dict; or download them into the Hugging Face cache on a machine with internet "
            f"(e.g. `hf download timm/{name}`) and copy the cache here; or train without them "
            f"(--no-pretrained). sigclass never falls back to random weights."
        )
    return timm.create_model(
        name,
        pretrained=True,
        num_classes=n_classes,
        pretrained_cfg_overlay={"file": str(cached), "hf_hub_id": None},
        **extra,
        **kwargs,
    )


def _hf_cached_weights(name: str) -> Path | None:
    """The weights file of a timm model in the local Hugging Face cache, without any network call."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an architecture without pretrained tags
        cfg = None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a ``.safetensors`` or ``.pth`` file, loaded without executing code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"Weights file '{path}' does not exist. Check the --weights path.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise ArtifactError(
            f"Cannot read weights from '{path}': {exc}. Expected a .safetensors file or a "
            ".pth state dict saved with torch.save(model.state_dict(), path)."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ArtifactError(f"'{path}' does not hold a state dict (got {type(state).__name__}).")
    return state


def load_weights(model, path: str | Path) -> None:
    """Load a state dict into ``model``; a classifier of another width is left as it is."""
    state = read_state_dict(path)
    own = model.state_dict()
    classifier = {f"{n}." for n, m in model.named_modules() if m is model.get_classifier()}
    skipped = []
    for key in list(state):
        if key in own and own[key].shape != state[key].shape and any(
            key.startswith(p) for p in classifier
        ):
            skipped.append(key)
            del state[key]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not any(k.startswith(p) for p in classifier)]
    if missing or result.unexpected_keys:
        raise ArtifactError(
            f"Weights in '{path}' do not fit '{getattr(model, 'model_spec', {}).get('name', type(model).__name__)}': "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}. Use weights saved from the same architecture."
        )
