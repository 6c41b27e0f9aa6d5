"""Where the real mammograms of `../shared/realdata` are, and independent oracles on them.

The folder sits beside the project (never inside it). Tests that need it skip when it is absent (a user's fresh
clone) and fail when `MAMMOKIT_REQUIRE_REALDATA=1` (CI). The oracles do not use mammokit's mask code: tissue is every
pixel above 15 in the largest 8-connected component of such pixels (what the issue measures on FFDM with air = 0),
and everything else above 15 is a burned-in marker or label.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
NYU_SPACING_MM = 0.07  # the NYU sample images are full-field digital at about 70 µm


def realdata_dir() -> Path:
    """The realdata folder, or skip (fail under MAMMOKIT_REQUIRE_REALDATA=1) when it is absent."""
    if not (REALDATA / "README.md").is_file():
        if os.environ.get("MAMMOKIT_REQUIRE_REALDATA") == "1":
            pytest.fail(f"MAMMOKIT_REQUIRE_REALDATA=1 but {REALDATA} is missing")
        pytest.skip(f"{REALDATA} is absent")
    return REALDATA


def nyu_images() -> list[Path]:
    """The four NYU FFDM CC views (16-bit PNG, air exactly 0, chest wall at the first or last column)."""
    return sorted((realdata_dir() / "nyu_ffdm_cc").glob("*_CC.png"))


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32)


def tissue_and_markers(pixels: np.ndarray, level: float = 15.0) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """(tissue mask, marker boxes x0, y0, x1, y1) from the plain oracle described in the module docstring."""
    above = (pixels > level).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=8)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    markers = [(int(x), int(y), int(x + w), int(y + h)) for i, (x, y, w, h, a) in enumerate(stats)
               if i not in (0, biggest) and a >= 100]
    return labels == biggest, markers


def write_untagged_dicom(pixels: np.ndarray, path: Path, spacing_mm: float | None) -> Path:
    """Wrap real pixels as a For-Presentation digital mammogram with no laterality, view or orientation tags."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PresentationIntentType = "MG", "REALDATA", "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if spacing_mm:
        ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
