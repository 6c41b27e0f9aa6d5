"""Turn a canonical-frame phantom into one vendor's stored pixels and write it as a DICOM file.

Steps, in order: attenuation -> detector value (vendor response + quantum noise) -> orientation as
the vendor stores it (right breasts mirrored or not) -> collimation padding -> burned-in marker ->
stored integers ((value - intercept) / slope, clipped to BitsStored, inverted for MONOCHROME1) ->
pydicom dataset with the vendor's tag choices and fake PHI -> file (uncompressed, JPEG 2000 lossless
or RLE lossless).

Fake PHI patterns (every file carries them, so de-identification leaks are testable):
PatientName `PHI^NAME<4+ digits>`, OtherPatientIDs `PHI-OTHER-<digits>`, InstitutionName
`PHI INSTITUTION <site>`, InstitutionAddress `PHI ADDRESS <digits> MAIN STREET`,
ReferringPhysicianName `PHI^DOCTOR<digits>`, OperatorsName `PHI^OPERATOR<digits>`, PatientBirthDate
`19YY0101`; grep for "PHI" and for the regex `19[0-9]{2}0101`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from mammokit.synth.phantom import ViewPhantom
from mammokit.synth.vendors import VendorProfile

SOP_CLASSES = {
    "mg_presentation": UID("1.2.840.10008.5.1.4.1.1.1.2"),
    "mg_processing": UID("1.2.840.10008.5.1.4.1.1.1.2.1"),
    "cr": UID("1.2.840.10008.5.1.4.1.1.1"),
}
TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}
VIEW_CODES = {"CC": ("R-10242", "cranio-caudal"), "MLO": ("R-10226", "medio-lateral oblique")}
ORIENTATION = {  # (laterality, view, mirrored) -> PatientOrientation (row direction, column direction)
    ("L", "CC", True): ("A", "R"), ("R", "CC", True): ("P", "L"),
    ("L", "MLO", True): ("A", "FR"), ("R", "MLO", True): ("P", "FL"),
    ("L", "CC", False): ("A", "R"), ("R", "CC", False): ("A", "L"),
    ("L", "MLO", False): ("A", "FR"), ("R", "MLO", False): ("A", "FL"),
}
A_MAX = 1.05  # normalized attenuation mapped to the top of the vendor's value range


def synth_uid(*parts: object) -> UID:
    """Deterministic UID under the UUID-derived root 2.25 from a hash of `parts` (seed, site, indices)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return UID(f"2.25.{int.from_bytes(digest[:16], 'big') >> 1}")


IMPLEMENTATION_UID = synth_uid("mammokit-synth-implementation")


@dataclass(frozen=True)
class ImageIdentity:
    """Identifiers and fake PHI of one image (all deterministic from the seed)."""

    patient_id: str
    patient_number: int
    birth_year: int
    age: int
    site: str
    study_uid: UID
    series_uid: UID
    sop_uid: UID
    accession: str
    study_date: str
    series_number: int
    instance_number: int
    laterality: str
    view: str


@dataclass
class StoredImage:
    """What was written: stored pixels' grid masks and lesion boxes (end-exclusive x0, y0, x1, y1)."""

    path: Path
    tissue: np.ndarray
    pectoral: np.ndarray
    lesion: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    marker_box: tuple[int, int, int, int] | None


def detector_values(
    atten: np.ndarray, profile: VendorProfile, spacing_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Map normalized attenuation to the vendor's modality values (MONOCHROME2 sense) with quantum noise.

    Noise per pixel scales as 1/spacing (fewer quanta per smaller pixel), referenced to 0.1 mm.
    """
    lo, hi = profile.value_range
    norm = np.clip(atten / A_MAX, 0.0, 1.2) ** profile.gamma
    sigma = profile.noise * (0.1 / spacing_mm) * np.sqrt(0.25 + norm)
    noisy = norm + sigma * rng.standard_normal(atten.shape, dtype=np.float32)
    return (lo + (hi - lo) * noisy).astype(np.float32)


def to_stored(values: np.ndarray, profile: VendorProfile) -> np.ndarray:
    """Modality values (MONOCHROME2 sense) -> stored uint16: invert the rescale, clip, invert for MONOCHROME1.

    When the profile has a PixelPaddingValue, real pixels are kept one step away from it so padding is
    unambiguous.
    """
    top = (1 << profile.bits_stored) - 1
    stored = np.rint((values - profile.intercept) / profile.slope)
    if profile.photometric == "MONOCHROME1":
        stored = top - stored
    lo_clip, hi_clip = 0, top
    if profile.padding_value is not None:
        if profile.padding_value == 0:
            lo_clip = 1
        elif profile.padding_value == top:
            hi_clip = top - 1
    return np.clip(stored, lo_clip, hi_clip).astype(np.uint16)


def _collimation(tissue: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Bool mask of the area outside the collimated field (canonical frame): beyond the nipple side and above/below."""
    rows, cols = tissue.shape
    ys, xs = np.nonzero(tissue)
    margin = rng.uniform(8, 20, 3) / spacing
    x1 = min(cols, int(xs.max() + margin[0]))
    y0 = 0 if tissue[0].any() else max(0, int(ys.min() - margin[1]))
    y1 = min(rows, int(ys.max() + margin[2]))
    out = np.ones_like(tissue)
    out[y0:y1, :x1] = False
    return out


def _marker(
    stored_tissue: np.ndarray, text: str, spacing: float
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Draw a bright text block (like a lead marker or film-scanner label) in air; None when no room.

    Returns the block's pixel mask (True where bright) and its box, placed in a corner on the side away
    from the chest wall and at least 5 mm from any tissue.
    """
    rows, cols = stored_tissue.shape
    height = max(8, round(12 / spacing))
    scale = height / 30.0
    thick = max(1, round(height / 10))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    bw, bh = tw + 2 * thick + 4, th + base + 2 * thick + 4
    chest_left = stored_tissue[:, : cols // 10].sum() > stored_tissue[:, -(cols // 10) :].sum()
    gap = round(5 / spacing)
    grown = cv2.dilate(stored_tissue.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_RECT, (2 * gap + 1,) * 2))
    edge = round(3 / spacing)
    x0 = cols - edge - bw if chest_left else edge
    for y0 in (edge, rows - edge - bh):
        if x0 < 0 or y0 < 0 or y0 + bh > rows:
            continue
        if not grown[y0 : y0 + bh, x0 : x0 + bw].any():
            block = np.zeros((rows, cols), np.uint8)
            cv2.rectangle(block, (x0, y0), (x0 + bw - 1, y0 + bh - 1), 1, thickness=max(1, thick // 2))
            cv2.putText(block, text, (x0 + thick + 2, y0 + th + thick + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, 1, thick,
                        lineType=cv2.LINE_8)
            return block.astype(bool), (x0, y0, x0 + bw, y0 + bh)
    return None


def _ds(value: float) -> str:
    """Format a number for a DS element (16 characters at most)."""
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.3e}"


def build_dataset(
    stored: np.ndarray, profile: VendorProfile, ident: ImageIdentity, spacing_mm: float, thickness_mm: float,
    windows: list[tuple[float, float]], burned_in: bool,
) -> Dataset:
    """The DICOM dataset of one image, with the vendor's choice of tags and the fake PHI."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[profile.sop_class]
    meta.MediaStorageSOPInstanceUID = ident.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MAMMOKIT_SYNTH"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", ""]
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ident.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = ident.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = ident.accession
    ds.Modality = "MG"
    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model
    ds.InstitutionName = f"PHI INSTITUTION {ident.site.upper()}"
    ds.InstitutionAddress = f"PHI ADDRESS {ident.patient_number:04d} MAIN STREET"
    ds.ReferringPhysicianName = f"PHI^DOCTOR{ident.patient_number % 97:04d}"
    ds.OperatorsName = f"PHI^OPERATOR{ident.patient_number % 13:04d}"
    ds.StationName = "SYNTH01"
    ds.PatientName = f"PHI^NAME{ident.patient_number:04d}"
    ds.PatientID = ident.patient_id
    ds.OtherPatientIDs = f"PHI-OTHER-{ident.patient_number:06d}"
    ds.PatientBirthDate = f"{ident.birth_year:04d}0101"
    ds.PatientSex = "F"
    ds.PatientAge = f"{ident.age:03d}Y"
    ds.BodyPartExamined = "BREAST"
    ds.BodyPartThickness = _ds(round(thickness_mm, 1))
    ds.KVP = _ds(28.0 + round(thickness_mm / 10))
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = ident.series_uid
    ds.StudyID = ident.accession[-8:]
    ds.SeriesNumber = ident.series_number
    ds.InstanceNumber = ident.instance_number
    ds.PresentationIntentType = profile.presentation_intent
    if "Laterality" in profile.laterality_tags:
        ds.Laterality = ident.laterality
    if "ImageLaterality" in profile.laterality_tags:
        ds.ImageLaterality = ident.laterality
    if "ViewPosition" in profile.view_tags:
        ds.ViewPosition = ident.view
    if "ViewCodeSequence" in profile.view_tags:
        code = Dataset()
        code.CodeValue, code.CodeMeaning = VIEW_CODES[ident.view]
        code.CodingSchemeDesignator = "SRT"
        ds.ViewCodeSequence = Sequence([code])
    if profile.orientation_tag:
        ds.PatientOrientation = list(ORIENTATION[(ident.laterality, ident.view, profile.mirror_right)])
    spacing = [_ds(spacing_mm), _ds(spacing_mm)]
    if "PixelSpacing" in profile.spacing_tags:
        ds.PixelSpacing = spacing
    if "ImagerPixelSpacing" in profile.spacing_tags:
        ds.ImagerPixelSpacing = spacing
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.BreastImplantPresent = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = profile.photometric
    ds.PresentationLUTShape = "INVERSE" if profile.photometric == "MONOCHROME1" else "IDENTITY"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = profile.bits_stored
    ds.HighBit = profile.bits_stored - 1
    ds.PixelRepresentation = 0
    if profile.write_rescale:
        ds.RescaleIntercept = _ds(profile.intercept)
        ds.RescaleSlope = _ds(profile.slope)
        ds.RescaleType = "US"
    if windows:
        ds.WindowCenter = [_ds(c) for c, _ in windows]
        ds.WindowWidth = [_ds(w) for _, w in windows]
        ds.WindowCenterWidthExplanation = ["NORMAL", "HARDER", "SOFTER"][: len(windows)]
    if profile.voi_function:
        ds.VOILUTFunction = profile.voi_function
    if profile.padding_value is not None:
        ds.PixelPaddingValue = profile.padding_value
    ds.PixelData = stored.tobytes()
    return ds


def voi_windows(stored: np.ndarray, tissue: np.ndarray, profile: VendorProfile) -> list[tuple[float, float]]:
    """VOI windows in modality units (stored sense) from the tissue's 1st-99th percentiles: normal, harder, softer."""
    if profile.windows == 0 or not tissue.any():
        return []
    vals = stored[tissue][:: max(1, int(tissue.sum() // 50000))].astype(np.float64) * profile.slope + profile.intercept
    lo, hi = np.percentile(vals, [1, 99])
    centre, width = round((lo + hi) / 2), max(2.0, round(hi - lo))
    return [(centre, width), (centre, round(width * 0.7)), (centre, round(width * 1.4))][: profile.windows]


def write_view(
    phantom: ViewPhantom, profile: VendorProfile, ident: ImageIdentity, spacing_mm: float, thickness_mm: float,
    path: Path, rng: np.random.Generator,
) -> StoredImage:
    """Write one view as the vendor would store it and return the masks and boxes in the stored grid."""
    values = detector_values(phantom.atten, profile, spacing_mm, rng)
    tissue, pectoral = phantom.tissue, phantom.pectoral
    lesion = np.zeros_like(tissue)
    for placed in phantom.lesions:
        lesion |= placed.mask
    boxes = [p.box for p in phantom.lesions]
    padding = _collimation(tissue, spacing_mm, rng) if profile.padding_value is not None else None
    flip = ident.laterality == "R" and profile.mirror_right
    cols = tissue.shape[1]
    if flip:
        values, tissue, pectoral, lesion = (np.fliplr(a) for a in (values, tissue, pectoral, lesion))
        padding = np.fliplr(padding) if padding is not None else None
        boxes = [(cols - x1, y0, cols - x0, y1) for x0, y0, x1, y1 in boxes]
    marker_box = None
    if profile.marker:
        found = _marker(tissue, f"{ident.laterality} {ident.view}", spacing_mm)
        if found is not None:
            block, marker_box = found
            values = np.where(block, np.float32(profile.value_range[1] * 1.02), values)
    stored = to_stored(values, profile)
    if padding is not None:
        stored[padding] = profile.padding_value
    windows = voi_windows(stored, tissue & ~pectoral, profile)
    ds = build_dataset(stored, profile, ident, spacing_mm, thickness_mm, windows, marker_box is not None)
    syntax = TRANSFER_SYNTAXES[profile.transfer_syntax]
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return StoredImage(path, np.ascontiguousarray(tissue), np.ascontiguousarray(pectoral),
                       np.ascontiguousarray(lesion), boxes, marker_box)


def read_stored(path: Path) -> np.ndarray:
    """Stored pixel values of a file written here (for tests and benches; the package reader is `mammokit.dicom`)."""
    return pydicom.dcmread(path).pixel_array
