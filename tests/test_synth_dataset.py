"""The generated archive, checked with pydicom directly: layout, labels, vendor tags, orientation, masks, PHI."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from mammokit.synth import LABEL_COLUMNS, LESION_COLUMNS, VENDOR_PROFILES, generate

EXAMS = 12


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = generate(out, exams=EXAMS, seed=5, vendors="all", size_scale=0.12, prevalence=0.5, benign_rate=0.5)
    return out, summary


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _files(out: Path) -> dict[str, Path]:
    return {p.stem: p for p in (out / "dicom").rglob("*.dcm")}


def _modality_m2(ds: pydicom.Dataset) -> np.ndarray:
    """Modality values in MONOCHROME2 sense, computed independently of the generator."""
    arr = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return -arr if ds.PhotometricInterpretation == "MONOCHROME1" else arr


def _mask(out: Path, sop: str, name: str) -> np.ndarray:
    img = cv2.imread(str(out / "masks" / f"{sop}_{name}.png"), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint8 and set(np.unique(img)) <= {0, 255}
    return img > 0


def test_layout_and_labels(archive: tuple[Path, dict]) -> None:
    out, summary = archive
    files = _files(out)
    assert len(files) == 4 * EXAMS == summary["images"]
    labels = _rows(out / "labels.csv")
    assert tuple(labels[0]) == LABEL_COLUMNS and len(labels) == 2 * EXAMS
    assert sum(int(r["cancer"]) for r in labels) == round(EXAMS * 0.5) == summary["cancer_exams"]
    assert {r["vendor"] for r in labels} == set(VENDOR_PROFILES)
    by_study: dict[str, list[dict]] = {}
    for r in labels:
        by_study.setdefault(r["study_uid"], []).append(r)
        assert r["birads"] in {"1", "2", "3", "4", "5"} and r["density"] in "ABCD"
        assert (r["birads"] in {"4", "5"}) == (r["cancer"] == "1")
    for rows in by_study.values():
        assert [r["laterality"] for r in rows] == ["L", "R"]
        assert len({(r["patient_id"], r["split_group"], r["vendor"]) for r in rows}) == 1
    for sop, path in files.items():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        case, study, series = path.parts[-4:-1]
        ids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert ids == (study, series, sop)
        assert case.startswith("case") and ds.PatientID not in str(path)  # no identifier in file paths
        assert ds.StudyInstanceUID in by_study and by_study[ds.StudyInstanceUID][0]["patient_id"] == ds.PatientID
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["seed"] == 5 and manifest["exams"] == EXAMS


def test_vendor_tags(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    vendor_of = {r["study_uid"]: r["vendor"] for r in _rows(out / "labels.csv")}
    syntaxes = {"explicit": "1.2.840.10008.1.2.1", "jpeg2000": "1.2.840.10008.1.2.4.90", "rle": "1.2.840.10008.1.2.5"}
    for path in _files(out).values():
        ds = pydicom.dcmread(path)
        p = VENDOR_PROFILES[vendor_of[ds.StudyInstanceUID]]
        rows, cols, spacing = p.scaled(0.12)
        assert (ds.Rows, ds.Columns) == (rows, cols)
        assert ds.file_meta.TransferSyntaxUID == syntaxes[p.transfer_syntax]
        assert ds.PhotometricInterpretation == p.photometric and ds.BitsStored == p.bits_stored
        assert int(ds.pixel_array.max()) < (1 << p.bits_stored)
        # a tag the profile does not use is absent, or present and empty where its IOD makes it type 2
        for tag in ("ImageLaterality", "Laterality"):
            assert bool(ds.get(tag)) == (tag in p.laterality_tags)
        for tag in ("ViewPosition", "ViewCodeSequence"):
            assert bool(ds.get(tag)) == (tag in p.view_tags)
        for tag in ("PixelSpacing", "ImagerPixelSpacing"):
            assert (tag in ds) == (tag in p.spacing_tags)
            if tag in ds:
                assert float(ds[tag].value[0]) == pytest.approx(spacing, rel=1e-5)
        assert bool(ds.get("PatientOrientation")) == p.orientation_tag
        assert ("RescaleSlope" in ds) == p.write_rescale
        assert ds.get("PixelPaddingValue") == p.padding_value


def test_orientation_masks_and_markers(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    vendor_of = {r["study_uid"]: r["vendor"] for r in _rows(out / "labels.csv")}
    markers = 0
    for sop, path in _files(out).items():
        ds = pydicom.dcmread(path)
        p = VENDOR_PROFILES[vendor_of[ds.StudyInstanceUID]]
        side = ds.get("ImageLaterality") or ds.get("Laterality")
        view = ds.get("ViewPosition") or ds.ViewCodeSequence[0].CodeMeaning
        breast, pectoral = _mask(out, sop, "breast"), _mask(out, sop, "pectoral")
        values = _modality_m2(ds)
        band = ds.Columns // 20
        chest_right = side == "R" and p.mirror_right
        # Content: the chest wall (full-height tissue) is on the expected side.
        wall, far = (breast[:, -band:], breast[:, :band]) if chest_right else (breast[:, :band], breast[:, -band:])
        assert wall.mean() > 0.3 and far.mean() < 0.02
        if ds.get("PatientOrientation"):
            assert ds.PatientOrientation[0] == ("P" if chest_right else "A")
        # Tissue is brighter (denser) than air in MONOCHROME2 sense; padding only outside tissue.
        air = ~cv2.dilate(breast.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if p.padding_value is not None:
            pad = ds.pixel_array == p.padding_value
            assert pad.any() and not (pad & breast).any()
            air &= ~pad
        assert np.median(values[breast]) > np.percentile(values[air], 95)  # (markers are < 5% of the air)
        assert (pectoral <= breast).all() and (pectoral.any() == ("MLO" in view or "oblique" in view))
        if pectoral.any():  # muscle is denser than the rest of the breast
            assert np.median(values[pectoral]) > np.median(values[breast & ~pectoral])
        bright_air = air & (values > np.percentile(values[breast], 99))
        if p.marker:
            markers += bright_air.sum() > 20
            assert ds.BurnedInAnnotation == "YES"
        else:
            assert bright_air.sum() == 0
    assert markers >= 1


def test_lesions_in_both_views_inside_breast(archive: tuple[Path, dict]) -> None:
    out, summary = archive
    lesions = _rows(out / "lesions.csv")
    assert lesions and tuple(lesions[0]) == LESION_COLUMNS and len(lesions) == summary["lesion_rows"]
    files = _files(out)
    seen: dict[tuple[str, str], set[str]] = {}
    for r in lesions:
        seen.setdefault((r["study_uid"], r["lesion_id"]), set()).add(r["view"])
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        ds = pydicom.dcmread(files[r["sop_uid"]])
        assert 0 <= x0 < x1 <= ds.Columns and 0 <= y0 < y1 <= ds.Rows
        assert (ds.get("ImageLaterality") or ds.get("Laterality")) == r["laterality"]
        lesion = _mask(out, r["sop_uid"], "lesion")
        breast = _mask(out, r["sop_uid"], "breast")
        assert lesion[y0:y1, x0:x1].any() and breast[y0:y1, x0:x1].mean() > 0.9
        assert r["malignant"] == ("1" if r["kind"] in ("spiculated_mass", "pleomorphic_calcifications") else "0")
    assert all(views == {"CC", "MLO"} for views in seen.values())
    labels = _rows(out / "labels.csv")
    cancer_breasts = {(r["study_uid"], r["laterality"]) for r in labels if r["cancer"] == "1"}
    assert cancer_breasts == {(r["study_uid"], r["laterality"]) for r in lesions if r["malignant"] == "1"}


def test_fake_phi_everywhere_patient_id_clean(archive: tuple[Path, dict]) -> None:
    out, _ = archive
    for path in _files(out).values():
        raw = path.read_bytes()
        assert re.search(rb"PHI\^NAME\d{4}", raw) and re.search(rb"19\d\d0101", raw)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(ds.OtherPatientIDs).startswith("PHI-OTHER-") and ds.InstitutionName.startswith("PHI ")
        assert "PHI" not in ds.PatientID and "^" not in ds.PatientID


def _digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}


def test_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    kw = {"exams": 3, "seed": 11, "vendors": "hologic,siemens,agfa", "size_scale": 0.08}
    generate(tmp_path / "a", **kw)
    generate(tmp_path / "b", workers=2, **kw)
    generate(tmp_path / "c", **{**kw, "seed": 12})
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    dicoms = {k: v for k, v in a.items() if k.endswith('.dcm')}
    assert len(dicoms) == 12 and not set(dicoms.values()) & set(c.values())


def test_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(tmp_path / "full", exams=1)
    bad = (({"size_scale": 2.0}, "size_scale"), ({"prevalence": 1.5}, "prevalence"), ({"exams": 0}, "exams"),
           ({"difficulty": 0.0}, "difficulty"), ({"vendors": "kodak"}, "vendors"))
    for kwargs, name in bad:
        with pytest.raises(ValueError, match=name):
            generate(tmp_path / "new", **kwargs)
    summary = generate(tmp_path / "nomask", exams=1, size_scale=0.06, masks=False, prevalence=0, benign_rate=0)
    assert summary["masks_dir"] is None and not (tmp_path / "nomask" / "masks").exists()
    assert len(_rows(tmp_path / "nomask" / "lesions.csv")) == 0
