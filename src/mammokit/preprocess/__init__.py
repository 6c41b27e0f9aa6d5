"""Pure array steps of preprocessing: numpy arrays and plain values in, arrays and dataclasses out.

Order of operations (what `pipeline.py` runs per image, all after decoding):

1. `breast_mask(pixels, padding_mask)` on a coarse block-averaged copy of the original (fast, vendor-robust);
2. `decide_orientation(mask.mask, laterality, patient_orientation)`: flip or not, with a disagreement flag;
3. `crop_box(mask, spacing, margin_mm)`: the crop in original DICOM pixels;
4. `plan_transform(shape, spacing, box, target_spacing_mm, flip)` -> `TransformRecord`, then
   `apply_transform(pixels, record)`: crop, resample (area or SimpleITK), flip last;
5. `original_to_stored_mask(mask.mask, record, mask.scale)`: the breast mask on the stored grid;
6. MLO views: `detect_pectoral(stored, stored_mask, spacing)` (canonical frame), optionally `suppress_pectoral`;
7. `intensity_stats(stored, stored_mask)` (pooled per view group with `StatsAggregator`);
8. `global_image(stored, long_side)` and `patch_grid(stored_mask, patch_size, stride)`.

Boxes and heatmaps map back to the DICOM grid with `stored_to_original_boxes` / `stored_to_original_heatmap`.
"""

from mammokit.preprocess.geometry import (
    TransformRecord,
    apply_transform,
    original_to_stored_boxes,
    original_to_stored_mask,
    plan_transform,
    stored_to_original_boxes,
    stored_to_original_heatmap,
)
from mammokit.preprocess.mask import BreastMask, breast_mask, crop_box, mask_to_original
from mammokit.preprocess.orient import Orientation, decide_orientation
from mammokit.preprocess.patches import PatchIndex, global_image, patch_grid
from mammokit.preprocess.pectoral import PectoralResult, detect_pectoral, suppress_pectoral
from mammokit.preprocess.resample import ResampleResult, resample
from mammokit.preprocess.stats import IntensityStats, StatsAggregator, intensity_stats, view_group

__all__ = [
    "BreastMask",
    "IntensityStats",
    "Orientation",
    "PatchIndex",
    "PectoralResult",
    "ResampleResult",
    "StatsAggregator",
    "TransformRecord",
    "apply_transform",
    "breast_mask",
    "crop_box",
    "decide_orientation",
    "detect_pectoral",
    "global_image",
    "intensity_stats",
    "mask_to_original",
    "original_to_stored_boxes",
    "original_to_stored_mask",
    "patch_grid",
    "plan_transform",
    "resample",
    "stored_to_original_boxes",
    "stored_to_original_heatmap",
    "suppress_pectoral",
    "view_group",
]
