"""The `mammokit preprocess` configuration (YAML via `--config`, validated by pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mammokit.config import StrictModel


class PreprocessConfig(StrictModel):
    """Every setting that changes the stored images; its hash decides what a re-run may skip."""

    spacing_mm: float = 0.1  # isotropic output spacing (0.05–0.07 for full-resolution work)
    resample_method: Literal["area", "sitk"] = "area"  # area = OpenCV fast path; sitk = SimpleITK reference
    fallback_spacing_mm: float | None = None  # used when the DICOM gives no trusted spacing; None = refuse the image
    margin_mm: float = 2.0  # crop margin around the breast
    coarse_long_side: int = 512  # the breast mask is computed on a copy this size
    # Scanned film: the breast mask finds bright film/plate edge bands by itself (`mask.edge_bands`), so this stays 0.
    # An override for an archive where that fails: a positive width ignores that many mm along the borders other
    # than the chest wall when finding the breast; tissue reaching the ignored band is continued to the image edge.
    film_edge_mm: float = Field(default=0.0, ge=0.0)
    orientation_prefer: Literal["content", "metadata"] = "content"
    pectoral: Literal["off", "mask", "suppress"] = "mask"  # MLO: record the muscle mask, or also flatten it
    global_long_side: int = 1024  # long side of the stored global image (2048–3072 at full resolution)
    patch_size: int = 512  # dense-grid patch side, stored-image pixels
    patch_stride: int | None = None  # default patch_size // 2
    patch_min_breast_fraction: float = 0.1
    image_format: Literal["tiff", "png"] = "tiff"
