"""Four-view exam model: one weight-shared view encoder, view/laterality embeddings, breast fusion, exam pooling.

Each present view goes through the same `GlobalLocalNet` encoder (missing views are skipped, so batch-norm never
sees placeholder images). The view's fused feature vector is projected, conditioned on its view type (CC/MLO) and
laterality (L/R) by learned embeddings (FiLM: h * (1 + gamma) + beta, or additive: h + e), and the CC and MLO of each
breast are fused into one breast representation (concat, masked mean or masked attention). A head gives the left
and right breast logits; the exam logit pools the two breasts (max, LSE or attention). Missing views are masked at
every step, never averaged in as zeros: an exam with a single view still gives a prediction for that breast.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import nn

from mammokit.errors import InvalidInputError

from .contract import ModelInput, ModelOutput, check_input
from .global_local import GlobalLocalConfig, GlobalLocalNet, example_views
from .mil import AttentionPool, create_mil_pool

__all__ = ["VIEW_ORDER", "MultiViewConfig", "MultiViewNet"]

VIEW_ORDER: tuple[str, ...] = ("L-CC", "L-MLO", "R-CC", "R-MLO")
"""Fixed order of the 4 views in every multi-view tensor; view v has laterality v // 2 (0 = L) and type v % 2."""


@dataclass
class MultiViewConfig:
    """Fusion settings of a `MultiViewNet`; ``encoder`` is the per-view `GlobalLocalConfig`."""

    encoder: GlobalLocalConfig = field(default_factory=GlobalLocalConfig)
    embed_dim: int = 128
    conditioning: str = "film"  # "film" or "add"
    breast_fusion: str = "attention"  # "concat", "mean" or "attention"
    exam_pool: str = "max"  # "max", "lse" or "attention"
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for name, value, allowed in (("conditioning", self.conditioning, ("film", "add")),
                                     ("breast_fusion", self.breast_fusion, ("concat", "mean", "attention")),
                                     ("exam_pool", self.exam_pool, ("max", "lse", "attention"))):
            if value not in allowed:
                raise InvalidInputError(f"MultiViewConfig.{name} must be one of {allowed}, got {value!r}")

    @classmethod
    def from_flat(cls, **kwargs) -> MultiViewConfig:
        """Split flat keyword arguments between this config and the encoder's (unknown keys are an error)."""
        own = {f.name for f in fields(cls)} - {"encoder"}
        enc = {f.name for f in fields(GlobalLocalConfig)}
        unknown = set(kwargs) - own - enc
        if unknown:
            raise InvalidInputError(f"unknown multi-view model options {sorted(unknown)}")
        encoder = GlobalLocalConfig(**{k: v for k, v in kwargs.items() if k in enc})
        return cls(encoder=encoder, **{k: v for k, v in kwargs.items() if k in own})


class MultiViewNet(nn.Module):
    """Four-view exam classifier built on a shared `GlobalLocalNet` view encoder.

    Reads the `ModelInput` contract with V = 4 views in `VIEW_ORDER` (L-CC, L-MLO, R-CC, R-MLO; ``laterality``, if
    given, must follow that order) and returns a `ModelOutput`: ``breast_logits`` (B, 2) [left, right] (0 where
    ``breast_mask`` is False), the pooled ``exam_logit``, the encoder's per-view fusion logits as ``view_logits``,
    and its ``global`` / ``local`` / ``fusion`` heads (``global`` only without a local pathway) as
    ``aux_view_logits``. Missing views give zeros in the per-view outputs; losses must use ``view_mask``.
    """

    views = 4

    def __init__(self, config: MultiViewConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = config or MultiViewConfig.from_flat(**overrides)
        self.config = cfg
        self.encoder = GlobalLocalNet(cfg.encoder)
        d = cfg.embed_dim
        self.project = nn.Sequential(nn.Linear(self.encoder.feature_dim, d), nn.ReLU(inplace=True))
        width = 2 * d if cfg.conditioning == "film" else d
        self.view_embed = nn.Embedding(2, width)  # CC, MLO
        self.side_embed = nn.Embedding(2, width)  # L, R
        nn.init.zeros_(self.view_embed.weight)
        nn.init.zeros_(self.side_embed.weight)
        if cfg.breast_fusion == "concat":
            self.missing_view = nn.Parameter(torch.zeros(d))  # stands in for an absent CC or MLO
            self.breast_fuse = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(inplace=True))
        elif cfg.breast_fusion == "attention":
            self.breast_fuse = AttentionPool(d, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.breast_head = nn.Linear(d, 1)
        if cfg.exam_pool == "attention":
            self.exam_attention = AttentionPool(d, d)
            self.exam_head = nn.Linear(d, 1)
        else:
            self.exam_pool = create_mil_pool(cfg.exam_pool)
        self.register_buffer("_view_type", torch.tensor([0, 1, 0, 1]), persistent=False)
        self.register_buffer("_side", torch.tensor([0, 0, 1, 1]), persistent=False)

    def example_input(self, batch_size: int = 1, seed: int = 0) -> ModelInput:
        """A valid random 4-view batch in this model's format (all views present)."""
        return example_views(self.config.encoder, batch_size, self.views, seed)

    def gradcam_layers(self) -> list[nn.Module]:
        """The shared view encoder's global backbone (its last feature map, read by the saliency head)."""
        return self.encoder.gradcam_layers()

    def forward(self, batch: ModelInput) -> ModelOutput:
        b, _ = check_input(batch, views=self.views)
        images = batch["images"]
        lat = batch.get("laterality")
        if lat is not None and bool((lat.long() != self._side).any()):
            raise ValueError(f"'laterality' must follow VIEW_ORDER {VIEW_ORDER} (0, 0, 1, 1) on every item")
        mask = batch.get("view_mask")
        mask = torch.ones(b, 4, dtype=torch.bool, device=images.device) if mask is None else mask.bool()
        flat_mask = mask.reshape(-1)
        idx = flat_mask.nonzero().squeeze(1)  # encode only the views that exist

        def pick(key: str) -> torch.Tensor | None:
            t = batch.get(key)
            return None if t is None else t.reshape(b * 4, *t.shape[2:]).index_select(0, idx)

        enc = self.encoder.encode(pick("images"), pick("full"), pick("patch_boxes"), pick("patch_mask"))
        per_view = {k: _scatter(v, idx, b) for k, v in enc.items()}  # each (B, 4, ...), zeros where missing

        h = self.project(per_view["features"])  # (B, 4, d)
        ve, se = self.view_embed(self._view_type), self.side_embed(self._side)  # (4, width)
        if self.config.conditioning == "film":
            gamma, beta = (ve + se).chunk(2, dim=-1)
            h = h * (1 + gamma) + beta
        else:
            h = h + ve + se
        hb = h.reshape(b, 2, 2, -1)  # (B, breast, [CC, MLO], d)
        mb = mask.reshape(b, 2, 2)
        breast_mask = mb.any(dim=2)  # (B, 2)
        fusion = self.config.breast_fusion
        if fusion == "concat":
            filled = torch.where(mb[..., None], hb, self.missing_view.expand_as(hb))
            rep = self.breast_fuse(filled.reshape(b, 2, -1))
        else:
            flat_hb, flat_mb = hb.reshape(b * 2, 2, -1), mb.reshape(b * 2, 2)
            if fusion == "mean":
                weights = flat_mb.to(h.dtype) / flat_mb.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
                rep = (flat_hb * weights[..., None]).sum(1)
            else:
                rep, _ = self.breast_fuse(flat_hb, flat_mb)
            rep = rep.reshape(b, 2, -1)
        breast_logits = self.breast_head(self.dropout(rep))[..., 0]
        breast_logits = torch.where(breast_mask, breast_logits, torch.zeros_like(breast_logits))
        if self.config.exam_pool == "attention":
            exam_rep, _ = self.exam_attention(rep, breast_mask)
            exam_logit = self.exam_head(self.dropout(exam_rep))[:, 0]
        else:
            exam_logit = self.exam_pool(breast_logits[..., None], breast_mask)[0][:, 0]
        aux = {"global": per_view["global"]}
        if self.encoder.local_net is not None:
            aux.update(local=per_view["local"], fusion=per_view["fusion"])
        return ModelOutput(
            exam_logit=exam_logit,
            breast_logits=breast_logits,
            breast_mask=breast_mask,
            view_logits=per_view["fusion"],
            view_mask=mask,
            saliency=per_view["saliency"],
            patch_boxes=per_view["boxes"],
            patch_attention=per_view["attention"],
            aux_view_logits=aux,
        )


def _scatter(values: torch.Tensor, idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Place per-present-view rows back into a (B, 4, ...) tensor with zeros for missing views."""
    out = values.new_zeros(batch_size * 4, *values.shape[1:]).index_copy(0, idx, values)
    return out.reshape(batch_size, 4, *values.shape[1:])
