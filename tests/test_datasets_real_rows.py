"""Adapters on real label rows: RSNA `train_folds.csv` and VinDr-Mammo's annotation CSVs, header row and rows copied
verbatim into tests/data/real_rows/, joined onto tiny DICOM trees in each dataset's real layout. Also the shared
parsing rules (booleans, split names, separators), the scan's skipped suffixes and the reader's UID leniency."""

from __future__ import annotations

import csv
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from dicom_factory import write_test_dicom
from mammokit.datasets.index import scan
from mammokit.datasets.public import PUBLIC_ADAPTERS
from mammokit.datasets.public_common import boolean, canonical_split, read_table, sniff_separator
from mammokit.dicom import hash_id, read_dicom

REAL = Path(__file__).parent / "data" / "real_rows"
SALT = "test-salt"
UID_WARNING = "UIDs are not DICOM UIDs (e.g. hex digests): kept as given"


def real_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@contextmanager
def lenient_writing() -> Iterator[None]:
    """VinDr's hex UIDs are not valid UI values: let the test writer store them as given (pydicom checks a value set
    on a dataset with the reading mode, and again on writing)."""
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = previous


def write_vindr(path: Path, row: dict[str, str]) -> Path:
    """A tiny DICOM for one breast-level row: the label grid divided by 100, hex ids as UIDs, no PatientID."""
    shape = (round(int(row["height"]) / 100), round(int(row["width"]) / 100))
    with lenient_writing():
        return write_test_dicom(path, np.full(shape, 100, np.uint16), StudyInstanceUID=row["study_id"],
                                SeriesInstanceUID=row["series_id"], SOPInstanceUID=row["image_id"],
                                ImageLaterality=row["laterality"], ViewPosition=row["view_position"], PatientID=None)


def test_cell_rules() -> None:
    cells = ("True", "false", "1", "0", "YES", "no", "1.0", 0.0, True)
    assert [boolean(v) for v in cells] == [1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert np.isnan(boolean("")) and np.isnan(boolean(None)) and np.isnan(boolean("maybe"))
    assert [canonical_split(v) for v in ("training", "Train", "validation", "val", "valid", "dev", "test",
                                         "Testing", "fold1", None)] == [
        "train", "train", "val", "val", "val", "val", "test", "test", None, None]


@pytest.mark.parametrize(("header", "sep"), [("a,b;c,d", ","), ("ID1;LeftRight;Age", ";"), ("x\ty\tz", "\t"),
                                             ('"a;b",c', ","), ("single", ",")])
def test_sniff_separator(tmp_path: Path, header: str, sep: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(f"{header}\n1,2\n")
    assert sniff_separator(path) == sep


def test_rsna_real_rows(tmp_path: Path) -> None:
    labels = REAL / "rsna" / "train_folds.csv"
    rows = real_rows(labels)
    img = tmp_path / "train_images"
    for row in rows[:-1]:  # the last label row has no image
        pid = row["patient_id"]
        uid = f"1.2.840.10009.1.2.3.{pid}"
        write_test_dicom(img / pid / f"{row['image_id']}.dcm", np.full((8, 6), 100, np.uint16), modality=None,
                         PatientID=pid, StudyInstanceUID=uid, SeriesInstanceUID=f"{uid}.1",
                         SOPInstanceUID=f"{uid}.1.{row['image_id']}", ImageLaterality=row["laterality"],
                         ViewPosition=None)

    result = PUBLIC_ADAPTERS["rsna"](scan(img, salt=SALT), img, labels, salt=SALT)
    images = result.images.set_index("source_image_id")
    assert images["labelled"].all() and len(images) == len(rows) - 1
    assert images.loc["174010701", "difficult_negative_case"] == 1  # "True" in the real file
    assert images.loc["462822612", "difficult_negative_case"] == 0  # "False"
    assert images.loc["106495931", "view"] == "AT" and images.loc["840036202", "view"] == "ML"
    assert (images.loc["106495931", "cancer"], images.loc["106495931", "age"]) == (1, 74)
    assert images.loc["462822612", "patient_id"] == hash_id("10006", SALT)
    report = images.attrs["adapter_report"]
    assert report["views_other"] == {"AT": 2, "ML": 1}  # 1846823045 (ML) is the label row without an image
    assert report["label_rows_without_image"] == 1 and report["view_from_labels"] == len(rows) - 1


def test_vindr_real_rows(tmp_path: Path) -> None:
    breast = real_rows(REAL / "vindr" / "breast-level_annotations.csv")
    root = tmp_path / "images"
    for row in breast:
        write_vindr(root / row["study_id"] / f"{row['image_id']}.dicom", row)

    result = PUBLIC_ADAPTERS["vindr"](scan(root, salt=SALT), root, REAL / "vindr", salt=SALT)
    images = result.images.set_index("source_image_id")
    assert images["labelled"].all() and result.skipped.empty
    assert set(images["split_group"]) == {"train", "test"}
    assert images.loc["6e0cfd8cdae637f4613868dbbc34b453", "split_group"] == "test"
    boxes = {i: json.loads(v) for i, v in images["lesions"].items()}
    for i, found in boxes.items():  # every box lies inside the DICOM grid and has an area
        cols, rows = images.loc[i, "columns"], images.loc[i, "rows"]
        assert all(0 <= b["x0"] < b["x1"] <= cols and 0 <= b["y0"] < b["y1"] <= rows for b in found), i
    mass = boxes["dc4694b543793f89c7003f4d52adbbcb"][1]  # xmin -6.25 on the 2800-wide grid
    assert mass["x0"] == 0 and mass["x1"] == pytest.approx(1.8051100158691) and mass["malignant"] == 1
    assert boxes["39db902f8a8c3bba8778f74e5e2b9d76"][0]["x1"] == 28  # xmax 2800.43 of 2800
    assert boxes["b723b49547d7fae7e4117db8d93a4fdf"][0]["y0"] == 0  # ymin -5.22
    assert boxes["dedfb81e153d26380398a5fae3e9faad"][0]["x0"] == 0  # xmin -26.84
    assert boxes["eb03cb74f0b510e45b4ee85c9efa35a7"] == []  # 'No Finding'
    report = images.attrs["adapter_report"]
    assert (report["boxes_clipped"], report["boxes_dropped"], report["lesions"]) == (5, 0, 12)
    assert "clipped" in images.loc["39db902f8a8c3bba8778f74e5e2b9d76", "warnings"]
    assert all(UID_WARNING in w for w in images["warnings"])
    assert report["patient_id_from_study"] == len(breast) and report["patients_split_unified"] == 0
    assert images.loc["dc4694b543793f89c7003f4d52adbbcb", "patient_id"] == hash_id("57674c2def92287668ed5bc51092fbef",
                                                                                   SALT)


def test_hex_uids_read_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    row = real_rows(REAL / "vindr" / "breast-level_annotations.csv")[0]
    path = write_vindr(tmp_path / "x.dicom", row)
    mode = pydicom.config.settings.reading_validation_mode
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_dicom(path, keep_ids=True)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pydicom")] == []
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    assert image.warnings.count(UID_WARNING) == 1 and image.sop_uid == row["image_id"]
    assert pydicom.config.settings.reading_validation_mode == mode  # restored for the rest of the process
    valid = write_test_dicom(tmp_path / "y.dcm", np.full((4, 4), 1, np.uint16))
    assert UID_WARNING not in read_dicom(valid, pixels=False).warnings


def test_label_and_metadata_files_are_not_scanned(tmp_path: Path) -> None:
    root = tmp_path / "INbreast"
    write_test_dicom(root / "AllDICOMs" / "22678622_d8ca4b3f5a4f5b6e_MG_R_CC_ANON.dcm", np.full((4, 4), 1, np.uint16))
    for name in ("AllXML/22678622.xml", "AllROI/22678622.roi", "INbreast.xls", "INbreast.xlsx", "README.pdf",
                 "notes.docx", "labels.tsv", "index.html", "run.log", "Thumbs.db"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not a DICOM file\n")
    result = scan(root, salt=SALT)
    assert len(result.images) == 1 and result.skipped.empty, result.skipped.to_dict("records")


def test_semicolon_export_of_real_header(tmp_path: Path) -> None:
    """A `;` re-export of the real VinDr breast-level rows reads like the original (every adapter uses read_table)."""
    table = pd.read_csv(REAL / "vindr" / "breast-level_annotations.csv", dtype=str)
    semi = tmp_path / "breast-level_annotations.csv"
    table.to_csv(semi, sep=";", index=False)
    assert sniff_separator(semi) == ";" and read_table(semi).equals(table)
