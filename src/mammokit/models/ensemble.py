"""An ensemble of models that share one input format, itself a model of the same contract."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["EnsembleModel"]

AVERAGED_KEYS = ("breast_logits", "exam_logit", "view_logits")


class EnsembleModel(nn.Module):
    """Averages the logits of member models that share one input format."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def example_input(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        return self.members[0].example_input(batch_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        outs = [m(batch) for m in self.members]
        merged = dict(outs[0])
        for key in AVERAGED_KEYS:
            if key in merged:
                merged[key] = torch.stack([o[key] for o in outs]).mean(0)
        if isinstance(merged.get("saliency"), torch.Tensor) and merged["saliency"].numel():
            merged["saliency"] = torch.stack([o["saliency"] for o in outs]).mean(0)
        merged["member_exam_logits"] = torch.stack([o["exam_logit"] for o in outs], dim=0)
        return merged
