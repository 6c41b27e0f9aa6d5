"""Write small, real DICOM files for tests, in any transfer syntax mammokit reads.

Other test modules import this: `write_test_dicom(path, pixels, ...)` takes the *stored* pixel values
(what the encoder should write, high bits included) and returns the path. Every tag can be set or,
with `None`, removed through keyword arguments named by DICOM keyword.

Encoders used: pydicom's own (native, deflated, RLE), pylibjpeg-openjpeg through `Dataset.compress`
(JPEG 2000) and imagecodecs (lossless JPEG, JPEG-LS, 8/12-bit lossy JPEG), wrapped with
`pydicom.encaps.encapsulate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
LOSSLESS_COMPRESSED = (RLELossless, JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEG2000Lossless)
LOSSY_COMPRESSED = (JPEG2000, JPEGLSNearLossless, JPEGExtended12Bit, JPEGBaseline8Bit)


def code_item(value: str, scheme: str, meaning: str = "") -> Dataset:
    """One code sequence item, e.g. `code_item("399162004", "SCT", "cranio-caudal")` for a ViewCodeSequence."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def modality_lut_sequence(lut: Sequence[int], first_mapped: int, bits: int = 16) -> DicomSequence:
    """A Modality LUT Sequence with one LUT: stored value `first_mapped + i` maps to `lut[i]`."""
    item = Dataset()
    item.LUTDescriptor = [len(lut) if len(lut) < 65536 else 0, first_mapped, bits]
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "OW", np.asarray(lut, dtype="<u2").tobytes())
    return DicomSequence([item])


def _encode_frame(arr: np.ndarray, syntax: str, bits_stored: int, near: int, quality: int) -> bytes:
    """Compress one frame of stored values with imagecodecs into the stream the syntax expects."""
    if syntax == JPEGLosslessSV1:
        return imagecodecs.jpeg8_encode(arr, lossless=True, predictor=1, bitspersample=bits_stored)
    if syntax == JPEGLossless:  # process 14 with a predictor other than 1 (liblj92 uses predictor 6)
        return imagecodecs.ljpeg_encode(arr, bitspersample=bits_stored)
    if syntax in (JPEGLSLossless, JPEGLSNearLossless):
        return imagecodecs.jpegls_encode(arr, level=0 if syntax == JPEGLSLossless else near)
    if syntax == JPEGExtended12Bit:
        return imagecodecs.jpeg8_encode(arr, level=quality, bitspersample=12)
    if syntax == JPEGBaseline8Bit:
        return imagecodecs.jpeg8_encode(arr, level=quality)
    raise ValueError(f"write_test_dicom: no imagecodecs encoder for {syntax}")


def write_test_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    bits_allocated: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    modality: str | None = "MG",
    sop_class: str = MG_FOR_PRESENTATION,
    near: int = 2,
    quality: int = 90,
    j2k_psnr: float = 60.0,
    **tags: Any,
) -> Path:
    """Write `pixels` (stored values) as a DICOM file at `path` and return the path.

    Args:
        path: output file; parent folders are created.
        pixels: HxW stored values (uint8/uint16/int16); (F, H, W) writes F frames; (H, W, 3) with
            photometric "RGB" writes a colour image. Values are written as given, bits above
            `bits_stored` included (native syntaxes), so tests can check masking.
        transfer_syntax: any UID in NATIVE, LOSSLESS_COMPRESSED or LOSSY_COMPRESSED.
        photometric: PhotometricInterpretation.
        bits_stored: defaults to the dtype's width.
        bits_allocated: defaults to the dtype's width.
        slope, intercept: RescaleSlope / RescaleIntercept (omitted when None).
        modality: Modality tag (None removes it).
        sop_class: SOP Class UID (Digital Mammography For Presentation by default).
        near: JPEG-LS NEAR parameter for the near-lossless syntax.
        quality: JPEG quality for the lossy 8/12-bit JPEG syntaxes.
        j2k_psnr: target PSNR for lossy JPEG 2000.
        **tags: any DICOM keyword set on the dataset; a value of None deletes the tag. Defaults are
            PatientName/PatientID/BirthDate, ImageLaterality "L", ViewPosition "CC", PixelSpacing 0.07 mm.
    """
    path = Path(path)
    arr = np.asarray(pixels)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"write_test_dicom: pixels must be integers (stored values), got {arr.dtype}")
    colour = arr.ndim == 3 and photometric in ("RGB", "YBR_FULL")
    frames = arr.shape[0] if arr.ndim == 3 and not colour else 1
    width = arr.dtype.itemsize * 8
    bits_allocated = bits_allocated or width
    bits_stored = bits_stored or width

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(path), "sop"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series"])
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PAT-0001"
    ds.PatientBirthDate = "19600101"
    ds.AccessionNumber = "ACC-42"
    ds.StudyID = "1"
    if modality is not None:
        ds.Modality = modality
    ds.Manufacturer = "TestVendor"
    ds.ManufacturerModelName = "Factory-1"
    ds.ImageLaterality = "L"
    ds.ViewPosition = "CC"
    ds.PixelSpacing = [0.07, 0.07]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = (arr.shape[0], arr.shape[1]) if colour or arr.ndim == 2 else arr.shape[1:]
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)

    syntax = UID(transfer_syntax)
    ds.file_meta.TransferSyntaxUID = syntax
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    stored = arr.astype(f"{order}{arr.dtype.kind}{bits_allocated // 8}", copy=False)
    if syntax in NATIVE:
        ds.PixelData = stored.tobytes()
    elif syntax == RLELossless or syntax in (JPEG2000Lossless, JPEG2000):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = stored.tobytes()
        kwargs: dict[str, Any] = {"j2k_psnr": [j2k_psnr]} if syntax == JPEG2000 else {}
        ds.compress(syntax, generate_instance_uid=False, **kwargs)
    else:
        ds.PixelData = encapsulate([_encode_frame(stored, syntax, bits_stored, near, quality)], has_bot=True)
    if syntax.is_compressed:
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def truncate_compressed_stream(path: str | Path, keep: float = 0.5) -> Path:
    """Rewrite a compressed file so its (single) codestream is cut to `keep` of its length, DICOM structure intact.

    This is the hard case for decoders: the file parses, but the image stream stops midway.
    """
    from pydicom import dcmread
    from pydicom.encaps import get_frame

    ds = dcmread(path)
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = encapsulate([frame[: int(len(frame) * keep)]], has_bot=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
