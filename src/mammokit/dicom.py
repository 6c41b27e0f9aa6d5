"""Read one mammography DICOM file into a `MammoImage`.

This is the only module that touches pydicom. Patient names and birth dates never leave it;
patient and study identifiers leave only as salted hashes.

(Skeleton: the contract below is fixed; the reader is being implemented.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DicomReadError(Exception):
    """A file that cannot be read as a single-frame grayscale mammogram.

    Attributes:
        path: the file.
        reason: one sentence saying what is wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class MammoImage:
    """Pixels and typed metadata of one mammogram.

    `pixels` is float32 HxW in MONOCHROME2 sense (higher = denser), modality LUT applied, no VOI
    window. It is None when the header alone was read. Missing metadata is None, never guessed.
    """

    path: str
    pixels: np.ndarray | None
    rows: int
    columns: int
    spacing_mm: tuple[float, float] | None  # (row, col) spacing in mm; None when absent or untrusted
    spacing_source: str | None  # "PixelSpacing", "ImagerPixelSpacing", "ImagerPixelSpacing/ERMF", or None
    spacing_raw_mm: tuple[float, float] | None  # what the tag said, even when untrusted
    spacing_trusted: bool
    laterality: str | None  # "L" or "R"
    laterality_source: str | None  # tag it came from
    view: str | None  # canonical view code, see VIEW_CODES
    view_source: str | None
    bits_stored: int | None
    bits_allocated: int | None
    pixel_representation: int | None
    photometric: str | None  # as stored in the file
    inverted: bool  # True when MONOCHROME1 / INVERSE presentation was flipped to MONOCHROME2 sense
    presentation_lut_shape: str | None
    presentation_intent: str | None  # "FOR PRESENTATION" / "FOR PROCESSING"
    modality: str | None
    manufacturer: str | None
    manufacturer_model: str | None
    transfer_syntax: str | None  # UID
    rescale_slope: float
    rescale_intercept: float
    modality_lut: str  # "rescale", "sequence" or "none"
    window_center: tuple[float, ...] | None
    window_width: tuple[float, ...] | None
    voi_lut_function: str | None
    has_voi_lut_sequence: bool
    pixel_padding_value: float | None
    padding_mask: np.ndarray | None  # bool HxW, True where the stored value is PixelPaddingValue
    patient_orientation: tuple[str, ...] | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    patient_hash: str | None  # salted hash of PatientID
    study_hash: str | None  # salted hash of StudyID/AccessionNumber/StudyInstanceUID
    decoder: str | None = None  # backend that decoded the pixels
    warnings: list[str] = field(default_factory=list)
