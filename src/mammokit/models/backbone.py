"""Backbone factory over timm, with the weight sources mammokit supports.

`create_backbone` returns a `Backbone`: a timm model stripped of its classifier whose `forward` gives the last
feature map (B, C, h, w) of a one-channel image. Weights come from one of three sources, each a real code path:

- ``timm:<tag>``: timm's own pretrained loader (`resnet50` + ``timm:a1_in1k`` -> ``resnet50.a1_in1k``); timm sums the
  RGB stem weights for ``in_chans=1``. Offline this fails with an error naming the tag and the ``file:`` alternative.
- ``file:<path>``: a ``.safetensors`` file or a torch state dict (loaded with ``weights_only=True``), strict by default.
- ``radimagenet:<path>``: RadImageNet's released PyTorch checkpoints (ResNet-50, DenseNet-121), whose keys are those of
  ``nn.Sequential(*torchvision_model.children()[:-1])`` wrapped in a ``backbone`` attribute; they are renamed onto
  timm's (torchvision-compatible) key names.

Two narrow ResNets are registered with timm so GMIC-like global networks are "anything timm names":
``mammokit_resnet22n`` (GMIC's global shape: 7x7 stem, 5 stages of 2 basic blocks, 16..256 channels, stride 64) and
``mammokit_resnet18n`` (4 stages, 32..256 channels, stride 32) for small CPU inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.models import build_model_with_cfg, register_model
from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg
from torch import nn

from mammokit.errors import InvalidInputError

__all__ = ["Backbone", "WeightLoadError", "create_backbone", "feature_ndim", "load_weights", "map_radimagenet_keys"]


class WeightLoadError(RuntimeError):
    """Weights could not be loaded: the message names the source and what went wrong."""


def _narrow_cfg(widths: tuple[int, ...], strides: tuple[int, ...], stem: int) -> ByoModelCfg:
    blocks = tuple(ByoBlockCfg(type="basic", d=2, c=c, s=s, br=1.0) for c, s in zip(widths, strides, strict=True))
    return ByoModelCfg(blocks=blocks, stem_chs=stem, stem_type="7x7", stem_pool="maxpool", num_features=0)


_NARROW = {
    "mammokit_resnet22n": (_narrow_cfg((16, 32, 64, 128, 256), (1, 2, 2, 2, 2), 16), 64),
    "mammokit_resnet18n": (_narrow_cfg((32, 64, 128, 256), (1, 2, 2, 2), 32), 32),
}


def _create_narrow(variant: str, pretrained: bool = False, **kwargs) -> ByobNet:
    cfg, stride = _NARROW[variant]
    kwargs.setdefault("output_stride", stride)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("pretrained_cfg", None)
    return build_model_with_cfg(
        ByobNet, variant, pretrained, model_cfg=cfg, feature_cfg=dict(flatten_sequential=True),
        pretrained_cfg=dict(num_classes=0, first_conv="stem.conv1.conv", classifier="head.fc"), **kwargs,
    )


@register_model
def mammokit_resnet22n(pretrained: bool = False, **kwargs) -> ByobNet:
    """GMIC-shaped narrow ResNet-22 (16..256 channels, stride 64): cheap enough for 2944x1920 on a CPU."""
    return _create_narrow("mammokit_resnet22n", pretrained, **kwargs)


@register_model
def mammokit_resnet18n(pretrained: bool = False, **kwargs) -> ByobNet:
    """Narrow ResNet-18 (32..256 channels, stride 32) for CPU-sized global and local pathways."""
    return _create_narrow("mammokit_resnet18n", pretrained, **kwargs)


class Backbone(nn.Module):
    """A timm model reduced to its feature extractor: (B, in_chans, H, W) -> (B, num_features, h, w).

    Args:
        model: a timm model created with ``num_classes=0, global_pool=''``.
        channels_last: run in channels-last memory format (2-4x faster for narrow convolutions on CPU oneDNN).
        in_chans: the model's input channels.
    """

    def __init__(self, model: nn.Module, channels_last: bool = False, in_chans: int = 1) -> None:
        super().__init__()
        self.model = model
        self.num_features = int(model.num_features)
        info = getattr(model, "feature_info", None)
        self.reduction = int(info[-1]["reduction"]) if info else 32
        self.channels_last = channels_last
        # decided here, once: forward is then a pure function of its input (tracing and torch.compile see one path)
        self.tokens = feature_ndim(model, in_chans) != 4  # ViT-like: tokens, so forward uses forward_intermediates
        self.nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward (timm's per-block checkpointing) to fit full-resolution inputs."""
        self.model.set_grad_checkpointing(enable)

    @property
    def grad_checkpointing(self) -> bool:
        return bool(getattr(self.model, "grad_checkpointing", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.tokens:
            return self.model.forward_intermediates(x, indices=1, intermediates_only=True, output_fmt="NCHW")[-1]
        y = self.model.forward_features(x)
        return y.permute(0, 3, 1, 2) if self.nhwc else y


class _Features(nn.Module):
    """`forward_features` as a module's forward, for `torch.func.functional_call`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _probe_size(model: nn.Module) -> tuple[int, int]:
    """An input (H, W) the model accepts: its patch embedding's fixed size, else its pretrained config's."""
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if fixed is not None:
        return int(fixed[0]), int(fixed[1])
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (1, 224, 224))
    return int(size[-2]), int(size[-1])


def feature_ndim(model: nn.Module, in_chans: int = 1) -> int:
    """Dimensions of `model.forward_features`' output: 4 for a feature map, 3 for tokens (ViT-like models).

    Found by running it on shapes only (the meta device: no arithmetic, no memory); a model whose forward cannot
    run there is probed on a real batch of two zero images in eval mode, without gradients.
    """
    shape = (2, in_chans, *_probe_size(model))
    wrapped = _Features(model)
    try:
        meta = {k: torch.empty_like(v, device="meta") for k, v in [*wrapped.named_parameters(),
                                                                   *wrapped.named_buffers()]}
        with torch.no_grad():
            return torch.func.functional_call(wrapped, meta, (torch.empty(shape, device="meta"),)).ndim
    except Exception:  # an op without a meta kernel, a tensor attribute outside the module's state, ...
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model.forward_features(torch.zeros(shape)).ndim
        finally:
            model.train(was_training)


def create_backbone(
    name: str,
    pretrained: str | None = None,
    in_chans: int = 1,
    grad_checkpointing: bool = False,
    channels_last: bool = False,
    strict: bool = True,
    **timm_kwargs,
) -> Backbone:
    """Build a timm backbone (classifier removed) and load weights from ``pretrained``.

    Args:
        name: any timm architecture name (``resnet18``, ``efficientnet_b3``, ``convnext_tiny``, ``mammokit_resnet22n``).
        pretrained: ``None`` (random init), ``timm:<tag>``, ``file:<path>`` or ``radimagenet:<path>``.
        in_chans: input channels; 3-channel checkpoints are adapted by summing the stem's RGB weights.
        grad_checkpointing: recompute activations in backward (for full-resolution inputs).
        channels_last: use channels-last memory format.
        strict: for ``file:``/``radimagenet:``, require the checkpoint keys to match the model exactly.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """
    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        raise InvalidInputError(f"backbone name {name!r} is not a timm model (see timm.list_models())")
    kwargs = dict(num_classes=0, global_pool="", in_chans=in_chans, **timm_kwargs)
    if pretrained is not None and pretrained.startswith("timm:"):
        tag = pretrained[len("timm:"):]
        full = f"{name.split('.')[0]}.{tag}" if tag else name
        try:
            model = timm.create_model(full, pretrained=True, **kwargs)
        except Exception as err:  # network, cache or unknown-tag failures all end here
            raise WeightLoadError(
                f"pretrained={pretrained!r}: timm could not load weights {full!r} ({type(err).__name__}: {err}). "
                f"Offline, download them elsewhere and pass pretrained='file:/path/to/model.safetensors'."
            ) from err
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
        if pretrained is not None:
            load_weights(model, pretrained, strict=strict)
    backbone = Backbone(model, channels_last=channels_last, in_chans=in_chans)
    if grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    return backbone


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightLoadError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightLoadError(f"weights file {str(path)!r} is not a torch state dict loadable with "
                              f"weights_only=True ({type(err).__name__}: {err})") from err
    for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint wrappers
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightLoadError(f"weights file {str(path)!r} does not hold a mapping of names to tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


_RADIMAGENET_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def map_radimagenet_keys(state: Mapping[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Rename a RadImageNet PyTorch checkpoint onto timm key names.

    RadImageNet's ResNet-50 keys look like ``backbone.4.0.conv1.weight`` (index 4 = ``layer1`` of torchvision's
    children list) and DenseNet-121's like ``backbone.0.denseblock1.denselayer1.conv1.weight`` (index 0 =
    ``features``); classifier keys are dropped. ``arch`` is the timm model name (``resnet50`` or ``densenet121``).
    """
    out: dict[str, torch.Tensor] = {}
    family = {"densenet121": "densenet", "resnet50": "resnet"}.get(arch)
    if family is None:
        raise WeightLoadError(f"radimagenet weights exist only for ResNet-50 and DenseNet-121, not {arch!r}")
    for key, value in state.items():
        k = re.sub(r"^(module\.)?(backbone\.)?", "", key)
        head, _, rest = k.partition(".")
        if family == "resnet" and head in _RADIMAGENET_RESNET:
            out[f"{_RADIMAGENET_RESNET[head]}.{rest}"] = value
        elif family == "densenet" and head == "0":
            out[f"features.{rest}"] = value
        elif head in ("fc", "classifier", "linear", "drop_out") or not head.isdigit():
            continue  # classifier heads of the released checkpoints
        else:
            raise WeightLoadError(f"radimagenet key {key!r} does not map onto a {arch} layer")
    return out


def _adapt_stem(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Sum RGB stem weights into the model's channel count (timm's `adapt_input_conv`), in place on ``state``."""
    first = model.pretrained_cfg.get("first_conv") if hasattr(model, "pretrained_cfg") else None
    own = model.state_dict()
    for conv in [first] if isinstance(first, str) else list(first or []):
        key = f"{conv}.weight"
        if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
            state[key] = timm.models.adapt_input_conv(own[key].shape[1], state[key])


def load_weights(model: nn.Module, source: str, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load ``file:<path>`` or ``radimagenet:<path>`` weights into a timm model.

    Returns:
        (missing, unexpected) key lists (both empty when ``strict``; otherwise what was not matched).

    Raises:
        WeightLoadError: unknown source, unreadable file, shape mismatches, or (strict) key mismatches, listed.
    """
    kind, _, path = source.partition(":")
    if kind not in ("file", "radimagenet") or not path:
        raise WeightLoadError(f"pretrained={source!r}: expected 'timm:<tag>', 'file:<path>' or 'radimagenet:<path>'")
    state = _read_state_dict(Path(path))
    if kind == "radimagenet":
        state = map_radimagenet_keys(state, type(model).__name__.lower() if not hasattr(model, "pretrained_cfg")
                                     else model.pretrained_cfg.get("architecture", type(model).__name__.lower()))
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.fc.", "classifier."))
             or k in model.state_dict()}
    _adapt_stem(model, state)
    own = model.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and own[k].shape != v.shape]
    if bad:
        raise WeightLoadError(f"pretrained={source!r}: shape mismatches: " + "; ".join(bad[:10]))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise WeightLoadError(
            f"pretrained={source!r} does not match the model (strict): missing {len(missing)} {missing[:10]}, "
            f"unexpected {len(unexpected)} {unexpected[:10]}; pass strict=False to load the overlap")
    model.load_state_dict(state, strict=False)
    return missing, unexpected
