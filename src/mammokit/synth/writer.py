"""Turn a canonical-frame phantom into one vendor's stored pixels and write it as a DICOM file.

Steps, in order: attenuation -> detector value (vendor response + quantum noise) -> orientation as
the vendor stores it (right breasts mirrored or not) -> collimation padding -> burned-in marker ->
film marks (scanned-film profile) -> stored integers ((value - intercept) / slope, clipped to BitsStored,
inverted for MONOCHROME1) -> hard-case collimation -> pydicom dataset of the profile's IOD (Digital
Mammography, CR or Secondary Capture, each with every attribute its IOD requires) with the vendor's tag
choices and fake PHI -> file (uncompressed, JPEG 2000 lossless or RLE lossless).

Fake PHI patterns (every file carries them, so de-identification leaks are testable):
PatientName `PHI^NAME<4+ digits>`, OtherPatientIDs `PHI-OTHER-<digits>`, InstitutionName
`PHI INSTITUTION <site>`, InstitutionAddress `PHI ADDRESS <digits> MAIN STREET`,
ReferringPhysicianName `PHI^DOCTOR<digits>`, OperatorsName `PHI^OPERATOR<digits>`, PatientBirthDate
`19YY0101`; grep for "PHI" and for the regex `19[0-9]{2}0101`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
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

from mammokit.synth.artifacts import collimation, film_marks
from mammokit.synth.phantom import ViewPhantom
from mammokit.synth.vendors import VendorProfile

SOP_CLASSES = {
    "mg_presentation": UID("1.2.840.10008.5.1.4.1.1.1.2"),
    "mg_processing": UID("1.2.840.10008.5.1.4.1.1.1.2.1"),
    "cr": UID("1.2.840.10008.5.1.4.1.1.1"),
    "sc": UID("1.2.840.10008.5.1.4.1.1.7"),
}
TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}
VIEW_CODES = {  # coding scheme -> view -> (CodeValue, CodingSchemeDesignator, CodeMeaning)
    "SCT": {"CC": ("399162004", "SCT", "cranio-caudal"), "MLO": ("399368009", "SCT", "medio-lateral oblique")},
    "SRT": {"CC": ("R-10242", "SRT", "cranio-caudal"), "MLO": ("R-10226", "SRT", "medio-lateral oblique")},
}
BREAST_CODES = {"SCT": ("76752008", "SCT", "Breast"), "SRT": ("T-04000", "SRT", "Breast")}
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
    """What was written: masks on the stored pixel grid and boxes (end-exclusive x0, y0, x1, y1) there.

    Attributes:
        path: the file (None until written).
        tissue, pectoral, lesion: bool masks (tissue = the whole breast, never a marker or label).
        boxes: lesion boxes, in the order of the phantom's lesions.
        marker_box: the burned-in block of a CR-like profile, or None.
        chest_wall: "left" or "right": where the chest wall is in the stored image.
        extra: further masks carried to the stored grid (e.g. "fold").
        truth: JSON-able boxes: marker_boxes, label_boxes, border_boxes (film), collimation_box, and for a film
            mark_gaps_mm (distance of each marker, then each label, to the breast).
    """

    path: Path | None
    tissue: np.ndarray
    pectoral: np.ndarray
    lesion: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    marker_box: tuple[int, int, int, int] | None
    chest_wall: str = "left"
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict = field(default_factory=dict)


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


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    """One code sequence item."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _file_meta(profile: VendorProfile, ident: ImageIdentity) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[profile.sop_class]
    meta.MediaStorageSOPInstanceUID = ident.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MAMMOKIT_SYNTH"
    return meta


def _patient_study_series(ds: Dataset, profile: VendorProfile, ident: ImageIdentity) -> None:
    """Patient, study, series and equipment tags, with the fake PHI."""
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


def _acquisition(ds: Dataset, profile: VendorProfile, thickness_mm: float) -> None:
    """X-ray acquisition tags (none for a digitized film: the scanner does not know them)."""
    if profile.sop_class == "sc":
        ds.ConversionType = "DF"  # digitized film
        ds.SecondaryCaptureDeviceManufacturer = profile.manufacturer
        return
    ds.BodyPartThickness = _ds(round(thickness_mm, 1))
    ds.KVP = _ds(28.0 + round(thickness_mm / 10))


def _laterality_and_view(ds: Dataset, profile: VendorProfile, ident: ImageIdentity) -> None:
    """The profile's choice of laterality, view and PatientOrientation tags (empty where type 2 allows)."""
    if "Laterality" in profile.laterality_tags:
        ds.Laterality = ident.laterality
    if "ImageLaterality" in profile.laterality_tags:
        ds.ImageLaterality = ident.laterality
    if "ViewPosition" in profile.view_tags:
        ds.ViewPosition = ident.view
    elif profile.sop_class == "cr":
        ds.ViewPosition = ""  # type 2 in the CR Series module: present, empty
    if "ViewCodeSequence" in profile.view_tags:
        code = _code(*VIEW_CODES[profile.coding_scheme][ident.view])
        code.ViewModifierCodeSequence = Sequence([])
        ds.ViewCodeSequence = Sequence([code])
    if profile.orientation_tag:
        ds.PatientOrientation = list(ORIENTATION[(ident.laterality, ident.view, profile.mirror_right)])
    else:
        ds.PatientOrientation = ""  # type 2 in CR and SC; the MG IOD requires a value (profiles there set it)


def _mammography_tags(ds: Dataset, profile: VendorProfile) -> None:
    """Attributes the Digital Mammography IOD (DX Image, DX Detector, Mammography Image modules) requires."""
    ds.AnatomicRegionSequence = Sequence([_code(*BREAST_CODES[profile.coding_scheme])])
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.DetectorType = profile.detector_type
    ds.PixelIntensityRelationship = "LOG"
    # -1: higher stored values mean less X-ray intensity (denser), which is MONOCHROME2 here
    ds.PixelIntensityRelationshipSign = -1 if profile.photometric == "MONOCHROME2" else 1
    ds.AcquisitionContextSequence = Sequence([])


def build_dataset(
    stored: np.ndarray, profile: VendorProfile, ident: ImageIdentity, spacing_mm: float, thickness_mm: float,
    windows: list[tuple[float, float]], burned_in: bool,
) -> Dataset:
    """The DICOM dataset of one image: the IOD of the profile's SOP class, its tag choices and the fake PHI."""
    ds = Dataset()
    ds.file_meta = _file_meta(profile, ident)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"] if profile.sop_class == "sc" else ["ORIGINAL", "PRIMARY", "", ""]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ident.sop_uid
    _patient_study_series(ds, profile, ident)
    _acquisition(ds, profile, thickness_mm)
    ds.StudyInstanceUID = ident.study_uid
    ds.SeriesInstanceUID = ident.series_uid
    ds.StudyID = ident.accession[-8:]
    ds.SeriesNumber = ident.series_number
    ds.InstanceNumber = ident.instance_number
    if profile.presentation_intent:
        ds.PresentationIntentType = profile.presentation_intent
    _laterality_and_view(ds, profile, ident)
    if profile.sop_class.startswith("mg"):
        _mammography_tags(ds, profile)
    spacing = [_ds(spacing_mm), _ds(spacing_mm)]
    if "PixelSpacing" in profile.spacing_tags:
        ds.PixelSpacing = spacing
    if "ImagerPixelSpacing" in profile.spacing_tags:
        ds.ImagerPixelSpacing = spacing
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.LossyImageCompression = "00"
    if profile.sop_class != "sc":
        ds.BreastImplantPresent = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = profile.photometric
    if profile.sop_class != "sc":
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


def render_image(
    phantom: ViewPhantom, profile: VendorProfile, ident: ImageIdentity, spacing_mm: float, thickness_mm: float,
    rng: np.random.Generator, collimate: bool = False, extra_masks: dict[str, np.ndarray] | None = None,
) -> tuple[Dataset, StoredImage]:
    """One view as the vendor would store it: the dataset (not written) and the truth in the stored grid.

    Args:
        collimate: set the pixels outside a collimated field to the darkest stored value (hard case); the profile
            should then have no PixelPaddingValue.
        extra_masks: canonical-frame masks (e.g. a skin fold) to carry to the stored grid with the image.
    """
    values = detector_values(phantom.atten, profile, spacing_mm, rng)
    tissue, pectoral = phantom.tissue, phantom.pectoral
    lesion = np.zeros_like(tissue)
    for placed in phantom.lesions:
        lesion |= placed.mask
    boxes = [p.box for p in phantom.lesions]
    extra = dict(extra_masks or {})
    padding = _collimation(tissue, spacing_mm, rng) if profile.padding_value is not None else None
    flip = ident.laterality == "R" and profile.mirror_right
    cols = tissue.shape[1]
    if flip:
        values, tissue, pectoral, lesion = (np.fliplr(a) for a in (values, tissue, pectoral, lesion))
        padding = np.fliplr(padding) if padding is not None else None
        boxes = [(cols - x1, y0, cols - x0, y1) for x0, y0, x1, y1 in boxes]
        extra = {k: np.fliplr(v) for k, v in extra.items()}
    marker_box = None
    if profile.marker:
        found = _marker(tissue, f"{ident.laterality} {ident.view}", spacing_mm)
        if found is not None:
            block, marker_box = found
            values = np.where(block, np.float32(profile.value_range[1] * 1.02), values)
    truth: dict = {"marker_boxes": [list(marker_box)] if marker_box else [], "label_boxes": [], "border_boxes": [],
                   "collimation_box": None}
    if profile.film:
        values, marks = film_marks(values, tissue, profile, ident.laterality, ident.view, spacing_mm, rng, not flip)
        truth.update(marker_boxes=[list(b) for b in marks.marker_boxes],
                     label_boxes=[list(b) for b in marks.label_boxes],
                     border_boxes=[list(b) for b in marks.border_boxes], mark_gaps_mm=marks.gaps_mm)
    stored = to_stored(values, profile)
    if padding is not None:
        stored[padding] = profile.padding_value
    if collimate:
        stored = _collimate(stored, tissue, profile, spacing_mm, rng, not flip, truth)
    windows = voi_windows(stored, tissue & ~pectoral, profile)
    burned_in = bool(truth["marker_boxes"] or truth["label_boxes"])
    ds = build_dataset(stored, profile, ident, spacing_mm, thickness_mm, windows, burned_in)
    syntax = TRANSFER_SYNTAXES[profile.transfer_syntax]
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    image = StoredImage(None, np.ascontiguousarray(tissue), np.ascontiguousarray(pectoral),
                        np.ascontiguousarray(lesion), boxes, marker_box, "right" if flip else "left",
                        {k: np.ascontiguousarray(v) for k, v in extra.items()}, truth)
    return ds, image


def _collimate(stored: np.ndarray, tissue: np.ndarray, profile: VendorProfile, spacing_mm: float,
               rng: np.random.Generator, chest_left: bool, truth: dict) -> np.ndarray:
    """Darkest stored value outside a collimated field (0, or the top value for MONOCHROME1); real pixels avoid it."""
    outside, field_box = collimation(tissue, spacing_mm, rng, chest_left)
    top = (1 << profile.bits_stored) - 1
    dark = top if profile.photometric == "MONOCHROME1" else 0
    stored = np.clip(stored, 1, top - 1).astype(np.uint16) if dark == top else np.maximum(stored, 1).astype(np.uint16)
    stored[outside] = dark
    truth.update(collimation_box=list(field_box), collimation_value=dark)
    return stored


def write_view(
    phantom: ViewPhantom, profile: VendorProfile, ident: ImageIdentity, spacing_mm: float, thickness_mm: float,
    path: Path, rng: np.random.Generator, collimate: bool = False, extra_masks: dict[str, np.ndarray] | None = None,
) -> StoredImage:
    """Write one view as the vendor would store it and return the masks and boxes in the stored grid."""
    ds, image = render_image(phantom, profile, ident, spacing_mm, thickness_mm, rng, collimate, extra_masks)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    image.path = path
    return image


def read_stored(path: Path) -> np.ndarray:
    """Stored pixel values of a file written here (for tests and benches; the package reader is `mammokit.dicom`)."""
    return pydicom.dcmread(path).pixel_array
