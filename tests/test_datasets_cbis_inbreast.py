"""CBIS-DDSM and INbreast adapters on tiny trees in the real layouts, labelled by real label-file rows.

Label rows (`tests/data/real_rows/`) are copied verbatim from public copies of the original files:
- CBIS-DDSM `{mass,calc}_case_description_{train,test}_set.csv` (repository harshithach999/CS-5610-100): header
  rows, and the rows of P_00001, P_00005, P_00016 (LEFT CC/MLO in Mass-Test and Calc-Training) and P_00041 (LEFT
  CC/MLO in Mass-Training and Calc-Test), two of the breast views TCIA publishes in both official splits.
- INbreast `INbreast.csv` (repository wentaozhu/deep-mil-for-whole-mammogram-classification, `;` separated);
  `inbreast_sample.xls` holds the same rows, written with xlwt (the original is an .xls sheet).
TCIA tree: `CBIS-DDSM/<Subject>/<date>-DDSM-NA-<n>/1.000000-full mammogram images-<n>/1-1.dcm`, and the ROI series
of abnormality k in `<Subject>_k/.../1.000000-ROI mask images-<n>/1-1.dcm, 1-2.dcm` (mask and crop), sometimes as
separate `ROI mask images` and `cropped images` series. CBIS headers: Secondary Capture, PatientID = PatientName =
the subject folder, Laterality (0020,0060) and the view in PatientOrientation, no ImageLaterality/ViewPosition.
INbreast: `AllDICOMs/<File Name>_<patient code>_MG_<R|L>_<CC|ML>_ANON.dcm` ("ML" in the name, "MLO" in the table)
and `AllXML/<File Name>.xml`, an OsiriX plist (Images > ROIs > Name, Point_px "(x, y)", keys sorted).
"""

from __future__ import annotations

import csv
import io
import json
import plistlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.uid import generate_uid

from dicom_factory import write_test_dicom
from mammokit.datasets.index import scan
from mammokit.datasets.public import PUBLIC_ADAPTERS
from mammokit.dicom import hash_id
from mammokit.errors import MissingDependencyError

SALT = "test-salt"
ROWS, COLS = 16, 12
REAL = Path(__file__).parent / "data" / "real_rows"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CBIS_CSVS = ("mass_case_description_train_set.csv", "mass_case_description_test_set.csv",
             "calc_case_description_train_set.csv", "calc_case_description_test_set.csv")
# where each abnormality's ROI mask lies: (rows, columns) slices, one per lesion kind
MASK_AT = {"mass": (slice(4, 8), slice(2, 6)), "calcification": (slice(10, 12), slice(8, 10))}
BOX = {"mass": (2, 4, 6, 8), "calcification": (8, 10, 10, 12)}


def cbis_rows(name: str) -> list[dict[str, str]]:
    """The real rows of one case-description fixture."""
    with (REAL / f"cbis_{name}").open(newline="") as fh:
        return list(csv.DictReader(fh))


def tcia(cell: str) -> tuple[str, str, str]:
    """(subject folder, StudyInstanceUID, SeriesInstanceUID) of a CSV path."""
    subject, study, series = cell.strip().split("/")[:3]
    return subject, study, series


def cbis_dcm(path: Path, subject: str, study: str, series: str, description: str, pixels: np.ndarray) -> None:
    """One CBIS-DDSM file with the header habits of the TCIA collection."""
    side, view = subject.split("_")[3:5]
    write_test_dicom(path, pixels, sop_class=SECONDARY_CAPTURE, StudyInstanceUID=study, SeriesInstanceUID=series,
                     PatientID=subject, PatientName=subject, ImageLaterality=None, ViewPosition=None,
                     Laterality=side[0], PatientOrientation=view, SeriesDescription=description, StudyID="DDSM",
                     ConversionType="WSD", PixelSpacing=None)


def cbis_tree(root: Path, rows: list[dict[str, str]], *, missing: tuple[str, ...] = (),
              split_roi: tuple[str, ...] = ()) -> Path:
    """The TCIA tree of these rows: each full mammogram once, each abnormality's ROI mask (1-1) and crop (1-2).

    `missing` subjects are not written (not downloaded); the ROI series of `split_roi` subjects are written as
    separate 'ROI mask images' and 'cropped images' series, as TCIA serves some of them.
    """
    tree = root / "CBIS-DDSM"
    for n, row in enumerate(rows):
        subject, study, series = tcia(row["image file path"])
        if subject not in missing and not (tree / subject).exists():
            full = tree / subject / f"07-20-2016-DDSM-NA-{n:05d}" / f"1.000000-full mammogram images-{n:05d}"
            cbis_dcm(full / "1-1.dcm", subject, study, series, "full mammogram images",
                     np.full((ROWS, COLS), 100, np.uint16))
        roi_subject, roi_study, roi_series = tcia(row["ROI mask file path"])
        if roi_subject.rsplit("_", 1)[0] in missing:
            continue
        mask = np.zeros((ROWS, COLS), np.uint8)
        mask[MASK_AT[row["abnormality type"]]] = 255
        crop = np.full((4, 4), 90, np.uint8)
        date = tree / roi_subject / f"09-06-2017-DDSM-NA-{n:05d}"
        if roi_subject in split_roi:
            cbis_dcm(date / f"1.000000-ROI mask images-{n:05d}" / "1-1.dcm", roi_subject, roi_study, roi_series,
                     "ROI mask images", mask)
            crop_dir = root / "CBIS-DDSM" / roi_subject / f"09-06-2017-DDSM-NA-9{n:04d}"
            cbis_dcm(crop_dir / f"1.000000-cropped images-{n:05d}" / "1-1.dcm", roi_subject, roi_study,
                     generate_uid(entropy_srcs=[roi_series, "crop"]), "cropped images", crop)
        else:
            series_dir = date / f"1.000000-ROI mask images-{n:05d}"
            cbis_dcm(series_dir / "1-1.dcm", roi_subject, roi_study, roi_series, "ROI mask images", mask)
            cbis_dcm(series_dir / "1-2.dcm", roi_subject, roi_study, roi_series, "ROI mask images", crop)
    return tree


def copy_csvs(root: Path, names: tuple[str, ...] = CBIS_CSVS) -> None:
    for name in names:
        shutil.copy(REAL / f"cbis_{name}", root / name)


def run(name: str, root: Path, labels: Path | None = None, **kwargs: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    result = PUBLIC_ADAPTERS[name](scan(root, salt=SALT), root, labels, salt=SALT, **kwargs)
    return result.images, result.skipped


def by_subject(images: pd.DataFrame) -> dict[str, dict]:
    """Index rows by TCIA subject folder."""
    return {Path(r["relpath"]).parts[0]: r for r in images.to_dict("records")}


def boxes(row: dict) -> list[tuple]:
    return sorted((b["kind"], b["x0"], b["y0"], b["x1"], b["y1"], b["malignant"]) for b in json.loads(row["lesions"]))


def both_splits_tree(tmp_path: Path) -> Path:
    """P_00016 (Mass-Test + Calc-Training) and P_00041 (Mass-Training + Calc-Test, its Calc-Test MLO not
    downloaded), labelled by the four real CSVs."""
    rows = [r for name in CBIS_CSVS for r in cbis_rows(name) if r["patient_id"] in ("P_00016", "P_00041")]
    copy_csvs(tmp_path)
    return cbis_tree(tmp_path, rows, missing=("Calc-Test_P_00041_LEFT_MLO",))


def test_cbis_view_in_both_splits_takes_the_test_copy(tmp_path: Path) -> None:
    images, skipped = run("cbis-ddsm", both_splits_tree(tmp_path))
    rows = by_subject(images)
    kept = {"Mass-Test_P_00016_LEFT_CC", "Mass-Test_P_00016_LEFT_MLO", "Calc-Test_P_00041_LEFT_CC",
            "Mass-Training_P_00041_LEFT_MLO"}
    assert set(rows) == kept  # the test copy of each view published twice; the train-only view stays
    assert {r["split_group"] for r in rows.values()} == {"test"}  # the whole patient is held out
    duplicates = [r for r in skipped["reason"] if "duplicate of" in r]
    assert len(duplicates) == 3 and all("Test_P_000" in r.split("duplicate of")[1] for r in duplicates)
    p16 = rows["Mass-Test_P_00016_LEFT_CC"]
    assert (p16["cancer"], p16["benign"], p16["birads"], p16["density"]) == (1, 0, 5, "D")
    assert boxes(p16) == [("calcification", *BOX["calcification"], 1), ("mass", *BOX["mass"], 1)]
    assert p16["abnormality_types"] == "calcification,mass"
    p41 = rows["Calc-Test_P_00041_LEFT_CC"]
    assert (p41["cancer"], p41["benign"], p41["birads"], p41["density"]) == (0, 1, 2, "A")
    assert boxes(p41) == [("calcification", *BOX["calcification"], 0), ("mass", *BOX["mass"], 0)]
    assert boxes(rows["Mass-Training_P_00041_LEFT_MLO"]) == [("mass", *BOX["mass"], 0)]
    assert p16["patient_id"] == hash_id("P_00016", SALT) and p41["patient_id"] == hash_id("P_00041", SALT)
    report = images.attrs["adapter_report"]
    assert (report["breasts_in_both_splits"], report["views_in_both_splits"], report["patients_moved_to_test"],
            report["labels_changed_by_pooling"], report["pool_splits"]) == (2, 3, 1, 0, True)


def test_cbis_unpooled_keeps_the_kept_copys_split(tmp_path: Path) -> None:
    images, skipped = run("cbis-ddsm", both_splits_tree(tmp_path), pool_splits=False)
    assert sum("left out (another official split)" in r for r in skipped["reason"]) == 3
    rows = by_subject(images)
    p16, p41 = rows["Mass-Test_P_00016_LEFT_CC"], rows["Calc-Test_P_00041_LEFT_CC"]
    assert boxes(p16) == [("mass", *BOX["mass"], 1)] and p16["abnormality_types"] == "mass"
    assert boxes(p41) == [("calcification", *BOX["calcification"], 0)] and p41["abnormality_types"] == "calcification"
    assert (p16["cancer"], p16["benign"], p16["birads"], p41["cancer"], p41["benign"]) == (1, 0, 5, 0, 1)
    train_only = rows["Mass-Training_P_00041_LEFT_MLO"]  # its own (train) abnormalities, the patient's split
    assert boxes(train_only) == [("mass", *BOX["mass"], 0)] and train_only["split_group"] == "test"
    report = images.attrs["adapter_report"]
    assert (report["pool_splits"], report["labels_changed_by_pooling"], report["breasts_in_both_splits"]) == (
        False, 0, 2)


def test_cbis_one_csv_skips_every_roi_series(tmp_path: Path) -> None:
    """Only the mass training CSV: the Calc collection's ROI masks and crops are recognised by their folders."""
    mass = [r for r in cbis_rows("mass_case_description_train_set.csv") if r["patient_id"] == "P_00001"]
    calc = [r for r in cbis_rows("calc_case_description_train_set.csv") if r["patient_id"] in ("P_00005", "P_00016")]
    tree = cbis_tree(tmp_path, mass + calc, split_roi=("Calc-Training_P_00016_LEFT_CC_2",))
    label = tmp_path / "mass_case_description_train_set.csv"
    shutil.copy(REAL / f"cbis_{label.name}", label)

    images, skipped = run("cbis-ddsm", tree, label)
    rows = by_subject(images)
    assert set(rows) == {"Mass-Training_P_00001_LEFT_CC", "Calc-Training_P_00005_RIGHT_CC",
                         "Calc-Training_P_00016_LEFT_CC", "Calc-Training_P_00016_LEFT_MLO"}
    assert rows["Mass-Training_P_00001_LEFT_CC"]["labelled"]
    assert boxes(rows["Mass-Training_P_00001_LEFT_CC"]) == [("mass", *BOX["mass"], 1)]
    calc_full = rows["Calc-Training_P_00005_RIGHT_CC"]
    assert not calc_full["labelled"] and np.isnan(calc_full["cancer"]) and calc_full["split_group"] is None
    assert calc_full["patient_id"] == hash_id("P_00005", SALT)  # the woman, not the per-view TCIA subject
    derived = skipped[skipped["reason"].str.contains("ROI mask or cropped")]
    assert len(derived) == 8  # mask + crop of P_00001 L CC (listed), P_00005 R CC, P_00016 L CC (two series), L MLO
    report = images.attrs["adapter_report"]
    assert (report["roi_or_cropped_images"], report["roi_or_cropped_without_labels"],
            report["full_mammograms_not_in_labels"], report["unlabelled"]) == (8, 6, 3, 3)


def osirix_plist(rois: list[tuple[str, list[tuple[float, float]]]]) -> bytes:
    """An INbreast ROI file: the OsiriX plist keys (sorted, as in AllXML) with these ROI names and pixel points."""
    items = []
    for n, (name, points) in enumerate(rois):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        items.append({"Area": 0.0, "Center": f"{{{np.mean(xs):.6f}, {np.mean(ys):.6f}}}", "Dev": 0.0,
                      "IndexInImage": n, "Max": 0.0, "Mean": 0.0, "Min": 0.0, "Name": name,
                      "NumberOfPoints": len(points),
                      "Point_mm": [f"({x * 0.07:.6f}, {y * 0.07:.6f})" for x, y in points],
                      "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points], "Total": 0.0,
                      "Type": 19 if len(points) == 1 else 15})
    return plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(items), "ROIs": items}]})


def inbreast_tree(root: Path, table: str = "inbreast_sample.csv") -> Path:
    """AllDICOMs of two real INbreast patients, their table (as INbreast.csv/.xls) and AllXML."""
    dicoms = root / "AllDICOMs"
    files = {"20586908": ("6c613a14b80a8591", "R", "CC", "e1"), "20586960": ("6c613a14b80a8591", "R", "ML", "e1"),
             "20586934": ("6c613a14b80a8591", "L", "CC", "e1"), "20586986": ("6c613a14b80a8591", "L", "ML", "e1"),
             "50994273": ("cc9e66c5b31baab8", "R", "CC", "e2"), "50994354": ("cc9e66c5b31baab8", "R", "ML", "e2"),
             "50994408": ("cc9e66c5b31baab8", "R", "CC", "e2")}
    for number, (code, side, view, study) in files.items():
        write_test_dicom(dicoms / f"{number}_{code}_MG_{side}_{view}_ANON.dcm", np.full((ROWS, COLS), 100, np.uint16),
                         StudyInstanceUID=f"1.2.3.{study[-1]}", ImageLaterality=side, ViewPosition=None,
                         PatientID=code)
    suffix = Path(table).suffix
    shutil.copy(REAL / table, root / f"INbreast{suffix}")
    (root / "AllXML").mkdir()
    (root / "AllXML" / "50994273.xml").write_bytes(osirix_plist([("Mass", [(3, 4), (7, 4), (5, 9)])]))
    (root / "AllXML" / "50994408.xml").write_bytes(osirix_plist([("Calcification", [(10.5, 2)])]))
    (root / "AllXML" / "20586934.xml").write_bytes(osirix_plist([("Mass", [(1, 1), (2, 3)])]))
    return dicoms


def by_number(images: pd.DataFrame) -> dict[str, dict]:
    return {Path(r["relpath"]).name.split("_")[0]: r for r in images.to_dict("records")}


def test_inbreast_birads_is_breast_level_and_exclusive(tmp_path: Path) -> None:
    images, _ = run("inbreast", inbreast_tree(tmp_path))
    rows = by_number(images)
    low = rows["50994408"]  # R CC BI-RADS 2 beside R CC/MLO 4a of the same breast
    assert (low["cancer"], low["benign"], low["birads"], low["image_birads"], low["birads_raw"]) == (1, 0, 4, 2, "2")
    high = rows["50994273"]
    assert (high["cancer"], high["benign"], high["birads"], high["image_birads"], high["birads_raw"]) == (
        1, 0, 4, 4, "4a")
    benign = rows["20586908"]
    assert (benign["cancer"], benign["benign"], benign["birads"], benign["view"]) == (0, 1, 2, "CC")
    assert (rows["20586960"]["view"], rows["20586934"]["cancer"], rows["20586934"]["benign"]) == ("MLO", 1, 0)
    assert all(not (r["cancer"] == 1 and r["benign"] == 1) for r in rows.values())
    # a lesion is malignant by its own image's BI-RADS: the 2 image's calcification is not
    assert [(b["kind"], b["malignant"]) for b in json.loads(low["lesions"])] == [("Calcification", 0)]
    assert [(b["kind"], b["malignant"]) for b in json.loads(high["lesions"])] == [("Mass", 1)]
    report = images.attrs["adapter_report"]
    assert report["raised_to_breast_level"] == 0 and report["label_rows_without_image"] == 4


def test_inbreast_unreadable_xml_keeps_labels_and_warns(tmp_path: Path) -> None:
    dicoms = inbreast_tree(tmp_path)
    good = (tmp_path / "AllXML" / "50994273.xml").read_bytes()
    (tmp_path / "AllXML" / "50994273.xml").write_bytes(good[: len(good) // 2])  # truncated copy
    (tmp_path / "AllXML" / "20586934.xml").write_bytes(b"")  # empty file

    images, _ = run("inbreast", dicoms)
    rows = by_number(images)
    broken = rows["50994273"]
    assert (broken["cancer"], broken["birads"], broken["lesions"]) == (1, 4, "[]")
    assert "50994273.xml" in broken["warnings"] and "unreadable" in broken["warnings"]
    assert json.loads(rows["50994408"]["lesions"])  # the other files still read
    report = images.attrs["adapter_report"]
    assert report["xml_unreadable"] == 2 and report["xml_unreadable_files"] == ["20586934.xml", "50994273.xml"]


@pytest.mark.filterwarnings("ignore:The xlrd engine is deprecated")  # pandas 3 prefers calamine; xlrd still works
def test_inbreast_xls_real_rows(tmp_path: Path) -> None:
    pytest.importorskip("xlrd")
    images, _ = run("inbreast", inbreast_tree(tmp_path, "inbreast_sample.xls"))
    rows = by_number(images)
    assert images.attrs["adapter_report"]["label_file"].endswith("INbreast.xls")
    assert (rows["50994273"]["birads_raw"], rows["50994408"]["birads_raw"], rows["50994408"]["density"]) == (
        "4a", "2", "C")
    assert (rows["20586908"]["cancer"], rows["20586908"]["benign"], rows["20586908"]["density"]) == (0, 1, "B")


def test_xlrd_is_a_declared_dependency() -> None:
    """INbreast's original table is an .xls sheet: pandas reads it only with xlrd."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.replace(" ", "").startswith("xlrd>=2") for dep in project["dependencies"])


def test_inbreast_xls_without_xlrd_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dicoms = inbreast_tree(tmp_path, "inbreast_sample.xls")
    monkeypatch.setitem(sys.modules, "xlrd", None)  # import xlrd -> ImportError
    with pytest.raises(MissingDependencyError) as err:
        run("inbreast", dicoms)
    message = str(err.value)
    assert "INbreast.xls" in message and "xlrd" in message and "\n" not in message


def test_real_rows_fixtures_are_the_published_formats() -> None:
    """The fixtures keep the published headers (CBIS mass: breast_density; calc: breast density; INbreast: ';')."""
    mass = pd.read_csv(REAL / "cbis_mass_case_description_train_set.csv", dtype=str)
    calc = pd.read_csv(REAL / "cbis_calc_case_description_test_set.csv", dtype=str)
    assert list(mass.columns)[:2] == ["patient_id", "breast_density"] and "mass margins" in mass.columns
    assert list(calc.columns)[:2] == ["patient_id", "breast density"] and "calc distribution" in calc.columns
    assert mass["ROI mask file path"].str.endswith("000001.dcm\n").all()
    head = io.StringIO((REAL / "inbreast_sample.csv").read_text()).readline().strip()
    assert head == "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
