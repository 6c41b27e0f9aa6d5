"""Multiple-instance pooling: turn a bag of N instances (patches, views, breasts) into one vector.

Every pooling module takes ``x`` (B, N, D) and an optional boolean ``mask`` (B, N) (True = instance present) and
returns ``(pooled (B, D), weights (B, N))``. The weights say how much each instance contributed and always sum to 1
over present instances: for the fixed poolings they are the channel-averaged derivative d pooled / d x_i (one-hot
for max, uniform for mean, 1/k on the top k, softmax(r x) for LSE), for the attention poolings the attention itself.
Masked instances never enter the result and get weight 0; a bag with no present instance pools to 0 with all-zero
weights (no NaN), so callers need no special case for an exam with a missing breast.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "AttentionPool",
    "GatedAttentionPool",
    "LSEPool",
    "MaxPool",
    "MeanPool",
    "TopKMeanPool",
    "create_mil_pool",
]


def _check(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if x.ndim != 3:
        raise ValueError(f"MIL input x must be (B, N, D), got shape {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"MIL mask must be bool (B, N) = {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    return mask


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over present entries; rows with none present give zeros."""
    logits = logits.masked_fill(~mask, float("-inf"))
    top = logits.amax(dim=dim, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(logits - top) * mask
    return e / e.sum(dim=dim, keepdim=True).clamp_min(1e-30)


class MaxPool(nn.Module):
    """Per-channel maximum over present instances (classic MIL: the bag is positive if any instance is)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _check(x, mask)
        filled = x.masked_fill(~mask[..., None], float("-inf"))
        pooled = filled.amax(dim=1)
        any_present = mask.any(dim=1, keepdim=True)
        onehot = nn.functional.one_hot(filled.argmax(dim=1), x.shape[1]).to(x.dtype)  # (B, D, N)
        weights = onehot.mean(dim=1) * any_present
        return torch.where(any_present, pooled, torch.zeros_like(pooled)), weights


class MeanPool(nn.Module):
    """Mean over present instances (missing ones are excluded, not averaged in as zeros)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _check(x, mask)
        weights = mask.to(x.dtype) / mask.sum(dim=1, keepdim=True).clamp_min(1).to(x.dtype)
        return (x * weights[..., None]).sum(dim=1), weights


class TopKMeanPool(nn.Module):
    """Per-channel mean of the k largest present instances (k clipped to the number present).

    Args:
        k: instances averaged per channel; k=1 is max pooling, k>=N is mean pooling.
    """

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"TopKMeanPool k must be >= 1, got {k}")
        self.k = k

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _check(x, mask)
        k = min(self.k, x.shape[1])
        filled = x.masked_fill(~mask[..., None], float("-inf"))
        values, idx = filled.topk(k, dim=1)  # (B, k, D)
        n_present = mask.sum(dim=1).clamp(max=k)  # (B,)
        take = (torch.arange(k, device=x.device)[None, :] < n_present[:, None]).to(x.dtype)  # (B, k)
        denom = n_present.clamp_min(1).to(x.dtype)[:, None]
        pooled = (torch.where(take[..., None] > 0, values, torch.zeros_like(values)) * take[..., None]).sum(1) / denom
        contrib = torch.zeros_like(x).scatter_add(1, idx, (take / denom)[..., None].expand_as(values))
        return pooled, contrib.mean(dim=2)


class LSEPool(nn.Module):
    """Log-sum-exp pooling, a smooth max: (1/r) log mean_i exp(r x_i) over present instances.

    Args:
        r: sharpness; r -> 0 tends to the mean, r -> inf to the max.
        learnable: learn log r.
    """

    def __init__(self, r: float = 5.0, learnable: bool = False) -> None:
        super().__init__()
        if r <= 0:
            raise ValueError(f"LSEPool r must be > 0, got {r}")
        log_r = torch.tensor(math.log(r))
        if learnable:
            self.log_r = nn.Parameter(log_r)
        else:
            self.register_buffer("log_r", log_r)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _check(x, mask)
        r = self.log_r.exp()
        m = mask[..., None]
        z = (r * x).masked_fill(~m, float("-inf"))
        n = mask.sum(dim=1, keepdim=True).clamp_min(1).to(x.dtype)  # (B, 1)
        lse = torch.logsumexp(z, dim=1)  # (B, D); -inf where nothing present
        any_present = mask.any(dim=1, keepdim=True)
        pooled = torch.where(any_present, (lse - n.log()) / r, torch.zeros_like(lse))
        weights = _masked_softmax(r * x, m.expand_as(x)).mean(dim=2)
        return pooled, weights


class AttentionPool(nn.Module):
    """Attention MIL pooling (Ilse et al. 2018): a_i = softmax_i(w . tanh(V h_i)), pooled = sum_i a_i h_i.

    Args:
        dim: instance feature size D.
        hidden: attention hidden size.
    """

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.V = nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1, bias=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.V(x))).squeeze(-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = _check(x, mask)
        weights = _masked_softmax(self.scores(x), mask)
        return (weights[..., None] * x).sum(dim=1), weights


class GatedAttentionPool(AttentionPool):
    """Gated attention MIL pooling: a_i = softmax_i(w . (tanh(V h_i) * sigmoid(U h_i))) (GMIC's local aggregation)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__(dim, hidden)
        self.U = nn.Linear(dim, hidden)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.V(x)) * torch.sigmoid(self.U(x))).squeeze(-1)


def create_mil_pool(kind: str, dim: int = 1, hidden: int = 128, k: int = 2, r: float = 5.0) -> nn.Module:
    """Build a pooling module by name: ``max``, ``mean``, ``topk``, ``lse``, ``attention``, ``gated_attention``."""
    if kind == "max":
        return MaxPool()
    if kind == "mean":
        return MeanPool()
    if kind == "topk":
        return TopKMeanPool(k)
    if kind == "lse":
        return LSEPool(r)
    if kind == "attention":
        return AttentionPool(dim, hidden)
    if kind == "gated_attention":
        return GatedAttentionPool(dim, hidden)
    raise ValueError(f"unknown MIL pooling {kind!r}: use max, mean, topk, lse, attention or gated_attention")
