"""`pacs.node.process_study` and `pacs.results` end to end: a tiny released model predicts one synthetic four-view
study, and the SR, SEG and SC objects written back are valid DICOM (dicom3tools' `dciodvfy`), readable by highdicom,
in the source study, referencing the source images by their UIDs, and carry prediction.json's numbers.

`dciodvfy` is skipped when not installed, unless MAMMOKIT_REQUIRE_DICOM3TOOLS=1 (CI sets it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from mammokit import INTENDED_USE
from mammokit.errors import InvalidInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.pacs.node import StudyResult, process_study
from mammokit.pacs.results import build_results, write_results
from mammokit.synth import generate
from test_predict import release_tiny  # the same tiny released model as the predict tests

UNCERTAINTY = {"upper": codes.SCT.RangeOfUpperMeasurementUncertainty.value,
               "lower": codes.SCT.RangeOfLowerMeasurementUncertainty.value}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pacs_results")
    generate(root / "raw", exams=1, seed=7, size_scale=0.2, masks=False)
    return {"root": root, "study": root / "raw" / "dicom", "model": release_tiny(root / "model")}


@pytest.fixture(scope="module")
def result(workspace: dict[str, Path]) -> StudyResult:
    return process_study(workspace["model"], workspace["study"], workspace["root"] / "out")


@pytest.fixture(scope="module")
def sources(workspace: dict[str, Path]) -> dict[str, pydicom.Dataset]:
    """SOP Instance UID -> header of every source file."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(workspace["study"].rglob("*.dcm"))]
    return {str(ds.SOPInstanceUID): ds for ds in headers}


@pytest.fixture(scope="module")
def objects(result: StudyResult) -> dict[str, list[pydicom.Dataset]]:
    out: dict[str, list[pydicom.Dataset]] = {}
    for path in result.result_files:
        out.setdefault(path.name.split("_")[0], []).append(pydicom.dcmread(path))
    return out


def _view_of(result: StudyResult, sop_uid: str) -> dict:
    """The prediction.json view whose image hash is that of `sop_uid`."""
    image_hash = hash_id(sop_uid, resolve_salt())
    return next(v for v in result.prediction["views"] if v["image_hash"] == image_hash)


def _validate(dciodvfy: str, path: Path) -> tuple[list[str], list[str]]:
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


def _items(node: pydicom.Dataset | Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Every content item under an SR dataset or content item (or in a list of items), depth first."""
    out = []
    for item in node if isinstance(node, Sequence) else node.get("ContentSequence", []):
        out.append(item)
        out.extend(_items(item))
    return out


def _code(item: pydicom.Dataset) -> tuple[str, str]:
    name = item.ConceptNameCodeSequence[0]
    return name.CodingSchemeDesignator, name.CodeValue


def test_result_files_and_study(result: StudyResult, sources: dict[str, pydicom.Dataset]) -> None:
    study_uid = str(next(iter(sources.values())).StudyInstanceUID)
    assert result.study_uid == study_uid and result.study_hash == hash_id(study_uid, resolve_salt())
    assert result.prediction_dir.name == result.prediction["study"]["exam_id"] == result.study_hash
    names = [p.name for p in result.result_files]
    assert names == ["sr_1.dcm", *(f"seg_{n}.dcm" for n in range(1, 5)), *(f"sc_{n}.dcm" for n in range(1, 5))]
    assert all(p.parent == result.prediction_dir / "dicom" and p.is_file() for p in result.result_files)
    uids = [*sources, study_uid, *(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                                   for p in result.result_files)]
    assert not [n for n in names for uid in uids if uid in n or re.search(r"\d+\.\d+\.\d+", n)]


def test_every_object_is_valid_dicom(dciodvfy: str, result: StudyResult) -> None:
    errors, warnings = {}, {}
    for path in result.result_files:
        errs, warns = _validate(dciodvfy, path)
        warnings[path.name] = warns
        if errs:
            errors[path.name] = errs
    print("dciodvfy warnings:", {k: len(v) for k, v in warnings.items()})
    assert not errors, errors
    # the only warnings: the private coding scheme of the uncalibrated probability, which dciodvfy does not know
    assert {w for ws in warnings.values() for w in ws} <= {
        "Warning - Unrecognized defined term <99MAMMOKIT> for value 1 of attribute <Coding Scheme Designator>"}


def test_highdicom_reads_each_back(result: StudyResult) -> None:
    kinds = {"sr": hd.sr.Comprehensive3DSR, "seg": hd.seg.Segmentation, "sc": hd.Image}
    for path in result.result_files:
        kind = path.name.split("_")[0]
        obj = {"sr": hd.sr.srread, "seg": hd.seg.segread, "sc": hd.imread}[kind](path)
        assert isinstance(obj, kinds[kind]), path.name
        assert str(obj.Manufacturer) == "mammokit" and "not for clinical use" in str(obj.SeriesDescription)
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert syntax == (pydicom.uid.ExplicitVRLittleEndian if kind == "sr" else pydicom.uid.RLELossless)


def test_sr_references_the_study_and_holds_the_probabilities(result: StudyResult,
                                                             sources: dict[str, pydicom.Dataset]) -> None:
    sr = hd.sr.srread(result.result_files[0])
    source = next(iter(sources.values()))
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    evidence = {str(ref.ReferencedSOPInstanceUID) for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert evidence == set(sources)
    groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    assert set(groups) == {"exam", "left breast", "right breast", "L-CC view", "L-MLO view", "R-CC view",
                           "R-MLO view"}
    pred = result.prediction
    levels = {"exam": (pred["exam"], "51440002"), "left breast": (pred["breasts"]["L"], "7771000"),
              "right breast": (pred["breasts"]["R"], "24028007")}
    for label, (block, laterality) in levels.items():
        group = groups[label]
        (site,) = group.finding_sites
        assert (site.value.value, site.laterality.value) == ("76752008", laterality)
        values = {m.name.value: m.value for m in group.get_measurements()}
        assert values["111047"] == pytest.approx(block["prob"], abs=1e-12)
        assert values["RAWPROB"] == pytest.approx(block["prob_raw"], abs=1e-12)
        assert {m.unit.value for m in group.get_measurements()} == {"{probability}"}
        refs = {s.referenced_sop_instance_uid for s in group.source_images}
        side = {"left breast": "L", "right breast": "R"}.get(label)
        assert refs == {uid for uid in sources if side in (None, _view_of(result, uid)["laterality"])}
    for uid in sources:
        view = _view_of(result, uid)
        group = groups[f"{view['view']} view"]
        assert [s.referenced_sop_instance_uid for s in group.source_images] == [uid]
        assert {m.name.value: m.value for m in group.get_measurements()}["111047"] == pytest.approx(view["prob"])
    texts = [str(i.TextValue) for i in _items(sr) if i.ValueType == "TEXT"]
    assert INTENDED_USE in texts and any("calibration (exam): temperature T = 2" in t for t in texts)
    assert "multiview_gmic" in {str(i.TextValue) for i in _items(sr) if _code(i) == ("DCM", "111001")}
    assert not [i for i in _items(sr) if _code(i) in {("SCT", v) for v in UNCERTAINTY.values()}]  # no std: none


def test_segmentations_are_the_heatmaps_on_the_source_grid(result: StudyResult, objects: dict,
                                                          sources: dict[str, pydicom.Dataset]) -> None:
    seen = set()
    for ds in objects["seg"]:
        seg = hd.seg.Segmentation.from_dataset(ds)
        assert seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
        (study_uid, _, sop_uid), = seg.get_source_image_uids()
        source = sources[sop_uid]
        assert study_uid == source.StudyInstanceUID == seg.StudyInstanceUID
        assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
        view = _view_of(result, sop_uid)
        heat = cv2.imread(str(result.prediction_dir / view["heatmap"]), cv2.IMREAD_UNCHANGED) / 65535.0
        frac = seg.get_pixels_by_source_instance([sop_uid], segment_numbers=[1], rescale_fractional=True)[0, ..., 0]
        assert frac.shape == heat.shape
        assert np.abs(frac - heat).max() <= 1 / 255 + 1e-6
        seen.add(sop_uid)
    assert seen == set(sources)


def test_secondary_captures_are_in_the_source_study(result: StudyResult, objects: dict,
                                                    sources: dict[str, pydicom.Dataset]) -> None:
    seen = set()
    for ds in objects["sc"]:
        sop_uid = str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
        source = sources[sop_uid]
        assert (ds.StudyInstanceUID, ds.PatientID) == (source.StudyInstanceUID, source.PatientID)
        assert ds.PhotometricInterpretation == "RGB" and ds.pixel_array.shape[-1] == 3
        assert ds.Laterality == _view_of(result, sop_uid)["laterality"] and INTENDED_USE in ds.ImageComments
        seen.add(sop_uid)
    assert seen == set(sources)


def test_uids_are_deterministic_and_uncertainty_is_written(dciodvfy: str, result: StudyResult,
                                                           sources: dict[str, pydicom.Dataset],
                                                           tmp_path: Path, workspace: dict[str, Path]) -> None:
    files = sorted(workspace["study"].rglob("*.dcm"))
    again = build_results(result.prediction_dir, files)
    written = [pydicom.dcmread(p, stop_before_pixels=True) for p in result.result_files]
    assert [d.SOPInstanceUID for d in again] == [d.SOPInstanceUID for d in written]
    assert len({d.SOPInstanceUID for d in again}) == len(again)
    folder = tmp_path / "with_std"
    shutil.copytree(result.prediction_dir, folder, ignore=shutil.ignore_patterns("dicom"))
    pred = json.loads((folder / "prediction.json").read_text())
    pred["exam"]["prob_std"], pred["breasts"]["L"]["prob_std"] = 0.05, 0.125
    (folder / "prediction.json").write_text(json.dumps(pred))
    paths = write_results(folder, files, folder / "dicom")
    errs, _ = _validate(dciodvfy, paths[0])
    assert not errs, errs
    sr = hd.sr.srread(paths[0])
    assert sr.SOPInstanceUID != written[0].SOPInstanceUID  # another prediction, other objects
    groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    for label, std in (("exam", 0.05), ("left breast", 0.125), ("right breast", None)):
        found = {_code(i)[1]: float(i.MeasuredValueSequence[0].NumericValue) for i in _items(groups[label])
                 if _code(i)[0] == "SCT" and _code(i)[1] in UNCERTAINTY.values()}
        assert found == ({v: std for v in UNCERTAINTY.values()} if std is not None else {})


def test_missing_source_or_prediction_is_an_error(result: StudyResult, sources: dict[str, pydicom.Dataset],
                                                  tmp_path: Path, workspace: dict[str, Path]) -> None:
    files = sorted(workspace["study"].rglob("*.dcm"))
    dropped = pydicom.dcmread(files[0], stop_before_pixels=True)
    view = _view_of(result, str(dropped.SOPInstanceUID))["view"]
    with pytest.raises(InvalidInputError, match=f"view\\(s\\) {view} ") as err:
        build_results(result.prediction_dir, files[1:])
    assert not [uid for uid in sources if uid in str(err.value)]
    folder = tmp_path / "none"
    folder.mkdir()
    pred = {**result.prediction, "exam": None, "views": []}
    (folder / "prediction.json").write_text(json.dumps(pred))
    with pytest.raises(InvalidInputError, match="no usable CC/MLO view"):
        build_results(folder, files)


def test_a_ct_folder_is_no_mammography_study(workspace: dict[str, Path], tmp_path: Path) -> None:
    from dicom_factory import write_test_dicom

    study = tmp_path / "1.2.826.0.1.3680043.99.1"  # spool folders are often named by UID: never in the message
    pixels = (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16)
    write_test_dicom(study / "ct.dcm", pixels, modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2",
                     ImageLaterality=None, ViewPosition=None)
    with pytest.raises(InvalidInputError, match="no mammography study") as err:
        process_study(workspace["model"], study, tmp_path / "out")
    assert study.name not in str(err.value) and "\n" not in str(err.value)
