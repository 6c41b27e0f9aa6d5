"""Public-dataset adapters on tiny fakes of each dataset's real layout: joined labels, unlabelled counts, boxes, ids."""

from __future__ import annotations

import json
import plistlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.uid import generate_uid

from dicom_factory import write_test_dicom
from mammokit.datasets.index import scan
from mammokit.datasets.public import PUBLIC_ADAPTERS
from mammokit.datasets.public_common import density_letter, number
from mammokit.dicom import hash_id

SALT = "test-salt"
ROWS, COLS = 16, 12


def dcm(path: Path, *, study: str, pixels: np.ndarray | None = None, **tags: object) -> Path:
    """A small MG DICOM with the given study and tags (None removes a tag)."""
    arr = pixels if pixels is not None else np.full((ROWS, COLS), 100, np.uint16)
    return write_test_dicom(path, arr, StudyInstanceUID=generate_uid(entropy_srcs=[study]),
                            SeriesInstanceUID=tags.pop("SeriesInstanceUID", generate_uid(entropy_srcs=[str(path)])),
                            **tags)


def run(name: str, root: Path, labels: Path | None = None, **kwargs: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    result = PUBLIC_ADAPTERS[name](scan(root, salt=SALT), root, labels, salt=SALT, **kwargs)
    return result.images, result.skipped


def by_file(images: pd.DataFrame) -> dict[str, dict]:
    return {Path(r["relpath"]).name: r for r in images.to_dict("records")}


def assert_no_raw(images: pd.DataFrame, raw: list[str]) -> None:
    """No cell outside the columns only the local index keeps (file locations, raw UIDs) contains a raw patient id or
    name. (The test's generated UIDs are long random numbers: one could contain a short patient id by chance.)"""
    local = ["path", "relpath", "study_uid", "series_uid", "sop_uid"]
    text = [str(v) for v in images.drop(columns=[c for c in local if c in images.columns]).to_numpy().ravel()]
    for value in raw:
        assert not any(value in cell for cell in text), value


def test_cell_parsers() -> None:
    assert number("BI-RADS 4") == 4 and number("4c") == 4 and number("3.0") == 3 and np.isnan(number(""))
    assert [density_letter(v) for v in ("DENSITY C", "A", "3", 4.0, None)] == ["C", "A", "C", "D", None]


def test_rsna(tmp_path: Path) -> None:
    img = tmp_path / "train_images"
    dcm(img / "10006" / "111.dcm", study="e1", PatientID="10006", ImageLaterality=None, ViewPosition=None,
        Modality=None)
    dcm(img / "10006" / "112.dcm", study="e1", PatientID="10006", ImageLaterality="L", ViewPosition="MLO")
    dcm(img / "10006" / "113.dcm", study="e1", PatientID="10006", ImageLaterality="R", ViewPosition="CC")
    dcm(img / "20007" / "211.dcm", study="e2", PatientID="20007")
    pd.DataFrame({
        "site_id": [2, 2, 2, 1], "patient_id": [10006, 10006, 10006, 30008], "image_id": [111, 112, 113, 999],
        "laterality": ["L", "L", "R", "L"], "view": ["CC", "MLO", "CC", "CC"], "age": [61, 61, 61, 50],
        "cancer": [1, 0, 0, 0], "biopsy": [1, 0, 1, 0], "invasive": [1, 0, 0, 0], "BIRADS": [0, None, 2, 1],
        "implant": [0, 0, 0, 0], "density": ["B", "B", None, "A"], "machine_id": [49, 49, 49, 21],
        "difficult_negative_case": [False, False, True, False],
    }).to_csv(tmp_path / "train.csv", index=False)

    images, _ = run("rsna", img)
    rows = by_file(images)
    assert rows["111.dcm"]["cancer"] == 1 and rows["112.dcm"]["cancer"] == 1  # CSV 0 raised to the breast's 1
    assert rows["113.dcm"]["cancer"] == 0 and rows["113.dcm"]["benign"] == 1 and rows["111.dcm"]["benign"] == 0
    assert rows["111.dcm"]["birads"] == 0 and rows["113.dcm"]["birads"] == 2
    assert rows["111.dcm"]["density"] == "B" and rows["111.dcm"]["site"] == "rsna-site2"
    assert (rows["111.dcm"]["laterality"], rows["111.dcm"]["view"]) == ("L", "CC")
    assert rows["111.dcm"]["view_source"] == "rsna labels" and "laterality taken from" in rows["111.dcm"]["warnings"]
    assert not rows["211.dcm"]["labelled"] and np.isnan(rows["211.dcm"]["cancer"]) and rows["211.dcm"]["site"] is None
    assert rows["111.dcm"]["patient_id"] == hash_id("10006", SALT)
    report = images.attrs["adapter_report"]
    assert (report["labelled"], report["unlabelled"], report["label_rows_without_image"]) == (3, 1, 1)
    assert report["patient_id_replaced"] == 0  # the label id hashes exactly like the header's PatientID
    assert report["raised_to_breast_level"] >= 1
    assert rows["113.dcm"]["difficult_negative_case"] == 1 and rows["111.dcm"]["difficult_negative_case"] == 0
    assert rows["111.dcm"]["age"] == 61 and np.isnan(rows["211.dcm"]["difficult_negative_case"])
    assert_no_raw(images, ["10006", "20007", "Doe^Jane", "PAT-0001"])


def test_vindr(tmp_path: Path) -> None:
    dcm(tmp_path / "images" / "s1" / "a1.dicom", study="s1", ImageLaterality="L", ViewPosition="CC")
    dcm(tmp_path / "images" / "s1" / "a2.dicom", study="s1", ImageLaterality="R", ViewPosition="CC")
    dcm(tmp_path / "images" / "s2" / "b1.dicom", study="s2")
    dcm(tmp_path / "images" / "s3" / "c1.dicom", study="s3", PatientID="PAT-0003", ImageLaterality="L")
    dcm(tmp_path / "images" / "s4" / "d1.dicom", study="s4", PatientID="PAT-0003", ImageLaterality="L")
    common = {"study_id": ["s1", "s1", "s3", "s4"], "series_id": ["x", "x", "y", "z"],
              "image_id": ["a1", "a2", "c1", "d1"], "laterality": ["L", "R", "L", "L"],
              "view_position": ["CC", "CC", "CC", "CC"], "height": [2 * ROWS, ROWS, ROWS, ROWS],
              "width": [2 * COLS, COLS, COLS, COLS], "breast_birads": ["BI-RADS 4", "BI-RADS 1", "BI-RADS 1",
                                                                      "BI-RADS 1"],
              "breast_density": ["DENSITY C"] * 4, "split": ["training", "training", "training", "test"]}
    pd.DataFrame(common).to_csv(tmp_path / "breast-level_annotations.csv", index=False)
    findings = pd.DataFrame({k: [v[0], v[0], v[0], v[0], v[1]] for k, v in common.items()})
    findings["finding_categories"] = ["['Mass']", "['Suspicious Calcification', 'Mass']", "['Mass']", "['Mass']",
                                      "['No Finding']"]
    findings["finding_birads"] = ["BI-RADS 4", "BI-RADS 3", "BI-RADS 3", "BI-RADS 3", None]
    findings[["xmin", "ymin", "xmax", "ymax"]] = [[4.0, 6.0, 20.0, 24.0], [0.0, 0.0, 2.0, 2.0],
                                                  [30.0, 40.0, 60.0, 50.0], [-4.0, 28.0, 8.0, 40.0], [None] * 4]
    findings.to_csv(tmp_path / "finding_annotations.csv", index=False)

    images, _ = run("vindr", tmp_path / "images")
    rows = by_file(images)
    a1, a2 = rows["a1.dicom"], rows["a2.dicom"]
    assert (a1["cancer"], a1["benign"], a1["birads"], a1["density"]) == (1, 0, 4, "C")
    assert (a2["cancer"], a2["benign"], a2["split_group"]) == (0, 0, "train")
    lesions = json.loads(a1["lesions"])  # label grid is twice the header grid: boxes halved, then clipped to 12x16
    assert [(b["x0"], b["y0"], b["x1"], b["y1"], b["malignant"]) for b in lesions] == [
        (2, 3, 10, 12, 1), (0, 0, 1, 1, 0), (0, 14, 4, 16, 0)]
    assert lesions[1]["kind"] == "Suspicious Calcification, Mass" and json.loads(a2["lesions"]) == []
    assert "1 VinDr box(es) clipped" in a1["warnings"] and "1 VinDr box(es) outside the image dropped" in a1["warnings"]
    assert not rows["b1.dicom"]["labelled"] and images.attrs["adapter_report"]["size_mismatch"] == 1
    report = images.attrs["adapter_report"]
    assert (report["unlabelled"], report["boxes_clipped"], report["boxes_dropped"]) == (1, 1, 1)
    # PAT-0003's studies sit in both official splits: the patient is moved to test as a whole
    assert rows["c1.dicom"]["split_group"] == rows["d1.dicom"]["split_group"] == "test"
    assert report["patients_split_unified"] == 1 and "split" in rows["c1.dicom"]["warnings"]


def _cbis_paths(subject: str, series: str, name: str = "000000.dcm") -> str:
    return f"{subject}/1.2.3.study/{series}/{name}"


def test_cbis_ddsm(tmp_path: Path) -> None:
    tree = tmp_path / "CBIS-DDSM"
    uid = {k: generate_uid(entropy_srcs=[k]) for k in ("mass", "mass_roi", "calc", "calc_roi", "p2", "p2_roi")}
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[4:8, 2:6] = 255
    calc_mask = np.zeros((ROWS, COLS), np.uint8)
    calc_mask[10:12, 8:10] = 255
    no_side = {"ImageLaterality": None, "ViewPosition": None}
    s1, c1, s2 = "Mass-Training_P_00001_LEFT_CC", "Calc-Training_P_00001_LEFT_CC", "Mass-Test_P_00002_RIGHT_MLO"
    dcm(tree / s1 / "07-20-2016-DDSM-1" / "1.0-full" / "1-1.dcm", study=s1, SeriesInstanceUID=uid["mass"],
        PatientID=s1, **no_side)
    dcm(tree / f"{s1}_1" / "d" / "1.0-roi" / "1-1.dcm", study=f"{s1}_1", SeriesInstanceUID=uid["mass_roi"],
        pixels=mask, PatientID=f"{s1}_1", **no_side)
    dcm(tree / f"{s1}_1" / "d" / "1.0-roi" / "1-2.dcm", study=f"{s1}_1", SeriesInstanceUID=uid["mass_roi"],
        pixels=np.full((4, 4), 9, np.uint8), PatientID=f"{s1}_1", **no_side)
    dcm(tree / c1 / "d" / "1.0-full" / "1-1.dcm", study=c1, SeriesInstanceUID=uid["calc"], PatientID=c1, **no_side)
    dcm(tree / f"{c1}_1" / "d" / "1.0-roi" / "1-1.dcm", study=f"{c1}_1", SeriesInstanceUID=uid["calc_roi"],
        pixels=calc_mask, PatientID=f"{c1}_1", **no_side)
    dcm(tree / s2 / "d" / "1.0-full" / "1-1.dcm", study=s2, SeriesInstanceUID=uid["p2"], PatientID=s2, **no_side)
    dcm(tree / "Other" / "1-1.dcm", study="other")

    def rows(subject: str, key: str, **extra: object) -> dict:
        pid, side, view = subject.split("_", 1)[1].rsplit("_", 2)
        return {"patient_id": pid, "left or right breast": side,
                "image view": view, "abnormality id": 1,
                "image file path": _cbis_paths(subject, uid[key]),
                "cropped image file path": _cbis_paths(f"{subject}_1", uid[f"{key}_roi"]),
                "ROI mask file path": _cbis_paths(f"{subject}_1", uid[f"{key}_roi"], "000001.dcm\n"), **extra}

    pd.DataFrame([rows(s1, "mass", breast_density=3, **{"abnormality type": "mass", "assessment": 4,
                                                         "pathology": "MALIGNANT"})]
                 ).to_csv(tmp_path / "mass_case_description_train_set.csv", index=False)
    pd.DataFrame([rows(c1, "calc", **{"breast density": 3, "abnormality type": "calcification", "assessment": 3,
                                      "pathology": "BENIGN"})]
                 ).to_csv(tmp_path / "calc_case_description_train_set.csv", index=False)
    pd.DataFrame([rows(s2, "p2", breast_density=1, **{"abnormality type": "mass", "assessment": 2,
                                                       "pathology": "BENIGN_WITHOUT_CALLBACK"})]
                 ).to_csv(tmp_path / "mass_case_description_test_set.csv", index=False)

    images, skipped = run("cbis-ddsm", tree)
    assert len(images) == 3  # P_00001 L CC (one of two copies), P_00002 R MLO, the unlisted image
    p1 = images[images["relpath"].str.contains("P_00001")].iloc[0]
    assert (p1["cancer"], p1["benign"], p1["birads"], p1["density"], p1["split_group"]) == (1, 1, 4, "C", "train")
    assert (p1["laterality"], p1["view"]) == ("L", "CC")
    boxes = sorted((b["x0"], b["y0"], b["x1"], b["y1"], b["kind"], b["malignant"]) for b in json.loads(p1["lesions"]))
    assert boxes == [(2, 4, 6, 8, "mass", 1), (8, 10, 10, 12, "calcification", 0)]
    assert p1["patient_id"] == hash_id("P_00001", SALT)
    p2 = images[images["relpath"].str.contains("P_00002")].iloc[0]
    assert (p2["cancer"], p2["benign"], p2["split_group"], p2["lesions"]) == (0, 1, "test", "[]")
    assert p2["exam_id"] != p1["exam_id"] and p2["patient_id"] == hash_id("P_00002", SALT)
    reasons = skipped["reason"].tolist()
    assert sum("ROI mask or cropped" in r for r in reasons) == 3 and sum("duplicate of" in r for r in reasons) == 1
    report = images.attrs["adapter_report"]
    assert (report["unlabelled"], report["lesions_without_box"], report["duplicates_merged"]) == (1, 1, 1)
    assert_no_raw(images, ["P_00001", "P_00002", "Doe^Jane", "PAT-0001"])


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".csv", ";"), (".xlsx", None)])
def test_cmmd(tmp_path: Path, suffix: str, sep: str | None) -> None:
    if suffix == ".xlsx":
        pytest.importorskip("openpyxl")
    tree = tmp_path / "CMMD"
    dcm(tree / "D1-0001" / "st" / "se" / "1-1.dcm", study="d1", PatientID="D1-0001", ImageLaterality="L")
    dcm(tree / "D1-0001" / "st" / "se" / "1-2.dcm", study="d1", PatientID="D1-0001", ImageLaterality="L",
        ViewPosition="MLO")
    dcm(tree / "D1-0001" / "st" / "se" / "1-3.dcm", study="d1", PatientID="D1-0001", ImageLaterality="R")
    dcm(tree / "misc" / "x.dcm", study="d2", PatientID="D2-0002", ImageLaterality="R")
    table = pd.DataFrame({"ID1": ["D1-0001", "D2-0002", "D3-0003"], "LeftRight": ["L", "R", "L"], "Age": [44, 51, 60],
                          "number": [2, 2, 2], "abnormality": ["mass", "calcification", "both"],
                          "classification": ["Malignant", "Benign", "Benign"], "subtype": ["Luminal A", None, None]})
    label = tmp_path / f"CMMD_clinicaldata_revision{suffix}"
    table.to_csv(label, index=False, sep=sep) if sep else table.to_excel(label, index=False)  # ";": a European export

    images, _ = run("cmmd", tree)
    rows = {(Path(r["relpath"]).parts[0], Path(r["relpath"]).name): r for r in images.to_dict("records")}
    left = rows[("D1-0001", "1-1.dcm")]
    assert (left["cancer"], left["benign"], left["subtype"], left["age"]) == (1, 0, "Luminal A", 44)
    assert rows[("D1-0001", "1-2.dcm")]["cancer"] == 1
    right = rows[("D1-0001", "1-3.dcm")]
    assert not right["labelled"] and np.isnan(right["cancer"]) and right["patient_id"] == hash_id("D1-0001", SALT)
    other = rows[("misc", "x.dcm")]  # no id in the path: matched through the header PatientID hash
    assert (other["cancer"], other["benign"], other["site"]) == (0, 1, "cmmd")
    report = images.attrs["adapter_report"]
    assert (report["label_rows_without_image"], report["listed_patient_unlisted_breast"],
            report["patient_from_header"], report["unlabelled"]) == (1, 1, 1, 1)
    assert_no_raw(images, ["D1-0001", "D2-0002", "D3-0003", "Doe^Jane"])


def test_inbreast(tmp_path: Path) -> None:
    """Real INbreast.csv rows (one breast: R CC 4a, R MLO 4a, R CC 2) and a real file name the table does not list."""
    dicoms = tmp_path / "AllDICOMs"
    dcm(dicoms / "50994273_cc9e66c5b31baab8_MG_R_CC_ANON.dcm", study="i1", ImageLaterality="R", ViewPosition="CC")
    dcm(dicoms / "50994354_cc9e66c5b31baab8_MG_R_ML_ANON.dcm", study="i1", ImageLaterality="R", ViewPosition=None)
    dcm(dicoms / "50994408_cc9e66c5b31baab8_MG_R_CC_ANON.dcm", study="i1", ImageLaterality="R", ViewPosition="CC")
    dcm(dicoms / "22678622_61b13c59bcba149e_MG_R_CC_ANON.dcm", study="i2", ImageLaterality="R")
    (tmp_path / "INbreast.csv").write_text(
        "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\n"
        "removed;removed;R;CC;200901;50994273;3;4a\nremoved;removed;R;MLO;200901;50994354;3;4a\n"
        "removed;removed;R;CC;200901;50994408;3;2\n")
    roi = {"Images": [{"ROIs": [
        {"Name": "Mass", "IndexInImage": 0, "Point_px": ["(3, 4)", "(7, 4)", "(5, 9)"]},
        {"Name": "Calcification", "IndexInImage": 1, "Point_px": ["(10.5, 2)"]}]}]}
    (tmp_path / "AllXML").mkdir()
    with (tmp_path / "AllXML" / "50994273.xml").open("wb") as fh:
        plistlib.dump(roi, fh)

    images, _ = run("inbreast", dicoms)
    rows = by_file(images)
    cc, mlo = rows["50994273_cc9e66c5b31baab8_MG_R_CC_ANON.dcm"], rows["50994354_cc9e66c5b31baab8_MG_R_ML_ANON.dcm"]
    low = rows["50994408_cc9e66c5b31baab8_MG_R_CC_ANON.dcm"]
    assert (cc["cancer"], cc["benign"], cc["birads"], cc["birads_raw"], cc["density"]) == (1, 0, 4, "4a", "C")
    assert (mlo["cancer"], mlo["birads"], mlo["birads_raw"], mlo["view"]) == (1, 4, "4a", "MLO")
    assert (low["cancer"], low["benign"], low["birads"], low["image_birads"]) == (1, 0, 4, 2)  # breast level
    assert [(b["x0"], b["y0"], b["x1"], b["y1"], b["kind"]) for b in json.loads(cc["lesions"])] == [
        (3, 4, 8, 10, "Mass"), (10.5, 2, 11.5, 3, "Calcification")]
    assert cc["patient_id"] == mlo["patient_id"] == hash_id("cc9e66c5b31baab8", SALT)
    assert images.attrs["adapter_report"]["unlabelled"] == 1
    assert_no_raw(images, ["cc9e66c5b31baab8", "Doe^Jane", "PAT-0001"])


def test_bad_label_files(tmp_path: Path) -> None:
    dcm(tmp_path / "img" / "1" / "2.dcm", study="e")
    result = scan(tmp_path / "img", salt=SALT)
    with pytest.raises(FileNotFoundError, match=r"train\.csv"):
        PUBLIC_ADAPTERS["rsna"](result, tmp_path / "img", None)
    (tmp_path / "train.csv").write_text("patient_id,image_id\n1,2\n")
    with pytest.raises(ValueError, match=r"train\.csv: missing column"):
        PUBLIC_ADAPTERS["rsna"](result, tmp_path / "img", tmp_path / "train.csv")
    bad = tmp_path / "cmmd.csv"
    bad.write_text("ID1,LeftRight,classification\nD1-0001,L,Maybe\n")
    with pytest.raises(ValueError, match="Benign or Malignant"):
        PUBLIC_ADAPTERS["cmmd"](result, tmp_path / "img", bad)
