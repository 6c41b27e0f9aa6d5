"""The preprocessed store: float → uint16 → float round trips through TIFF and PNG, masks, and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from mammokit.preprocess.store import (
    UINT16_MAX,
    decode_uint16,
    encode_uint16,
    read_image,
    read_mask,
    write_image,
    write_mask,
)

FORMATS = (".tif", ".png")


@pytest.mark.parametrize("suffix", FORMATS)
def test_integer_data_round_trips_exactly(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(-1000, 3096, size=(37, 53)).astype(np.float32)  # 12-bit span with a negative offset
    meta = write_image(tmp_path / f"img{suffix}", values)
    assert meta["scale"] == 1.0 and meta["offset"] == float(values.min()) and meta["max_error"] == 0.0
    back = read_image(tmp_path / f"img{suffix}", meta["offset"], meta["scale"])
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("suffix", FORMATS)
def test_float_data_error_is_at_most_half_a_step(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    values = (rng.random((41, 29)) * 7.3 - 2.1).astype(np.float32)
    meta = write_image(tmp_path / f"img{suffix}", values)
    scale = (float(values.max()) - float(values.min())) / UINT16_MAX  # the full 16-bit range is used
    assert meta["scale"] == pytest.approx(scale, rel=1e-12)
    back = read_image(tmp_path / f"img{suffix}", meta["offset"], meta["scale"])
    err = np.abs(back.astype(np.float64) - values)
    tol = scale / 2 + 4 * float(np.finfo(np.float32).eps) * float(np.abs(values).max())  # + float32 decode rounding
    assert err.max() <= tol
    assert err.max() == pytest.approx(meta["max_error"], abs=1e-6)
    assert back.min() == pytest.approx(float(values.min()), abs=1e-6)  # both ends of the range are hit exactly
    assert back.max() == pytest.approx(float(values.max()), abs=tol)


def test_integer_data_wider_than_16_bits_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0.0, 1.0, 70000.0, 131070.0]], dtype=np.float32)  # span 131070 = 2 × 65535
    stored, offset, scale = encode_uint16(values)
    assert (offset, scale) == (0.0, 2.0)
    np.testing.assert_array_equal(stored, [[0, 0, 35000, 65535]])  # 1 → 0.5 rounds to even: error 1 = scale/2
    assert np.abs(decode_uint16(stored, offset, scale) - values).max() <= scale / 2


def test_constant_image_round_trips(tmp_path: Path) -> None:
    values = np.full((5, 6), 123.25, dtype=np.float32)
    meta = write_image(tmp_path / "c.tif", values)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), values)
    assert meta["max_error"] == 0.0


def test_tiff_carries_its_own_offset_and_scale(tmp_path: Path) -> None:
    values = np.linspace(-5.0, 5.0, 60, dtype=np.float32).reshape(6, 10)
    meta = write_image(tmp_path / "a.tif", values)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), read_image(tmp_path / "a.tif", meta["offset"],
                                                                              meta["scale"]))
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:  # a plain 16-bit TIFF any viewer opens
        assert tif.pages[0].dtype == np.uint16 and tif.pages[0].shape == (6, 10)


def test_png_needs_offset_and_scale(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", np.ones((3, 3), np.float32) * 2.5)
    with pytest.raises(ValueError, match=r"a\.png.*offset and scale"):
        read_image(tmp_path / "a.png")


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "n.tif", np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(ValueError, match=r"x\.jpg.*unknown image format"):
        write_image(tmp_path / "x.jpg", np.ones((2, 2), np.float32))
    with pytest.raises(OSError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png", 0.0, 1.0)
    with pytest.raises(OSError, match=r"missing_mask\.png"):
        read_mask(tmp_path / "missing_mask.png")


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_image(tmp_path / "a.tif", np.ones((4, 4), np.float32))
    write_mask(tmp_path / "m.png", np.eye(4, dtype=bool))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "m.png"]


def test_mask_round_trip(tmp_path: Path) -> None:
    mask = np.random.default_rng(2).random((17, 23)) > 0.5
    write_mask(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
