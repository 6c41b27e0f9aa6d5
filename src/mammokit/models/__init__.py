"""Models: timm backbones, a GMIC-style global-local network, four-view fusion, MIL pooling and a registry.

Every registered model returns the same output dict (see `GlobalLocalNet` and `MultiViewNet`), so training and
evaluation never branch on model type. Build one with ``create_model("multiview_gmic", preset="cpu")``.
"""

from .backbone import Backbone, WeightLoadError, create_backbone, load_weights, map_radimagenet_keys
from .ensemble import EnsembleModel
from .global_local import GlobalLocalConfig, GlobalLocalNet, crop_boxes, resample_boxes, retrieve_windows, top_t_pool
from .mil import AttentionPool, GatedAttentionPool, LSEPool, MaxPool, MeanPool, TopKMeanPool, create_mil_pool
from .multiview import VIEW_ORDER, MultiViewConfig, MultiViewNet
from .registry import PRESETS, create_model, list_models, register_model

__all__ = [
    "PRESETS",
    "VIEW_ORDER",
    "AttentionPool",
    "Backbone",
    "EnsembleModel",
    "GatedAttentionPool",
    "GlobalLocalConfig",
    "GlobalLocalNet",
    "LSEPool",
    "MaxPool",
    "MeanPool",
    "MultiViewConfig",
    "MultiViewNet",
    "TopKMeanPool",
    "WeightLoadError",
    "create_backbone",
    "create_mil_pool",
    "create_model",
    "crop_boxes",
    "list_models",
    "load_weights",
    "map_radimagenet_keys",
    "register_model",
    "resample_boxes",
    "retrieve_windows",
    "top_t_pool",
]
