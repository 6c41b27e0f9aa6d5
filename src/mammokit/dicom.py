"""Read one mammography DICOM file into a `MammoImage`.

This is the only module that touches pydicom. Patient names and birth dates never leave it;
patient and study identifiers leave only as salted hashes unless the caller opts in (`keep_ids`).

Pixel semantics, in order:

1. Decode to stored values (see `mammokit.dicom_decode` for backends and stream validation).
2. Keep BitsStored bits: bits above BitsStored are masked away; with PixelRepresentation 1 the
   value is sign-extended from bit BitsStored-1.
3. PixelPaddingValue (and PixelPaddingRangeLimit) are compared with these stored values to build
   `padding_mask` (the range between the two values, inclusive, when both are present).
4. Modality LUT: a Modality LUT Sequence when present (values below / above the mapped range take
   the first / last entry), else RescaleSlope * value + RescaleIntercept.
5. MONOCHROME1 or Presentation LUT Shape INVERSE (the DX/MG IODs require both together) means
   higher stored value = less dense; exactly one inversion is applied:
   ``value' = lo + hi - value`` where [lo, hi] is the range the modality LUT output can take
   (the LUT's min/max, or the rescaled ends of the BitsStored range). The result lies in [lo, hi].
6. No VOI window is applied; WindowCenter/Width, VOILUTFunction and the presence of a VOI LUT
   Sequence are recorded. Pixels are returned as float32.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from mammokit.dicom_decode import (
    DECODERS,
    DecodeError,
    DecoderSpec,
    FrameInfo,
    PixelElement,
    decode_stored,
    decoder_for,
    read_pixel_element,
    resolve_backend,
    stored_range,
    stored_values,
    transfer_syntax_name,
)
from mammokit.dicom_decode import tag_text as _text
from mammokit.dicom_film import FILM_SPACING_MM, film_signs
from mammokit.errors import MammokitError
from mammokit.ids import DEFAULT_ID_SALT, hash_id, resolve_salt

__all__ = [
    "DECODERS",
    "DEFAULT_ID_SALT",
    "FILM_SPACING_MM",
    "SPACING_RANGE_MM",
    "VIEW_CODES",
    "DecoderSpec",
    "DicomReadError",
    "MammoImage",
    "decoder_for",
    "film_signs",
    "read_dicom",
    "transfer_syntax_name",
]

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

ACCEPTED_MODALITY = "MG"
PROJECTION_MODALITIES = frozenset({"DX", "CR", "RG", "DR", "OT", "SC"})  # read, with a warning
TOMOSYNTHESIS_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.13.1.3"})



class DicomReadError(MammokitError):
    """A file that cannot be read as a single-frame grayscale mammogram.

    Attributes:
        path: the file.
        reason: one sentence saying what is wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(repr=False)
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
    spacing_source: str | None  # PixelSpacing, ImagerPixelSpacing(/ERMF), NominalScannedPixelSpacing, or None
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
    padding_mask: np.ndarray | None  # bool HxW, True where the stored value is padding
    patient_orientation: tuple[str, ...] | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    patient_hash: str | None  # salted hash (HMAC-SHA256, 20 hex) of PatientID
    study_hash: str | None  # salted hash of StudyInstanceUID, else PatientID + AccessionNumber/StudyID
    decoder: str | None = None  # backend that decoded the pixels
    warnings: list[str] = field(default_factory=list)
    pixel_padding_range_limit: float | None = None
    value_range: tuple[float, float] | None = None  # [lo, hi] the modality LUT output can take
    view_modifiers: tuple[str, ...] = ()  # CodeMeanings of ViewModifierCodeSequence (e.g. "Magnification")
    body_part: str | None = None
    sop_class_uid: str | None = None
    patient_id: str | None = None  # raw PatientID, only with read_dicom(..., keep_ids=True)
    accession_number: str | None = None  # raw AccessionNumber, only with keep_ids=True
    film: bool = False  # scanned (digitized) film, decided from the header by `film_signs`
    film_evidence: tuple[str, ...] = ()  # the film signs found, also when too weak to decide film

    def __repr__(self) -> str:
        """Summary without pixel values or raw identifiers (safe to log)."""
        shape = None if self.pixels is None else tuple(self.pixels.shape)
        return (
            f"MammoImage(path={self.path!r}, shape={shape}, rows={self.rows}, columns={self.columns}, "
            f"laterality={self.laterality!r}, view={self.view!r}, spacing_mm={self.spacing_mm}, "
            f"photometric={self.photometric!r}, inverted={self.inverted}, modality={self.modality!r}, "
            f"manufacturer={self.manufacturer!r}, transfer_syntax={transfer_syntax_name(self.transfer_syntax)!r}, "
            f"decoder={self.decoder!r}, film={self.film}, patient_hash={self.patient_hash!r}, "
            f"study_hash={self.study_hash!r}, warnings={len(self.warnings)})"
        )


# ----------------------------------------------------------------------------------------------- helpers


def _floats(ds: Any, keyword: str) -> tuple[float, ...] | None:
    """A numeric (possibly multi-valued) tag as floats; None when absent, empty or unparsable."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


def _int(ds: Any, keyword: str) -> int | None:
    value = _floats(ds, keyword)
    return int(value[0]) if value else None


def _laterality(ds: Any, warnings: list[str]) -> tuple[str | None, str | None]:
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
            warnings.append(f"{source}={text!r} is not L or R; laterality left unset")
    return None, None


def _view(ds: Any, warnings: list[str]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """ViewPosition, else ViewCodeSequence, else PatientOrientation when it literally holds a view code."""
    modifiers: tuple[str, ...] = ()
    code_items = list(ds.get("ViewCodeSequence") or [])
    for item in code_items:
        modifiers += tuple(
            str(m.get("CodeMeaning", m.get("CodeValue", ""))) for m in item.get("ViewModifierCodeSequence") or []
        )
    view_position = _text(ds, "ViewPosition")
    if view_position:
        canonical = VIEW_ALIASES.get(view_position.upper())
        if canonical:
            return canonical, "ViewPosition", modifiers
        warnings.append(f"ViewPosition={view_position!r} is not a mammography view")
    for item in code_items:
        code = str(item.get("CodeValue", "")).strip()
        if code in VIEW_CODE_VALUES:
            return VIEW_CODE_VALUES[code], "ViewCodeSequence", modifiers
        if code:
            warnings.append(f"ViewCodeSequence code {code!r} is not a known mammography view")
    orientation = ds.get("PatientOrientation")
    values = list(orientation) if isinstance(orientation, pydicom.multival.MultiValue) else [orientation]
    if len(values) == 1 and values[0] is not None and str(values[0]).strip().upper() in VIEW_ALIASES:
        warnings.append("view taken from PatientOrientation, which holds a view code instead of directions")
        return VIEW_ALIASES[str(values[0]).strip().upper()], "PatientOrientation", modifiers
    return None, None, modifiers


def _spacing(ds: Any, warnings: list[str]) -> tuple[tuple[float, float] | None, str | None, tuple | None, bool]:
    """(spacing_mm, source, raw, trusted): PixelSpacing, else ImagerPixelSpacing / ERMF, else a scanner's
    NominalScannedPixelSpacing (Secondary Capture of a film or document), sanity-checked."""
    raw, source = _floats(ds, "PixelSpacing"), "PixelSpacing"
    if raw is None:
        raw, source = _floats(ds, "ImagerPixelSpacing"), "ImagerPixelSpacing"
        ermf = _floats(ds, "EstimatedRadiographicMagnificationFactor")
        if raw is not None and ermf and ermf[0] > 0:
            raw, source = tuple(v / ermf[0] for v in raw), "ImagerPixelSpacing/ERMF"
    if raw is None:
        raw, source = _floats(ds, "NominalScannedPixelSpacing"), "NominalScannedPixelSpacing"
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


def _modality_check(ds: Any, path: str, warnings: list[str]) -> None:
    """Refuse other imaging kinds; accept projection X-ray that does not say MG, with a warning."""
    modality = (_text(ds, "Modality") or "").upper()
    body_part = (_text(ds, "BodyPartExamined") or "").upper()
    if modality == ACCEPTED_MODALITY:
        return
    if modality and modality not in PROJECTION_MODALITIES:
        raise DicomReadError(path, f"Modality {modality} is not mammography")
    if modality and body_part and body_part != "BREAST":
        raise DicomReadError(path, f"Modality {modality} of body part {body_part} is not a mammogram")
    what = f"Modality {modality}" if modality else "no Modality tag"
    warnings.append(f"{what} (not MG){' labelled BREAST' if body_part else ''}; read as a mammogram")


# ------------------------------------------------------------------------------------- reading and checks


def _open_dataset(path: Path, pixels: bool, backend: str) -> tuple[Any, PixelElement | None]:
    """Parse the file; returns the dataset and its Pixel Data element (None when the file has none).

    Header mode and the auto backend parse the header with pydicom (`stop_before_pixels`) and read the
    Pixel Data element themselves, reading each fragment once, straight into the decoder's input.
    The pydicom backend and deflated files are read entirely by pydicom.
    """
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DicomReadError(name, f"cannot open: {err.strerror or err}") from err
    if size == 0:
        raise DicomReadError(name, "empty file")
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=not pixels or backend == "auto")
            syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
            if pixels and (backend != "auto" or syntax == pydicom.uid.DeflatedExplicitVRLittleEndian):
                if backend == "auto":  # deflated: pydicom inflated it, read the whole dataset
                    fp.seek(0)
                    ds = pydicom.dcmread(fp)
                if "PixelData" not in ds:
                    return ds, None
                data = ds.PixelData
                return ds, PixelElement(None if ds["PixelData"].is_undefined_length else len(data), len(data), data)
            if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
                return ds, PixelElement(None, 0, None)  # header mode: no cheap peek into a deflated stream
            return ds, read_pixel_element(ds, fp, size, syntax, read=pixels)
    except InvalidDicomError as err:
        raise DicomReadError(name, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from err
    except (EOFError, struct.error) as err:
        raise DicomReadError(name, f"truncated file ({err or 'unexpected end of data'})") from err
    except Exception as err:  # pydicom raises a wide range of parse errors on damaged files
        raise DicomReadError(name, f"cannot parse as DICOM: {type(err).__name__}: {err}") from err


def _header_checks(ds: Any, path: str, info: FrameInfo, element: PixelElement | None) -> None:
    """Refuse what is not a single-frame grayscale image with consistent geometry."""
    if str(ds.get("SOPClassUID", "")) in TOMOSYNTHESIS_SOP_CLASSES:
        raise DicomReadError(path, "breast tomosynthesis volume (multi-frame) is not supported")
    frames = _int(ds, "NumberOfFrames") or 1
    if frames > 1:
        raise DicomReadError(path, f"multi-frame image ({frames} frames, e.g. tomosynthesis) is not supported")
    samples = _int(ds, "SamplesPerPixel") or 1
    if samples != 1 or info.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomReadError(path, f"colour image ({info.photometric}, {samples} samples per pixel) is not supported")
    if info.rows <= 0 or info.columns <= 0:
        raise DicomReadError(path, f"absurd geometry: Rows={info.rows}, Columns={info.columns}")
    if info.bits_allocated not in (8, 16, 32) or not 1 <= info.bits_stored <= info.bits_allocated:
        raise DicomReadError(path, f"BitsAllocated={info.bits_allocated} with BitsStored={info.bits_stored} "
                                   "is not supported")
    if info.uid not in DECODERS:
        raise DicomReadError(path, f"{transfer_syntax_name(info.uid)} ({info.uid}) is not supported")
    if element is None:
        raise DicomReadError(path, "no pixel data (7FE0,0010)")
    if element.length is not None and element.available < element.length:
        raise DicomReadError(path, f"truncated file: Pixel Data says {element.length} bytes, "
                                   f"{element.available} remain")
    needed = info.rows * info.columns * info.bits_allocated // 8
    length = element.length
    if DECODERS[info.uid].kind == "native" and length is not None and length not in (needed, needed + 1):
        kind = "truncated pixel data" if length < needed else "absurd geometry"
        raise DicomReadError(path, f"{kind}: Pixel Data holds {length} bytes but Rows x Columns x "
                                   f"BitsAllocated ({info.rows}x{info.columns}x{info.bits_allocated}) needs {needed}")


# ------------------------------------------------------------------------------------------------ pixels


def _lut_from_sequence(ds: Any) -> tuple[np.ndarray, int] | None:
    """(lut values, first mapped stored value) of the first Modality LUT Sequence item, or None."""
    seq = ds.get("ModalityLUTSequence")
    if not seq:
        return None
    item = seq[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    data = item.get("LUTData")
    if isinstance(data, (bytes, bytearray)):
        lut = np.frombuffer(data, dtype="<u2" if bits > 8 else "u1")
    else:
        lut = np.asarray(list(data) if isinstance(data, (list, pydicom.multival.MultiValue)) else [data])
    if lut.size < entries:
        raise ValueError(f"Modality LUT has {lut.size} entries, its descriptor says {entries}")
    if first > 32767 and (item["LUTDescriptor"].VR == "SS" or ds.get("PixelRepresentation") == 1):
        first -= 65536
    return lut[:entries].astype(np.float32), first


def _apply_pixels(raw: np.ndarray, ds: Any, info: FrameInfo, image: dict[str, Any], path: str) -> None:
    """Stored values -> masked/sign-extended -> padding mask -> modality LUT -> inversion; fills `image`."""
    stored = stored_values(raw, info.bits_stored, info.signed)
    smin, smax = stored_range(info.bits_stored, info.signed)
    pad, limit = image["pixel_padding_value"], image["pixel_padding_range_limit"]
    if pad is not None:
        lo_pad, hi_pad = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
        if hi_pad < smin or lo_pad > smax:
            image["warnings"].append(f"PixelPaddingValue {pad} lies outside the BitsStored range; no padding mask")
        else:
            image["padding_mask"] = (stored == pad) if limit is None else (stored >= lo_pad) & (stored <= hi_pad)
    try:
        lut = _lut_from_sequence(ds)
    except (ValueError, AttributeError, KeyError) as err:
        raise DicomReadError(path, f"unusable Modality LUT Sequence: {err}") from err
    if lut is not None:
        table, first = lut
        index = np.clip(stored.astype(np.int64) - first, 0, table.size - 1)
        out = table[index]
        lo, hi = float(table.min()), float(table.max())
        image["modality_lut"] = "sequence"
    else:
        slope, intercept = image["rescale_slope"], image["rescale_intercept"]
        out = stored.astype(np.float32)
        if slope != 1.0:
            out *= np.float32(slope)
        if intercept != 0.0:
            out += np.float32(intercept)
        ends = (smin * slope + intercept, smax * slope + intercept)
        lo, hi = float(min(ends)), float(max(ends))
    if image["inverted"]:
        np.subtract(np.float32(lo + hi), out, out=out)
    image["pixels"] = out
    image["value_range"] = (lo, hi)


# -------------------------------------------------------------------------------------------------- API


def read_dicom(
    path: str | os.PathLike[str],
    *,
    pixels: bool = True,
    salt: str | None = None,
    keep_ids: bool = False,
    backend: str | None = None,
) -> MammoImage:
    """Read one single-frame grayscale mammogram.

    Args:
        path: the DICOM file.
        pixels: False reads the header only (no Pixel Data, no decoding; for fast indexing) and
            returns `pixels=None`, `padding_mask=None`.
        salt: key of the identifier hashes; `mammokit.ids.resolve_salt` (env `MAMMOKIT_ID_SALT`, else the default).
        keep_ids: the user's opt-in to also return raw PatientID / AccessionNumber.
        backend: "auto" (fastest decoders, default) or "pydicom" (pydicom.pixels plugins); default
            env `MAMMOKIT_DICOM_BACKEND`.

    Raises:
        DicomReadError: the file is not a readable single-frame grayscale mammogram (reason says why).
        ValueError: an unknown backend name.
    """
    backend = resolve_backend(backend)
    name = str(path)
    ds, element = _open_dataset(Path(path), pixels, backend)
    warnings: list[str] = []
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax:
        syntax = pydicom.uid.ExplicitVRLittleEndian if not ds.is_implicit_VR else pydicom.uid.ImplicitVRLittleEndian
        warnings.append("no TransferSyntaxUID in the file meta; inferred from the encoding")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or columns is None or "BitsAllocated" not in ds:
        reason = "no pixel data (7FE0,0010)" if element is None else "no image geometry tags"
        raise DicomReadError(name, f"{reason} (Rows/Columns/BitsAllocated missing)")
    bits_allocated = _int(ds, "BitsAllocated") or 0
    info = FrameInfo(
        uid=syntax,
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=_int(ds, "BitsStored") or bits_allocated,
        signed=_int(ds, "PixelRepresentation") == 1,
        photometric=(_text(ds, "PhotometricInterpretation") or "").upper(),
    )
    _header_checks(ds, name, info, element)
    _modality_check(ds, name, warnings)
    if info.photometric == "" or "BitsStored" not in ds:
        warnings.append("PhotometricInterpretation or BitsStored missing")

    laterality, laterality_source = _laterality(ds, warnings)
    view, view_source, modifiers = _view(ds, warnings)
    spacing, spacing_source, spacing_raw, trusted = _spacing(ds, warnings)
    film, film_evidence = film_signs(ds)
    shape = (_text(ds, "PresentationLUTShape") or "").upper() or None
    inverted = info.photometric == "MONOCHROME1" or shape == "INVERSE"
    if info.photometric == "MONOCHROME2" and shape == "INVERSE":
        warnings.append("MONOCHROME2 with Presentation LUT Shape INVERSE: inverted once")
    slope = (_floats(ds, "RescaleSlope") or (1.0,))[0]
    intercept = (_floats(ds, "RescaleIntercept") or (0.0,))[0]
    has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds
    if "ModalityLUTSequence" in ds and has_rescale:
        warnings.append("both Modality LUT Sequence and Rescale tags present; the sequence is used")
    salt = resolve_salt(salt)
    patient_id = _text(ds, "PatientID")
    study_uid = _text(ds, "StudyInstanceUID")
    accession = _text(ds, "AccessionNumber")
    study_key = study_uid or (
        f"{patient_id or ''}/{accession or _text(ds, 'StudyID')}" if accession or _text(ds, "StudyID") else None
    )
    pad, limit = _floats(ds, "PixelPaddingValue"), _floats(ds, "PixelPaddingRangeLimit")
    orientation = ds.get("PatientOrientation")
    image: dict[str, Any] = {
        "path": name,
        "pixels": None,
        "rows": rows,
        "columns": columns,
        "spacing_mm": spacing,
        "spacing_source": spacing_source,
        "spacing_raw_mm": spacing_raw,
        "spacing_trusted": trusted,
        "laterality": laterality,
        "laterality_source": laterality_source,
        "view": view,
        "view_source": view_source,
        "bits_stored": _int(ds, "BitsStored"),
        "bits_allocated": bits_allocated,
        "pixel_representation": _int(ds, "PixelRepresentation"),
        "photometric": info.photometric or None,
        "inverted": inverted,
        "presentation_lut_shape": shape,
        "presentation_intent": _text(ds, "PresentationIntentType"),
        "modality": _text(ds, "Modality"),
        "manufacturer": _text(ds, "Manufacturer"),
        "manufacturer_model": _text(ds, "ManufacturerModelName"),
        "transfer_syntax": syntax,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "modality_lut": "sequence" if "ModalityLUTSequence" in ds else ("rescale" if has_rescale else "none"),
        "window_center": _floats(ds, "WindowCenter"),
        "window_width": _floats(ds, "WindowWidth"),
        "voi_lut_function": _text(ds, "VOILUTFunction"),
        "has_voi_lut_sequence": bool(ds.get("VOILUTSequence")),
        "pixel_padding_value": _signed_tag(pad, info),
        "pixel_padding_range_limit": _signed_tag(limit, info),
        "padding_mask": None,
        "patient_orientation": tuple(str(v) for v in orientation) if isinstance(
            orientation, pydicom.multival.MultiValue) else ((str(orientation),) if orientation else None),
        "study_uid": study_uid,
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "sop_uid": _text(ds, "SOPInstanceUID"),
        "patient_hash": hash_id(patient_id, salt),
        "study_hash": hash_id(study_key, salt),
        "decoder": None,
        "warnings": warnings,
        "view_modifiers": modifiers,
        "body_part": _text(ds, "BodyPartExamined"),
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "patient_id": patient_id if keep_ids else None,
        "accession_number": accession if keep_ids else None,
        "film": film,
        "film_evidence": film_evidence,
    }
    if pixels:
        try:
            raw, decoder, decode_warnings = decode_stored(ds, element, info, backend)
        except DecodeError as err:
            raise DicomReadError(name, str(err)) from err
        image["decoder"] = decoder
        warnings.extend(decode_warnings)
        _apply_pixels(raw, ds, info, image, name)
    else:
        smin, smax = stored_range(info.bits_stored, info.signed)
        if image["modality_lut"] != "sequence":
            ends = (smin * slope + intercept, smax * slope + intercept)
            image["value_range"] = (float(min(ends)), float(max(ends)))
    return MammoImage(**image)


def _signed_tag(value: tuple[float, ...] | None, info: FrameInfo) -> float | None:
    """First value of a US-or-SS tag, reinterpreted as signed when the pixels are signed."""
    if not value:
        return None
    v = value[0]
    if info.signed and v >= 1 << 15 and info.bits_allocated == 16:
        v -= 1 << 16
    return v
