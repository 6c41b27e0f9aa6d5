"""An ensemble of models that share one input format, itself a model of the same contract."""

from __future__ import annotations

import torch
from torch import nn

from .contract import ModelInput, ModelOutput

__all__ = ["EnsembleModel"]


class EnsembleModel(nn.Module):
    """Combines member models that read the same input into one `ModelOutput`.

    Logits (exam, breast, view and every named auxiliary head) and saliency maps are the members' means; each
    member's retrieved patches are kept (boxes concatenated along K, attention divided by the member count so it
    still sums to one per view); ``member_exam_logits`` holds each member's exam logit.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        views = {getattr(m, "views", None) for m in members}
        if len(views) != 1:
            raise ValueError(f"ensemble members take different view counts {sorted(map(str, views))}")
        self.members = nn.ModuleList(members)
        self.views = views.pop()

    def example_input(self, batch_size: int = 1, seed: int = 0) -> ModelInput:
        """The first member's example batch (every member reads the same format)."""
        return self.members[0].example_input(batch_size, seed)

    def gradcam_layers(self) -> list[nn.Module]:
        """Every member's Grad-CAM layers (Grad-CAM averages the maps over them)."""
        return [layer for m in self.members for layer in m.gradcam_layers()]

    def forward(self, batch: ModelInput) -> ModelOutput:
        outs: list[ModelOutput] = [m(batch) for m in self.members]
        first, n = outs[0], len(outs)
        names = set(first.aux_view_logits)
        if any(set(o.aux_view_logits) != names for o in outs):
            raise ValueError(f"ensemble members name different auxiliary outputs: "
                             f"{[sorted(o.aux_view_logits) for o in outs]}")
        shapes = {tuple(o.saliency.shape) for o in outs}
        if len(shapes) != 1:
            raise ValueError(f"ensemble members give saliency maps of different shapes {sorted(shapes)}")

        def mean(field: str) -> torch.Tensor:
            return torch.stack([getattr(o, field) for o in outs]).mean(0)

        return ModelOutput(
            exam_logit=mean("exam_logit"),
            breast_logits=mean("breast_logits"),
            breast_mask=first.breast_mask,
            view_logits=mean("view_logits"),
            view_mask=first.view_mask,
            saliency=mean("saliency"),
            patch_boxes=torch.cat([o.patch_boxes for o in outs], dim=2),
            patch_attention=torch.cat([o.patch_attention for o in outs], dim=2) / n,
            aux_view_logits={k: torch.stack([o.aux_view_logits[k] for o in outs]).mean(0) for k in sorted(names)},
            member_exam_logits=torch.stack([o.exam_logit for o in outs]),
        )
