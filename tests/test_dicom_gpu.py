"""nvImageCodec behind `read_dicom`: chosen first for JPEG 2000 and JPEG Lossless SV1 when it can run, same values as
the CPU decoders, and a clean fallback where it cannot decode.

Without a GPU the handling is checked end to end on nvImageCodec's own CPU codecs (``MAMMOKIT_GPU_DECODE=cpu``);
the GPU test at the end runs on a machine with a CUDA device and the ``gpu`` extra installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import UID

from dicom_factory import JPEG2000, JPEG2000Lossless, JPEGLosslessSV1, write_test_dicom
from mammokit import dicom_gpu
from mammokit.dicom import read_dicom
from mammokit.dicom_decode import stored_range

pytest.importorskip("nvidia.nvimgcodec", reason="nvidia-nvimgcodec-cu13 is in the dev extra")


def _image(bits: int, shape: tuple[int, int] = (72, 56), signed: bool = False, seed: int = 0) -> np.ndarray:
    """Noise over a ramp spanning the whole `bits` range (the top value included), so a rescaling decoder shows."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    values = np.linspace(0, top, shape[0] * shape[1]).reshape(shape) + rng.normal(0, top * 0.02, shape)
    values = np.clip(np.round(values), 0, top)
    values.flat[-1] = top
    if signed:
        return (values - (1 << (bits - 1))).astype(np.int16)
    return values.astype(np.uint8 if bits <= 8 else np.uint16)


@pytest.fixture
def nvimgcodec_cpu(monkeypatch):
    monkeypatch.setenv(dicom_gpu.ENV_GPU_DECODE, "cpu")
    assert dicom_gpu.gpu_decoder() is not None


@pytest.mark.parametrize("bits", [8, 12, 14, 16])
@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEG2000], ids=lambda u: UID(u).keyword)
def test_jpeg2000_decodes_through_nvimgcodec_to_the_cpu_values(tmp_path, nvimgcodec_cpu, syntax, bits):
    stored = _image(bits)
    path = write_test_dicom(tmp_path / "a.dcm", stored, transfer_syntax=syntax, bits_stored=bits)
    got = read_dicom(path)
    assert got.decoder == dicom_gpu.LABEL
    assert not got.warnings
    np.testing.assert_array_equal(got.pixels, read_dicom(path, backend="pydicom").pixels)
    if syntax == JPEG2000Lossless:
        np.testing.assert_array_equal(got.pixels, stored)


def test_what_nvimgcodec_cannot_decode_falls_back_once_per_syntax(tmp_path, nvimgcodec_cpu):
    """Its CPU codecs return nothing for signed JPEG 2000: the CPU decoder reads it, with a warning the first time;
    the next signed file of that syntax goes straight to the CPU decoder, while unsigned files still use it."""
    first, second = (write_test_dicom(tmp_path / f"s{i}.dcm", _image(14, signed=True, seed=i),
                                      transfer_syntax=JPEG2000Lossless, bits_stored=14) for i in (1, 2))
    got = read_dicom(first)
    np.testing.assert_array_equal(got.pixels, _image(14, signed=True, seed=1))
    assert got.decoder != dicom_gpu.LABEL
    assert any(w.startswith("nvimgcodec failed") for w in got.warnings)
    again = read_dicom(second)
    assert again.decoder == got.decoder and not again.warnings
    unsigned = write_test_dicom(tmp_path / "u.dcm", _image(14), transfer_syntax=JPEG2000Lossless, bits_stored=14)
    assert read_dicom(unsigned).decoder == dicom_gpu.LABEL


def test_lossless_jpeg_sv1_goes_to_nvimgcodec(tmp_path, nvimgcodec_cpu):
    """8-bit SV1 decodes through it (its CPU JPEG codec is 8-bit; the GPU's lossless nvJPEG takes 16-bit too)."""
    stored = _image(8)
    path = write_test_dicom(tmp_path / "a.dcm", stored, transfer_syntax=JPEGLosslessSV1, bits_stored=8)
    got = read_dicom(path)
    assert got.decoder == dicom_gpu.LABEL
    np.testing.assert_array_equal(got.pixels, stored)


def test_values_beyond_the_streams_depth_are_refused(nvimgcodec_cpu):
    """A decoder that rescaled samples would return values above the stream's bit depth: refused, not passed on."""
    import imagecodecs

    stored = _image(14)
    frame = imagecodecs.jpeg2k_encode(stored, level=0, codecformat="J2K", reversible=True, bitspersample=14)
    np.testing.assert_array_equal(dicom_gpu.decode(frame, stored_range(14, False), JPEG2000Lossless, False), stored)
    with pytest.raises(dicom_gpu.GpuDecodeError, match=r"outside the stream's range \(0, 4095\)"):
        dicom_gpu.decode(frame, stored_range(12, False), JPEG2000Lossless, False)


def test_modes(monkeypatch, tmp_path):
    path = write_test_dicom(tmp_path / "a.dcm", _image(14), transfer_syntax=JPEG2000Lossless, bits_stored=14)
    monkeypatch.setenv(dicom_gpu.ENV_GPU_DECODE, "off")
    assert dicom_gpu.gpu_decoder() is None
    assert read_dicom(path).decoder != dicom_gpu.LABEL
    assert "off" in dicom_gpu.describe()
    monkeypatch.setenv(dicom_gpu.ENV_GPU_DECODE, "sometimes")
    with pytest.raises(ValueError, match="MAMMOKIT_GPU_DECODE"):
        dicom_gpu.gpu_mode()
    monkeypatch.setenv(dicom_gpu.ENV_GPU_DECODE, "auto")
    on_gpu = dicom_gpu.cuda_device_count() > 0
    assert (read_dicom(path).decoder == dicom_gpu.LABEL) == (on_gpu and dicom_gpu.gpu_decoder() is not None)


@pytest.mark.skipif(dicom_gpu.cuda_device_count() == 0, reason="needs a CUDA GPU (run on the device machine)")
@pytest.mark.parametrize(
    ("syntax", "bits", "signed"),
    [(JPEG2000Lossless, 12, False), (JPEG2000Lossless, 14, False), (JPEG2000Lossless, 16, False),
     (JPEG2000Lossless, 14, True), (JPEG2000, 14, False), (JPEGLosslessSV1, 12, False),
     (JPEGLosslessSV1, 14, False), (JPEGLosslessSV1, 16, False)],
)
def test_gpu_decode_equals_the_cpu_decoder(tmp_path, monkeypatch, syntax, bits, signed):
    """On the GPU: chosen automatically, and every value equal to the CPU decoder's (full detector size too)."""
    monkeypatch.setenv(dicom_gpu.ENV_GPU_DECODE, "auto")
    assert dicom_gpu.gpu_decoder() is not None, dicom_gpu.describe()
    for shape in ((72, 56), (3328, 2560)):
        stored = _image(bits, shape, signed)
        path = write_test_dicom(tmp_path / f"{shape[0]}.dcm", stored, transfer_syntax=syntax, bits_stored=bits)
        got = read_dicom(path)
        monkeypatch.setenv(dicom_gpu.ENV_GPU_DECODE, "off")
        cpu = read_dicom(path)
        monkeypatch.setenv(dicom_gpu.ENV_GPU_DECODE, "auto")
        np.testing.assert_array_equal(got.pixels, cpu.pixels)
        if not signed:
            assert got.decoder == dicom_gpu.LABEL, got.warnings
