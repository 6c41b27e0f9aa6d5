"""What the header says about the acquisition, read without pixels: view, laterality, pixel spacing, scanned film.

`read_dicom` calls these on the dataset it has opened and checked (every tag they read was converted by
`mammokit.dicom._check_tags`; this module never opens files itself: pydicom stays in `dicom.py`). A film decision
changes two things downstream: a film without spacing is preprocessed at `FILM_SPACING_MM` with a warning, and
`predict` warns when film meets a model trained on digital detectors.
"""

from __future__ import annotations

import math
from typing import Any

import pydicom

from mammokit.dicom_decode import tag_text as _text

SPACING_RANGE_MM = (0.02, 0.5)  # plausible detector pixel spacing; outside it the value is flagged untrusted
# Canonical views (ACR MQCM abbreviations used by CID 4014) and their meanings.
VIEW_CODES: dict[str, str] = {
    "CC": "cranio-caudal",
    "MLO": "medio-lateral oblique",
    "ML": "medio-lateral",
    "LM": "latero-medial",
    "LMO": "latero-medial oblique",
    "XCCL": "cranio-caudal exaggerated laterally",
    "XCCM": "cranio-caudal exaggerated medially",
    "FB": "caudo-cranial (from below)",
    "SIO": "superolateral to inferomedial oblique",
    "ISO": "inferomedial to superolateral oblique",
    "CV": "cleavage",
    "AT": "axillary tail",
    "SPECIMEN": "tissue specimen from breast",
}
# ViewCodeSequence code values (SNOMED CT, SNOMED-RT and the deprecated DICOM Y-X codes) -> canonical view.
VIEW_CODE_VALUES: dict[str, str] = {
    "399162004": "CC", "R-10242": "CC",
    "399368009": "MLO", "R-10226": "MLO",
    "399260004": "ML", "R-10224": "ML",
    "399352003": "LM", "R-10228": "LM",
    "399099002": "LMO", "R-10230": "LMO",
    "399192008": "XCCL", "R-1024A": "XCCL", "Y-X1770": "XCCL",
    "399101009": "XCCM", "R-1024B": "XCCM", "Y-X1771": "XCCM",
    "399196006": "FB", "R-10244": "FB",
    "399188001": "SIO", "R-102D0": "SIO",
    "441555000": "ISO", "R-40AAA": "ISO",
    "127457009": "SPECIMEN", "G-8310": "SPECIMEN",
}  # fmt: skip
# ViewPosition spellings seen in archives -> canonical view.
VIEW_ALIASES: dict[str, str] = {
    **{code: code for code in VIEW_CODES},
    "CRANIOCAUDAL": "CC", "CRANIO-CAUDAL": "CC", "MEDIOLATERAL OBLIQUE": "MLO", "OBLIQUE": "MLO",
    "MEDIOLATERAL": "ML", "LATEROMEDIAL": "LM", "XCC": "XCCL", "AX": "AT", "CLEAVAGE": "CV",
}  # fmt: skip

# Scanned (digitized) film. The reader never invents a spacing; callers that need one for a film without spacing
# tags may use this: CBIS-DDSM's digitizers scanned at 42-50 um, DDSM's at 43.5 or 50 um.
FILM_SPACING_MM = 0.05
SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"  # SC Image Storage; .1-.4 are its multi-frame siblings
SECONDARY_CAPTURE_SIGN = "Secondary Capture SOP class"
FILM_DIGITIZERS = ("LUMISYS", "HOWTEK", "DBA SYSTEMS", "VIDAR", "ARRAY CORP", "KODAK LS", "MICROTEK")
DEVICE_TAGS = ("Manufacturer", "ManufacturerModelName", "SecondaryCaptureDeviceManufacturer",
               "SecondaryCaptureDeviceManufacturerModelName")
SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
# What an X-ray detector writes about the exposure and itself; a film digitizer knows none of it.
ACQUISITION_TAGS = ("KVP", "ExposureTime", "Exposure", "ExposureInuAs", "XRayTubeCurrent", "DetectorType",
                    "DetectorID", "ImagerPixelSpacing", "BodyPartThickness", "CompressionForce", "AnodeTargetMaterial",
                    "FilterMaterial", "DistanceSourceToDetector", "RelativeXRayExposure", "OrganDose",
                    "EntranceDoseInmGy")
FILM_ARCHIVE_TAGS = ("StudyID", "StudyDescription", "SeriesDescription", "InstitutionalDepartmentName")
FILM_ARCHIVES = ("DDSM", "DIGITAL DATABASE FOR SCREENING MAMMOGRAPHY")  # all-film archives (DDSM, CBIS-DDSM)


def film_signs(ds: Any) -> tuple[bool, tuple[str, ...]]:
    """Is this image a scanned (digitized) film? Decided from the header alone; returns (film, signs found).

    Strong signs, each enough: ConversionType DF (digitized film), DetectorType FILM (scanned film/screen), a film
    digitizer named as the device. Weak signs: a Secondary Capture SOP class, no spacing tag, no X-ray acquisition
    or detector tag, a scanner's NominalScannedPixelSpacing, an all-film archive (DDSM) named in the header. Weak
    signs decide only together: a Secondary Capture plus two more. A sparse header alone is not film: anonymised
    FFDM exports (e.g. RSNA's) often lose spacing, SOP class and every acquisition tag.
    """
    strong, weak = _strong_film_signs(ds), _weak_film_signs(ds)
    secondary = SECONDARY_CAPTURE_SIGN in weak
    return bool(strong) or (secondary and len(weak) >= 3), tuple(strong + weak)


def _strong_film_signs(ds: Any) -> list[str]:
    """Signs that alone say digitized film."""
    signs = []
    if (_text(ds, "ConversionType") or "").upper() == "DF":
        signs.append("ConversionType DF (digitized film)")
    if (_text(ds, "DetectorType") or "").upper() == "FILM":
        signs.append("DetectorType FILM (scanned film/screen)")
    for keyword in DEVICE_TAGS:
        name = (_text(ds, keyword) or "").upper()
        if any(d in name for d in FILM_DIGITIZERS):
            signs.append(f"film digitizer {name} ({keyword})")
            break
    return signs


def _weak_film_signs(ds: Any) -> list[str]:
    """Signs of a film that decide nothing alone."""
    meta = getattr(ds, "file_meta", None)
    sop = _text(ds, "SOPClassUID") or (_text(meta, "MediaStorageSOPClassUID") if meta is not None else None) or ""
    signs = []
    if sop == SECONDARY_CAPTURE_ROOT or sop.startswith(SECONDARY_CAPTURE_ROOT + "."):
        signs.append(SECONDARY_CAPTURE_SIGN)
    if "NominalScannedPixelSpacing" in ds:
        signs.append("NominalScannedPixelSpacing (a scanner's pitch)")
    elif not any(k in ds for k in SPACING_TAGS):
        signs.append("no pixel spacing tag")
    if not any(k in ds for k in ACQUISITION_TAGS):
        signs.append("no X-ray acquisition or detector tag")
    texts = " ".join((_text(ds, k) or "").upper() for k in FILM_ARCHIVE_TAGS)
    if any(a in texts for a in FILM_ARCHIVES):
        signs.append("an all-film archive (DDSM) named in the header")
    return signs


# ------------------------------------------------------------------------------------ view, laterality, spacing


def show_value(value: Any) -> str:
    """A value's repr for a warning or a reason, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def tag_floats(ds: Any, keyword: str, warnings: list[str] | None = None) -> tuple[float, ...] | None:
    """A numeric (possibly multi-valued) tag as finite floats; None when absent or empty. A value that is not a
    finite number is dropped with a warning into `warnings`, or, without `warnings`, raises ValueError naming it."""
    value = ds.get(keyword)
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    if value is None or value == "" or len(values) == 0:
        return None
    try:
        numbers = tuple(float(v) for v in values if not isinstance(v, (bytes, bytearray)))
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) == len(values) and all(math.isfinite(v) for v in numbers):
        return numbers
    problem = f"{keyword}={show_value(value)} is not a finite number"
    if warnings is None:
        raise ValueError(problem)
    warnings.append(f"{problem}; ignored")
    return None


def laterality(ds: Any, warnings: list[str]) -> tuple[str | None, str | None]:
    """ImageLaterality, else Laterality, else FrameLaterality (top level or functional groups)."""
    candidates: list[tuple[str, Any]] = [(k, ds.get(k)) for k in ("ImageLaterality", "Laterality", "FrameLaterality")]
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(group) or []:
            for anatomy in item.get("FrameAnatomySequence") or []:
                candidates.append((f"{group}/FrameLaterality", anatomy.get("FrameLaterality")))
    for source, value in candidates:
        text = str(value).strip().upper() if value is not None else ""
        if text in ("L", "R"):
            return text, source
        if text:
            warnings.append(f"{source}={show_value(text)} is not L or R; laterality left unset")
    return None, None


def view(ds: Any, warnings: list[str]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """ViewPosition, else ViewCodeSequence, else PatientOrientation when it literally holds a view code."""
    code_items = list(ds.get("ViewCodeSequence") or [])  # at most MAX_ITEMS, see `mammokit.dicom._check_tags`
    modifiers = tuple(str(m.get("CodeMeaning", m.get("CodeValue", "")))
                      for item in code_items for m in item.get("ViewModifierCodeSequence") or [])
    view_position = _text(ds, "ViewPosition")
    if view_position:
        canonical = VIEW_ALIASES.get(view_position.upper())
        if canonical:
            return canonical, "ViewPosition", modifiers
        warnings.append(f"ViewPosition={show_value(view_position)} is not a mammography view")
    for item in code_items:
        code = str(item.get("CodeValue", "")).strip()
        if code in VIEW_CODE_VALUES:
            return VIEW_CODE_VALUES[code], "ViewCodeSequence", modifiers
        if code:
            warnings.append(f"ViewCodeSequence code {show_value(code)} is not a known mammography view")
    orientation = ds.get("PatientOrientation")
    values = list(orientation) if isinstance(orientation, pydicom.multival.MultiValue) else [orientation]
    if len(values) == 1 and values[0] is not None and str(values[0]).strip().upper() in VIEW_ALIASES:
        warnings.append("view taken from PatientOrientation, which holds a view code instead of directions")
        return VIEW_ALIASES[str(values[0]).strip().upper()], "PatientOrientation", modifiers
    return None, None, modifiers


def spacing(ds: Any, warnings: list[str]) -> tuple[tuple[float, float] | None, str | None, tuple | None, bool]:
    """(spacing_mm, source, raw, trusted): PixelSpacing, else ImagerPixelSpacing / ERMF, else a scanner's
    NominalScannedPixelSpacing (Secondary Capture of a film or document), sanity-checked."""
    raw, source = tag_floats(ds, "PixelSpacing", warnings), "PixelSpacing"
    if raw is None:
        raw, source = tag_floats(ds, "ImagerPixelSpacing", warnings), "ImagerPixelSpacing"
        ermf = tag_floats(ds, "EstimatedRadiographicMagnificationFactor", warnings)
        if raw is not None and ermf and ermf[0] > 0:
            raw, source = tuple(v / ermf[0] for v in raw), "ImagerPixelSpacing/ERMF"
        elif raw is not None and ermf:
            warnings.append(f"EstimatedRadiographicMagnificationFactor={ermf[0]:g} is not positive; "
                            "ImagerPixelSpacing used without it")
    if raw is None:
        raw, source = tag_floats(ds, "NominalScannedPixelSpacing", warnings), "NominalScannedPixelSpacing"
    if raw is None:
        return None, None, None, False
    if len(raw) == 1:
        raw = (raw[0], raw[0])
        warnings.append(f"{source} has one value; used for rows and columns")
    pair = (raw[0], raw[1])
    lo, hi = SPACING_RANGE_MM
    if not all(lo <= v <= hi for v in pair):
        warnings.append(f"{source}={pair} mm is outside {lo}-{hi} mm; spacing untrusted")
        return None, source, pair, False
    return pair, source, pair, True
