"""`mammokit index` on a synthetic archive with bad files mixed in: rows, hashed ids, labels, lesions, skipped table."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from dicom_factory import write_test_dicom
from mammokit.cli import app
from mammokit.datasets.index import build_index, write_index
from mammokit.synth import PHI_PATTERNS, generate

EXAMS = 3
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
FACTORY_PHI = ("Doe^Jane", "PAT-0001", "19600101")  # what tests/dicom_factory.py writes into every file


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-exam synth archive plus a duplicate, a CT image, a garbage file and an empty file."""
    root = tmp_path_factory.mktemp("index") / "raw"
    generate(root, exams=EXAMS, seed=3, size_scale=0.1)
    first = sorted((root / "dicom").rglob("*.dcm"))[0]
    extra = root / "dicom" / "zz_extra"  # sorts after the synth folders: the copy is the second occurrence
    extra.mkdir()
    bad = {
        "duplicate": Path(shutil.copy(first, extra / "copy_of_first.dcm")),
        "ct": write_test_dicom(extra / "ct.dcm", pd.DataFrame([[1, 2], [3, 4]]).to_numpy().astype("uint16"),
                               modality="CT", sop_class=CT_IMAGE_STORAGE, BodyPartExamined="CHEST"),
        "garbage": extra / "garbage.dcm",
        "empty": extra / "empty",
    }
    bad["garbage"].write_bytes(bytes(range(256)) * 7)
    bad["empty"].write_bytes(b"")
    return {"root": root, "first": first, **bad}


@pytest.fixture(scope="module")
def indexed(archive: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                           str, str]:
    """The written index and skipped table, read back, plus their raw text."""
    out = tmp_path_factory.mktemp("index_out") / "images.parquet"
    images_path, skipped_path = write_index(build_index(archive["root"], adapter="synth"), out)
    assert skipped_path == out.with_name("images.skipped.csv")
    images = pd.read_parquet(images_path)
    skipped = pd.read_csv(skipped_path)
    return images, skipped, images.to_csv(), skipped_path.read_text()


def test_one_row_per_image(indexed: tuple, archive: dict[str, Path]) -> None:
    images, *_ = indexed
    assert len(images) == 4 * EXAMS
    assert images["image_id"].is_unique and images["sop_uid"].is_unique
    assert images["exam_id"].nunique() == EXAMS and images["patient_id"].nunique() == EXAMS
    assert sorted(images.groupby("exam_id").size()) == [4] * EXAMS
    assert set(zip(images["laterality"], images["view"], strict=True)) == {("L", "CC"), ("L", "MLO"), ("R", "CC"),
                                                                           ("R", "MLO")}
    assert str(archive["first"].resolve()) in set(images["path"])  # the first occurrence of the duplicate is kept


def test_ids_are_hashed_and_no_phi_anywhere(indexed: tuple, archive: dict[str, Path]) -> None:
    images, _, images_text, skipped_text = indexed
    labels = pd.read_csv(archive["root"] / "labels.csv", dtype=str)
    raw_patient_ids = set(labels["patient_id"])
    assert all(re.fullmatch(r"[0-9a-f]{20}", v) for v in images["patient_id"]), "patient ids must be salted hashes"
    assert all(re.fullmatch(r"[0-9a-f]{20}", v) for v in images["exam_id"])
    assert not raw_patient_ids & set(images["exam_id"]) and not set(labels["study_uid"]) & set(images["exam_id"])
    for text in (images_text, skipped_text):
        for tag, pattern in PHI_PATTERNS.items():
            assert not re.search(pattern, text), f"{tag} leaked"
        for value in FACTORY_PHI:
            assert value not in text
    # synth names case folders by index, so not even the file paths carry the PatientID (a user's own PACS export
    # may name folders by patient: those paths are theirs, and only `path`/`relpath` could show it)
    everything = images.to_csv()
    for pid in raw_patient_ids:
        assert pid not in everything


def test_labels_match_labels_csv(indexed: tuple, archive: dict[str, Path]) -> None:
    images, *_ = indexed
    labels = pd.read_csv(archive["root"] / "labels.csv", dtype={"study_uid": str})
    assert labels["cancer"].any() or EXAMS < 2
    truth = {(r.study_uid, r.laterality): r for r in labels.itertuples()}
    for row in images.itertuples():
        t = truth[(row.study_uid, row.laterality)]
        assert (row.cancer, row.benign, row.birads, row.density) == (t.cancer, t.benign, t.birads, t.density)


def test_lesions_match_lesions_csv(indexed: tuple, archive: dict[str, Path]) -> None:
    images, *_ = indexed
    lesions = pd.read_csv(archive["root"] / "lesions.csv", dtype={"sop_uid": str, "lesion_id": str})
    assert len(lesions) > 0
    n = 0
    for row in images.itertuples():
        got = sorted((d["lesion_id"], d["x0"], d["y0"], d["x1"], d["y1"], d["malignant"], d["kind"])
                     for d in json.loads(row.lesions))
        want = sorted((r.lesion_id, float(r.x0), float(r.y0), float(r.x1), float(r.y1), int(r.malignant), r.kind)
                      for r in lesions[lesions["sop_uid"] == row.sop_uid].itertuples())
        assert got == want
        n += len(got)
    assert n == len(lesions)
    assert all(Path(p).is_file() for p in images["truth_breast_mask"])


def test_bad_files_are_listed_with_reasons(indexed: tuple, archive: dict[str, Path]) -> None:
    _, skipped, *_ = indexed
    reasons = {Path(p).name: r for p, r in zip(skipped["path"], skipped["reason"], strict=True)}
    assert set(reasons) == {"copy_of_first.dcm", "ct.dcm", "garbage.dcm", "empty"}
    assert reasons["copy_of_first.dcm"].startswith("duplicate SOP Instance UID")
    assert str(archive["first"].resolve()) in reasons["copy_of_first.dcm"]
    assert reasons["ct.dcm"] == "Modality CT is not mammography"
    assert reasons["garbage.dcm"].startswith("not a DICOM file")
    assert reasons["empty"] == "empty file"


def test_refusals_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_index(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        build_index(tmp_path, adapter="nope")
    write_test_dicom(tmp_path / "a.dcm", pd.DataFrame([[1, 2]]).to_numpy().astype("uint16"))
    with pytest.raises(FileNotFoundError, match=r"labels\.csv"):
        build_index(tmp_path, adapter="synth")


def test_generic_adapter_joins_a_label_file(tmp_path: Path) -> None:
    path = write_test_dicom(tmp_path / "dcm" / "a.dcm", pd.DataFrame([[1, 2]]).to_numpy().astype("uint16"))
    sop = build_index(tmp_path / "dcm").images["sop_uid"].iloc[0]
    pd.DataFrame({"sop_uid": [sop], "cancer": [1]}).to_csv(tmp_path / "labels.csv", index=False)
    images = build_index(tmp_path / "dcm", labels=tmp_path / "labels.csv").images
    assert images["cancer"].tolist() == [1] and images["lesions"].tolist() == ["[]"]
    assert images["path"].tolist() == [str(path.resolve())]


def test_cli_prints_speed(archive: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["index", str(archive["root"]), "--out", str(tmp_path / "i.parquet"),
                                      "--adapter", "synth"])
    assert result.exit_code == 0, result.output
    assert f"{4 * EXAMS} images in {EXAMS} exams" in result.output and "4 skipped" in result.output
    assert re.search(r"\d+ images/s", result.output)
