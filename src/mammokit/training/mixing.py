"""MixUp / CutMix of training batches (`data.mixup`, `data.cutmix`): images, full views, labels and lesion boxes.

An item is mixed only with an item of the same view layout (the same present views; for single views the same
laterality), so each mixed slot holds the same view of two breasts and every label column stays that breast's; an
item alone in its layout keeps itself. Labels become soft (a mix of the two items' labels, unknown if either is
unknown), which every loss in `training.losses` accepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mammokit.data.augment import cutmix, mix_targets, mixup, replay_mix


def layout_partners(batch: dict[str, Any], rng: np.random.Generator) -> torch.Tensor:
    """A permutation of the batch that maps every item to a random item of the same view layout."""
    layout = torch.cat([batch["view_mask"].long(), batch["laterality"].long()], dim=1)  # present views and sides
    keys = [tuple(row) for row in layout.detach().cpu().tolist()]
    perm = np.arange(len(keys))
    for key in set(keys):
        members = np.flatnonzero([k == key for k in keys])
        perm[members] = rng.permutation(members)
    return torch.as_tensor(perm)


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _slot_boxes(own: np.ndarray, other: np.ndarray, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes, keep-mask of `own` + `other` in order) of one mixed slot: MixUp shows both items' lesions; CutMix
    keeps the item's lesions not wholly pasted over and the partner's clipped to the pasted box."""
    own, other = np.asarray(own, np.float32).reshape(-1, 4), np.asarray(other, np.float32).reshape(-1, 4)
    if record["mode"] == "mixup":
        return np.concatenate([own, other]), np.ones(len(own) + len(other), bool)
    y0, x0, y1, x1 = record["box"]
    clipped = np.stack([np.clip(other[:, 0], y0, y1), np.clip(other[:, 1], x0, x1),
                        np.clip(other[:, 2], y0, y1), np.clip(other[:, 3], x0, x1)], axis=1)
    inside = np.stack([np.clip(own[:, 0], y0, y1), np.clip(own[:, 1], x0, x1),
                       np.clip(own[:, 2], y0, y1), np.clip(own[:, 3], x0, x1)], axis=1)
    keep = np.concatenate([_box_area(inside) < _box_area(own), _box_area(clipped) > 0])
    return np.concatenate([own, clipped])[keep], keep


def mix_lesions(boxes: list[list[np.ndarray]], malignant: list[list[np.ndarray]], record: dict[str, Any],
                ) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Per item and slot, the lesion boxes (y0, x0, y1, x1, global-input pixels) and flags of the mixed images."""
    out_boxes: list[list[np.ndarray]] = []
    out_flags: list[list[np.ndarray]] = []
    for i, j in enumerate(record["perm"]):
        if i == j:
            out_boxes.append(boxes[i])
            out_flags.append(malignant[i])
            continue
        slots = [_slot_boxes(own, boxes[j][s], record) for s, own in enumerate(boxes[i])]
        out_boxes.append([mixed for mixed, _ in slots])
        out_flags.append([np.concatenate([np.asarray(malignant[i][s], bool), np.asarray(malignant[j][s], bool)])[keep]
                          for s, (_, keep) in enumerate(slots)])
    return out_boxes, out_flags


def mix_training_batch(batch: dict[str, Any], *, mixup_alpha: float, cutmix_alpha: float,
                       rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """The batch mixed by MixUp or CutMix (one of the two with equal chance when both α > 0), and the record.

    Both α = 0 returns the batch as it is. Mixed: `images` and `full` (same weight, CutMix box scaled),
    `breast_labels` and `exam_label` (soft), `breast_mask` (known in both), `lesion_boxes` / `lesion_malignant`.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return batch, {"mode": "none"}
    use_mixup = cutmix_alpha <= 0 or (mixup_alpha > 0 and rng.random() < 0.5)
    fn, alpha = (mixup, mixup_alpha) if use_mixup else (cutmix, cutmix_alpha)
    perm = layout_partners(batch, rng).to(batch["images"].device)
    images, breast_labels, record = fn(batch["images"], batch["breast_labels"], alpha=alpha, rng=rng, perm=perm)
    out = {**batch, "images": images, "breast_labels": breast_labels,
           "exam_label": mix_targets(batch["exam_label"], record),
           "breast_mask": batch["breast_mask"] & batch["breast_mask"][perm]}
    if "full" in batch:
        out["full"] = replay_mix(batch["full"], record)
    if "lesion_boxes" in batch:
        boxes = batch["lesion_boxes"]
        flags = batch.get("lesion_malignant") or [[np.zeros(len(b), bool) for b in item] for item in boxes]
        out["lesion_boxes"], out["lesion_malignant"] = mix_lesions(boxes, flags, record)
    return out, record
