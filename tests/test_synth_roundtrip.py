"""Round trip of every vendor profile through the package reader `mammokit.dicom.read_dicom`."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from mammokit.synth import VENDOR_PROFILES, generate

dicom = pytest.importorskip("mammokit.dicom")
read_dicom = getattr(dicom, "read_dicom", None)
pytestmark = pytest.mark.skipif(read_dicom is None, reason="mammokit.dicom.read_dicom is not implemented yet")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_rt") / "a"
    generate(out, exams=len(VENDOR_PROFILES), seed=3, vendors="all", size_scale=0.2, prevalence=0.5)
    return out


def test_reader_recovers_metadata_and_monochrome2_pixels(archive: Path) -> None:
    with (archive / "labels.csv").open(newline="") as fh:
        vendor_of = {r["study_uid"]: r["vendor"] for r in csv.DictReader(fh)}
    for path in sorted((archive / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        profile = VENDOR_PROFILES[vendor_of[ds.StudyInstanceUID]]
        img = read_dicom(path)
        _, _, spacing = profile.scaled(0.2)  # reader trusts spacing <= 0.5 mm
        assert img.spacing_mm == pytest.approx((spacing, spacing), rel=1e-5), path
        assert img.laterality == (ds.get("ImageLaterality") or ds.get("Laterality"))
        assert img.view in ("CC", "MLO")
        assert img.bits_stored == profile.bits_stored and img.photometric == profile.photometric
        assert img.inverted == (profile.photometric == "MONOCHROME1")
        assert img.sop_uid == ds.SOPInstanceUID and img.pixels.shape == (ds.Rows, ds.Columns)
        # Modality values, in MONOCHROME2 sense: an increasing affine map of what the generator intended.
        stored = ds.pixel_array.astype(np.float64)
        modality = stored * profile.slope + profile.intercept
        expected = -modality if profile.photometric == "MONOCHROME1" else modality
        real = ~img.padding_mask if img.padding_mask is not None else np.ones(expected.shape, bool)
        assert np.corrcoef(img.pixels[real].ravel(), expected[real].ravel())[0, 1] > 0.9999
        if profile.photometric == "MONOCHROME2":
            np.testing.assert_allclose(img.pixels[real], modality[real], rtol=1e-5, atol=1e-3)
        breast = cv2.imread(str(archive / "masks" / f"{ds.SOPInstanceUID}_breast.png"), cv2.IMREAD_UNCHANGED) > 0
        assert np.median(img.pixels[breast]) > np.median(img.pixels[real & ~breast])
        if profile.padding_value is not None:
            np.testing.assert_array_equal(img.padding_mask, stored == profile.padding_value)
        # Names and birth dates never leave the reader.
        assert "PHI" not in repr(img)
