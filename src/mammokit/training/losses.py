"""Training losses for malignancy logits: BCE, focal, class-balanced focal, label smoothing, GMIC's composite loss.

Every function works on raw logits (one logit per target, sigmoid sense), accepts soft targets and a validity mask,
and averages over the valid entries only, so unknown breasts (NaN labels or a False mask) contribute nothing, not
even to the denominator. `MammoLoss` assembles the terms for the model output contract of DESIGN.md.

The module imports nothing else from mammokit, so the trainer and the benches can use it alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammokit.models.contract import ModelOutput

LOSS_KINDS = ("bce", "focal", "cb_focal")


def _valid_mask(targets: Tensor, mask: Tensor | None, name: str = "targets") -> Tensor:
    """Boolean mask of entries that have a label: `mask` (if given) and not NaN."""
    valid = ~torch.isnan(targets)
    if mask is not None:
        if mask.shape != targets.shape:
            raise ValueError(f"{name}: mask shape {tuple(mask.shape)} differs from target shape {tuple(targets.shape)}")
        valid = valid & mask.to(torch.bool)
    return valid


GMIC_HEADS = ("global", "local", "fusion")
"""The auxiliary heads of the GMIC-style models; a model without a local pathway has only the first."""

def _check_pair(logits: Tensor, targets: Tensor, name: str) -> None:
    if logits.shape != targets.shape:
        raise ValueError(f"{name}: logits shape {tuple(logits.shape)} differs from target shape {tuple(targets.shape)}")


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of `values` over `valid` entries; 0 (still attached to the graph) when nothing is valid."""
    values = torch.where(valid, values, torch.zeros_like(values))
    return values.sum() / valid.sum().clamp(min=1)


def smooth_labels(targets: Tensor, smoothing: float, positive_only: bool = False) -> Tensor:
    """Soften binary targets.

    Symmetric smoothing maps t to t·(1-s) + s/2 (1 → 1-s/2, 0 → s/2), the two-class form of Szegedy et al.
    Positive-only smoothing maps t to t·(1-s) (1 → 1-s, 0 stays 0): it tempers over-confidence on positives, whose
    labels are the noisy ones in screening data (a cancer visible only in retrospect), and keeps negatives exact.
    NaN targets stay NaN.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if smoothing == 0.0:
        return targets
    if positive_only:
        return targets * (1.0 - smoothing)
    return targets * (1.0 - smoothing) + 0.5 * smoothing


def bce_with_logits(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    *,
    smoothing: float = 0.0,
    positive_only_smoothing: bool = False,
    weights: Tensor | None = None,
) -> Tensor:
    """Binary cross-entropy on logits, averaged over valid entries.

    Args:
        logits: raw scores, any shape.
        targets: same shape, values in [0, 1]; NaN marks an unknown label.
        mask: optional boolean mask (True = label known), same shape.
        smoothing: label smoothing amount (see `smooth_labels`).
        positive_only_smoothing: soften positives only.
        weights: optional per-element weights (broadcastable), e.g. class-balancing weights.
    """
    _check_pair(logits, targets, "bce_with_logits")
    valid = _valid_mask(targets, mask)
    t = smooth_labels(torch.nan_to_num(targets, nan=0.0), smoothing, positive_only_smoothing)
    loss = F.binary_cross_entropy_with_logits(logits, t.to(logits.dtype), reduction="none")
    if weights is not None:
        loss = loss * weights
    return masked_mean(loss, valid)


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    *,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    smoothing: float = 0.0,
    positive_only_smoothing: bool = False,
    weights: Tensor | None = None,
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), averaged over valid entries.

    loss = α_t · (1 - p_t)^γ · BCE, with p_t = p·t + (1-p)·(1-t) and α_t = α·t + (1-α)·(1-t); the same formula
    holds for soft (smoothed) targets. `alpha=None` drops the α_t factor; γ = 0 and α = None give plain BCE.
    """
    _check_pair(logits, targets, "focal_loss")
    if gamma < 0:
        raise ValueError(f"focal_loss: gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"focal_loss: alpha must be in [0, 1] or None, got {alpha}")
    valid = _valid_mask(targets, mask)
    t = smooth_labels(torch.nan_to_num(targets, nan=0.0), smoothing, positive_only_smoothing).to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t).clamp(min=0).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    if weights is not None:
        loss = loss * weights
    return masked_mean(loss, valid)


def class_balanced_weights(class_counts: Sequence[float], beta: float = 0.999) -> Tensor:
    """Per-class weights from the effective number of samples (Cui et al. 2019).

    w_c = (1 - β) / (1 - β^n_c), normalised so the weights sum to the number of classes (so with equal counts every
    weight is 1). β → 0 gives uniform weights, β → 1 gives inverse-frequency weights.
    """
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError(f"class_counts must list at least two class counts, got {list(class_counts)}")
    if (counts <= 0).any():
        raise ValueError(f"class_counts must all be positive, got {counts.tolist()}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (raw / raw.sum() * counts.numel()).to(torch.float32)


def class_balanced_focal_loss(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    *,
    class_counts: Sequence[float],
    beta: float = 0.999,
    gamma: float = 2.0,
    smoothing: float = 0.0,
    positive_only_smoothing: bool = False,
) -> Tensor:
    """Class-balanced sigmoid focal loss: the focal loss with α_t replaced by the effective-number weight.

    `class_counts` is (n_negative, n_positive); an element's weight is w_pos·t + w_neg·(1-t) on the raw target.
    """
    w_neg, w_pos = class_balanced_weights(class_counts, beta).tolist()[:2]
    t = torch.nan_to_num(targets, nan=0.0)
    weights = (w_pos * t + w_neg * (1 - t)).to(logits.dtype)
    return focal_loss(
        logits,
        targets,
        mask,
        gamma=gamma,
        alpha=None,
        smoothing=smoothing,
        positive_only_smoothing=positive_only_smoothing,
        weights=weights,
    )


def saliency_l1(saliency: Tensor | Sequence[Tensor], view_mask: Tensor | None = None) -> Tensor:
    """Mean absolute value of saliency maps (GMIC's sparsity term).

    Args:
        saliency: a tensor (B, h, w), (B, V, h, w) or (B, V, C, h, w), or a sequence of such tensors (maps of
            different sizes); with a sequence the mean runs over all their elements together.
        view_mask: optional (B, V) boolean mask, missing views of a (B, V, ...) tensor are left out; or (B,) for
            single-view items (unlabelled views of a (B, ...) tensor are left out).
    """
    maps = [saliency] if isinstance(saliency, Tensor) else list(saliency)
    if not maps:
        raise ValueError("saliency_l1: no saliency maps given")
    total, count = None, 0
    for s in maps:
        a = s.abs()
        if view_mask is not None and s.ndim >= view_mask.ndim + 2:
            if tuple(view_mask.shape) != tuple(s.shape[: view_mask.ndim]):
                raise ValueError(
                    f"saliency_l1: view_mask shape {tuple(view_mask.shape)} does not match saliency {tuple(s.shape)}"
                )
            m = view_mask.to(torch.bool).reshape(*view_mask.shape, *([1] * (s.ndim - view_mask.ndim))).expand_as(a)
            part, n = torch.where(m, a, torch.zeros_like(a)).sum(), int(m.sum())
        else:
            part, n = a.sum(), a.numel()
        total = part if total is None else total + part
        count += n
    return total / max(count, 1)


def view_targets(breast_labels: Tensor, laterality: Tensor) -> Tensor:
    """Per-view labels gathered from breast labels: view j of exam b gets breast_labels[b, laterality[b, j]].

    Args:
        breast_labels: (B, 2) [left, right], NaN for unknown.
        laterality: (B,) or (B, V) integer tensor, 0 = left, 1 = right.
    """
    if breast_labels.ndim != 2 or breast_labels.shape[1] != 2:
        raise ValueError(f"view_targets: breast_labels must be (B, 2), got {tuple(breast_labels.shape)}")
    lat = laterality.long()
    if ((lat < 0) | (lat > 1)).any():
        raise ValueError("view_targets: laterality must be 0 (left) or 1 (right)")
    if lat.ndim == 1:
        return breast_labels.gather(1, lat[:, None])[:, 0]
    return breast_labels.gather(1, lat)


@dataclass
class LossConfig:
    """Settings of `MammoLoss`.

    Attributes:
        kind: "bce", "focal" or "cb_focal".
        gamma: focal exponent (focal and cb_focal).
        alpha: focal positive-class weight, or None for none (focal only).
        smoothing: label-smoothing amount in [0, 1).
        positive_only_smoothing: soften positive targets only.
        class_counts: (n_negative, n_positive) training counts, required by cb_focal.
        beta: effective-number β for cb_focal.
        breast_weight: weight of the breast-level term on `breast_logits`.
        exam_weight: weight of the exam-level term on `exam_logit`.
        aux_weights: weight per named auxiliary head in `ModelOutput.aux_view_logits`, each trained against its
            view's breast label. `breast_logits` is the model's final (fusion) output, so GMIC's loss BCE(fusion) +
            BCE(global) + BCE(local) is the default with "fusion" at 0; give "fusion" a weight when a model's aux
            fusion logits differ from `breast_logits`. The standard heads (`GMIC_HEADS`) a model lacks (a
            global-only model has no "local") are skipped; any other name a model does not output is an error.
        saliency_l1: λ of the mean-absolute saliency term (0 disables it).
    """

    kind: str = "bce"
    gamma: float = 2.0
    alpha: float | None = 0.25
    smoothing: float = 0.0
    positive_only_smoothing: bool = False
    class_counts: tuple[float, float] | None = None
    beta: float = 0.999
    breast_weight: float = 1.0
    exam_weight: float = 1.0
    aux_weights: dict[str, float] = field(default_factory=lambda: {"global": 1.0, "local": 1.0, "fusion": 0.0})
    saliency_l1: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.kind == "cb_focal":
            if self.class_counts is None:
                raise ValueError("loss kind 'cb_focal' needs class_counts (n_negative, n_positive)")
            class_balanced_weights(self.class_counts, self.beta)  # validates
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"loss smoothing must be in [0, 1), got {self.smoothing}")
        for name in ("breast_weight", "exam_weight", "saliency_l1", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss {name} must be >= 0, got {getattr(self, name)}")
        for key, w in self.aux_weights.items():
            if key == "saliency":
                raise ValueError("aux_weights: the saliency term is weighted by saliency_l1, not aux_weights")
            if w < 0:
                raise ValueError(f"aux_weights[{key!r}] must be >= 0, got {w}")

    @classmethod
    def from_any(cls, config: LossConfig | Mapping[str, Any] | Any | None) -> LossConfig:
        """Build from a LossConfig, a mapping, or any object with `model_dump()` (a pydantic model); extra keys fail."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        data = config.model_dump() if hasattr(config, "model_dump") else dict(config)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"loss config: unknown keys {unknown}; known keys are {sorted(known)}")
        if data.get("class_counts") is not None:
            data["class_counts"] = tuple(data["class_counts"])
        if data.get("aux_weights") is not None:
            data["aux_weights"] = dict(data["aux_weights"])
        return cls(**data)


class MammoLoss(nn.Module):
    """Total training loss for the mammokit model output contract.

    total = breast_weight·L(breast_logits, breast_labels) + exam_weight·L(exam_logit, exam_label)
            + Σ_k aux_weights[k]·L(aux_view_logits[k], view_labels) + saliency_l1·mean|saliency|

    where L is the configured per-element loss (BCE / focal / class-balanced focal, with label smoothing) averaged
    over known labels. `outputs` is a `ModelOutput` (or a mapping with the same names). Targets dict keys:
        breast_labels: (B, 2) float [left, right], NaN for unknown; optional breast_mask (B, 2), True = known.
        exam_label: (B,) float, NaN for unknown; optional exam_mask (B,).
        view_labels: (B, V) per-view labels (see `view_targets`), NaN or view_mask (B, V) for missing: the target
            of every auxiliary head, matched by the head's name, never by its shape.
    The saliency L1 reads outputs.saliency (B, V, h, w); view_mask also drops missing views from it.
    """

    def __init__(self, config: LossConfig | Mapping[str, Any] | Any | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = LossConfig.from_any(config)
        if overrides:
            merged = {f.name: getattr(cfg, f.name) for f in fields(LossConfig)}
            merged.update(overrides)
            cfg = LossConfig.from_any(merged)
        self.config = cfg

    def element_loss(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """The configured loss of one logits tensor against its targets, averaged over known entries."""
        c = self.config
        common = {"smoothing": c.smoothing, "positive_only_smoothing": c.positive_only_smoothing}
        if c.kind == "bce":
            return bce_with_logits(logits, targets, mask, **common)
        if c.kind == "focal":
            return focal_loss(logits, targets, mask, gamma=c.gamma, alpha=c.alpha, **common)
        assert c.class_counts is not None
        return class_balanced_focal_loss(
            logits, targets, mask, class_counts=c.class_counts, beta=c.beta, gamma=c.gamma, **common
        )

    def forward(self, outputs: ModelOutput | Mapping[str, Any], targets: Mapping[str, Tensor],
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return (total loss, {part name: unweighted part}); parts are detached for logging."""
        c = self.config
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None

        def add(name: str, weight: float, value: Tensor) -> None:
            nonlocal total
            parts[name] = value.detach()
            total = weight * value if total is None else total + weight * value

        levels = (
            ("breast", "breast_logits", "breast_labels", "breast_mask", c.breast_weight),
            ("exam", "exam_logit", "exam_label", "exam_mask", c.exam_weight),
        )
        out = _as_mapping(outputs)
        for name, out_key, label_key, mask_key, weight in levels:
            if weight <= 0:
                continue
            if out.get(out_key) is None or label_key not in targets:
                raise KeyError(f"MammoLoss: {name}_weight > 0 needs outputs.{out_key} and targets[{label_key!r}]")
            logits, labels = out[out_key], targets[label_key]
            _check_pair(logits, labels, out_key)
            add(name, weight, self.element_loss(logits, labels.to(logits.dtype), targets.get(mask_key)))
        aux = out.get("aux_view_logits") or {}
        for key, weight in c.aux_weights.items():
            if weight <= 0:
                continue
            if key not in aux:
                if key in GMIC_HEADS:
                    continue
                raise KeyError(f"MammoLoss: aux_weights[{key!r}] names no auxiliary output of this model "
                               f"(it has {sorted(aux)})")
            if "view_labels" not in targets:
                raise KeyError(f"MammoLoss: aux head {key!r} needs targets['view_labels']")
            logits = aux[key]
            labels = targets["view_labels"]
            _check_pair(logits, labels, f"aux_view_logits[{key!r}]")
            add(key, weight, self.element_loss(logits, labels.to(logits.dtype), targets.get("view_mask")))
        if c.saliency_l1 > 0:
            sal = out.get("saliency")
            if sal is not None and (not isinstance(sal, Tensor) or sal.numel() > 0):
                add("saliency_l1", c.saliency_l1, saliency_l1(sal, targets.get("view_mask")))
        if total is None:
            raise ValueError("MammoLoss: every term has zero weight or is missing; nothing to optimise")
        parts["total"] = total.detach()
        return total, parts


def _as_mapping(outputs: ModelOutput | Mapping[str, Any]) -> Mapping[str, Any]:
    """A model output's fields by name (a `ModelOutput` or an already flat mapping)."""
    if isinstance(outputs, ModelOutput):
        return {f.name: getattr(outputs, f.name) for f in fields(outputs)}
    return outputs
