"""Scanned (digitized) film, recognised from the DICOM header alone.

`read_dicom` calls `film_signs` on the dataset it has opened (this module never opens files itself: pydicom stays
in `dicom.py`). A film decision changes two things downstream: a film without spacing is preprocessed at
`FILM_SPACING_MM` with a warning, and `predict` warns when film meets a model trained on digital detectors.
"""

from __future__ import annotations

from typing import Any

from mammokit.dicom_decode import tag_text as _text

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
