"""read_dicom: pixel semantics, metadata, refusals and identifier handling, on DICOMs written in tmp_path."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicom_factory import TOMOSYNTHESIS, code_item, modality_lut_sequence, write_test_dicom
from mammokit.dicom import VIEW_CODES, DicomReadError, hash_id, read_dicom
from mammokit.ids import installation_salt

RAMP = (np.arange(48 * 40).reshape(48, 40) % 4096).astype(np.uint16)  # every 12-bit value pattern, known exactly


# ------------------------------------------------------------------------------------------- pixel semantics


def test_rescale_slope_intercept(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "a.dcm", RAMP, bits_stored=12, slope=2.0, intercept=-1000))
    np.testing.assert_array_equal(img.pixels, RAMP.astype(np.float32) * 2 - 1000)
    assert (img.modality_lut, img.rescale_slope, img.rescale_intercept) == ("rescale", 2.0, -1000.0)
    assert img.value_range == (-1000.0, 4095 * 2 - 1000.0)


def test_modality_lut_sequence_with_clamping(tmp_path):
    lut = [3 * i + 7 for i in range(1000)]  # maps stored 100..1099; below -> lut[0], above -> lut[-1]
    sequence = modality_lut_sequence(lut, 100)
    path = write_test_dicom(tmp_path / "l.dcm", RAMP, bits_stored=12, ModalityLUTSequence=sequence)
    img = read_dicom(path)
    expected = np.where(RAMP < 100, 7, np.where(RAMP > 1099, 3 * 999 + 7, 3 * (RAMP.astype(np.int64) - 100) + 7))
    np.testing.assert_array_equal(img.pixels, expected.astype(np.float32))
    assert img.modality_lut == "sequence"
    assert img.value_range == (7.0, 3 * 999 + 7.0)


def test_monochrome1_is_inverted_over_the_lut_output_range(tmp_path):
    path = write_test_dicom(tmp_path / "m1.dcm", RAMP, bits_stored=12, photometric="MONOCHROME1", slope=2.0,
                            intercept=10, PresentationLUTShape="INVERSE")
    img = read_dicom(path)
    # range of 2*v+10 over v in [0, 4095] is [10, 8200]; v' = 10 + 8200 - (2v + 10) = 8200 - 2v (one inversion)
    np.testing.assert_array_equal(img.pixels, 8200 - 2 * RAMP.astype(np.float32))
    assert img.inverted and img.photometric == "MONOCHROME1" and img.presentation_lut_shape == "INVERSE"


def test_monochrome2_with_inverse_presentation_is_inverted_with_a_warning(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "i.dcm", RAMP, bits_stored=12, PresentationLUTShape="INVERSE"))
    np.testing.assert_array_equal(img.pixels, 4095 - RAMP.astype(np.float32))
    assert img.inverted and any("INVERSE" in w for w in img.warnings)


def test_monochrome2_identity_is_not_inverted(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "n.dcm", RAMP, bits_stored=12, PresentationLUTShape="IDENTITY"))
    assert not img.inverted
    np.testing.assert_array_equal(img.pixels, RAMP)


@pytest.mark.parametrize("backend", ["auto", "pydicom"])
def test_bits_above_bits_stored_are_masked(tmp_path, backend):
    garbage = RAMP | np.uint16(0xA000)  # overlay-like junk in bits 13 and 15
    img = read_dicom(write_test_dicom(tmp_path / "b.dcm", garbage, bits_stored=12), backend=backend)
    np.testing.assert_array_equal(img.pixels, RAMP)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", RLELossless])
def test_signed_pixels_are_sign_extended_from_bits_stored(tmp_path, syntax):
    values = (RAMP.astype(np.int16) - 2048)  # -2048..2047: the 12-bit signed range
    pattern = (values.view(np.uint16) & 0x0FFF) | 0x5000  # 12-bit two's complement + junk above
    path = write_test_dicom(tmp_path / "s.dcm", pattern.view(np.int16), transfer_syntax=syntax, bits_stored=12,
                            slope=1.0, intercept=0)
    for backend in ("auto", "pydicom"):
        img = read_dicom(path, backend=backend)
        np.testing.assert_array_equal(img.pixels, values.astype(np.float32))
    assert img.value_range == (-2048.0, 2047.0)


def test_padding_value_and_range_limit_make_the_mask_on_stored_values(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "p.dcm", RAMP, bits_stored=12, photometric="MONOCHROME1",
                                      PixelPaddingValue=0))
    np.testing.assert_array_equal(img.padding_mask, RAMP == 0)
    assert img.pixel_padding_value == 0
    img = read_dicom(write_test_dicom(tmp_path / "r.dcm", RAMP, bits_stored=12, PixelPaddingValue=4095,
                                      PixelPaddingRangeLimit=4000))
    np.testing.assert_array_equal(img.padding_mask, RAMP >= 4000)
    assert read_dicom(write_test_dicom(tmp_path / "none.dcm", RAMP)).padding_mask is None


def test_voi_is_recorded_not_applied(tmp_path):
    voi = Dataset()
    voi.LUTDescriptor = [2, 0, 16]
    voi.add_new("LUTData", "OW", b"\x00\x00\x01\x00")
    path = write_test_dicom(tmp_path / "v.dcm", RAMP, bits_stored=12, WindowCenter=[2000, 2500],
                            WindowWidth=[4000, 3000], VOILUTFunction="SIGMOID", VOILUTSequence=Sequence([voi]))
    img = read_dicom(path)
    np.testing.assert_array_equal(img.pixels, RAMP)
    assert (img.window_center, img.window_width) == ((2000.0, 2500.0), (4000.0, 3000.0))
    assert img.voi_lut_function == "SIGMOID" and img.has_voi_lut_sequence


# ------------------------------------------------------------------------------------------------ metadata


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"ImageLaterality": "R", "Laterality": "L"}, ("R", "ImageLaterality")),
        ({"ImageLaterality": None, "Laterality": "L"}, ("L", "Laterality")),
        ({"ImageLaterality": None, "FrameLaterality": "R"}, ("R", "FrameLaterality")),
        ({"ImageLaterality": None}, (None, None)),
        ({"ImageLaterality": "B"}, (None, None)),
    ],
)
def test_laterality_precedence(tmp_path, tags, expected):
    img = read_dicom(write_test_dicom(tmp_path / "x.dcm", RAMP, **tags), pixels=False)
    assert (img.laterality, img.laterality_source) == expected


@pytest.mark.parametrize(
    ("code", "scheme", "view"),
    [("399162004", "SCT", "CC"), ("R-10242", "SRT", "CC"), ("399368009", "SCT", "MLO"), ("R-10226", "SRT", "MLO"),
     ("399260004", "SCT", "ML"), ("R-10228", "SRT", "LM"), ("399192008", "SCT", "XCCL"), ("Y-X1771", "DCM", "XCCM")],
)
def test_view_from_view_code_sequence(tmp_path, code, scheme, view):
    item = code_item(code, scheme)
    item.ViewModifierCodeSequence = Sequence([code_item("399163009", "SCT", "Magnification")])
    path = write_test_dicom(tmp_path / "v.dcm", RAMP, ViewPosition=None, ViewCodeSequence=Sequence([item]))
    img = read_dicom(path, pixels=False)
    assert (img.view, img.view_source, img.view_modifiers) == (view, "ViewCodeSequence", ("Magnification",))
    assert view in VIEW_CODES


def test_view_position_wins_and_patient_orientation_is_a_fallback_only_for_view_codes(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "a.dcm", RAMP, ViewPosition="MLO", PatientOrientation="CC"))
    assert (img.view, img.view_source) == ("MLO", "ViewPosition")
    img = read_dicom(write_test_dicom(tmp_path / "b.dcm", RAMP, ViewPosition=None, PatientOrientation="CC"))
    assert (img.view, img.view_source) == ("CC", "PatientOrientation")
    assert any("PatientOrientation" in w for w in img.warnings)
    img = read_dicom(write_test_dicom(tmp_path / "c.dcm", RAMP, ViewPosition=None, PatientOrientation=["A", "R"]))
    assert (img.view, img.patient_orientation) == (None, ("A", "R"))


@pytest.mark.parametrize(
    ("tags", "spacing", "source", "trusted"),
    [
        ({}, (0.07, 0.07), "PixelSpacing", True),
        ({"PixelSpacing": None, "ImagerPixelSpacing": [0.1, 0.1]}, (0.1, 0.1), "ImagerPixelSpacing", True),
        ({"PixelSpacing": None, "ImagerPixelSpacing": [0.11, 0.11], "EstimatedRadiographicMagnificationFactor": 1.1},
         (0.11 / 1.1, 0.11 / 1.1), "ImagerPixelSpacing/ERMF", True),
        ({"PixelSpacing": [0.8, 0.8]}, None, "PixelSpacing", False),
        ({"PixelSpacing": None}, None, None, False),
    ],
)
def test_spacing_sources_and_sanity_range(tmp_path, tags, spacing, source, trusted):
    img = read_dicom(write_test_dicom(tmp_path / "s.dcm", RAMP, **tags), pixels=False)
    assert (img.spacing_source, img.spacing_trusted) == (source, trusted)
    assert img.spacing_mm == (pytest.approx(spacing) if spacing else None)
    if source == "PixelSpacing" and not trusted:
        assert img.spacing_raw_mm == (0.8, 0.8) and any("untrusted" in w for w in img.warnings)


def test_descriptive_metadata(tmp_path):
    path = write_test_dicom(tmp_path / "d.dcm", RAMP, bits_stored=12, PresentationIntentType="FOR PROCESSING")
    img = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert (img.rows, img.columns, img.bits_stored, img.bits_allocated) == (48, 40, 12, 16)
    assert (img.manufacturer, img.manufacturer_model, img.modality) == ("TestVendor", "Factory-1", "MG")
    assert img.presentation_intent == "FOR PROCESSING"
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert (img.study_uid, img.series_uid, img.sop_uid) == uids
    assert img.warnings == []


def test_header_mode_matches_full_read_without_pixels(tmp_path):
    path = write_test_dicom(tmp_path / "h.dcm", RAMP, transfer_syntax=RLELossless, PixelPaddingValue=0)
    head, full = read_dicom(path, pixels=False), read_dicom(path)
    assert head.pixels is None and head.padding_mask is None and head.decoder is None
    same = {"pixels", "padding_mask", "decoder", "value_range"}
    for f in dataclasses.fields(full):
        if f.name not in same:
            assert getattr(head, f.name) == getattr(full, f.name), f.name


# ------------------------------------------------------------------------------------------------ refusals


def _refused(path, match: str, **kwargs) -> None:
    for pixels in (True, False):
        with pytest.raises(DicomReadError, match=match) as err:
            read_dicom(path, pixels=pixels, **kwargs)
        assert err.value.path == str(path)


def test_refuses_empty_and_non_dicom_files(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    _refused(tmp_path / "empty.dcm", "empty file")
    (tmp_path / "text.dcm").write_text("patient list\n" * 50)
    _refused(tmp_path / "text.dcm", "not a DICOM file")
    _refused(tmp_path / "missing.dcm", "cannot open")


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", RLELossless])
def test_refuses_truncated_files(tmp_path, syntax):
    path = write_test_dicom(tmp_path / "t.dcm", RAMP, transfer_syntax=syntax)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    _refused(path, "truncated")


def test_refuses_file_without_pixel_data(tmp_path):
    path = write_test_dicom(tmp_path / "np.dcm", RAMP)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    _refused(path, "no pixel data")


def test_refuses_multiframe_colour_tomosynthesis_and_bad_geometry(tmp_path):
    _refused(write_test_dicom(tmp_path / "mf.dcm", np.stack([RAMP, RAMP])), "multi-frame")
    _refused(write_test_dicom(tmp_path / "rgb.dcm", np.zeros((8, 8, 3), np.uint8), photometric="RGB"), "colour")
    _refused(write_test_dicom(tmp_path / "tomo.dcm", RAMP, sop_class=TOMOSYNTHESIS), "tomosynthesis")
    _refused(write_test_dicom(tmp_path / "g1.dcm", RAMP, Rows=40), "absurd geometry")
    _refused(write_test_dicom(tmp_path / "g2.dcm", RAMP, Rows=60), "truncated pixel data")


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "PT", "NM"])
def test_refuses_other_modalities(tmp_path, modality):
    _refused(write_test_dicom(tmp_path / "o.dcm", RAMP, modality=modality), f"Modality {modality}")


def test_projection_xray_without_mg_is_read_with_a_warning(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "dx.dcm", RAMP, modality="DX", BodyPartExamined="BREAST"))
    assert any("Modality DX" in w for w in img.warnings)
    img = read_dicom(write_test_dicom(tmp_path / "none.dcm", RAMP, modality=None))
    assert img.modality is None and any("no Modality" in w for w in img.warnings)
    _refused(write_test_dicom(tmp_path / "chest.dcm", RAMP, modality="DX", BodyPartExamined="CHEST"), "CHEST")


# --------------------------------------------------------------------------------------------- identifiers


def test_identifiers_are_hashed_and_never_leak(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMOKIT_ID_SALT", raising=False)
    path = write_test_dicom(tmp_path / "phi.dcm", RAMP)
    img = read_dicom(path)
    assert img.patient_hash == hash_id("PAT-0001", installation_salt())
    assert img.study_hash == hash_id(img.study_uid, installation_salt())
    values = " ".join(repr(getattr(img, f.name)) for f in dataclasses.fields(img) if f.name != "pixels")
    for secret in ("Doe", "PAT-0001", "19600101", "ACC-42"):
        assert secret not in values and secret not in repr(img)
    assert read_dicom(path, salt="other").patient_hash != img.patient_hash
    monkeypatch.setenv("MAMMOKIT_ID_SALT", "site-secret")
    assert read_dicom(path).patient_hash == hash_id("PAT-0001", "site-secret")


def test_keep_ids_is_an_opt_in_and_repr_still_hides_them(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "k.dcm", RAMP), keep_ids=True)
    assert (img.patient_id, img.accession_number) == ("PAT-0001", "ACC-42")
    assert "PAT-0001" not in repr(img) and "Doe" not in repr(img)


# ------------------------------------------------------------- damaged headers and streams (issue 13, fuzzing)


def _retag(path, **tags: tuple[str, bytes]):
    """Rewrite tags of an explicit-VR file with raw bytes under any VR ('nan', 'abc', odd lengths: what pydicom
    refuses to write from values)."""
    ds = pydicom.dcmread(path)
    for keyword, (vr, value) in tags.items():
        ds[Tag(keyword)] = RawDataElement(Tag(keyword), vr, len(value), value, 0, False, True)
    ds.save_as(path)
    return path


def _with_frame(path, frame: bytes):
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([frame], has_bot=True)
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("keyword", "value", "match"),
    [("RescaleSlope", b"nan ", "RescaleSlope='nan' is not a finite number"), ("RescaleSlope", b"inf ", "not a finite"),
     ("RescaleSlope", b"-inf", "not a finite"), ("RescaleSlope", b"0 ", "RescaleSlope=0 maps every stored value"),
     ("RescaleSlope", b"abc ", "RescaleSlope='abc'"), ("RescaleSlope", b"1e38", "beyond what float32 pixels hold"),
     ("RescaleSlope", b"1\\2 ", "RescaleSlope holds 2 values"), ("RescaleIntercept", b"nan ", "RescaleIntercept")],
)
def test_unusable_rescale_values_are_refused_not_turned_into_nan_pixels(tmp_path, keyword, value, match):
    path = write_test_dicom(tmp_path / "s.dcm", RAMP, bits_stored=12, slope=1.0, intercept=0)
    _refused(_retag(path, **{keyword: ("DS", value)}), match)


def test_constant_modality_lut_is_refused(tmp_path):
    path = write_test_dicom(tmp_path / "c.dcm", RAMP, bits_stored=12, ModalityLUTSequence=modality_lut_sequence(
        [7] * 4096, 0))
    with pytest.raises(DicomReadError, match="maps every stored value to 7"):
        read_dicom(path)


def test_bits_stored_zero_reads_bits_allocated_with_a_warning(tmp_path):
    img = read_dicom(write_test_dicom(tmp_path / "b.dcm", RAMP, BitsStored=0))
    np.testing.assert_array_equal(img.pixels, RAMP)
    assert img.bits_stored == 0 and any("BitsStored is 0" in w for w in img.warnings)


def test_pixel_representation_other_than_0_or_1_is_refused(tmp_path):
    _refused(write_test_dicom(tmp_path / "p.dcm", RAMP, PixelRepresentation=2), "PixelRepresentation=2 is neither")


@pytest.mark.parametrize("ermf", [b"0 ", b"-1.1", b"nan ", b"abc "])
def test_unusable_magnification_factor_is_ignored_with_a_warning(tmp_path, ermf):
    path = write_test_dicom(tmp_path / "e.dcm", RAMP, PixelSpacing=None, ImagerPixelSpacing=[0.1, 0.1])
    img = read_dicom(_retag(path, EstimatedRadiographicMagnificationFactor=("DS", ermf)), pixels=False)
    assert (img.spacing_mm, img.spacing_source) == ((0.1, 0.1), "ImagerPixelSpacing")
    assert any("EstimatedRadiographicMagnificationFactor" in w for w in img.warnings)


def test_unconvertible_tags_refuse_when_the_pixels_depend_on_them_else_warn(tmp_path):
    path = write_test_dicom(tmp_path / "i.dcm", RAMP, transfer_syntax="1.2.840.10008.1.2")
    ds = pydicom.dcmread(path)
    ds[Tag("Rows")] = RawDataElement(Tag("Rows"), None, 3, b"\x01\x02\x03", 0, True, True)  # 3 bytes of US
    ds.save_as(path)
    _refused(path, "Rows cannot be parsed")
    _refused(_retag(write_test_dicom(tmp_path / "c.dcm", RAMP), Columns=("DS", b"40.5")), "Columns=40.5 is not")
    _refused(_retag(write_test_dicom(tmp_path / "f.dcm", RAMP), NumberOfFrames=("IS", b"abc ")), "NumberOfFrames")
    path = _retag(write_test_dicom(tmp_path / "w.dcm", RAMP), WindowCenter=("DS", b"nan "),
                  ViewCodeSequence=("LO", b"abc "))
    img = read_dicom(path)
    assert img.window_center is None and any("WindowCenter" in w for w in img.warnings)
    assert any("ViewCodeSequence is not a sequence" in w for w in img.warnings)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless])
def test_absurd_dimensions_are_refused_before_any_decoder(tmp_path, syntax):
    """Rows = Columns = 100000 (as UL) reached GDCM's fallback and aborted the process."""
    path = write_test_dicom(tmp_path / "d.dcm", RAMP, transfer_syntax=syntax)
    _refused(_retag(path, Rows=("UL", struct.pack("<I", 100000)), Columns=("UL", struct.pack("<I", 100000))),
             "absurd geometry")
    path = write_test_dicom(tmp_path / "m.dcm", RAMP, transfer_syntax=syntax)  # 65535 x 65535 > MAX_PIXELS
    _refused(_retag(path, Rows=("US", b"\xff\xff"), Columns=("US", b"\xff\xff")), "absurd geometry")


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, JPEGLosslessSV1])
def test_stream_whose_size_disagrees_with_the_header_is_refused(tmp_path, syntax):
    path = write_test_dicom(tmp_path / "s.dcm", RAMP, transfer_syntax=syntax, bits_stored=12)
    with pytest.raises(DicomReadError, match="stream is 48x40 pixels, the header says 24x40"):
        read_dicom(_retag(path, Rows=("US", struct.pack("<H", 24))))


@pytest.mark.parametrize("backend", ["auto", "pydicom"])
@pytest.mark.parametrize(
    ("slot", "value", "match"),
    [(2, 0xFFFFFFF0, "segment 2 starts at byte 4294967280"), (2, 10, "do not increase"), (1, 63, "byte 63, not 64"),
     (0, 3, "3 segments")],
)
def test_rle_header_is_checked_before_any_decoder(tmp_path, backend, slot, value, match):
    """An RLE offset of 0xFFFFFFF0 handed to imagecodecs.dicomrle_decode was a SIGSEGV."""
    path = write_test_dicom(tmp_path / "r.dcm", RAMP, transfer_syntax=RLELossless)
    frame = get_frame(pydicom.dcmread(path).PixelData, 0, number_of_frames=1)
    header = list(struct.unpack_from("<16I", frame))
    header[slot] = value
    with pytest.raises(DicomReadError, match=match):
        read_dicom(_with_frame(path, struct.pack("<16I", *header) + frame[64:]), backend=backend)


@pytest.mark.parametrize("backend", ["auto", "pydicom"])
def test_a_panicking_rust_decoder_is_a_read_error(tmp_path, backend):
    """pylibjpeg-rle panics (pyo3 PanicException, a BaseException) on a segment that decodes past the image."""
    path = write_test_dicom(tmp_path / "p.dcm", np.zeros((4, 4), np.uint16), transfer_syntax=RLELossless)
    run = bytes([0x81, 0x05])  # one replicate run of 128 bytes, for a 16-byte segment
    with pytest.raises(DicomReadError, match="corrupt"):
        read_dicom(_with_frame(path, struct.pack("<16I", 2, 64, 66, *[0] * 13) + run + run), backend=backend)


def test_lossless_jpeg_scan_without_its_huffman_table_is_refused(tmp_path):
    """liblj92 (imagecodecs.ljpeg) segfaults on a lossless scan whose Huffman table was never defined."""
    path = write_test_dicom(tmp_path / "h.dcm", RAMP, transfer_syntax=JPEGLosslessSV1, bits_stored=12)
    frame = get_frame(pydicom.dcmread(path).PixelData, 0, number_of_frames=1)
    no_table = frame.replace(b"\xff\xc4", b"\xff\xfe", 1)  # the DHT segment becomes a comment
    for backend in ("auto", "pydicom"):
        with pytest.raises(DicomReadError, match="Huffman table 0, which is not defined"):
            read_dicom(_with_frame(path, no_table), backend=backend)


@pytest.mark.parametrize("backend", ["auto", "pydicom"])
def test_frames_gdcm_aborts_on_never_reach_it(tmp_path, backend):
    """python-gdcm aborts the process on JPEG data with BitsAllocated 32 and on BitsAllocated 8 with BitsStored < 8;
    the first is refused, the second decoded without GDCM (pydicom would try its GDCM plugin first)."""
    twelve = write_test_dicom(tmp_path / "e.dcm", RAMP, transfer_syntax=JPEGExtended12Bit, bits_stored=12)
    with pytest.raises(DicomReadError, match="at most 16 bits; BitsAllocated is 32"):
        read_dicom(_retag(twelve, BitsAllocated=("US", b"\x20\x00")), backend=backend)
    eight = write_test_dicom(tmp_path / "b.dcm", (RAMP % 256).astype(np.uint8), transfer_syntax=JPEGBaseline8Bit)
    img = read_dicom(_retag(eight, BitsStored=("US", b"\x01\x00")), backend=backend)
    assert img.pixels.shape == RAMP.shape and set(np.unique(img.pixels)) <= {0.0, 1.0}


def _many_view_codes(path, count: int, undefined: bool):
    """Repeat the one ViewCodeSequence item of an explicit-VR file `count` times (far faster than pydicom)."""
    data = path.read_bytes()
    start = data.index(b"\x54\x00\x20\x02SQ\x00\x00")
    length = struct.unpack_from("<I", data, start + 8)[0]
    item = data[start + 12 : start + 12 + length]
    end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" if undefined else b""
    head = struct.pack("<I", 0xFFFFFFFF if undefined else len(item) * count)
    path.write_bytes(data[: start + 8] + head + item * count + end + data[start + 12 + length :])
    return path


def test_huge_view_code_sequences_are_bounded(tmp_path):
    """100k items hung the reader (a quadratic loop); now a few items are read, or an oversized one is skipped."""
    item = code_item("399162004", "SCT", "cranio-caudal")
    item.ViewModifierCodeSequence = Sequence([code_item("399163009", "SCT", "Magnification")])
    path = write_test_dicom(tmp_path / "v.dcm", RAMP, ViewPosition=None, ViewCodeSequence=Sequence([item]))
    img = read_dicom(_many_view_codes(path, 5000, undefined=True), pixels=False)
    assert (img.view, img.view_modifiers) == ("CC", ("Magnification",) * 8)
    assert any("has 5,000 items; the first 8 are read" in w for w in img.warnings)
    path = write_test_dicom(tmp_path / "w.dcm", RAMP, ViewPosition=None, ViewCodeSequence=Sequence([item]))
    img = read_dicom(_many_view_codes(path, 100_000, undefined=False), pixels=False)
    assert img.view is None and any("ViewCodeSequence holds" in w for w in img.warnings)
