"""Every transfer syntax decodes to the stored values, through both backends, and truncated streams are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydicom.uid import UID

from dicom_factory import (
    JPEG2000,
    LOSSLESS_COMPRESSED,
    LOSSY_COMPRESSED,
    NATIVE,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
    truncate_compressed_stream,
    write_test_dicom,
)
from mammokit import dicom_decode
from mammokit.dicom import DECODERS, DicomReadError, decoder_for, read_dicom, transfer_syntax_name
from mammokit.dicom_decode import DecodeError, resolve_backend
from mammokit.dicom_gpu import ENV_GPU_DECODE


@pytest.fixture(autouse=True)
def _cpu_decoders(monkeypatch):
    """These tests check the CPU decoders' table and checks; test_dicom_gpu.py checks nvImageCodec in front of it."""
    monkeypatch.setenv(ENV_GPU_DECODE, "off")


def _image(bits: int = 14, shape: tuple[int, int] = (40, 36), seed: int = 0) -> np.ndarray:
    """Smooth gradient plus noise spanning most of the `bits` range (compressors do real work)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    top = (1 << bits) - 1
    values = top * 0.1 + top * 0.7 * (x + y) / (shape[0] + shape[1]) + rng.normal(0, top * 0.01, shape)
    return np.clip(values, 0, top).astype(np.uint16 if bits > 8 else np.uint8)


@pytest.mark.parametrize("syntax", NATIVE + LOSSLESS_COMPRESSED, ids=lambda u: UID(u).keyword)
def test_lossless_syntaxes_return_exact_stored_values_on_both_backends(tmp_path, syntax):
    stored = _image()
    path = write_test_dicom(tmp_path / "a.dcm", stored, transfer_syntax=syntax, bits_stored=14)
    fast = read_dicom(path)
    slow = read_dicom(path, backend="pydicom")
    assert fast.pixels.dtype == np.float32
    np.testing.assert_array_equal(fast.pixels, stored.astype(np.float32))
    np.testing.assert_array_equal(slow.pixels, fast.pixels)
    assert fast.decoder == DECODERS[syntax].fast[0]
    assert slow.decoder == "pydicom"
    assert fast.transfer_syntax == syntax


def test_jpeg_lossless_uses_all_predictors(tmp_path):
    """Process 14 with predictor 6 (liblj92's encoder) decodes exactly, like SV1's predictor 1."""
    stored = _image(seed=3)
    path = write_test_dicom(tmp_path / "p6.dcm", stored, transfer_syntax=JPEGLossless, bits_stored=14)
    np.testing.assert_array_equal(read_dicom(path).pixels, stored)


@pytest.mark.parametrize(
    ("syntax", "bits", "tolerance"),
    [(JPEG2000, 14, 300), (JPEGLSNearLossless, 14, 2), (JPEGExtended12Bit, 12, 200), (JPEGBaseline8Bit, 8, 20)],
    ids=["j2k-lossy", "jpegls-near2", "jpeg-12bit", "jpeg-8bit"],
)
def test_lossy_syntaxes_backends_agree_bit_for_bit(tmp_path, syntax, bits, tolerance):
    stored = _image(bits=bits)
    path = write_test_dicom(tmp_path / "l.dcm", stored, transfer_syntax=syntax, bits_stored=bits, near=2)
    fast, slow = read_dicom(path), read_dicom(path, backend="pydicom")
    np.testing.assert_array_equal(fast.pixels, slow.pixels)
    assert np.abs(fast.pixels - stored).max() <= tolerance  # JPEG-LS NEAR=2 bounds the error exactly


def test_12bit_jpeg_extended_falls_back_to_gdcm_on_the_pydicom_path(tmp_path):
    """pydicom's plugins refuse 12-bit JPEG Extended; GDCM decodes it, identically to imagecodecs."""
    path = write_test_dicom(tmp_path / "x.dcm", _image(bits=12), transfer_syntax=JPEGExtended12Bit, bits_stored=12)
    fast, slow = read_dicom(path), read_dicom(path, backend="pydicom")
    assert (fast.decoder, slow.decoder) == ("imagecodecs.jpeg8", "gdcm")
    assert any("GDCM" in w for w in slow.warnings)
    np.testing.assert_array_equal(fast.pixels, slow.pixels)


COMPRESSED = [*LOSSLESS_COMPRESSED, JPEG2000, JPEGLSNearLossless, JPEGExtended12Bit]
BITS = {JPEGExtended12Bit: 12, JPEGBaseline8Bit: 8}
EXTRA = {JPEGLosslessSV1: ("imagecodecs.ljpeg",), JPEGLossless: ("imagecodecs.ljpeg",)}  # measured, not in the table
LOSSY_TOLERANCE = {JPEGLSNearLossless: 0, JPEG2000: 1, JPEGExtended12Bit: 1, JPEGBaseline8Bit: 1}  # from the chosen


def _installed(backend: str) -> bool:
    module = {"pylibjpeg-rle": "rle.utils", "pylibjpeg-openjpeg": "openjpeg"}.get(backend, backend.partition(".")[0])
    return dicom_decode._module(module) is not None


@pytest.mark.parametrize("syntax", [*LOSSLESS_COMPRESSED, *LOSSY_COMPRESSED], ids=lambda u: UID(u).keyword)
def test_every_backend_decodes_what_the_chosen_one_does(tmp_path, monkeypatch, syntax):
    """read_dicom's auto path picks the first backend of the table; every other installed one, forced through the
    same checks, gives the same values: bit-identical on lossless syntaxes; on lossy ones deterministic integer
    JPEG-LS is exact, and DCT JPEG / irreversible JPEG 2000 may differ by 1 (IDCT / float wavelet rounding)."""
    bits = BITS.get(syntax, 14)
    stored = _image(bits=bits)
    path = write_test_dicom(tmp_path / "b.dcm", stored, transfer_syntax=syntax, bits_stored=bits)
    chosen = read_dicom(path)
    spec = DECODERS[syntax]
    assert chosen.decoder == spec.fast[0] and not chosen.warnings
    lossless = syntax in LOSSLESS_COMPRESSED
    if lossless:
        np.testing.assert_array_equal(chosen.pixels, stored)
    tried = []
    for name in (*spec.fast[1:], *EXTRA.get(syntax, ())):
        if not _installed(name):
            continue
        monkeypatch.setitem(DECODERS, syntax, dataclasses.replace(spec, fast=(name,)))
        other = read_dicom(path)
        assert other.decoder == name
        if lossless:
            np.testing.assert_array_equal(other.pixels, stored, err_msg=name)
        else:
            assert np.abs(other.pixels - chosen.pixels).max() <= LOSSY_TOLERANCE[syntax], name
        tried.append(name)
    assert "gdcm" in tried or dicom_decode._module("gdcm") is None


def test_lossless_jpeg_falls_back_when_libjpeg_turbo_lacks_lossless(tmp_path, monkeypatch):
    """An imagecodecs built on libjpeg-turbo 2 refuses SOF3 in jpeg8: the next backend decodes, with a warning."""
    import imagecodecs

    def refuse(data, **kwargs):
        raise imagecodecs.Jpeg8Error("Unsupported JPEG process: SOF type 0xc3")

    stored = _image()
    path = write_test_dicom(tmp_path / "f.dcm", stored, transfer_syntax=JPEGLosslessSV1, bits_stored=14)
    monkeypatch.setattr(imagecodecs, "jpeg8_decode", refuse)
    img = read_dicom(path)
    assert img.decoder == "imagecodecs.jpegsof3"
    assert any("imagecodecs.jpeg8 failed" in w for w in img.warnings)
    np.testing.assert_array_equal(img.pixels, stored)


@pytest.mark.parametrize("backend", ["auto", "pydicom"])
@pytest.mark.parametrize("syntax", COMPRESSED, ids=lambda u: UID(u).keyword)
def test_truncated_compressed_stream_is_refused(tmp_path, syntax, backend):
    bits = 12 if syntax == JPEGExtended12Bit else 14
    path = write_test_dicom(tmp_path / "t.dcm", _image(bits=bits), transfer_syntax=syntax, bits_stored=bits)
    truncate_compressed_stream(path, keep=0.6)
    with pytest.raises(DicomReadError) as err:
        read_dicom(path, backend=backend)
    assert err.value.path == str(path)
    assert "truncated" in err.value.reason or "incomplete" in err.value.reason


def test_truncated_sv1_stream_would_decode_to_garbage_without_the_check(tmp_path):
    """The reason for the end-of-image check: imagecodecs' ljpeg decodes a cut SV1 stream without an error."""
    import imagecodecs

    stored = _image()
    stream = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=14)
    cut = imagecodecs.ljpeg_decode(stream[: len(stream) // 2])
    assert cut.shape == stored.shape and not np.array_equal(cut, stored)


def test_missing_decoder_names_the_syntax_and_package(tmp_path, monkeypatch):
    path = write_test_dicom(tmp_path / "s.dcm", _image(), transfer_syntax=JPEGLosslessSV1, bits_stored=14)
    real = dicom_decode._module
    monkeypatch.setattr(dicom_decode, "_module", lambda name: None if name in ("imagecodecs", "gdcm") else real(name))
    with pytest.raises(DicomReadError, match=r"JPEG Lossless.*needs imagecodecs or python-gdcm"):
        read_dicom(path)


def test_decoder_table_and_names():
    """The order bench/decode.py measured (CPU time): GDCM last everywhere; liblj92 (`ljpeg`, crashes on corrupt
    headers) nowhere; libjpeg-turbo first for every JPEG process."""
    assert transfer_syntax_name("1.2.840.10008.1.2.4.70").startswith("JPEG Lossless, Non-Hierarchical, First-Order")
    assert transfer_syntax_name("1.2.3.4") == "unknown transfer syntax 1.2.3.4"
    assert decoder_for("1.2.840.10008.1.2.5").fast == ("imagecodecs.dicomrle", "pylibjpeg-rle", "gdcm")
    for syntax in (JPEGLosslessSV1, JPEGLossless):
        assert decoder_for(syntax).fast == ("imagecodecs.jpeg8", "imagecodecs.jpegsof3", "gdcm")
    assert decoder_for(JPEG2000).fast == ("pylibjpeg-openjpeg", "imagecodecs.jpeg2k", "gdcm")
    assert decoder_for(JPEGExtended12Bit).fast[0] == "imagecodecs.jpeg8"
    assert "auto = imagecodecs.jpeg8 > imagecodecs.jpegsof3 > gdcm" in decoder_for(JPEGLosslessSV1).describe()
    for spec in DECODERS.values():
        assert "imagecodecs.ljpeg" not in spec.fast
        assert spec.kind == "native" or spec.fast[-1] == "gdcm"
    with pytest.raises(DecodeError, match=r"1\.2\.3\.4"):
        decoder_for("1.2.3.4")


def test_backend_selection(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMMOKIT_DICOM_BACKEND", "pydicom")
    assert resolve_backend(None) == "pydicom"
    assert resolve_backend("auto") == "auto"
    path = write_test_dicom(tmp_path / "e.dcm", _image(), bits_stored=14)
    assert read_dicom(path).decoder == "pydicom"
    with pytest.raises(ValueError, match="backend='fast'"):
        read_dicom(path, backend="fast")


def test_lossy_jpeg_filed_as_lossless_is_refused(tmp_path):
    """libjpeg-turbo (the lossless-JPEG decoder now) decodes any JPEG process: a DCT stream under a lossless
    transfer syntax would be read as if exact. The frame header must be a lossless one (SOF3, ...)."""
    import pydicom

    path = write_test_dicom(tmp_path / "l.dcm", _image(bits=8), transfer_syntax=JPEGBaseline8Bit, bits_stored=8)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(path)
    with pytest.raises(DicomReadError, match="lossy JPEG"):
        read_dicom(path)
