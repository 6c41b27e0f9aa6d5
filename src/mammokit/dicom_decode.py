"""Pixel-data decoder backends for `mammokit.dicom`: which library decodes each transfer syntax, and checks.

Two backends decode the same files to the same stored values:

- ``"auto"`` (default): the fastest open decoder measured per syntax by ``bench/decode.py`` — numpy
  for native data, pylibjpeg-rle for RLE, imagecodecs for lossless JPEG / JPEG-LS / lossy JPEG,
  pylibjpeg-openjpeg for JPEG 2000 — with GDCM as the fallback when the fast one is missing or fails.
- ``"pydicom"``: pydicom's own ``pixel_array`` with its installed plugins, falling back to GDCM only
  where no pydicom plugin can decode the syntax (12-bit JPEG Extended: pydicom's GDCM plugin refuses
  it, GDCM itself decodes it).

Pick one with the ``backend=`` argument of `read_dicom` or the ``MAMMOKIT_DICOM_BACKEND`` env var.

Whatever decodes, the result is validated: a JPEG / JPEG-LS / JPEG 2000 stream must end with its
end-of-image marker (0xFFD9, after optional zero padding) because a truncated lossless-JPEG stream
decodes without error through some decoders and returns half garbage; RLE segments must decode
completely; the decoded array must have the header's Rows x Columns.
"""

from __future__ import annotations

import importlib
import os
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pydicom
from pydicom import uid as _uid
from pydicom.encaps import get_frame

BACKENDS = ("auto", "pydicom")
ENV_BACKEND = "MAMMOKIT_DICOM_BACKEND"


class DecodeError(Exception):
    """Pixel data that cannot be decoded; `mammokit.dicom` turns it into a `DicomReadError` naming the file."""


class MissingDecoder(DecodeError):
    """The package of one backend is not installed; the next backend is tried."""


class CorruptData(DecodeError):
    """A decoder found the data incomplete or inconsistent; no other backend is tried."""


@dataclass(frozen=True)
class DecoderSpec:
    """How mammokit decodes one transfer syntax.

    Attributes:
        uid: transfer syntax UID.
        name: its DICOM name.
        kind: "native", "rle", "jpeg", "jpegls" or "jpeg2000".
        fast: backends tried in order by the "auto" path (module.function or a short label).
        package: the pip package(s) that decode it, named in errors when none is installed.
    """

    uid: str
    name: str
    kind: str
    fast: tuple[str, ...]
    package: str

    def describe(self) -> str:
        """One line for `mammokit info`: syntax, auto backends, and the pydicom path."""
        return f"{self.name}: auto = {' > '.join(self.fast)}; pydicom = pydicom.pixels (+gdcm fallback)"


def _spec(u: str, kind: str, fast: tuple[str, ...], package: str) -> DecoderSpec:
    return DecoderSpec(u, _uid.UID(u).name, kind, fast, package)


_NATIVE = ("numpy",)
DECODERS: dict[str, DecoderSpec] = {
    s.uid: s
    for s in (
        _spec(_uid.ExplicitVRLittleEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.ImplicitVRLittleEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.DeflatedExplicitVRLittleEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.ExplicitVRBigEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.RLELossless, "rle", ("imagecodecs.dicomrle", "pylibjpeg-rle", "gdcm"),
              "imagecodecs or pylibjpeg-rle"),
        _spec(_uid.JPEGLosslessSV1, "jpeg", ("imagecodecs.ljpeg", "imagecodecs.jpegsof3", "gdcm"),
              "imagecodecs or python-gdcm"),
        _spec(_uid.JPEGLossless, "jpeg", ("imagecodecs.ljpeg", "imagecodecs.jpegsof3", "gdcm"),
              "imagecodecs or python-gdcm"),
        _spec(_uid.JPEGLSLossless, "jpegls", ("imagecodecs.jpegls", "gdcm"), "imagecodecs or python-gdcm"),
        _spec(_uid.JPEGLSNearLossless, "jpegls", ("imagecodecs.jpegls", "gdcm"), "imagecodecs or python-gdcm"),
        _spec(_uid.JPEG2000Lossless, "jpeg2000", ("pylibjpeg-openjpeg", "imagecodecs.jpeg2k", "gdcm"),
              "pylibjpeg-openjpeg"),
        _spec(_uid.JPEG2000, "jpeg2000", ("pylibjpeg-openjpeg", "imagecodecs.jpeg2k", "gdcm"), "pylibjpeg-openjpeg"),
        _spec(_uid.JPEGBaseline8Bit, "jpeg", ("imagecodecs.jpeg8", "gdcm"), "imagecodecs or python-gdcm"),
        _spec(_uid.JPEGExtended12Bit, "jpeg", ("imagecodecs.jpeg8", "gdcm"), "imagecodecs or python-gdcm"),
    )
}


def tag_text(ds: Any, keyword: str) -> str | None:
    """A header tag's value as a stripped string; None when the dataset or tag is absent or the value empty."""
    value = ds.get(keyword) if ds is not None else None
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def transfer_syntax_name(uid: str | None) -> str:
    """The DICOM name of a transfer syntax UID ("unknown transfer syntax <uid>" when pydicom does not know it)."""
    if not uid:
        return "missing transfer syntax"
    name = _uid.UID(str(uid)).name
    return name if name != str(uid) else f"unknown transfer syntax {uid}"


def decoder_for(uid: str | None) -> DecoderSpec:
    """The `DecoderSpec` for a transfer syntax; raises `DecodeError` naming the syntax when mammokit cannot read it."""
    spec = DECODERS.get(str(uid)) if uid else None
    if spec is None:
        raise DecodeError(f"transfer syntax {transfer_syntax_name(uid)} ({uid}) is not supported")
    return spec


def resolve_backend(backend: str | None) -> str:
    """`backend`, else env `MAMMOKIT_DICOM_BACKEND`, else "auto"; raises ValueError for an unknown name."""
    name = backend or os.environ.get(ENV_BACKEND) or "auto"
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r} (or ${ENV_BACKEND}) must be one of {BACKENDS}")
    return name


@cache
def _module(name: str) -> Any | None:
    """Import an optional decoder module once; None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@dataclass(frozen=True)
class FrameInfo:
    """What the decoders need from the header."""

    uid: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str


@dataclass(frozen=True)
class PixelElement:
    """Where the Pixel Data element stands: declared length (None: undefined), bytes available, the value."""

    length: int | None
    available: int
    data: bytes | memoryview | None  # native value (None for encapsulated data read as `frame`)
    frame: bytes | None = None  # encapsulated: the fragments of the single frame, joined


def _read_frame(fp: Any, read: bool = True) -> bytes:
    """Read encapsulated items from `fp` (just after the Pixel Data header): skip the offset table, join fragments.

    With `read=False` only the item headers are read (seeking over fragments), to check the file is complete.

    Reading each fragment straight from the file avoids copying the value twice (pydicom's reader
    and `get_frame` each copy it). Raises EOFError on a cut item and ValueError on a bad item tag.
    """
    fragments: list[bytes] = []
    first = True
    while True:
        head = fp.read(8)
        if len(head) == 0 and not first:
            break  # no sequence delimiter before the end of file: tolerated, the stream check still runs
        if len(head) < 8:
            raise EOFError("file ends inside an encapsulated Pixel Data item header")
        group, element, length = struct.unpack("<HHI", head)
        if (group, element) == (0xFFFE, 0xE0DD):
            break
        if (group, element) != (0xFFFE, 0xE000):
            raise ValueError(f"unexpected tag ({group:04X},{element:04X}) inside encapsulated Pixel Data")
        if first:
            fp.seek(length, 1)  # Basic Offset Table
            first = False
            continue
        if not read:
            here = fp.tell()
            if fp.seek(0, 2) < here + length:
                raise EOFError(f"file ends inside a Pixel Data fragment ({length} bytes declared)")
            fp.seek(here + length)
            fragments.append(b"")
            continue
        fragment = fp.read(length)
        if len(fragment) < length:
            raise EOFError(f"file ends inside a Pixel Data fragment ({len(fragment)} of {length} bytes)")
        fragments.append(fragment)
    if not fragments:
        raise ValueError("encapsulated Pixel Data holds no fragment")
    return fragments[0] if len(fragments) == 1 else b"".join(fragments)


def read_pixel_element(ds: Any, fp: Any, size: int, syntax: str | None, read: bool) -> PixelElement | None:
    """Read the Pixel Data element header at `fp` (where pydicom stopped), and its value when `read`.

    Returns None when the next element is not Pixel Data; raises EOFError when its header is cut.
    """
    start = fp.tell()
    little = syntax != pydicom.uid.ExplicitVRBigEndian
    fmt = "<" if little else ">"
    head = fp.read(12)
    if len(head) < 8 or struct.unpack(f"{fmt}HH", head[:4]) != (0x7FE0, 0x0010):
        return None
    implicit = syntax == pydicom.uid.ImplicitVRLittleEndian or (syntax is None and ds.is_implicit_VR)
    if implicit:
        header, (length,) = 8, struct.unpack("<I", head[4:8])
    elif len(head) < 12:
        raise EOFError("file ends inside the Pixel Data element header")
    else:
        header, (length,) = 12, struct.unpack(f"{fmt}I", head[8:12])
    available = size - start - header
    declared = None if length == 0xFFFFFFFF else length
    fp.seek(start + header)
    if not read:
        if declared is None:
            _read_frame(fp, read=False)
        return PixelElement(declared, available, None)
    if declared is None:
        return PixelElement(None, available, None, _read_frame(fp))
    return PixelElement(declared, available, fp.read(declared))


def _check_stream(frame: bytes, spec: DecoderSpec) -> None:
    """Refuse a compressed stream that is not complete, before any decoder sees it."""
    if spec.kind == "rle":
        if len(frame) < 64:
            raise DecodeError(f"{spec.name} frame is {len(frame)} bytes, shorter than its 64-byte header")
        return
    end = len(frame)
    while end > 0 and frame[end - 1] == 0:  # fragments are padded to even length
        end -= 1
    if frame[max(0, end - 2) : end] != b"\xff\xd9":
        raise DecodeError(f"{spec.name} stream has no end-of-image marker: the compressed data is truncated")
    starts = (b"\xff\xd8",) if spec.kind in ("jpeg", "jpegls") else (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP")
    if not frame.startswith(starts):
        head = frame[:4].hex()
        raise DecodeError(f"{spec.name} stream does not start with a {spec.kind} header (first bytes {head})")


def _gdcm_decode(frame: bytes, info: FrameInfo) -> np.ndarray:
    """Decode one frame in memory with GDCM; returns stored values (GDCM applies no rescale here)."""
    gdcm = _module("gdcm")
    if gdcm is None:
        raise MissingDecoder("python-gdcm is not installed")
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(frame)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((info.columns, info.rows, 1))
    image.SetDataElement(element)
    pi = gdcm.PhotometricInterpretation.GetPIType(info.photometric)
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(pi))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(info.uid)))
    bits = info.bits_stored
    image.SetPixelFormat(gdcm.PixelFormat(1, info.bits_allocated, bits, bits - 1, int(info.signed)))
    buffer = image.GetBuffer()
    if not buffer:
        raise DecodeError("GDCM could not decode the pixel data")
    dtype = f"<{'i' if info.signed else 'u'}{info.bits_allocated // 8}"
    return np.frombuffer(buffer.encode("utf-8", "surrogateescape"), dtype=dtype)


def _rle_segments_match(frame: bytes, info: FrameInfo) -> None:
    """The RLE header's segment count must be BitsAllocated / 8 for one grayscale sample."""
    segments = int(np.frombuffer(frame[:4], "<u4")[0])
    if segments != info.bits_allocated // 8:
        raise CorruptData(f"RLE header has {segments} segments, {info.bits_allocated}-bit grayscale needs "
                          f"{info.bits_allocated // 8}")


def _rle_decode(frame: bytes, info: FrameInfo) -> np.ndarray:
    rle = _module("rle.utils")
    if rle is None:
        raise MissingDecoder("pylibjpeg-rle is not installed")
    try:
        out = rle.decode_frame(frame, info.rows * info.columns, info.bits_allocated, "<")
    except ValueError as err:  # pylibjpeg-rle raises when a segment ends early: a truncated stream
        raise CorruptData(f"RLE data is truncated or corrupt: {err}") from err
    return np.frombuffer(out, dtype=f"<u{info.bits_allocated // 8}")


def _run_fast(name: str, frame: bytes, info: FrameInfo) -> np.ndarray:
    """Run one named fast backend; raises DecodeError when its package is missing."""
    if name == "gdcm":
        return _gdcm_decode(frame, info)
    if name == "pylibjpeg-rle":
        return _rle_decode(frame, info)
    if name == "imagecodecs.dicomrle":  # fastest measured; raises on a truncated segment
        codecs = _module("imagecodecs")
        if codecs is None:
            raise MissingDecoder("imagecodecs is not installed")
        dtype = f"<u{info.bits_allocated // 8}"
        return np.frombuffer(codecs.dicomrle_decode(frame, dtype), dtype=dtype)
    if name == "pylibjpeg-openjpeg":
        openjpeg = _module("openjpeg")
        if openjpeg is None:
            raise MissingDecoder("pylibjpeg-openjpeg is not installed")
        return openjpeg.decode(frame)
    module, _, codec = name.partition(".")
    lib = _module(module)
    if lib is None:
        raise MissingDecoder(f"{module} is not installed")
    return getattr(lib, f"{codec}_decode")(frame)


def _check_shape(arr: np.ndarray, info: FrameInfo, who: str) -> np.ndarray:
    """Reshape a decoder's output to Rows x Columns, refusing anything else (e.g. an empty array on failure)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise DecodeError(f"{who} returned {arr.dtype} pixels, expected integers")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 1 and arr.size == info.rows * info.columns:
        arr = arr.reshape(info.rows, info.columns)
    if arr.shape != (info.rows, info.columns):
        raise DecodeError(f"{who} returned an image of shape {arr.shape}, header says {info.rows}x{info.columns}")
    return arr


def native_pixels(pixel_data: bytes | memoryview, info: FrameInfo, big_endian: bool = False) -> np.ndarray:
    """View uncompressed Pixel Data as an HxW array (no copy for little-endian data)."""
    nbytes = info.bits_allocated // 8
    dtype = np.dtype(f"{'>' if big_endian else '<'}{'i' if info.signed else 'u'}{nbytes}")
    count = info.rows * info.columns
    if len(pixel_data) < count * nbytes:
        raise DecodeError(f"pixel data holds {len(pixel_data)} bytes, Rows x Columns needs {count * nbytes}")
    arr = np.frombuffer(pixel_data, dtype=dtype, count=count).reshape(info.rows, info.columns)
    return arr.astype(dtype.newbyteorder("="), copy=False) if big_endian else arr


def single_frame(pixel_data: bytes, spec: DecoderSpec) -> bytes:
    """The one compressed frame of encapsulated Pixel Data, fragments joined."""
    try:
        return get_frame(pixel_data, 0, number_of_frames=1)
    except Exception as err:  # pydicom raises ValueError/struct.error on broken item tags
        raise DecodeError(f"encapsulated {spec.name} pixel data cannot be parsed: {err}") from err


def decode_stored(ds: Any, element: PixelElement, info: FrameInfo, backend: str) -> tuple[np.ndarray, str, list[str]]:
    """Decode a dataset's single frame to stored values (integer HxW, bits above BitsStored not yet masked).

    Args:
        ds: the pydicom Dataset (read with its pixel data for the "pydicom" backend).
        element: the Pixel Data element: native bytes, encapsulated items, or the frame already joined.
        info: header values the decoders need.
        backend: "auto" or "pydicom".

    Returns:
        The array, the label of the decoder that produced it, and warnings (e.g. a fast decoder failed).
    """
    spec = decoder_for(info.uid)
    if spec.kind == "native":
        if backend == "pydicom":
            return _check_shape(ds.pixel_array, info, "pydicom"), "pydicom", []
        return native_pixels(element.data, info, info.uid == _uid.ExplicitVRBigEndian), "numpy", []
    frame = element.frame if element.frame is not None else single_frame(element.data, spec)
    _check_stream(frame, spec)
    if spec.kind == "rle":
        _rle_segments_match(frame, info)
    if backend == "pydicom":
        return _pydicom_or_gdcm(ds, frame, info, spec)
    problems: list[str] = []
    for name in spec.fast:
        try:
            arr = _check_shape(_run_fast(name, frame, info), info, name)
            return arr, name, [f"{p}; used {name}" for p in problems]
        except CorruptData:
            raise
        except DecodeError as err:  # not installed, or a wrong-shaped result: try the next backend
            problems.append(f"{name}: {err}")
        except Exception as err:  # a decoder library's own error type (e.g. an unsupported JPEG process)
            problems.append(f"{name} failed: {type(err).__name__}: {err}")
    raise DecodeError(f"no decoder could read {spec.name} (needs {spec.package}): " + "; ".join(problems))


def _pydicom_or_gdcm(ds: Any, frame: bytes, info: FrameInfo, spec: DecoderSpec) -> tuple[np.ndarray, str, list[str]]:
    """pydicom's plugins; GDCM only where no pydicom plugin handles the syntax (12-bit JPEG Extended)."""
    from pydicom.pixels import get_decoder

    gdcm_only = (info.uid == _uid.JPEGExtended12Bit and info.bits_stored > 8) or not get_decoder(info.uid).is_available
    if not gdcm_only:
        try:
            return _check_shape(ds.pixel_array, info, "pydicom"), "pydicom", []
        except DecodeError:
            raise
        except Exception as err:  # pydicom's plugins raise RuntimeError/ValueError on bad data
            raise CorruptData(f"{spec.name} data is truncated or corrupt: pydicom could not decode it: {err}") from err
    try:
        arr = _check_shape(_gdcm_decode(frame, info), info, "gdcm")
    except MissingDecoder as err:
        raise DecodeError(f"{spec.name} needs {spec.package} on the pydicom path: {err}") from err
    return arr, "gdcm", [f"no pydicom plugin decodes {spec.name}; used GDCM"]


def stored_values(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Keep the low `bits_stored` bits of each value; sign-extend from bit bits_stored-1 when `signed`."""
    width = arr.dtype.itemsize * 8
    unsigned = arr.view(f"u{arr.dtype.itemsize}") if arr.dtype.kind == "i" else arr
    if bits_stored < width and (int(unsigned.max(initial=0)) >> bits_stored):
        unsigned = unsigned & np.array((1 << bits_stored) - 1, dtype=unsigned.dtype)
    if not signed:
        return unsigned
    if bits_stored == width:
        return unsigned.view(f"i{arr.dtype.itemsize}")
    sign = 1 << (bits_stored - 1)
    wide = unsigned.astype(np.int32 if width <= 16 else np.int64)
    return (wide ^ sign) - sign


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """The smallest and largest value BitsStored bits can hold."""
    return (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
