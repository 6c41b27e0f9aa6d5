"""Seeded mutants of small synthetic DICOM files: the corpus of `tests/test_fuzz_reader.py` and `bench/fuzz_reader.py`.

`write_bases` writes one small file per transfer syntax mammokit reads (`dicom_factory`); `mutant` derives mutant
`index` of base `syntax` from `seed` alone, with one of MUTATORS: bytes flipped anywhere, in the header or in the
compressed stream; the file cut; a tag rewritten with a wrong VR or an absurd value; an element's length field
rewritten; another transfer syntax UID; a ViewCodeSequence of up to `max_items` items; a broken Modality LUT; RLE
header counts and offsets; JPEG / JPEG-LS / JPEG 2000 frame headers (size, precision, components, segment lengths);
streams cut (with or without a new end-of-image marker); fragments split, emptied, or their item headers broken.
`tests/fuzz_harness.py` reads them in child processes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from dicom_factory import (
    LOSSLESS_COMPRESSED,
    LOSSY_COMPRESSED,
    NATIVE,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    RLELossless,
    code_item,
    write_test_dicom,
)

SYNTAXES = NATIVE + LOSSLESS_COMPRESSED + LOSSY_COMPRESSED
SHAPE = (40, 36)
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
ABSURD_U32 = (0, 1, 2, 63, 65535, 100000, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF)

# keyword -> (VR, value) rewrites: wrong VRs, absurd and non-finite values, garbage bytes; None deletes the tag
_DIMS = [("US", 0), ("US", 1), ("US", 65535), ("UL", 100000), ("UL", 0xFFFFFFFF), ("DS", "nan"), ("DS", "1e9"),
         ("DS", "inf"), ("IS", "-5"), ("DS", "2.5"), ("OB", b"\x01\x02\x03"), ("LO", "abc"), ("SS", -1),
         ("FD", float("inf")), ("SQ", b""), (None, None)]
_SPACING = [("DS", "nan\\nan"), ("DS", "inf\\1"), ("DS", "0\\0"), ("DS", "-1\\-1"), ("DS", "abc"),
            ("DS", "1e308\\1e308"), ("DS", "0.1"), ("OB", b"\xff"), (None, None)]
_CODES = [("LO", "abc"), ("OB", b"\x00\x01\x02"), ("US", 7), ("CS", "\xff\xfe")]
TAG_CASES: dict[str, list[tuple[str | None, Any]]] = {
    "Rows": _DIMS,
    "Columns": _DIMS,
    "BitsAllocated": [("US", v) for v in (0, 1, 7, 12, 17, 32, 64, 255)] + [("SS", -16), ("DS", "nan"),
                                                                            ("OB", b"\x10"), (None, None)],
    "BitsStored": [("US", v) for v in (0, 1, 7, 9, 17, 33, 65535)] + [("DS", "nan"), ("OB", b"\x10"), (None, None)],
    "HighBit": [("US", 0), ("US", 40), ("US", 65535)],
    "PixelRepresentation": [("US", 2), ("US", 3), ("US", 65535), ("DS", "nan"), ("OB", b"\x01\x00\x00"),
                            (None, None)],
    "SamplesPerPixel": [("US", 0), ("US", 3), ("US", 65535), ("LO", "x")],
    "PhotometricInterpretation": [("CS", "RGB"), ("CS", ""), ("CS", "MONOCHROME3"), ("CS", "PALETTE COLOR"),
                                  ("OB", b"\xff\xfe"), ("US", 1), (None, None)],
    "NumberOfFrames": [("IS", v) for v in ("0", "-1", "2", "1000000000", "abc", "1e400", "nan")] + [("US", 3)],
    "RescaleSlope": [("DS", v) for v in ("nan", "inf", "-inf", "1e38", "1e308", "0", "-0", "abc", "1e-45", "",
                                         "3e-39", "-1")] + [("US", 3), ("OB", b"\x01")],
    "RescaleIntercept": [("DS", v) for v in ("nan", "inf", "-inf", "1e38", "-1e308", "abc", "")] + [("SS", -5)],
    "EstimatedRadiographicMagnificationFactor": [("DS", v) for v in ("0", "-1", "nan", "inf", "abc", "1e-300")],
    "ImagerPixelSpacing": _SPACING,
    "PixelSpacing": _SPACING,
    "WindowCenter": [("DS", "nan"), ("DS", "abc"), ("DS", "inf\\-inf"), ("US", 5)],
    "WindowWidth": [("DS", "nan"), ("DS", "0"), ("DS", "-1e308")],
    "PixelPaddingValue": [("US", 65535), ("SS", -1), ("UL", 70000), ("OB", b"\x01"), ("DS", "nan")],
    "PixelPaddingRangeLimit": [("US", 0), ("SS", -32768), ("OB", b"\x01\x02\x03")],
    "ViewPosition": [("CS", "\x00\xff"), ("LT", "X" * 3000), ("US", 9)],
    "ImageLaterality": [("CS", "X"), ("OB", b"\xff"), ("CS", "L\\R")],
    "PatientOrientation": [("CS", "A\\R\\F\\P\\H"), ("CS", "CC"), ("OB", b"\x00")],
    "SOPClassUID": [("UI", "1.2.840.10008.5.1.4.1.1.13.1.3"), ("UI", "\xff"), ("UI", "1.2.840.10008.5.1.4.1.1.7")],
    "Modality": [("CS", "CT"), ("CS", ""), ("CS", "\xff"), ("US", 1)],
    "PresentationLUTShape": [("CS", "INVERSE"), ("CS", "XX")],
    "ViewCodeSequence": _CODES,
    "ModalityLUTSequence": _CODES,
    "SharedFunctionalGroupsSequence": _CODES,
}
NEW_SYNTAXES = (*SYNTAXES, "1.2.3.4", "", "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.201", "\xff\xfe")


# ----------------------------------------------------------------------------------------------------- bases


def write_bases(folder: Path) -> list[Path]:
    """One small file per syntax in SYNTAXES (`base-NN.dcm`), with the tags the mutators rewrite present."""
    paths = []
    for i, syntax in enumerate(SYNTAXES):
        bits = 8 if syntax == JPEGBaseline8Bit else 12 if syntax == JPEGExtended12Bit else 14
        rng = np.random.default_rng(i)
        y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
        top = (1 << bits) - 1
        values = top * (0.1 + 0.7 * (x + y) / sum(SHAPE)) + rng.normal(0, top * 0.01, SHAPE)
        pixels = np.clip(values, 0, top).astype(np.uint16 if bits > 8 else np.uint8)
        view = code_item("399162004", "SCT", "cranio-caudal")
        view.ViewModifierCodeSequence = DicomSequence([code_item("399163009", "SCT", "Magnification")])
        mono1 = i % 3 == 2
        paths.append(write_test_dicom(
            folder / f"base-{i:02d}.dcm", pixels, transfer_syntax=syntax, bits_stored=bits, slope=1.0, intercept=0.0,
            photometric="MONOCHROME1" if mono1 else "MONOCHROME2", PresentationLUTShape="INVERSE" if mono1 else None,
            ViewCodeSequence=DicomSequence([view]), ImagerPixelSpacing=[0.085, 0.085], PixelPaddingValue=0,
            EstimatedRadiographicMagnificationFactor=1.1, PixelSpacing=[0.07, 0.07] if i % 2 else None,
            WindowCenter=top // 2, WindowWidth=top, near=2,
        ))
    return paths


@dataclass(frozen=True)
class Layout:
    """Where a base file keeps its parts: encoding, and the offset of its Pixel Data element (None: deflated)."""

    syntax: str
    little: bool
    implicit: bool
    pixel: int | None
    header: int  # bytes of the Pixel Data element header


def layout(data: bytes, syntax: str) -> Layout:
    """The Layout of a file written by `write_test_dicom`."""
    fp = BytesIO(data)
    pydicom.dcmread(fp, stop_before_pixels=True)
    implicit = syntax == ImplicitVRLittleEndian
    pixel = None if syntax == DeflatedExplicitVRLittleEndian else fp.tell()
    return Layout(syntax, syntax != ExplicitVRBigEndian, implicit, pixel, 8 if implicit else 12)


@dataclass
class _Source:
    data: bytes
    lay: Layout
    rng: np.random.Generator
    max_items: int

    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]


def _dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(data))


def _save(ds: Dataset) -> bytes:
    fp = BytesIO()
    ds.save_as(fp)
    return fp.getvalue()


def _encode(vr: str, value: Any, little: bool) -> bytes:
    """A value as the bytes of an element of `vr` (strings padded to even length, as writers do)."""
    if isinstance(value, bytes):
        return value
    codes = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FD": "d", "FL": "f"}
    if vr in codes:
        return struct.pack(("<" if little else ">") + codes[vr], value)
    text = str(value).encode("latin-1")
    return text + (b"\x00" if vr == "UI" else b" ") * (len(text) % 2)


def _raw(keyword: str, vr: str, value: Any, lay: Layout) -> RawDataElement:
    data = _encode(vr, value, lay.little)
    return RawDataElement(Tag(keyword), vr, len(data), data, 0, lay.implicit, lay.little)


def _frame(data: bytes) -> tuple[Dataset, bytes]:
    ds = _dataset(data)
    return ds, get_frame(ds.PixelData, 0, number_of_frames=1)


def _with_frame(ds: Dataset, frame: bytes) -> bytes:
    ds.PixelData = encapsulate([frame], has_bot=True)
    ds["PixelData"].is_undefined_length = True
    return _save(ds)


# -------------------------------------------------------------------------------------------------- mutators


def _flip(src: _Source, lo: int = 132, hi: int | None = None) -> bytes:
    buf = bytearray(src.data)
    hi = len(buf) if hi is None else hi
    for _ in range(int(src.rng.integers(1, 17))):
        buf[int(src.rng.integers(lo, hi))] ^= int(src.rng.integers(1, 256))
    return bytes(buf)


def _flip_header(src: _Source) -> bytes:
    return _flip(src, 132, src.lay.pixel)


def _cut(src: _Source) -> bytes:
    return src.data[: int(src.rng.integers(0, len(src.data)))]


def _tag(src: _Source) -> bytes:
    """One tag rewritten with a wrong VR or an absurd value, or deleted."""
    keyword = src.pick(list(TAG_CASES))
    vr, value = src.pick(TAG_CASES[keyword])
    ds = _dataset(src.data)
    if vr is None:
        if keyword in ds:
            del ds[keyword]
    else:
        ds[Tag(keyword)] = _raw(keyword, vr, value, src.lay)
    return _save(ds)


def _length_fields(data: bytes, lay: Layout) -> list[tuple[int, str]]:
    """(offset, struct format) of the length field of each top-level element, file meta to Pixel Data included."""
    fields, pos = [], 132
    while pos + 8 <= len(data) and pos <= (lay.pixel or 0):
        meta = struct.unpack_from("<H", data, pos)[0] == 2
        order = "<" if meta or lay.little else ">"
        if lay.implicit and not meta:
            where, fmt, head = pos + 4, order + "I", 8
        elif data[pos + 4 : pos + 6] in LONG_VRS:
            where, fmt, head = pos + 8, order + "I", 12
        else:
            where, fmt, head = pos + 6, order + "H", 8
        fields.append((where, fmt))
        length = struct.unpack_from(fmt, data, where)[0]
        if length == 0xFFFFFFFF:
            break
        pos += head + length
    return fields


def _length(src: _Source) -> bytes:
    """One element's length field (file meta, header or Pixel Data) set to an absurd value."""
    where, fmt = src.pick(_length_fields(src.data, src.lay))
    old = struct.unpack_from(fmt, src.data, where)[0]
    top = 0xFFFF if fmt.endswith("H") else 0xFFFFFFFF
    value = min(top, src.pick([*ABSURD_U32, old + 1, max(old - 1, 0), old + 2, old * 2, top]))
    buf = bytearray(src.data)
    struct.pack_into(fmt, buf, where, value)
    return bytes(buf)


def _syntax(src: _Source) -> bytes:
    """The file meta says another (or an unknown, or garbage) transfer syntax; the body is unchanged."""
    meta_end = 144 + struct.unpack_from("<I", src.data, 140)[0]
    meta = pydicom.dcmread(BytesIO(src.data), stop_before_pixels=True).file_meta
    meta[Tag("TransferSyntaxUID")] = _raw("TransferSyntaxUID", "UI", src.pick(NEW_SYNTAXES), Layout("", True, False,
                                                                                                        None, 12))
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=False)
    return src.data[:132] + fp.getvalue() + src.data[meta_end:]


def _sequence(src: _Source) -> bytes:
    """A ViewCodeSequence of 1 to `max_items` items (log-uniform), of defined or undefined length."""
    count = int(np.exp(src.rng.uniform(0, np.log(src.max_items))))
    ds = _dataset(src.data)
    if src.rng.random() < 0.5:
        del ds.ViewPosition
    data = _save(ds)
    lay = layout(data, src.lay.syntax)
    tag = struct.pack("<HH" if lay.little else ">HH", 0x0054, 0x0220)
    start = data.index(tag, 132, lay.pixel)
    head = 8 if lay.implicit else 12
    length = struct.unpack_from("<I" if lay.little else ">I", data, start + head - 4)[0]
    value = data[start + head : start + head + length]
    undefined = src.rng.random() < 0.5
    order = "<" if lay.little else ">"
    new_length = 0xFFFFFFFF if undefined else min(len(value) * count, 0xFFFFFFFE)
    end = struct.pack(f"{order}HHI", 0xFFFE, 0xE0DD, 0) if undefined else b""
    return data[: start + head - 4] + struct.pack(order + "I", new_length) + value * count + end + data[
        start + head + length :]


def _lut_item(src: _Source) -> Dataset:
    """A Modality LUT Sequence item, valid or broken in one of a dozen ways."""
    ramp = np.arange(4096, dtype="<u2") * 2 + 5
    case = src.pick(["valid", "constant", "short", "zero entries", "two values", "bits 0", "bits 40", "first 65535",
                     "odd data", "no data", "no descriptor", "descriptor text", "8-bit", "decreasing", "huge first"])
    descriptor: Any = {"two values": (4096, 0), "bits 0": (4096, 0, 0), "bits 40": (4096, 0, 40),
                       "first 65535": (4096, 65535, 16), "zero entries": (0, 0, 16), "odd data": (3, 0, 16),
                       "8-bit": (256, 0, 8), "huge first": (4096, 40000, 16)}.get(case, (4096, 0, 16))
    data: bytes | None = {"constant": np.full(4096, 7, "<u2").tobytes(), "short": ramp[:10].tobytes(),
                          "odd data": b"\x01\x02\x03", "no data": None, "8-bit": bytes(range(256)),
                          "decreasing": ramp[::-1].tobytes()}.get(case, ramp.tobytes())
    item = Dataset()
    if case == "descriptor text":
        item[Tag("LUTDescriptor")] = _raw("LUTDescriptor", "LO", "abc", src.lay)
    elif case != "no descriptor":
        packed = struct.pack(("<" if src.lay.little else ">") + "H" * len(descriptor), *descriptor)
        item[Tag("LUTDescriptor")] = _raw("LUTDescriptor", "US", packed, src.lay)
    if data is not None:
        if not src.lay.little:
            data = np.frombuffer(data[: len(data) // 2 * 2], "<u2").astype(">u2").tobytes()
        item[Tag("LUTData")] = _raw("LUTData", "OW", data, src.lay)
    item.ModalityLUTType = "US"
    return item


def _lut(src: _Source) -> bytes:
    ds = _dataset(src.data)
    items = [_lut_item(src) for _ in range(1 if src.rng.random() < 0.9 else 2000)]
    ds.ModalityLUTSequence = DicomSequence(items)
    if src.rng.random() < 0.5:
        del ds.RescaleSlope, ds.RescaleIntercept
    return _save(ds)


def _rle_header(src: _Source) -> bytes:
    """The RLE header's segment count or offsets set to absurd values (beyond the frame, 0xFFFFFFF0, backwards)."""
    ds, frame = _frame(src.data)
    header = list(struct.unpack_from("<16I", frame))
    for _ in range(int(src.rng.integers(1, 3))):
        slot = int(src.pick([0, 1, 2, 2, 3, int(src.rng.integers(0, 16))]))
        header[slot] = int(src.pick([*ABSURD_U32, len(frame), len(frame) - 1, len(frame) + 100, header[slot] - 1,
                                     header[max(slot - 1, 0)], 64, int(src.rng.integers(0, 2**32))])) & 0xFFFFFFFF
    return _with_frame(ds, struct.pack("<16I", *header) + frame[64:])


def _stream_cut(src: _Source) -> bytes:
    """The compressed stream cut short; half the time a new end-of-image marker hides the cut from the EOI check."""
    ds, frame = _frame(src.data)
    cut = frame[: int(src.rng.integers(0, len(frame)))]
    return _with_frame(ds, cut + (b"\xff\xd9" if src.rng.random() < 0.5 else b""))


def _stream_flip(src: _Source) -> bytes:
    ds, frame = _frame(src.data)
    buf = bytearray(frame)
    for _ in range(int(src.rng.integers(1, 9))):
        buf[int(src.rng.integers(2, max(3, len(buf) - 2)))] ^= int(src.rng.integers(1, 256))
    return _with_frame(ds, bytes(buf))


def _sof(frame: bytes) -> int | None:
    """Offset of the JPEG / JPEG-LS frame header (SOFn / SOF55) marker, walking the marker segments."""
    pos = 2
    while pos + 4 <= len(frame) and frame[pos] == 0xFF:
        marker = frame[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            return pos
        pos += 2 + struct.unpack_from(">H", frame, pos + 2)[0]
    return None


def _stream_header(src: _Source) -> bytes:
    """One JPEG 2000 SIZ / JPEG SOF field (size, precision, components, sampling, segment length) set absurd;
    a third of the time the header's Rows / Columns follow the stream's new size."""
    ds, frame = _frame(src.data)
    buf = bytearray(frame)
    values = [0, 1, 2, 3, 8, 12, 16, 255, 256, 0x7FFF, 0xFFFF]
    if frame.startswith(b"\xff\x4f\xff\x51"):
        field = src.pick([(6, "I"), (10, "I"), (14, "I"), (18, "I"), (22, "I"), (26, "I"), (38, "H"), (40, "B"),
                          (41, "B"), (42, "B"), (4, "H")])
        value = src.pick([*values, 100000, 0xFFFFFFFF, 40000]) & {"I": 0xFFFFFFFF, "H": 0xFFFF, "B": 0xFF}[field[1]]
        struct.pack_into(">" + field[1], buf, 2 + field[0], value)
        size = struct.unpack_from(">II", buf, 8) if field[0] in (6, 10) else None
    else:
        sof = _sof(frame)
        if sof is None:
            return _stream_flip(src)
        field = src.pick([(2, "H"), (4, "B"), (5, "H"), (7, "H"), (9, "B"), (11, "B")])
        value = src.pick(values) & (0xFFFF if field[1] == "H" else 0xFF)
        struct.pack_into(">" + field[1], buf, sof + field[0], value)
        size = struct.unpack_from(">HH", buf, sof + 7)[::-1] if field[0] in (5, 7) else None
    if size is not None and src.rng.random() < 1 / 3:  # (columns, rows) of the stream
        ds[Tag("Columns")] = _raw("Columns", "UL" if size[0] > 0xFFFF else "US", size[0], src.lay)
        ds[Tag("Rows")] = _raw("Rows", "UL" if size[1] > 0xFFFF else "US", size[1], src.lay)
    return _with_frame(ds, bytes(buf))


def _item(payload: bytes, length: int | None = None, tag: tuple[int, int] = (0xFFFE, 0xE000)) -> bytes:
    return struct.pack("<HHI", *tag, len(payload) if length is None else length) + payload


def _fragments(src: _Source) -> bytes:
    """The encapsulated items rebuilt: the frame split into fragments, with one structural fault (or none)."""
    _, frame = _frame(src.data)
    frame += b"\x00" * (len(frame) % 2)
    cuts = sorted(int(c) // 2 * 2 for c in src.rng.integers(0, len(frame), int(src.rng.integers(0, 40))))
    pieces = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]
    fault = src.pick(["none", "empty", "item length", "item tag", "bot length", "bot offsets", "no delimiter",
                      "junk after", "defined length", "odd fragment"])
    if fault == "empty":
        pieces.insert(int(src.rng.integers(0, len(pieces) + 1)), b"")
    items = [_item(b"" if fault != "bot offsets" else struct.pack("<3I", 0, 0xFFFFFFF0, 7))]
    items += [_item(p) for p in pieces]
    k = int(src.rng.integers(0, len(items)))
    if fault == "item length":
        items[k] = _item(items[k][8:], src.pick([*ABSURD_U32, len(items[k]) - 7, len(items[k])]))
    elif fault == "item tag":
        items[k] = _item(items[k][8:], tag=src.pick([(0xFFFE, 0xE00D), (0xFFFE, 0xE0DD), (0x7FE0, 0x0010), (0, 0)]))
    elif fault == "bot length":
        items[0] = _item(b"", src.pick(ABSURD_U32))
    elif fault == "odd fragment":
        items[-1] = _item(pieces[-1] + b"\x00\x01\x02")
    element = bytearray(src.data[src.lay.pixel : src.lay.pixel + src.lay.header])
    body = b"".join(items) + (b"" if fault == "no delimiter" else _item(b"", 0, (0xFFFE, 0xE0DD)))
    if fault == "defined length":
        struct.pack_into("<I", element, src.lay.header - 4, src.pick([len(body), len(body) - 8, 0, 2]))
    return src.data[: src.lay.pixel] + bytes(element) + body + (b"\x01" * 9 if fault == "junk after" else b"")


Mutator = Callable[[_Source], bytes]
COMMON: dict[str, Mutator] = {"flip": _flip, "cut": _cut, "tag": _tag, "syntax": _syntax, "lut": _lut}
STRUCTURED: dict[str, Mutator] = {"flip header": _flip_header, "length": _length, "sequence": _sequence}
ENCAPSULATED: dict[str, Mutator] = {"stream cut": _stream_cut, "stream flip": _stream_flip,
                                    "stream header": _stream_header, "fragments": _fragments}
WEIGHTS = {"tag": 4, "length": 2, "stream header": 3, "fragments": 2, "rle header": 3}


def mutators(syntax: str) -> dict[str, Mutator]:
    """The mutators that apply to a base of `syntax` (structural ones need a file that is not deflated)."""
    found = dict(COMMON)
    if syntax != DeflatedExplicitVRLittleEndian:
        found |= STRUCTURED
    if syntax not in NATIVE:
        found |= ENCAPSULATED
    if syntax == RLELossless:
        found["rle header"] = _rle_header
    return found


def choose(syntax: int, index: int, seed: int) -> tuple[str, np.random.Generator]:
    """The mutator of mutant `index` of the base of SYNTAXES[syntax], and the generator it then draws from."""
    rng = np.random.default_rng([seed, syntax, index])
    names = sorted(mutators(SYNTAXES[syntax]))
    weights = np.array([WEIGHTS.get(n, 1) for n in names], float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))], rng


def mutant(base: bytes, syntax: int, index: int, seed: int, max_items: int = 100_000) -> tuple[str, bytes]:
    """(mutator name, bytes) of mutant `index` of the base of SYNTAXES[syntax]; the same for the same arguments."""
    name, rng = choose(syntax, index, seed)
    src = _Source(base, layout(base, SYNTAXES[syntax]), rng, max_items)
    return name, mutators(SYNTAXES[syntax])[name](src)


def spread(count: int, start: int = 0) -> list[tuple[int, int]]:
    """`count` mutants spread round-robin over SYNTAXES: mutant k is (k % len(SYNTAXES), k // len(SYNTAXES))."""
    return [(k % len(SYNTAXES), k // len(SYNTAXES)) for k in range(start, start + count)]
