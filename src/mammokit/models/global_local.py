"""GMIC-style global-local network for one mammographic view.

Global pathway: backbone on the whole (possibly downscaled) view -> 1x1 conv -> a malignancy logit map whose sigmoid
is the saliency map -> top-t% pooling -> global logit. Retrieval: the K non-overlapping windows of the saliency map
with the highest mean, chosen on the tensor for the whole batch, give K crops of ``patch_size`` pixels cut from the
full-resolution view. Local pathway: a second backbone on the crops -> gated-attention MIL -> local logit. Fusion:
[global max-pooled features, attention-weighted local features] -> fusion logit (the view's prediction).

Instead of retrieval, ``patch_source="grid"`` takes patch boxes from the input (the preprocessing patch index's
dense grid) and resamples each box to ``patch_size`` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mammokit.errors import InvalidInputError

from .backbone import create_backbone
from .contract import ModelInput, ModelOutput, check_input
from .mil import GatedAttentionPool

__all__ = [
    "GlobalLocalConfig",
    "GlobalLocalNet",
    "crop_boxes",
    "example_views",
    "resample_boxes",
    "retrieve_windows",
    "top_t_pool",
]


def top_t_pool(x: torch.Tensor, t: float) -> torch.Tensor:
    """Mean of the top ``t`` fraction (at least one) of each map: (B, C, h, w) -> (B, C)."""
    if not 0.0 < t <= 1.0:
        raise ValueError(f"top-t fraction must be in (0, 1], got {t}")
    flat = x.flatten(2)
    k = max(1, math.ceil(t * flat.shape[-1]))
    return flat.topk(k, dim=-1).values.mean(dim=-1)


def retrieve_windows(saliency: torch.Tensor, full_hw: tuple[int, int], patch_size: int, k: int) -> torch.Tensor:
    """Greedily pick ``k`` non-overlapping windows of highest mean saliency; return crop boxes in full-res pixels.

    The window in map cells is the smallest that covers ``patch_size`` full-resolution pixels and the crop is centred
    in it, so two windows that do not overlap on the map give crops that do not overlap in the image. A chosen
    window's cells are pushed far below any saliency value (expected in [0, 1]), so later picks avoid them; if the
    map has no free room left, the pick with the least overlap is taken. Runs on the whole batch at once (the
    loop is over the K picks only).

    Args:
        saliency: (B, h, w) saliency in [0, 1].
        full_hw: (Hf, Wf) of the image the crops are cut from; the map covers it exactly (cell = Hf / h).
        patch_size: crop side in full-resolution pixels.
        k: number of windows.

    Returns:
        (B, k, 4) int64 boxes (y0, x0, y1, x1) in full-resolution pixels, y1 - y0 = x1 - x0 = patch_size.
    """
    _, h, w = saliency.shape
    hf, wf = full_hw
    if patch_size > hf or patch_size > wf:
        raise InvalidInputError(f"patch_size {patch_size} exceeds the full-resolution image {hf}x{wf}")
    wy, wx = math.ceil(patch_size * h / hf), math.ceil(patch_size * w / wf)
    if wy > h or wx > w:
        raise InvalidInputError(f"patch window {wy}x{wx} cells does not fit the {h}x{w} saliency map")
    work = saliency.detach().float().clone()
    penalty = -2.0 * (wy * wx + 1)
    rows = torch.arange(h, device=saliency.device)[None, :, None]
    cols = torch.arange(w, device=saliency.device)[None, None, :]
    nx = w - wx + 1
    picks = []
    for _ in range(k):
        means = F.avg_pool2d(work[:, None], (wy, wx), stride=1).flatten(1)  # (B, ny*nx), windows fully inside
        idx = means.argmax(dim=1)
        ay, ax = idx // nx, idx % nx
        picks.append(torch.stack([ay, ax], dim=1))
        inside = ((rows >= ay[:, None, None]) & (rows < ay[:, None, None] + wy)
                  & (cols >= ax[:, None, None]) & (cols < ax[:, None, None] + wx))
        work = torch.where(inside, torch.full_like(work, penalty), work)
    cells = torch.stack(picks, dim=1)  # (B, k, 2) top-left cell of each window
    # crop centred in its window, exact integer floor((a + wy / 2) * Hf / h - P / 2): disjoint and inside by design
    y0 = torch.clamp(((2 * cells[..., 0] + wy) * hf - patch_size * h) // (2 * h), 0, hf - patch_size)
    x0 = torch.clamp(((2 * cells[..., 1] + wx) * wf - patch_size * w) // (2 * w), 0, wf - patch_size)
    return torch.stack([y0, x0, y0 + patch_size, x0 + patch_size], dim=-1)


def crop_boxes(image: torch.Tensor, boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut exact ``patch_size`` crops at integer boxes: (B, C, H, W), (B, K, 4) -> (B*K, C, P, P), by one gather."""
    b, c, hh, ww = image.shape
    k = boxes.shape[1]
    ar = torch.arange(patch_size, device=image.device)
    ys = boxes[..., 0:1] + ar  # (B, K, P)
    xs = boxes[..., 1:2] + ar
    idx = (ys[..., :, None] * ww + xs[..., None, :]).reshape(b, 1, -1).expand(b, c, -1)
    out = image.reshape(b, c, hh * ww).gather(2, idx)  # (B, C, K*P*P)
    return out.reshape(b, c, k, patch_size, patch_size).transpose(1, 2).reshape(b * k, c, patch_size, patch_size)


def resample_boxes(image: torch.Tensor, boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Bilinearly resample float boxes (B, N, 4) of ``image`` (B, C, H, W) to (B*N, C, P, P) (zeros outside)."""
    b, c, hh, ww = image.shape
    n = boxes.shape[1]
    steps = (torch.arange(patch_size, device=image.device, dtype=image.dtype) + 0.5) / patch_size  # (P,)
    y = boxes[..., 0:1] + steps * (boxes[..., 2:3] - boxes[..., 0:1])  # (B, N, P) pixel-edge coordinates
    x = boxes[..., 1:2] + steps * (boxes[..., 3:4] - boxes[..., 1:2])
    gy = (2 * y / hh - 1)[..., :, None].expand(b, n, patch_size, patch_size)
    gx = (2 * x / ww - 1)[..., None, :].expand(b, n, patch_size, patch_size)
    grid = torch.stack([gx, gy], dim=-1).reshape(b, n * patch_size, patch_size, 2)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, c, n, patch_size, patch_size).transpose(1, 2).reshape(b * n, c, patch_size, patch_size)


@dataclass
class GlobalLocalConfig:
    """Architecture of a `GlobalLocalNet` (also the per-view encoder of the multi-view model).

    ``num_patches=0`` disables the local pathway (the global-only baseline). ``image_size`` / ``full_size`` are the
    (H, W) that `example_input` produces; ``full_size=None`` means crops come from "image" itself.
    """

    global_backbone: str = "mammokit_resnet18n"
    local_backbone: str = "mammokit_resnet18n"
    global_pretrained: str | None = None
    local_pretrained: str | None = None
    image_size: tuple[int, int] = (512, 320)
    full_size: tuple[int, int] | None = None
    patch_size: int = 64
    num_patches: int = 4
    patch_source: str = "retrieve"  # "retrieve" (saliency windows) or "grid" (boxes given in the input)
    top_t: float = 0.02
    attention_hidden: int = 128
    dropout: float = 0.2
    grad_checkpointing: bool = False
    channels_last: bool = True
    backbone_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.patch_source not in ("retrieve", "grid"):
            raise InvalidInputError(f"patch_source must be 'retrieve' or 'grid', got {self.patch_source!r}")
        if self.num_patches < 0 or self.patch_size < 1:
            raise InvalidInputError(f"num_patches must be >= 0 and patch_size >= 1, got {self.num_patches}, "
                                    f"{self.patch_size}")
        self.image_size = tuple(self.image_size)
        self.full_size = tuple(self.full_size) if self.full_size is not None else None


class GlobalLocalNet(nn.Module):
    """Single-view global-local classifier (GMIC-style); ``num_patches=0`` gives the global-only baseline.

    Reads the `ModelInput` contract with V = 1 view (``images`` (B, 1, 1, H, W), optional ``full``, ``view_mask``,
    ``laterality`` (B, 1): which breast column the view's logit fills, default L; ``patch_boxes`` (B, 1, N, 4) and
    ``patch_mask`` in grid mode) and returns a `ModelOutput`: the view logit is the exam logit and fills its
    laterality's breast column; ``aux_view_logits`` names the ``global`` head, and with a local pathway the
    ``local`` and ``fusion`` heads.
    """

    views = 1

    def __init__(self, config: GlobalLocalConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = config or GlobalLocalConfig(**overrides)
        self.config = cfg
        common = dict(grad_checkpointing=cfg.grad_checkpointing, channels_last=cfg.channels_last, **cfg.backbone_kwargs)
        self.global_net = create_backbone(cfg.global_backbone, cfg.global_pretrained, **common)
        cg = self.global_net.num_features
        self.dropout = nn.Dropout(cfg.dropout)
        self.saliency_head = nn.Conv2d(cg, 1, kernel_size=1)
        self.local_net = None
        if cfg.num_patches > 0:
            self.local_net = create_backbone(cfg.local_backbone, cfg.local_pretrained, **common)
            cl = self.local_net.num_features
            self.mil = GatedAttentionPool(cl, cfg.attention_hidden)
            self.local_head = nn.Linear(cl, 1)
            self.fusion_head = nn.Linear(cg + cl, 1)
        self.feature_dim = cg + (self.local_net.num_features if self.local_net is not None else 0)

    def example_input(self, batch_size: int = 1, seed: int = 0) -> ModelInput:
        """A valid random input batch in this model's format (for tests, benches and export)."""
        return example_views(self.config, batch_size, self.views, seed)

    def gradcam_layers(self) -> list[nn.Module]:
        """The modules whose output is the last feature map the saliency head reads (Grad-CAM's default)."""
        return [self.global_net]

    def encode(self, image: torch.Tensor, full: torch.Tensor | None = None, patch_boxes: torch.Tensor | None = None,
               patch_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-view outputs: logits (B,), saliency (B, h, w), boxes (B, K, 4), attention (B, K), features (B, F)."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"'image' must be (B, 1, H, W), got {tuple(image.shape)}")
        full = image if full is None else full
        if full.shape[:2] != image.shape[:2] or full.ndim != 4:
            raise ValueError(f"'full' must be (B, 1, Hf, Wf) matching 'image' {tuple(image.shape)}, got "
                             f"{tuple(full.shape)}")
        b, _, hh, ww = image.shape
        feat = self.global_net(image)
        logit_map = self.saliency_head(self.dropout(feat))  # (B, 1, h, w)
        saliency = torch.sigmoid(logit_map)
        global_logit = top_t_pool(logit_map, self.config.top_t)[:, 0]
        g_vec = feat.amax(dim=(2, 3))
        out = {"global": global_logit, "saliency": saliency[:, 0]}
        if self.local_net is None:
            out.update(local=global_logit, fusion=global_logit, features=g_vec,
                       boxes=image.new_zeros(b, 0, 4), attention=image.new_zeros(b, 0))
            return out
        cfg = self.config
        sy, sx = full.shape[2] / hh, full.shape[3] / ww
        scale = image.new_tensor([sy, sx, sy, sx])
        if cfg.patch_source == "retrieve":
            boxes_full = retrieve_windows(saliency[:, 0], full.shape[2:], cfg.patch_size, cfg.num_patches)
            patches = crop_boxes(full, boxes_full, cfg.patch_size)
            boxes = boxes_full.to(image.dtype) / scale
            mask = None
        else:
            if patch_boxes is None or patch_boxes.ndim != 3 or patch_boxes.shape[0] != b or patch_boxes.shape[2] != 4:
                raise ValueError("patch_source='grid' needs input 'patch_boxes' (B, N, 4) in 'image' pixels, got "
                                 f"{None if patch_boxes is None else tuple(patch_boxes.shape)}")
            boxes = patch_boxes.to(image.dtype)
            patches = resample_boxes(full, boxes * scale, cfg.patch_size)
            mask = patch_mask
        k = boxes.shape[1]
        h_local = self.local_net(patches).mean(dim=(2, 3)).reshape(b, k, -1)
        z, attention = self.mil(h_local, mask)
        local_logit = self.local_head(self.dropout(z))[:, 0]
        features = torch.cat([g_vec, z], dim=1)
        fusion_logit = self.fusion_head(self.dropout(features))[:, 0]
        out.update(local=local_logit, fusion=fusion_logit, features=features, boxes=boxes, attention=attention)
        return out

    def forward(self, batch: ModelInput) -> ModelOutput:
        b, _ = check_input(batch, views=self.views)

        def first_view(key: str) -> torch.Tensor | None:
            t = batch.get(key)
            return None if t is None else t[:, 0]

        enc = self.encode(batch["images"][:, 0], first_view("full"), first_view("patch_boxes"),
                          first_view("patch_mask"))
        view_logit = enc["fusion"]
        lat = first_view("laterality")
        lat = torch.zeros(b, dtype=torch.long, device=view_logit.device) if lat is None else lat.long()
        view_mask = batch.get("view_mask")
        view_mask = torch.ones(b, 1, dtype=torch.bool, device=view_logit.device) if view_mask is None \
            else view_mask.bool()
        breast_mask = F.one_hot(lat, 2).bool() & view_mask
        zero = torch.zeros_like(view_logit)
        aux = {"global": enc["global"][:, None]}
        if self.local_net is not None:
            aux.update(local=enc["local"][:, None], fusion=enc["fusion"][:, None])
        return ModelOutput(
            exam_logit=view_logit,
            breast_logits=torch.where(breast_mask, view_logit[:, None], zero[:, None]),
            breast_mask=breast_mask,
            view_logits=view_logit[:, None],
            view_mask=view_mask,
            saliency=enc["saliency"][:, None],
            patch_boxes=enc["boxes"][:, None],
            patch_attention=enc["attention"][:, None],
            aux_view_logits=aux,
        )


def example_views(cfg: GlobalLocalConfig, batch_size: int, views: int, seed: int) -> ModelInput:
    """A random `ModelInput` of ``views`` present views per item at the sizes of ``cfg`` (views in `VIEW_ORDER`
    laterality when there are four, left for one)."""
    g = torch.Generator().manual_seed(seed)
    lead = (batch_size, views, 1)
    batch: ModelInput = {"images": torch.randn(*lead, *cfg.image_size, generator=g),
                         "view_mask": torch.ones(batch_size, views, dtype=torch.bool),
                         "laterality": (torch.arange(views) // 2 if views == 4 else torch.zeros(views, dtype=torch.long)
                                        ).expand(batch_size, views).clone()}
    if cfg.full_size is not None:
        batch["full"] = torch.randn(*lead, *cfg.full_size, generator=g)
    if cfg.patch_source == "grid" and cfg.num_patches > 0:
        boxes = _grid_boxes(cfg, batch_size * views)
        batch["patch_boxes"] = boxes.reshape(batch_size, views, *boxes.shape[1:])
    return batch


def _grid_boxes(cfg: GlobalLocalConfig, batch_size: int) -> torch.Tensor:
    """A dense grid of up to ``num_patches`` non-overlapping patch boxes in ``image`` pixels (for example inputs)."""
    hh, ww = cfg.image_size
    hf, wf = cfg.full_size or cfg.image_size
    ph, pw = cfg.patch_size * hh / hf, cfg.patch_size * ww / wf
    ny, nx = max(1, int(hh // ph)), max(1, int(ww // pw))
    cells = [(i, j) for i in range(ny) for j in range(nx)][: cfg.num_patches]
    boxes = torch.tensor([[i * ph, j * pw, (i + 1) * ph, (j + 1) * pw] for i, j in cells], dtype=torch.float32)
    return boxes[None].expand(batch_size, -1, -1).clone()
