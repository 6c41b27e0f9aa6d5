"""The `mammokit preprocess` configuration (YAML via `--config`, validated by pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mammokit.config import StrictModel


class PreprocessConfig(StrictModel):
    """Every setting that changes the stored images; its hash decides what a re-run may skip."""

    spacing_mm: float = Field(0.1, gt=0)  # isotropic output spacing (0.05–0.07 for full-resolution work)
    resample_method: Literal["area", "sitk"] = "area"  # area = OpenCV fast path; sitk = SimpleITK reference
    # used when the DICOM gives no trusted spacing; None = refuse the image
    fallback_spacing_mm: float | None = Field(None, gt=0)
    margin_mm: float = Field(2.0, ge=0)  # crop margin around the breast
    coarse_long_side: int = Field(512, ge=16)  # the breast mask is computed on a copy this size
    # Scanned film: the breast mask finds bright film/plate edge bands by itself (`mask.edge_bands`), so this stays 0.
    # An override for an archive where that fails: a positive width ignores that many mm along the borders other
    # than the chest wall when finding the breast; tissue reaching the ignored band is continued to the image edge.
    film_edge_mm: float = Field(default=0.0, ge=0.0)
    orientation_prefer: Literal["content", "metadata"] = "content"
    pectoral: Literal["off", "mask", "suppress"] = "mask"  # MLO: record the muscle mask, or also flatten it
    global_long_side: int = Field(1024, ge=16)  # long side of the stored global image (2048–3072 at full resolution)
    patch_size: int = Field(512, ge=2)  # dense-grid patch side, stored-image pixels (≥ 2: the default stride is half)
    patch_stride: int | None = Field(None, ge=1)  # default patch_size // 2
    patch_min_breast_fraction: float = Field(0.1, ge=0, le=1)
    image_format: Literal["tiff", "png"] = "tiff"
