"""`ExamDataset`: exams (or breasts, or single views) from the preprocessed store, ready for a model.

One item of the default `exam` level is the four views of an exam in the fixed order L-CC, L-MLO, R-CC, R-MLO
(missing views are masked, never zero-filled into averages), their breast- and exam-level labels, and two renderings
of every view: the global input at the model's size and a `full_scale`× larger "full" view the local pathway crops
from. At the `breast` level an item holds one breast's CC and MLO in the same four slots (the other breast masked);
at the `view` level an item is one image, for single-view models. Every level yields the models' `ModelInput`
keys with views on axis 0 (`images` (V, 1, H, W), `full`, `view_mask` (V,), `laterality` (V,)), so a batch is
(B, V, ...) for every model.

Per image: read the stored physical values → resize into the full input (aspect kept, chest wall left, padded right
and bottom) → augment (training only, seeded per item and epoch) → normalise (per image, or per view group: CC and
MLO never mixed) → area-downscale to the global input.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mammokit.data.augment import Augment, item_rng
from mammokit.errors import InvalidInputError
from mammokit.preprocess.store import read_image
from mammokit.preprocess.store_schema import row_lesions

log = logging.getLogger("mammokit.data")

VIEW_SLOTS: tuple[tuple[str, str], ...] = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
LEVELS = ("exam", "breast", "view")
NORMALISATIONS = ("image", "view_group")
Z_CLIP = 6.0  # normalised values are clipped to ±Z_CLIP (bright markers and implants cannot dominate a batch)


@dataclass(frozen=True)
class Placement:
    """Where a stored image landed in the input canvas: `input = stored * scale`, top-left aligned."""

    scale: float
    height: int  # rows of the canvas covered by the image
    width: int


def placement_for(shape: tuple[int, int], size: tuple[int, int]) -> Placement:
    """Where an image of `shape` lands when fitted into a canvas of `size` (aspect kept, top-left aligned)."""
    h, w = shape
    scale = min(size[0] / h, size[1] / w)
    return Placement(scale, max(1, min(size[0], round(h * scale))), max(1, min(size[1], round(w * scale))))


def fit_into(image: np.ndarray, size: tuple[int, int], fill: float) -> tuple[np.ndarray, Placement]:
    """Resize `image` to fit (H, W) keeping its aspect ratio; top-left aligned, the rest filled with `fill`."""
    placement = placement_for(image.shape, size)
    interp = cv2.INTER_AREA if placement.scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (placement.width, placement.height), interpolation=interp)
    canvas = np.full(size, fill, dtype=np.float32)
    canvas[: placement.height, : placement.width] = resized
    return canvas, placement


def robust_scale(p1: float, p99: float, std: float) -> float:
    """Spread used for the z-score: (p99 - p1) / 4.65 (the normal's 1-99 % width), falling back to std."""
    spread = (p99 - p1) / 4.652696
    return float(spread if spread > 0 else max(std, 1e-6))


def view_slot(laterality: str | None, view: str | None) -> int | None:
    """Index in VIEW_SLOTS of a standard CC or MLO view (the `view` code, not its group), or None.

    Only the two screening views fill the slots. The others (ML, LM, LMO, XCCL, XCCM, FB, AT, ...) are
    supplementary or reverse projections: a model trained on CC/MLO has not learned them, and an exam holding both
    an MLO and an ML would otherwise fill the slot with whichever sorts first. They stay in the index and the store.
    """
    try:
        return VIEW_SLOTS.index((str(laterality), str(view or "").strip().upper()))
    except ValueError:
        return None


def slot_exclusions(table: pd.DataFrame) -> dict[str, int]:
    """Why rows of `table` fill no slot, counted: "view <code> is not CC/MLO", "no laterality", "no view"."""
    reasons: dict[str, int] = {}
    for lat, view in zip(table["laterality"], table["view"], strict=True):
        code = str(view or "").strip().upper()
        if lat not in ("L", "R"):
            reason = "no laterality"
        elif not code:
            reason = "no view"
        elif code not in ("CC", "MLO"):
            reason = f"view {code} is not CC/MLO"
        else:
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
    return dict(sorted(reasons.items()))


class ExamDataset(Dataset):
    """Items of exams / breasts / views read from a preprocessed store.

    Args:
        table: rows of `preprocessed.parquet` (already filtered to one split).
        store: folder holding the stored images (paths in the table are relative to it).
        level: "exam", "breast" or "view".
        input_size: (H, W) of the global input per view.
        full_scale: the full view is `input_size * full_scale` (0 = no separate full view).
        normalization: "image" (robust z-score from each image's breast statistics) or "view_group" (statistics
            of the image's view group across the dataset, from `view_stats`).
        view_stats: {"CC": {...}, "MLO": {...}} pooled statistics (needed for "view_group").
        augment: an `Augment` for training; None at evaluation.
        seed: base seed of the per-item augmentation streams.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        store: str | Path,
        *,
        level: str = "exam",
        input_size: tuple[int, int] = (256, 160),
        full_scale: int = 4,
        normalization: str = "image",
        view_stats: dict[str, dict[str, float]] | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if normalization not in NORMALISATIONS:
            raise ValueError(f"normalization must be one of {NORMALISATIONS}, got {normalization!r}")
        if normalization == "view_group" and not view_stats:
            raise InvalidInputError("normalization='view_group' needs view_stats (the store's view_stats.json)")
        self.table = table.reset_index(drop=True)
        self.store = Path(store)
        self.level = level
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.full_scale = int(full_scale)
        self.normalization = normalization
        self.view_stats = view_stats or {}
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.items = self._build_items()

    # ----------------------------------------------------------------------------------------------- item lists
    def _build_items(self) -> list[dict[str, Any]]:
        """Group rows into items: lists of (slot, row index) plus labels and ids."""
        t = self.table
        slots = [view_slot(lat, v) for lat, v in zip(t["laterality"], t["view"], strict=True)]
        t = t.assign(slot_idx=slots)
        self.left_out = slot_exclusions(t)
        if self.left_out:
            log.info("%d image(s) fill no view slot: %s", sum(self.left_out.values()),
                     ", ".join(f"{k}: {n}" for k, n in self.left_out.items()))
        items: list[dict[str, Any]] = []
        if self.level == "view":
            for i, row in t.iterrows():
                if row["slot_idx"] is None:
                    continue
                items.append({"rows": [(0, i)], "exam_id": row["exam_id"], "patient_id": row["patient_id"],
                              "breasts": {row["laterality"]: _label(row.get("cancer"))},
                              "laterality": row["laterality"]})
            return items
        for exam_id, exam in t.groupby("exam_id", sort=True):
            usable = exam[exam["slot_idx"].notna()].sort_values("image_id")
            if usable.empty:
                continue
            breasts = {lat: _label(grp["cancer"].iloc[0]) for lat, grp in usable.groupby("laterality")}
            first_per_slot = usable.drop_duplicates("slot_idx")
            if len(first_per_slot) < len(usable):  # e.g. a repeated exposure: one image per slot, the first by id
                key = "another image of the exam fills its slot"
                self.left_out[key] = self.left_out.get(key, 0) + len(usable) - len(first_per_slot)
            pid = usable["patient_id"].iloc[0]
            if self.level == "exam":
                items.append({"rows": [(int(r.slot_idx), int(r.Index)) for r in first_per_slot.itertuples()],
                              "exam_id": exam_id, "patient_id": pid, "breasts": breasts})
            else:
                for lat, grp in first_per_slot.groupby("laterality"):
                    items.append({"rows": [(int(r.slot_idx), int(r.Index)) for r in grp.itertuples()],
                                  "exam_id": exam_id, "patient_id": pid, "breasts": {lat: breasts[lat]},
                                  "laterality": lat})
        return items

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (used when the sampler does not pass the epoch with each index)."""
        self.epoch = int(epoch)

    def item_labels(self) -> np.ndarray:
        """0/1 label of each item (an exam is positive when any breast has cancer); unknown counts as 0."""
        return np.array([int(any(v == 1 for v in it["breasts"].values())) for it in self.items])

    def item_groups(self) -> np.ndarray:
        """Patient id of each item (the unit of balanced sampling)."""
        return np.array([it["patient_id"] for it in self.items])

    def _slot_laterality(self, item: dict[str, Any]) -> np.ndarray:
        """Each slot's breast (0 = L, 1 = R): the view's own at the view level, `VIEW_SLOTS` order otherwise."""
        if self.level == "view":
            return np.array([0 if item["laterality"] == "L" else 1], np.int64)
        return np.array([0 if lat == "L" else 1 for lat, _ in VIEW_SLOTS], np.int64)

    # ----------------------------------------------------------------------------------------------- images
    def full_size(self) -> tuple[int, int]:
        """(H, W) of the full view the local pathway crops from."""
        k = max(1, self.full_scale)
        return self.input_size[0] * k, self.input_size[1] * k

    def _normalise(self, image: np.ndarray, row: pd.Series, inside: np.ndarray) -> np.ndarray:
        if self.normalization == "image":
            centre = float(row["stat_p50"])
            spread = robust_scale(float(row["stat_p1"]), float(row["stat_p99"]), float(row["stat_std"]))
        else:
            group = self.view_stats.get(str(row["view_group"]))
            if group is None:
                raise KeyError(f"view_stats has no group {row['view_group']!r} (image {row['image_id']})")
            pct = group["percentiles"]
            centre = float(pct["p50"])
            spread = robust_scale(float(pct["p1"]), float(pct["p99"]), float(group["std"]))
        out = (image - centre) / spread
        out[~inside] = -Z_CLIP / 2  # air: one constant, below almost all tissue
        np.clip(out, -Z_CLIP, Z_CLIP, out=out)
        return out

    def _render(self, row: pd.Series, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, dict]:
        """(global HxW, full HfxWf, info) for one stored image."""
        image = read_image(self.store / row["image_path"], float(row["offset"]), float(row["scale"]))
        background = float(row["background"])
        full, placement = fit_into(image, self.full_size(), background)
        boxes = _lesion_boxes(row, placement.scale)
        if self.augment is not None and rng is not None:
            full, boxes_aug, _, _ = self.augment(full, boxes=boxes if len(boxes) else None,
                                                      view=str(row["view_group"]), rng=rng)
            boxes = boxes_aug if boxes_aug is not None else boxes
        inside = full > background
        full = self._normalise(full, row, inside)
        g = cv2.resize(full, (self.input_size[1], self.input_size[0]), interpolation=cv2.INTER_AREA)
        k = self.full_size()[0] / self.input_size[0]
        info = {"scale_full": placement.scale, "boxes_global": boxes / k, "malignant": _lesion_malignant(row)}
        return g, full, info

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(index, tuple):  # (index, epoch) pairs from BalancedCaseSampler(with_epoch=True)
            index, epoch = index
        else:
            epoch = self.epoch
        item = self.items[index]
        rng = item_rng(self.seed, epoch, index) if self.augment is not None else None
        h, w = self.input_size
        hf, wf = self.full_size()
        n_slots = 1 if self.level == "view" else 4
        images = np.zeros((n_slots, 1, h, w), np.float32)
        full = np.zeros((n_slots, 1, hf, wf), np.float32)
        view_mask = np.zeros(n_slots, bool)
        image_ids = [""] * n_slots
        boxes: list[np.ndarray] = [np.zeros((0, 4), np.float32)] * n_slots
        malignant: list[np.ndarray] = [np.zeros(0, bool)] * n_slots
        for slot, row_idx in item["rows"]:
            row = self.table.iloc[row_idx]
            g, f, info = self._render(row, rng)
            images[slot, 0], full[slot, 0] = g, f
            view_mask[slot] = True
            image_ids[slot] = str(row["image_id"])
            boxes[slot] = info["boxes_global"].astype(np.float32)
            malignant[slot] = info["malignant"]
        breast_labels = np.array([_nan_if_none(item["breasts"].get(s)) for s in ("L", "R")], np.float32)
        known = ~np.isnan(breast_labels)
        exam_label = float(np.nanmax(breast_labels)) if known.any() else math.nan
        out: dict[str, Any] = {
            "breast_labels": torch.from_numpy(breast_labels),
            "breast_mask": torch.from_numpy(known),
            "exam_label": torch.tensor(exam_label, dtype=torch.float32),
            "exam_id": item["exam_id"],
            "patient_id": item["patient_id"],
            "image_ids": image_ids,
            "lesion_boxes": boxes,  # per slot, (N, 4) (y0, x0, y1, x1) in global-input pixels
            "lesion_malignant": malignant,  # per slot, (N,) bool
            "index": index,
        }
        # the `ModelInput` contract at both levels: views on axis 0 of every per-view tensor (one view at "view")
        out["images"] = torch.from_numpy(images)
        if self.full_scale:
            out["full"] = torch.from_numpy(full)
        out["view_mask"] = torch.from_numpy(view_mask)
        out["laterality"] = torch.from_numpy(self._slot_laterality(item))
        return out


def _label(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return None
    return int(value)


def _nan_if_none(value: int | None) -> float:
    return math.nan if value is None else float(value)


def _lesion_boxes(row: pd.Series, scale: float) -> np.ndarray:
    """Lesion boxes of the stored frame (x0, y0, x1, y1 JSON) as (y0, x0, y1, x1) input pixels."""
    boxes = row_lesions(row)
    arr = np.array([[b["y0"], b["x0"], b["y1"], b["x1"]] for b in boxes], np.float32).reshape(-1, 4)
    return arr * scale


def _lesion_malignant(row: pd.Series) -> np.ndarray:
    boxes = row_lesions(row)
    return np.array([bool(b.get("malignant", 0)) for b in boxes], bool)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep strings, per-slot box lists and other values as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
