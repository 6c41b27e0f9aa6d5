"""AdamW with per-part learning rates, no decay on norms and biases, linear warmup then cosine decay."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from mammokit.errors import InvalidInputError


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights and embeddings (all 1-D or named so) are not weight-decayed."""
    return param.ndim <= 1 or name.endswith(".bias") or "embed" in name.split(".")[-2:][0]


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    backbone_lr: float | None = None,
    backbone_markers: Iterable[str] = ("global_net", "local_net", "backbone"),
) -> list[dict]:
    """Split trainable parameters into (backbone|head) × (decay|no-decay) groups.

    A parameter belongs to a backbone (the global or local network) when its name contains a `backbone_markers` entry;
    the backbone gets `backbone_lr` (default: `lr`). Frozen parameters are left out.
    """
    markers = tuple(backbone_markers)
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_backbone = any(m in name for m in markers)
        key = (in_backbone, is_no_decay(name, param))
        groups.setdefault(key, []).append(param)
    out = []
    for (in_backbone, no_decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": backbone_lr if (in_backbone and backbone_lr is not None) else lr,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": f"{'backbone' if in_backbone else 'head'}/{'no_decay' if no_decay else 'decay'}",
        })
    if not out:
        raise InvalidInputError("the model has no trainable parameters (is every part frozen?)")
    return out


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.01) -> float:
    """LR multiplier: linear from ~0 to 1 over `warmup_steps`, then cosine down to `min_factor` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, backbone_lr: float | None, total_steps: int, warmup_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over `param_groups` and its per-step warmup-cosine scheduler."""
    opt = torch.optim.AdamW(param_groups(model, lr=lr, weight_decay=weight_decay, backbone_lr=backbone_lr), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine_factor(step, total_steps, warmup_steps)
    )
    return opt, sched
