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

The reader is total: whatever the bytes, it returns finite float32 pixels of Rows x Columns or raises
`DicomReadError` naming the file and the reason (`tests/test_fuzz_reader.py` holds it to that on seeded mutants).
Every tag it interprets is converted once, up front (`_check_tags`): a damaged one refuses the file when the pixels
depend on it, else it is dropped with a warning; sequences are read up to MAX_ITEMS items. Values it would
otherwise have to guess are refusals (non-numeric, NaN, infinite or zero RescaleSlope, PixelRepresentation other
than 0/1, a constant Modality LUT, Rows x Columns above MAX_PIXELS) or warnings (BitsStored 0, a magnification
factor that is not a positive number, an optional tag that is not a finite number).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
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
    library_error,
    read_pixel_element,
    resolve_backend,
    stored_range,
    stored_values,
    transfer_syntax_name,
)
from mammokit.dicom_decode import tag_text as _text
from mammokit.dicom_film import (
    DEVICE_TAGS,
    FILM_ARCHIVE_TAGS,
    FILM_SPACING_MM,
    SPACING_RANGE_MM,
    VIEW_ALIASES,
    VIEW_CODE_VALUES,
    VIEW_CODES,
    film_signs,
)
from mammokit.dicom_film import laterality as _laterality
from mammokit.dicom_film import show_value as _show
from mammokit.dicom_film import spacing as _spacing
from mammokit.dicom_film import tag_floats as _floats
from mammokit.dicom_film import view as _view
from mammokit.errors import MammokitError
from mammokit.ids import hash_id, resolve_salt

__all__ = [
    "DECODERS",
    "FILM_SPACING_MM",
    "MAX_PIXELS",
    "SPACING_RANGE_MM",
    "VIEW_ALIASES",
    "VIEW_CODES",
    "VIEW_CODE_VALUES",
    "DecoderSpec",
    "DicomReadError",
    "MammoImage",
    "decoder_for",
    "film_signs",
    "read_dicom",
    "transfer_syntax_name",
]

MAX_DIMENSION = 65535  # Rows and Columns are US
MAX_PIXELS = 1 << 28  # Rows x Columns refused above this, before any decoder allocates (FFDM: ~3e7)
MAX_VALUE = 1e30  # modality LUT output beyond +-this would overflow float32 arithmetic downstream
MIN_SLOPE = float(np.finfo(np.float32).tiny)  # a RescaleSlope below this is 0 in float32
MAX_ITEMS = 8  # items read of any sequence; more are ignored with a warning
MAX_SEQUENCE_BYTES = 1 << 20  # a defined-length sequence larger than this is not parsed (dropped or refused)

# The tags read_dicom interprets, converted by `_check_tags` before use. One pydicom cannot convert (or a sequence
# that is not one) refuses the file when ESSENTIAL (the pixels depend on it), else it is dropped with a warning.
ESSENTIAL_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
                  "PhotometricInterpretation", "NumberOfFrames", "RescaleSlope", "RescaleIntercept",
                  "ModalityLUTSequence", "SOPClassUID")
OPTIONAL_TAGS = ("ImageLaterality", "Laterality", "FrameLaterality", "ViewPosition", "ViewCodeSequence",
                 "PatientOrientation", "PixelSpacing", "ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor",
                 "NominalScannedPixelSpacing", "Modality", "BodyPartExamined", "PresentationLUTShape",
                 "PresentationIntentType", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                 "AccessionNumber", "StudyID", "PixelPaddingValue", "PixelPaddingRangeLimit", "WindowCenter",
                 "WindowWidth", "VOILUTFunction", "VOILUTSequence", "SharedFunctionalGroupsSequence",
                 "PerFrameFunctionalGroupsSequence", "ConversionType", "DetectorType", *DEVICE_TAGS, *FILM_ARCHIVE_TAGS)
IDENTIFIER_TAGS = ("PatientID", "AccessionNumber", "StudyID", "StudyInstanceUID")  # never quoted in a warning
ITEM_TAGS: dict[str, tuple[str, ...]] = {  # sequence -> the tags read in its items
    "ViewCodeSequence": ("CodeValue", "CodeMeaning", "ViewModifierCodeSequence"),
    "ViewModifierCodeSequence": ("CodeValue", "CodeMeaning"),
    "SharedFunctionalGroupsSequence": ("FrameAnatomySequence",),
    "PerFrameFunctionalGroupsSequence": ("FrameAnatomySequence",),
    "FrameAnatomySequence": ("FrameLaterality",),
    "ModalityLUTSequence": ("LUTDescriptor", "LUTData"),
    "VOILUTSequence": (),
}

# keyword -> tag number, looked up once: pydicom would translate each keyword on every access of every file
TAG_OF: dict[str, int] = {kw: pydicom.datadict.tag_for_keyword(kw) for kw in (
    *ESSENTIAL_TAGS, *OPTIONAL_TAGS, *ITEM_TAGS, *(k for kws in ITEM_TAGS.values() for k in kws))}

ACCEPTED_MODALITY = "MG"
PROJECTION_MODALITIES = frozenset({"DX", "CR", "RG", "DR", "OT", "SC"})  # read, with a warning
TOMOSYNTHESIS_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.13.1.3"})
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
DICOM_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # PS3.5 9.1; at most 64 characters
UID_WARNING = "UIDs are not DICOM UIDs (e.g. hex digests): kept as given"



class DicomReadError(MammokitError):
    """A file that cannot be read as a single-frame grayscale mammogram.

    Attributes:
        path: the file.
        reason: one sentence saying what is wrong.
        unexpected: True when the reader met an error it has no check for (a bug to report; the reason names it).
    """

    def __init__(self, path: str, reason: str, *, unexpected: bool = False) -> None:
        self.path = str(path)
        self.reason = reason
        self.unexpected = unexpected
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


def _number(ds: Any, keyword: str, path: str, default: float | None = None) -> float | None:
    """The one finite value of a tag the pixels depend on (`default` when absent); anything else is refused."""
    try:
        values = _floats(ds, keyword)
    except ValueError as err:
        raise DicomReadError(path, str(err)) from err
    if values is None:
        return default
    if len(values) != 1:
        raise DicomReadError(path, f"{keyword} holds {len(values)} values ({_show(values)}); it takes one")
    return values[0]


def _integer(ds: Any, keyword: str, path: str, default: int | None = None) -> int | None:
    """The one integer value of a tag the pixels depend on (`default` when absent); anything else is refused."""
    value = _number(ds, keyword, path)
    if value is None:
        return default
    if value != int(value) or abs(value) > 1 << 32:
        raise DicomReadError(path, f"{keyword}={value:g} is not an unsigned 16/32-bit integer")
    return int(value)


def _check_tags(ds: Any, keywords: tuple[str, ...], path: str, warnings: list[str], where: str = "") -> None:
    """Convert each tag read_dicom uses, once, so that a damaged one is met here: an ESSENTIAL one refuses the file,
    another is dropped with a warning. Sequences keep their first MAX_ITEMS items; their items are checked too."""
    for keyword in keywords:
        tag = TAG_OF[keyword]
        if tag not in ds:
            continue
        problem = _tag_problem(ds, keyword)
        if problem is not None:
            if keyword in ESSENTIAL_TAGS:
                raise DicomReadError(path, f"{where}{keyword} {problem}")
            warnings.append(f"{where}{keyword} {problem}; ignored")
            del ds[tag]
        elif keyword in ITEM_TAGS:
            element = ds[tag]
            if len(element.value) > MAX_ITEMS:
                warnings.append(f"{where}{keyword} has {len(element.value):,} items; the first {MAX_ITEMS} are read")
                element.value = list(element.value)[:MAX_ITEMS]
            for item in element.value:
                _check_tags(item, ITEM_TAGS[keyword], path, warnings, f"{where}{keyword} item: ")


def _tag_problem(ds: Any, keyword: str) -> str | None:
    """Why pydicom cannot give this tag's value as read_dicom needs it, or None when it can."""
    tag = TAG_OF[keyword]
    try:
        length = getattr(ds.get_item(tag, keep_deferred=True), "length", 0) or 0  # raw: not converted yet
        if keyword in ITEM_TAGS and MAX_SEQUENCE_BYTES < length < 0xFFFFFFFF:
            return f"holds {length:,} bytes, more than a header sequence needs"
        element = ds[tag]
    except Exception as err:  # pydicom's conversion errors: BytesLengthException, OSError, NotImplementedError, ...
        shown = "" if keyword in IDENTIFIER_TAGS else f": {str(err)[:120]}"  # an error may quote the value
        return f"cannot be parsed ({type(err).__name__}{shown})"
    if keyword in ITEM_TAGS and element.VR != "SQ":
        return f"is not a sequence (VR {element.VR})"
    return None


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


def _frame_info(ds: Any, syntax: str, element: PixelElement | None, path: str, warnings: list[str]) -> FrameInfo:
    """The header values the decoders need, each a single integer or refused; BitsStored 0 is warned about."""
    rows, columns = _integer(ds, "Rows", path), _integer(ds, "Columns", path)
    bits_allocated = _integer(ds, "BitsAllocated", path)
    if rows is None or columns is None or bits_allocated is None:
        reason = "no pixel data (7FE0,0010)" if element is None else "no image geometry tags"
        raise DicomReadError(path, f"{reason} (Rows/Columns/BitsAllocated missing)")
    bits_stored = _integer(ds, "BitsStored", path)
    if bits_stored == 0:
        warnings.append(f"BitsStored is 0; BitsAllocated ({bits_allocated}) used")
    representation = _integer(ds, "PixelRepresentation", path, 0)
    if representation not in (0, 1):
        raise DicomReadError(path, f"PixelRepresentation={representation} is neither 0 (unsigned) nor 1 (signed)")
    return FrameInfo(
        uid=syntax,
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored or bits_allocated,
        signed=representation == 1,
        photometric=(_text(ds, "PhotometricInterpretation") or "").upper(),
    )


def _header_checks(ds: Any, path: str, info: FrameInfo, element: PixelElement | None, warnings: list[str]) -> None:
    """Refuse what is not a single-frame grayscale image with consistent, bounded geometry."""
    if str(ds.get("SOPClassUID", "")) in TOMOSYNTHESIS_SOP_CLASSES:
        raise DicomReadError(path, "breast tomosynthesis volume (multi-frame) is not supported")
    frames = _integer(ds, "NumberOfFrames", path, 1)
    if frames > 1:
        raise DicomReadError(path, f"multi-frame image ({frames} frames, e.g. tomosynthesis) is not supported")
    if frames < 1:
        warnings.append(f"NumberOfFrames is {frames}; read as one frame")
    samples = _integer(ds, "SamplesPerPixel", path, 1)
    if samples != 1 or info.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomReadError(path, f"colour or other non-grayscale image ({_show(info.photometric)}, {samples} "
                                   "samples per pixel) is not supported")
    if not (0 < info.rows <= MAX_DIMENSION and 0 < info.columns <= MAX_DIMENSION) or (
            info.rows * info.columns > MAX_PIXELS):
        raise DicomReadError(path, f"absurd geometry: Rows={info.rows}, Columns={info.columns} (at most "
                                   f"{MAX_DIMENSION} each and {MAX_PIXELS:,} pixels)")
    if info.bits_allocated not in (8, 16, 32) or not 1 <= info.bits_stored <= info.bits_allocated:
        raise DicomReadError(path, f"BitsAllocated={info.bits_allocated} with BitsStored={info.bits_stored} "
                                   "is not supported")
    if info.uid not in DECODERS:
        raise DicomReadError(path, f"{transfer_syntax_name(info.uid)} ({info.uid}) is not supported")
    if element is None:
        raise DicomReadError(path, "no pixel data (7FE0,0010)")
    deflated_header = info.uid == pydicom.uid.DeflatedExplicitVRLittleEndian and element.data is None  # not peeked
    if DECODERS[info.uid].kind == "native" and element.length is None and not deflated_header:
        raise DicomReadError(path, f"Pixel Data is encapsulated (undefined length) but {transfer_syntax_name(info.uid)}"
                                   " is not a compressed transfer syntax")
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
    if not 8 <= bits <= 16:
        raise ValueError(f"its descriptor gives {bits}-bit entries, not 8 or 16")
    data = item.get("LUTData")
    if isinstance(data, (bytes, bytearray)):
        lut = np.frombuffer(data, dtype="<u2" if bits > 8 else "u1")
    else:
        lut = np.asarray(list(data) if isinstance(data, (list, pydicom.multival.MultiValue)) else [data])
    if lut.size < entries:
        raise ValueError(f"Modality LUT has {lut.size} entries, its descriptor says {entries}")
    if first > 32767 and (item["LUTDescriptor"].VR == "SS" or ds.get("PixelRepresentation") == 1):
        first -= 65536
    table = lut[:entries].astype(np.float32)
    if table.min() == table.max():
        raise ValueError(f"it maps every stored value to {table[0]:g}")
    return table, first


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
    except (ValueError, TypeError, AttributeError, KeyError) as err:
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
        lo, hi = _rescale(ds, path, info)[2]
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
        salt: key of the identifier hashes; `mammokit.ids.resolve_salt` (env `MAMMOKIT_ID_SALT`, else this
            installation's random salt).
        keep_ids: the user's opt-in to also return raw PatientID / AccessionNumber.
        backend: "auto" (fastest decoders, default) or "pydicom" (pydicom.pixels plugins); default
            env `MAMMOKIT_DICOM_BACKEND`.

    Raises:
        DicomReadError: the file is not a readable single-frame grayscale mammogram (reason says why), also for
            an error the reader has no check for (then `unexpected` is True).
        ValueError: an unknown backend name.
    """
    backend = resolve_backend(backend)
    name = str(path)
    with _quiet_validation():
        ds, element = _open_dataset(Path(path), pixels, backend)
        try:
            return _read(ds, element, name, pixels=pixels, salt=salt, keep_ids=keep_ids, backend=backend)
        except DicomReadError:
            raise
        except BaseException as err:  # a bug, or a case no check foresaw: still this file's error, marked unexpected
            if not library_error(err):
                raise
            reason = f"unexpected {type(err).__name__} while reading (please report): {str(err)[:200]}"
            raise DicomReadError(name, reason, unexpected=True) from err


@contextmanager
def _quiet_validation() -> Iterator[None]:
    """pydicom's value validation off for one read, the previous mode restored after: the reader checks the values it
    uses itself, and pydicom would log (and warn) once per odd tag per file, e.g. for VinDr-Mammo's hex-digest UIDs."""
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = previous


def _uid_check(uids: list[str | None], warnings: list[str]) -> None:
    """One warning when a Study/Series/SOP Instance UID present is not a DICOM UID (digits and dots, <= 64 chars)."""
    if any(uid and (len(uid) > 64 or not DICOM_UID.fullmatch(uid)) for uid in uids):
        warnings.append(UID_WARNING)


def _read(ds: Any, element: PixelElement | None, name: str, *, pixels: bool, salt: str | None, keep_ids: bool,
          backend: str) -> MammoImage:
    """read_dicom after the file is parsed: checks, metadata, and the pixels when `pixels`."""
    warnings: list[str] = []
    _check_tags(ds, ESSENTIAL_TAGS + OPTIONAL_TAGS, name, warnings)
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax:
        syntax = pydicom.uid.ExplicitVRLittleEndian if not ds.is_implicit_VR else pydicom.uid.ImplicitVRLittleEndian
        warnings.append("no TransferSyntaxUID in the file meta; inferred from the encoding")
    info = _frame_info(ds, syntax, element, name, warnings)
    _header_checks(ds, name, info, element, warnings)
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
    slope, intercept, value_range = _rescale(ds, name, info)
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
    pad, limit = _floats(ds, "PixelPaddingValue", warnings), _floats(ds, "PixelPaddingRangeLimit", warnings)
    orientation = ds.get("PatientOrientation")
    _uid_check([_text(ds, keyword) for keyword in UID_TAGS], warnings)
    image: dict[str, Any] = {
        "path": name,
        "pixels": None,
        "rows": info.rows,
        "columns": info.columns,
        "spacing_mm": spacing,
        "spacing_source": spacing_source,
        "spacing_raw_mm": spacing_raw,
        "spacing_trusted": trusted,
        "laterality": laterality,
        "laterality_source": laterality_source,
        "view": view,
        "view_source": view_source,
        "bits_stored": _integer(ds, "BitsStored", name),
        "bits_allocated": info.bits_allocated,
        "pixel_representation": _integer(ds, "PixelRepresentation", name),
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
        "window_center": _floats(ds, "WindowCenter", warnings),
        "window_width": _floats(ds, "WindowWidth", warnings),
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
    elif image["modality_lut"] != "sequence":
        image["value_range"] = value_range
    return MammoImage(**image)


def _rescale(ds: Any, path: str, info: FrameInfo) -> tuple[float, float, tuple[float, float]]:
    """(RescaleSlope, RescaleIntercept, [lo, hi] they map the BitsStored range to); 1 and 0 when absent. Refused:
    a value that is not one finite number, a slope of 0 (one value for every pixel), an output beyond MAX_VALUE."""
    slope = _number(ds, "RescaleSlope", path, 1.0)
    intercept = _number(ds, "RescaleIntercept", path, 0.0)
    if abs(slope) < MIN_SLOPE:
        raise DicomReadError(path, f"RescaleSlope={slope:g} maps every stored value to one value")
    smin, smax = stored_range(info.bits_stored, info.signed)
    lo, hi = sorted((smin * slope + intercept, smax * slope + intercept))
    if max(-lo, hi) > MAX_VALUE:
        raise DicomReadError(path, f"RescaleSlope={slope:g} and RescaleIntercept={intercept:g} map stored values to "
                                   f"[{lo:.3g}, {hi:.3g}], beyond what float32 pixels hold")
    return slope, intercept, (float(lo), float(hi))


def _signed_tag(value: tuple[float, ...] | None, info: FrameInfo) -> float | None:
    """First value of a US-or-SS tag, reinterpreted as signed when the pixels are signed."""
    if not value:
        return None
    v = value[0]
    if info.signed and v >= 1 << 15 and info.bits_allocated == 16:
        v -= 1 << 16
    return v
