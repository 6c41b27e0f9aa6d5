"""Optional lesion-box supervision of the saliency map, for datasets that annotate findings.

GMIC-style models learn where to look from image labels alone, which needs many exams. When lesion boxes exist
(VinDr-Mammo, CBIS-DDSM, INbreast, the synthetic data), marking every annotated finding — benign or malignant — as
"look here" teaches the global pathway to retrieve suspicious regions early, and leaves the malignant-or-not
decision to the local pathway and the classification losses. Off by default (`loss.box_saliency: 0`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def box_targets(boxes: list[list[np.ndarray]], input_hw: tuple[int, int], map_hw: tuple[int, int]) -> torch.Tensor:
    """(B, V, h, w) float targets: 1 on saliency cells that overlap a lesion box, else 0.

    Args:
        boxes: per item, per view slot, (N, 4) boxes (y0, x0, y1, x1) in input-image pixels.
        input_hw: (H, W) of the input image the boxes refer to.
        map_hw: (h, w) of the saliency map.
    """
    b, v = len(boxes), max((len(per_item) for per_item in boxes), default=0)
    target = torch.zeros(b, v, *map_hw)
    sy, sx = map_hw[0] / input_hw[0], map_hw[1] / input_hw[1]
    for i, per_item in enumerate(boxes):
        for j, slot_boxes in enumerate(per_item):
            for y0, x0, y1, x1 in np.asarray(slot_boxes, np.float64).reshape(-1, 4):
                r0, c0 = int(np.floor(y0 * sy)), int(np.floor(x0 * sx))
                r1, c1 = int(np.ceil(y1 * sy)), int(np.ceil(x1 * sx))
                target[i, j, max(0, r0):max(r0 + 1, r1), max(0, c0):max(c0 + 1, c1)] = 1.0
    return target


def box_saliency_loss(saliency: torch.Tensor, boxes: list[list[np.ndarray]], input_hw: tuple[int, int],
                      view_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy between the saliency maps (probabilities) and the lesion-box targets.

    Positive and negative cells are weighted equally in total (lesions cover a few cells of each map), and absent
    views are left out.
    """
    # float32 throughout: CUDA autocast refuses binary_cross_entropy on (half-precision) probabilities
    sal = (saliency if saliency.ndim == 4 else saliency[:, None]).float()
    target = box_targets(boxes, input_hw, tuple(sal.shape[-2:])).to(sal)
    mask = torch.ones(sal.shape[:2], dtype=torch.bool, device=sal.device) if view_mask is None else view_mask.bool()
    present = mask[..., None, None].expand_as(sal).to(sal)
    pos = target * present
    neg = (1 - target) * present
    with torch.autocast(device_type=sal.device.type, enabled=False):
        bce = F.binary_cross_entropy(sal.clamp(1e-6, 1 - 1e-6), target, reduction="none")
    pos_term = (bce * pos).sum() / pos.sum().clamp_min(1.0)
    neg_term = (bce * neg).sum() / neg.sum().clamp_min(1.0)
    return 0.5 * (pos_term + neg_term) if pos.sum() > 0 else neg_term
