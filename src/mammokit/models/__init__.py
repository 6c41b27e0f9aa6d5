"""Models: timm backbones, a GMIC-style global-local network, four-view fusion, MIL pooling and a registry.

Every registered model, and an ensemble of them, reads one `ModelInput` (views on axis 1) and returns one
`ModelOutput` (`models.contract`), so training, evaluation, predict and export never branch on model type.
Build one with ``create_model("multiview_gmic", preset="cpu")``.
"""

from .backbone import Backbone, WeightLoadError, create_backbone, load_weights, map_radimagenet_keys
from .contract import INPUT_KEYS, ModelInput, ModelOutput, check_input
from .ensemble import EnsembleModel
from .global_local import GlobalLocalConfig, GlobalLocalNet, crop_boxes, resample_boxes, retrieve_windows, top_t_pool
from .mil import AttentionPool, GatedAttentionPool, LSEPool, MaxPool, MeanPool, TopKMeanPool, create_mil_pool
from .multiview import VIEW_ORDER, MultiViewConfig, MultiViewNet
from .registry import PRESETS, create_model, list_models, register_model

__all__ = [
    "INPUT_KEYS",
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
    "ModelInput",
    "ModelOutput",
    "MultiViewConfig",
    "MultiViewNet",
    "TopKMeanPool",
    "WeightLoadError",
    "check_input",
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
