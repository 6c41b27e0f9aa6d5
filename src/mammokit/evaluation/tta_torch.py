"""The test-time transforms of `data.augment.tta_transforms` as torch ops on a batch's own device.

`TTATransform.forward` warps one numpy image with `cv2.warpAffine` (bilinear, constant border at the image minimum)
and applies gamma on the [0, 1]-rescaled values; `tta_forward` does the same to a stack of images with one
`affine_grid` + `grid_sample` (bilinear, the border value by sampling `x - min` with zero padding and adding the
minimum back), an exact `flip` for the pure vertical flip and the same gamma arithmetic. Each image keeps its own
minimum (background) and maximum, as on the CPU path. OpenCV >= 5 samples at exact coordinates, so the two paths
agree to float32 rounding; OpenCV 4 rounds source coordinates to 1/32 pixel, which moves edge pixels by a little more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mammokit.data.augment import TTATransform, tta_transforms
from mammokit.data.dataset import VIEW_SLOTS

__all__ = ["slot_views", "tta_batch", "tta_forward", "tta_theta"]


def slot_views(n_slots: int) -> list[str]:
    """The TTA view list of each slot: CC or MLO for four-view exams; single views carry no view type here, so they
    use the MLO list (no vertical flip), valid for every view."""
    return ["CC" if n_slots == 4 and VIEW_SLOTS[s][1] == "CC" else "MLO" for s in range(n_slots)]


def tta_theta(transform: TTATransform, shape: tuple[int, int]) -> np.ndarray:
    """The (2, 3) `affine_grid` matrix (align_corners=False) that samples like `cv2.warpAffine` with the transform's
    pixel-centre matrix: output normalised coordinates -> source normalised coordinates, in float64."""
    height, width = shape
    forward = np.vstack([transform.matrix(shape), [0.0, 0.0, 1.0]])
    to_pixel = np.array([[width / 2, 0.0, (width - 1) / 2], [0.0, height / 2, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return (np.linalg.inv(to_pixel) @ np.linalg.inv(forward) @ to_pixel)[:2]


def _kind(transform: TTATransform, shape: tuple[int, int]) -> str:
    matrix = transform.matrix(shape)
    if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]):
        return "identity"
    if np.allclose(matrix, [[1, 0, 0], [0, -1, shape[0] - 1]]):
        return "vflip"
    return "warp"


def tta_forward(images: torch.Tensor, transform: TTATransform) -> torch.Tensor:
    """`transform.forward` on every (H, W) image of `images` (..., H, W), on their device; a new tensor.

    The background of each image is its own minimum, as `forward` takes it by default.
    """
    if images.ndim < 2 or images.numel() == 0:
        raise ValueError(f"images: expected a non-empty (..., H, W) tensor, got shape {tuple(images.shape)}")
    shape = (int(images.shape[-2]), int(images.shape[-1]))
    flat = images.reshape(-1, *shape).float()
    background = flat.amin(dim=(-2, -1), keepdim=True)
    kind = _kind(transform, shape)
    if kind == "identity":
        out = flat.clone()
    elif kind == "vflip":
        out = flat.flip(-2)
    else:
        theta = torch.as_tensor(tta_theta(transform, shape), dtype=torch.float64, device=flat.device)
        grid = F.affine_grid(theta[None], [1, 1, *shape], align_corners=False).float()
        shifted = (flat - background)[None]  # images as channels: one grid serves them all
        out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        out += background
    if transform.gamma is not None:
        out = _gamma(out, float(transform.gamma), background)
    return out.reshape(images.shape).to(images.dtype)


def _gamma(images: torch.Tensor, gamma: float, background: torch.Tensor) -> torch.Tensor:
    """`augment.apply_gamma` per image: gamma on (x - bg) / (max - bg) clipped to [0, 1]; flat images unchanged."""
    span = images.amax(dim=(-2, -1), keepdim=True) - background
    safe = torch.where(span > 0, span, torch.ones_like(span))
    unit = ((images - background) * (1.0 / safe)).clamp_(0.0, 1.0)
    out = unit.pow_(gamma).mul_(span).add_(background)
    return torch.where(span > 0, out, images)


def tta_batch(batch: Mapping[str, Any], index: int, n: int) -> dict[str, Any]:
    """The `index`-th of `n` test-time transforms on a batch's `images` (and `full`), on whatever device they are.

    Like `inference._tta_batch`: per slot the CC or MLO list (`slot_views`), transform `index % len(list)`.
    """
    lists = {"CC": tta_transforms(n, view="CC"), "MLO": tta_transforms(n, view="MLO")}
    out = dict(batch)
    for key in ("images", "full"):
        x = batch.get(key)
        if x is None:
            continue
        views = slot_views(int(x.shape[1]))
        y = torch.empty_like(x)
        for view in dict.fromkeys(views):
            slots = [s for s, v in enumerate(views) if v == view]
            transform = lists[view][index % len(lists[view])]
            y[:, slots] = tta_forward(x[:, slots], transform)
        out[key] = y
    return out
