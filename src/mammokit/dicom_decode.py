"""Pixel-data decoder backends for `mammokit.dicom`: which library decodes each transfer syntax, and checks.

Two backends decode the same files to the same stored values:

- ``"auto"`` (default): the decoder that ``bench/decode.py`` measures fastest per syntax in CPU time (what an
  archive run with one file per core pays) — numpy for native data, imagecodecs' RLE codec, imagecodecs ``jpeg8``
  (libjpeg-turbo 3, which decodes lossless JPEG too) for every JPEG process, imagecodecs for JPEG-LS,
  pylibjpeg-openjpeg for JPEG 2000 — then the next ones of `DecoderSpec.fast`, GDCM last, when it is missing or
  fails. GDCM is never first: it is the slowest on RLE and JPEG, and on JPEG 2000 its OpenJPEG decodes on a thread
  pool: it can win in wall time while a core is idle, but costs ~1.2x the CPU time of single-threaded OpenJPEG.
  imagecodecs' ``ljpeg`` (liblj92) is not used: fed fuzzed lossless-JPEG frames unchecked, it crashed (SIGSEGV) on
  5 of 2,236, libjpeg-turbo and ``jpegsof3`` on none.
- ``"pydicom"``: pydicom's own ``pixel_array`` with its installed plugins, falling back to GDCM only
  where no pydicom plugin can decode the syntax (12-bit JPEG Extended: pydicom's GDCM plugin refuses
  it, GDCM itself decodes it).

Pick one with the ``backend=`` argument of `read_dicom` or the ``MAMMOKIT_DICOM_BACKEND`` env var. On a CUDA GPU,
"auto" puts nvImageCodec (`mammokit.dicom_gpu`) in front of the table for JPEG 2000 and JPEG Lossless SV1.

Before any decoder sees a frame, `check_frame` validates what decoders trust: a JPEG / JPEG-LS / JPEG 2000 stream
must end with its end-of-image marker (0xFFD9, after optional zero padding) because a truncated lossless-JPEG stream
decodes without error through some decoders and returns half garbage; its own frame header (JPEG SOF, JPEG 2000 SIZ)
must give the header's Rows x Columns, one component and no more bits than BitsAllocated; RLE segment counts and
offsets must lie inside the frame. Native decoders crash on such input rather than fail (an RLE offset of 0xFFFFFFF0
was a SIGSEGV in imagecodecs, a 100000 x 100000 JPEG 2000 frame a SIGABRT in GDCM). Whatever decodes, the result is
validated too: RLE segments must decode completely; the decoded array must have the header's Rows x Columns.
A decoder's own failure, pyo3's `PanicException` included (a `BaseException`), becomes a `DecodeError`.
"""

from __future__ import annotations

import importlib
import os
import struct
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import Any

import numpy as np
import pydicom
from pydicom import uid as _uid
from pydicom.encaps import get_frame

from mammokit import dicom_gpu

BACKENDS = ("auto", "pydicom")
ENV_BACKEND = "MAMMOKIT_DICOM_BACKEND"
JPEG_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
LOSSLESS_JPEG_SYNTAXES = frozenset({_uid.JPEGLosslessSV1, _uid.JPEGLossless})
LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})  # lossless frame headers (Huffman / arithmetic, (non)differential)
J2K_MAX_TILES = 65535  # tile indices are 0..65534 in JPEG 2000


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
# Order measured by bench/decode.py (3328x2560 14-bit, CPU seconds, medians of 3, two runs; ties within 5% keep the
# order): RLE dicomrle 0.037-0.039, pylibjpeg-rle 0.036-0.039, gdcm 0.45-0.49; SV1 jpeg8 0.059-0.061, ljpeg
# 0.094-0.104, jpegsof3 0.130-0.133, gdcm 0.30-0.31; JPEG-LS jpegls 0.20-0.21, gdcm 0.40; J2K lossless
# pylibjpeg-openjpeg 1.14-1.31, imagecodecs 1.13-1.35, gdcm 1.38-1.63; 12-bit jpeg8 0.065-0.071, gdcm 0.24-0.27.
_LOSSLESS_JPEG = ("imagecodecs.jpeg8", "imagecodecs.jpegsof3", "gdcm")
DECODERS: dict[str, DecoderSpec] = {
    s.uid: s
    for s in (
        _spec(_uid.ExplicitVRLittleEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.ImplicitVRLittleEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.DeflatedExplicitVRLittleEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.ExplicitVRBigEndian, "native", _NATIVE, "numpy"),
        _spec(_uid.RLELossless, "rle", ("imagecodecs.dicomrle", "pylibjpeg-rle", "gdcm"),
              "imagecodecs or pylibjpeg-rle"),
        _spec(_uid.JPEGLosslessSV1, "jpeg", _LOSSLESS_JPEG, "imagecodecs or python-gdcm"),
        _spec(_uid.JPEGLossless, "jpeg", _LOSSLESS_JPEG, "imagecodecs or python-gdcm"),
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
    """A header tag's value as a stripped string; None when the dataset or tag is absent, the value empty, or
    pydicom cannot convert it (`mammokit.dicom` warns about unconvertible tags it uses before it reads them)."""
    try:
        value = ds.get(keyword) if ds is not None else None
    except Exception:  # pydicom's conversion errors on a damaged element: BytesLengthException, OSError, ...
        return None
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


def _read_frame(fp: Any, size: int, read: bool = True) -> bytes:
    """Read encapsulated items from `fp` (just after the Pixel Data header): skip the offset table, join fragments.

    With `read=False` only the item headers are read (seeking over fragments), to check the file is complete.
    Every item length is checked against the `size` of the file before anything is read or skipped.

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
        if fp.tell() + length > size:
            what = "Basic Offset Table" if first else "Pixel Data fragment"
            raise EOFError(f"file ends inside a {what} ({length} bytes declared, {size - fp.tell()} remain)")
        if first:
            fp.seek(length, 1)  # Basic Offset Table
            first = False
            continue
        if not read:
            fp.seek(length, 1)
            fragments.append(b"")
            continue
        fragments.append(fp.read(length))
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
    if not read or (declared is not None and declared > available):  # a cut value: refused, never read
        if declared is None:
            _read_frame(fp, size, read=False)
        return PixelElement(declared, available, None)
    if declared is None:
        return PixelElement(None, available, None, _read_frame(fp, size))
    return PixelElement(declared, available, fp.read(declared))


def check_frame(frame: bytes, spec: DecoderSpec, info: FrameInfo) -> int:
    """Refuse a compressed frame that is incomplete, or whose own header disagrees with the DICOM header (size,
    components, bit depth, RLE offsets), before any decoder sees it; raises CorruptData. Returns the sample depth."""
    if spec.kind == "rle":
        _check_rle(frame, info)
        return info.bits_allocated
    if spec.kind != "jpeg2000" and info.bits_allocated not in (8, 16):
        raise CorruptData(f"{spec.name} holds samples of at most 16 bits; BitsAllocated is {info.bits_allocated}")
    _check_markers(frame, spec)
    if spec.kind == "jpeg2000":
        depth, rows, columns, components = _j2k_size(frame, spec.name)
    else:
        depth, rows, columns, components, sof = _jpeg_frame_header(frame, spec.name)
        if spec.uid in LOSSLESS_JPEG_SYNTAXES and sof not in LOSSLESS_SOF:
            raise CorruptData(f"{spec.name} stream is a lossy JPEG (frame header FF{sof:02X}) under a lossless "
                              "transfer syntax")
    if components != 1:
        raise CorruptData(f"{spec.name} stream holds {components} components; a grayscale image has 1")
    if (rows, columns) != (info.rows, info.columns):
        raise CorruptData(f"{spec.name} stream is {rows}x{columns} pixels, the header says {info.rows}x{info.columns}")
    if not 1 <= depth <= info.bits_allocated:
        raise CorruptData(f"{spec.name} stream has {depth}-bit samples; BitsAllocated is {info.bits_allocated}")
    return depth


def _gdcm_refusal(info: FrameInfo, depth: int) -> str | None:
    """Why GDCM must not see this frame, or None. python-gdcm 3.2 aborts the process (it raises nothing) when
    BitsAllocated is not the natural one for the samples (8 up to 8 bits, else 16), e.g. an 8-bit JPEG-LS stream
    with BitsAllocated 16, and on BitsAllocated 8 with BitsStored below 8 (measured on every syntax)."""
    natural = 8 if depth <= 8 else 16
    if info.bits_allocated != natural:
        return f"BitsAllocated {info.bits_allocated} for {depth}-bit samples"
    if info.bits_allocated == 8 and info.bits_stored < 8:
        return f"BitsStored {info.bits_stored} with BitsAllocated 8"
    return None


def _check_markers(frame: bytes, spec: DecoderSpec) -> None:
    """A JPEG-family stream must start with its header marker and end with the end-of-image marker."""
    end = len(frame)
    while end > 0 and frame[end - 1] == 0:  # fragments are padded to even length
        end -= 1
    if frame[max(0, end - 2) : end] != b"\xff\xd9":
        raise DecodeError(f"{spec.name} stream has no end-of-image marker: the compressed data is truncated")
    starts = (b"\xff\xd8",) if spec.kind in ("jpeg", "jpegls") else (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP")
    if not frame.startswith(starts):
        head = frame[:4].hex()
        raise CorruptData(f"{spec.name} stream does not start with a {spec.kind} header (first bytes {head})")


def _jpeg_frame_header(frame: bytes, name: str) -> tuple[int, int, int, int, int]:
    """(precision, rows, columns, components, SOF marker) of a JPEG / JPEG-LS stream, walking its marker segments to
    the first scan: each segment must fit the stream; the scan must follow one frame header and name its one
    component; a lossless Huffman scan must find its table defined (liblj92 reads a missing one and crashes)."""
    pos, sof, tables = 2, None, set()
    while True:
        while frame[pos : pos + 2] == b"\xff\xff":  # fill bytes
            pos += 1
        if pos + 4 > len(frame) or frame[pos] != 0xFF:
            raise CorruptData(f"{name} stream has no marker at byte {pos} before its first scan: it is corrupt")
        marker = frame[pos + 1]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack_from(">H", frame, pos + 2)[0]
        if marker in (0xD8, 0xD9) or length < 2 or pos + 2 + length > len(frame):
            raise CorruptData(f"{name} marker FF{marker:02X} at byte {pos} (length {length}) is out of place")
        segment = frame[pos + 4 : pos + 2 + length]
        if marker == 0xC4:
            tables |= _huffman_tables(segment, name)
        elif marker in JPEG_FRAME_MARKERS:
            if sof is not None or length < 8 or length != 8 + 3 * segment[5]:
                raise CorruptData(f"{name} frame header FF{marker:02X} at byte {pos} is repeated or malformed")
            sof = (*struct.unpack_from(">BHHB", segment), segment[6], marker)
        elif marker == 0xDA and sof is not None and sof[3] != 1:
            return (*sof[:4], sof[5])  # a colour frame: check_frame names it
        elif marker == 0xDA:
            if sof is None or len(segment) < 4 or segment[0] != 1 or segment[1] != sof[4]:
                raise CorruptData(f"{name} scan at byte {pos} does not follow a one-component frame header")
            if sof[5] == 0xC3 and (0, segment[2] >> 4) not in tables:
                raise CorruptData(f"{name} scan uses Huffman table {segment[2] >> 4}, which is not defined")
            return (*sof[:4], sof[5])
        pos += 2 + length


def _huffman_tables(segment: bytes, name: str) -> set[tuple[int, int]]:
    """The (class, id) of each table in a DHT segment, which must hold whole tables of at most 256 codes."""
    found, pos = set(), 0
    while pos < len(segment):
        counts = segment[pos + 1 : pos + 17]
        size = 17 + sum(counts)
        if len(counts) < 16 or sum(counts) > 256 or pos + size > len(segment) or segment[pos] & 0xEC:
            raise CorruptData(f"{name} Huffman table segment is malformed: the stream is corrupt")
        found.add((segment[pos] >> 4, segment[pos] & 0x0F))
        pos += size
    return found


def _j2k_size(frame: bytes, name: str) -> tuple[int, int, int, int]:
    """(bit depth, rows, columns, components) from a JPEG 2000 SIZ segment, refusing inconsistent tile geometry."""
    start = frame.find(b"\xff\x4f\xff\x51")  # SOC + SIZ: at byte 0 of a codestream, inside the jp2c box of JP2
    siz = start + 2
    if start < 0 or siz + 43 > len(frame):
        raise CorruptData(f"{name} stream has no complete SIZ segment: it is corrupt")
    lsiz, _, x, y, xo, yo, xt, yt, xto, yto, comps = struct.unpack_from(">HHIIIIIIIIH", frame, siz + 2)
    if lsiz != 38 + 3 * comps or siz + 2 + lsiz > len(frame):
        raise CorruptData(f"{name} SIZ segment of {lsiz} bytes does not fit {comps} components")
    if not (xo < x and yo < y and xt and yt and xto <= xo and yto <= yo and xto + xt > xo and yto + yt > yo):
        raise CorruptData(f"{name} SIZ image and tile offsets are inconsistent: the stream is corrupt")
    tiles = -(-(x - xto) // xt) * -(-(y - yto) // yt)
    if tiles > J2K_MAX_TILES:
        raise CorruptData(f"{name} stream declares {tiles} tiles, more than JPEG 2000 allows ({J2K_MAX_TILES})")
    depth, xr, yr = frame[siz + 40 : siz + 43]
    if (xr, yr) != (1, 1):
        raise CorruptData(f"{name} stream subsamples its component ({xr}x{yr}); a grayscale frame is not subsampled")
    return (depth & 0x7F) + 1, y - yo, x - xo, comps


def _check_rle(frame: bytes, info: FrameInfo) -> None:
    """An RLE header needs BitsAllocated / 8 segments, the first at byte 64, each inside the frame after the last,
    each long enough for Rows x Columns bytes (a 2-byte run decodes to at most 128)."""
    if len(frame) < 64:
        raise CorruptData(f"RLE frame is {len(frame)} bytes, shorter than its 64-byte header: the data is truncated")
    segments = struct.unpack_from("<I", frame)[0]
    if segments != info.bits_allocated // 8:
        raise CorruptData(f"RLE header has {segments} segments, {info.bits_allocated}-bit grayscale needs "
                          f"{info.bits_allocated // 8}")
    offsets = [*struct.unpack_from(f"<{segments}I", frame, 4), len(frame)]
    if offsets[0] != 64:
        raise CorruptData(f"RLE header puts its first segment at byte {offsets[0]}, not 64: the header is corrupt")
    pixels = info.rows * info.columns
    for i, (start, end) in enumerate(pairwise(offsets)):
        if start >= len(frame):
            raise CorruptData(f"RLE segment {i + 1} starts at byte {start} of a {len(frame)}-byte frame: "
                              "the data is truncated")
        if end <= start:
            raise CorruptData(f"RLE segment offsets {offsets[:-1]} do not increase: the header is corrupt")
        if 64 * (end - start + 1) < pixels:
            raise CorruptData(f"RLE segment {i + 1} of {end - start} bytes cannot hold {pixels} pixels: "
                              "the data is truncated")


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


def library_error(err: BaseException) -> bool:
    """Is `err` what a library raises on bad input? Any Exception, or pyo3's PanicException: a Rust decoder that
    panics on bad input raises it, and it derives from BaseException, so `except Exception` never sees it."""
    return isinstance(err, Exception) or type(err).__name__ == "PanicException"


def _rle_decode(frame: bytes, info: FrameInfo) -> np.ndarray:
    rle = _module("rle.utils")
    if rle is None:
        raise MissingDecoder("pylibjpeg-rle is not installed")
    try:
        out = rle.decode_frame(frame, info.rows * info.columns, info.bits_allocated, "<")
    except BaseException as err:  # ValueError when a segment ends early; a panic when one decodes too long
        if not library_error(err):
            raise
        raise CorruptData(f"RLE data is truncated or corrupt: {type(err).__name__}: {err}") from err
    return np.frombuffer(out, dtype=f"<u{info.bits_allocated // 8}")


def _run_fast(name: str, frame: bytes, info: FrameInfo, depth: int | None = None) -> np.ndarray:
    """Run one named fast backend; raises DecodeError when its package is missing. `depth` is the stream's own
    sample depth (from `check_frame`; BitsStored when not given), which nvImageCodec's output is checked against."""
    if name == dicom_gpu.LABEL:
        return dicom_gpu.decode(frame, stored_range(depth or info.bits_stored, info.signed), info.uid, info.signed)
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
            return _check_shape(_pixel_array(ds, spec), info, "pydicom"), "pydicom", []
        return native_pixels(element.data, info, info.uid == _uid.ExplicitVRBigEndian), "numpy", []
    frame = element.frame if element.frame is not None else single_frame(element.data, spec)
    depth = check_frame(frame, spec, info)
    gdcm_refusal = _gdcm_refusal(info, depth)
    if backend == "pydicom":
        return _pydicom_or_gdcm(ds, frame, info, spec, gdcm_refusal)
    problems: list[str] = []
    first = (dicom_gpu.LABEL,) if dicom_gpu.wants(info.uid, info.signed) else ()
    for name in (*first, *spec.fast):
        if name == "gdcm" and gdcm_refusal:
            problems.append(f"gdcm: not tried, it aborts on {gdcm_refusal}")
            continue
        try:
            arr = _check_shape(_run_fast(name, frame, info, depth), info, name)
            return arr, name, [f"{p}; used {name}" for p in problems]
        except CorruptData:
            raise
        except DecodeError as err:  # not installed, or a wrong-shaped result: try the next backend
            problems.append(f"{name}: {err}")
        except BaseException as err:  # a decoder library's own error type (e.g. an unsupported JPEG process)
            if not library_error(err):
                raise
            problems.append(f"{name} failed: {type(err).__name__}: {err}")
    raise DecodeError(f"no decoder could read {spec.name} (needs {spec.package}): " + "; ".join(problems))


def _pydicom_or_gdcm(
    ds: Any, frame: bytes, info: FrameInfo, spec: DecoderSpec, gdcm_refusal: str | None
) -> tuple[np.ndarray, str, list[str]]:
    """pydicom's plugins; GDCM only where no pydicom plugin handles the syntax (12-bit JPEG Extended). Neither
    pydicom's GDCM plugin nor GDCM itself sees a frame `_gdcm_refusal` names."""
    from pydicom.pixels import get_decoder

    plugins = [p for p in get_decoder(info.uid).available_plugins if p != "gdcm" or not gdcm_refusal]
    gdcm_only = (info.uid == _uid.JPEGExtended12Bit and info.bits_stored > 8) or not plugins
    if gdcm_only and gdcm_refusal:
        raise DecodeError(f"{spec.name} with {gdcm_refusal}: only GDCM decodes it on the pydicom path, and it aborts")
    if not gdcm_only:
        if gdcm_refusal:
            ds.pixel_array_options(decoding_plugin=plugins[0])
        return _check_shape(_pixel_array(ds, spec), info, "pydicom"), "pydicom", []
    try:
        arr = _check_shape(_gdcm_decode(frame, info), info, "gdcm")
    except MissingDecoder as err:
        raise DecodeError(f"{spec.name} needs {spec.package} on the pydicom path: {err}") from err
    return arr, "gdcm", [f"no pydicom plugin decodes {spec.name}; used GDCM"]


def _pixel_array(ds: Any, spec: DecoderSpec) -> np.ndarray:
    """pydicom's `pixel_array`; its plugins' errors (RuntimeError, ValueError, a Rust panic) become CorruptData."""
    try:
        return ds.pixel_array
    except BaseException as err:
        if not library_error(err):
            raise
        raise CorruptData(f"{spec.name} data is truncated or corrupt: pydicom could not decode it: {err}") from err


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
