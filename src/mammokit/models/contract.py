"""The one model contract: every registered model (and an ensemble of them) reads a `ModelInput` and returns a
`ModelOutput`, so training, evaluation, explanation, predict and export never branch on the architecture.

Input: a dict of tensors, views on axis 1 (V = 1 for a single-view model, 4 in `VIEW_ORDER` for exam models):

- ``images`` (B, V, 1, H, W): the global inputs, canonical frame, normalised;
- ``full`` (B, V, 1, Hf, Wf): full-resolution views to crop patches from (optional: ``images`` itself);
- ``view_mask`` (B, V) bool: which views exist (optional: all);
- ``laterality`` (B, V) long: each view's breast, 0 = L, 1 = R (optional: the model's own layout, L for one view);
- ``patch_boxes`` (B, V, N, 4) float and ``patch_mask`` (B, V, N) bool: given patch boxes (grid patch mode).

Output: `ModelOutput`, whose every field has a declared shape; auxiliary logits are named and per view, so the loss
pairs them with the view labels by name and never guesses from a shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TypedDict

import torch
from torch import Tensor

__all__ = ["INPUT_KEYS", "ModelInput", "ModelOutput", "check_input", "num_views"]

INPUT_KEYS: tuple[str, ...] = ("images", "full", "view_mask", "laterality", "patch_boxes", "patch_mask")


class ModelInput(TypedDict, total=False):
    """The batch every model reads (see the module docstring for shapes); only ``images`` is required."""

    images: Tensor
    full: Tensor
    view_mask: Tensor
    laterality: Tensor
    patch_boxes: Tensor
    patch_mask: Tensor


@dataclass
class ModelOutput:
    """What every model returns. B = batch, V = views, K = patches per view, h x w = saliency map cells.

    Attributes:
        exam_logit: (B,) the exam's malignancy logit.
        breast_logits: (B, 2) [left, right] logits; 0 where ``breast_mask`` is False.
        breast_mask: (B, 2) bool, which breasts the input shows.
        view_logits: (B, V) each view's final logit; 0 where ``view_mask`` is False.
        view_mask: (B, V) bool, which views were present.
        saliency: (B, V, h, w) in [0, 1], the model's own malignancy map per view (zeros for missing views).
        patch_boxes: (B, V, K, 4) float (y0, x0, y1, x1) in ``images`` pixels; K = 0 without a local pathway.
        patch_attention: (B, V, K) the MIL attention of each patch.
        aux_view_logits: named auxiliary per-view logits, each (B, V) (e.g. GMIC's ``global`` / ``local`` /
            ``fusion`` heads); their target is the view's breast label.
        member_exam_logits: (M, B) the exam logit of each member of an ensemble, else None.
    """

    exam_logit: Tensor
    breast_logits: Tensor
    breast_mask: Tensor
    view_logits: Tensor
    view_mask: Tensor
    saliency: Tensor
    patch_boxes: Tensor
    patch_attention: Tensor
    aux_view_logits: dict[str, Tensor] = field(default_factory=dict)
    member_exam_logits: Tensor | None = None

    def check(self) -> ModelOutput:
        """Raise ValueError naming the first field whose shape or dtype breaks the contract; return self."""
        b, v = self.view_logits.shape[:2] if self.view_logits.ndim == 2 else (-1, -1)
        k = self.patch_boxes.shape[2] if self.patch_boxes.ndim == 4 else -1
        expected = {"exam_logit": (b,), "breast_logits": (b, 2), "breast_mask": (b, 2), "view_logits": (b, v),
                    "view_mask": (b, v), "patch_boxes": (b, v, k, 4), "patch_attention": (b, v, k)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if b < 0 or got != shape:
                raise ValueError(f"ModelOutput.{name}: expected shape {shape} (B, V, K = {b}, {v}, {k}), got {got}")
        if self.saliency.ndim != 4 or tuple(self.saliency.shape[:2]) != (b, v):
            raise ValueError(f"ModelOutput.saliency: expected (B, V, h, w) with B, V = {b}, {v}, got "
                             f"{tuple(self.saliency.shape)}")
        for name in ("breast_mask", "view_mask"):
            if getattr(self, name).dtype != torch.bool:
                raise ValueError(f"ModelOutput.{name}: expected bool, got {getattr(self, name).dtype}")
        for name, logits in self.aux_view_logits.items():
            if tuple(logits.shape) != (b, v):
                raise ValueError(f"ModelOutput.aux_view_logits[{name!r}]: expected (B, V) = ({b}, {v}), got "
                                 f"{tuple(logits.shape)}")
        if self.member_exam_logits is not None and (self.member_exam_logits.ndim != 2
                                                    or self.member_exam_logits.shape[1] != b):
            raise ValueError(f"ModelOutput.member_exam_logits: expected (M, {b}), got "
                             f"{tuple(self.member_exam_logits.shape)}")
        return self

    def tensors(self) -> dict[str, Tensor]:
        """The main fields as a flat dict (aux and member logits left out), e.g. for exporting or logging."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor) and f.name != "member_exam_logits"}


def _flatten(out: ModelOutput) -> tuple[list, list]:
    names = sorted(out.aux_view_logits)
    values = [getattr(out, f.name) for f in fields(out) if f.name != "aux_view_logits"]
    return [*values, *(out.aux_view_logits[n] for n in names)], names


def _unflatten(values: list, names: list[str]) -> ModelOutput:
    plain = [f.name for f in fields(ModelOutput) if f.name != "aux_view_logits"]
    own = dict(zip(plain, values[: len(plain)], strict=True))
    return ModelOutput(**own, aux_view_logits=dict(zip(names, values[len(plain):], strict=True)))


# a pytree node, so DDP, torch.export and torch.func see the tensors inside the output
torch.utils._pytree.register_pytree_node(ModelOutput, _flatten, _unflatten,
                                         serialized_type_name="mammokit.models.contract.ModelOutput")


def num_views(batch: ModelInput) -> tuple[int, int]:
    """(B, V) of a batch, after checking ``images`` is (B, V, 1, H, W)."""
    images = batch.get("images")
    if images is None:
        raise ValueError(f"model input needs 'images' (B, V, 1, H, W); the batch has {sorted(batch)}")
    if images.ndim != 5 or images.shape[2] != 1:
        raise ValueError(f"model input 'images' must be (B, V, 1, H, W), got {tuple(images.shape)}")
    return images.shape[0], images.shape[1]  # no int(): the ONNX tracer keeps the batch size symbolic


def check_input(batch: ModelInput, views: int | None = None) -> tuple[int, int]:
    """Check a batch against the contract (and a model's fixed view count); return (B, V)."""
    unknown = sorted(set(batch) - set(INPUT_KEYS))
    if unknown:
        raise ValueError(f"model input: unknown keys {unknown}; the contract's keys are {list(INPUT_KEYS)}")
    b, v = num_views(batch)
    if views is not None and v != views:
        raise ValueError(f"model input 'images' has {v} views per item; this model takes {views}")
    per_view = {"full": 5, "view_mask": 2, "laterality": 2, "patch_boxes": 4, "patch_mask": 3}
    for key, ndim in per_view.items():
        t = batch.get(key)
        if t is not None and (t.ndim != ndim or tuple(t.shape[:2]) != (b, v)):
            raise ValueError(f"model input {key!r} must have {ndim} dimensions starting (B, V) = ({b}, {v}), got "
                             f"{tuple(t.shape)}")
    return b, v
