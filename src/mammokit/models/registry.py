"""Model registry: ``@register_model`` on a small factory function, ``create_model(name, **overrides)``.

Every registered factory takes ``preset`` (``"cpu"``: ~512x320 views, narrow backbones, trains on a CPU in minutes;
``"full"``: 2944x1920 views, GMIC-shaped narrow global network, ResNet-18 local network on 6 crops of 256 px;
add ``grad_checkpointing=True`` for wide backbones or large batches: the narrow default needs only ~1.4 GB per view)
and keyword overrides of any `GlobalLocalConfig` / `MultiViewConfig` field.
``create_model`` drops ``None`` overrides so unset CLI options never replace a model's defaults.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mammokit.errors import InvalidInputError

from .global_local import GlobalLocalConfig, GlobalLocalNet
from .multiview import MultiViewConfig, MultiViewNet

__all__ = ["PRESETS", "create_model", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

PRESETS: dict[str, dict] = {
    "cpu": dict(global_backbone="mammokit_resnet18n", local_backbone="mammokit_resnet18n", image_size=(512, 320),
                full_size=None, patch_size=64, num_patches=4, grad_checkpointing=False, channels_last=True),
    "full": dict(global_backbone="mammokit_resnet22n", local_backbone="resnet18", image_size=(2944, 1920),
                 full_size=None, patch_size=256, num_patches=6, grad_checkpointing=False, channels_last=True),
}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, seed: int | None = None, **overrides) -> nn.Module:
    """Build a registered model; ``None``-valued overrides are dropped (model defaults win).

    Args:
        name: a registered model name (see `list_models`).
        seed: if given, the weights are initialised from this seed (the global torch RNG is left untouched).
        **overrides: ``preset`` and any config field of the model.
    """
    if name not in _REGISTRY:
        raise InvalidInputError(f"unknown model {name!r}; registered: {list_models()}")
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    if seed is None:
        return _REGISTRY[name](**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _REGISTRY[name](**kwargs)


def _settings(preset: str, overrides: dict, global_only: bool = False) -> dict:
    if preset not in PRESETS:
        raise InvalidInputError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    if global_only:
        if overrides.get("num_patches", 0) != 0:
            raise InvalidInputError(f"num_patches={overrides['num_patches']}: a global-only model has no local pathway")
        overrides = {**overrides, "num_patches": 0}
    return {**PRESETS[preset], **overrides}


@register_model
def global_only(preset: str = "cpu", **overrides) -> GlobalLocalNet:
    """Single-view baseline: the global pathway alone (backbone -> saliency map -> top-t pooling)."""
    return GlobalLocalNet(GlobalLocalConfig(**_settings(preset, overrides, global_only=True)))


@register_model
def gmic(preset: str = "cpu", **overrides) -> GlobalLocalNet:
    """Single-view global-local network (saliency retrieval, local MIL, fusion)."""
    return GlobalLocalNet(GlobalLocalConfig(**_settings(preset, overrides)))


@register_model
def multiview_global(preset: str = "cpu", **overrides) -> MultiViewNet:
    """Four-view model on global-only view encoders (the multi-view baseline)."""
    return MultiViewNet(MultiViewConfig.from_flat(**_settings(preset, overrides, global_only=True)))


@register_model
def multiview_gmic(preset: str = "cpu", **overrides) -> MultiViewNet:
    """Four-view model on global-local view encoders, with breast and exam fusion."""
    return MultiViewNet(MultiViewConfig.from_flat(**_settings(preset, overrides)))
