"""No patient id or name in anything mammokit writes, even when the archive's folders and files are named by patient.

A synthetic archive (fake PHI in every header) is laid out PACS-style, `dicom/<PatientID>/<StudyInstanceUID>/
<PatientID>_<n>.dcm`, with RSNA-style UIDs that embed the patient number (`1.2.840.10009.1.2.3.<number>`, series
`.1`, image `.1.<n>`), then indexed, preprocessed, QC'd, shown, listed with `mammokit info`, trained on (a tiny
run: model card, splits, logs), evaluated (predictions.parquet, metrics.json, report with DICOM-grid overlays),
exported (ONNX and its model card) and predicted (prediction.json). Every file written, except the local index (the
one place raw paths and UIDs are kept), is searched for the patient ids, the raw UIDs, the fake PHI and the
archive's own path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from mammokit.cli import app
from mammokit.datasets.index import build_index, write_index
from mammokit.ids import hash_id, resolve_salt
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.pipeline import file_stem, run_pipeline
from mammokit.preprocess.qc import write_qc_page
from mammokit.preprocess.show import write_show
from mammokit.synth import PHI_PATTERNS, generate

PRE = PreprocessConfig(spacing_mm=0.4, global_long_side=256, patch_size=64)
FIRST_ID = 98765


RSNA_ROOT = "1.2.840.10009.1.2.3"  # RSNA's UIDs: <root>.<patient_id>, .1 for the series, .1.<image_id>


def _pacs_tree(raw: Path, out: Path) -> dict[str, str]:
    """Copy synth's DICOM files to `out/dicom/<PatientID>/<study>/<PatientID>_<n>.dcm` with PatientIDs PID98765, ...
    and RSNA-style UIDs naming the patient number; rewrite labels.csv / lesions.csv to the new UIDs beside them.
    Returns {PatientID: StudyInstanceUID}."""
    pids: dict[str, str] = {}
    new_uid: dict[str, str] = {}
    for n, src in enumerate(sorted(raw.rglob("*.dcm"))):
        ds = pydicom.dcmread(src)
        pid = pids.setdefault(str(ds.PatientID), f"PID{FIRST_ID + len(pids):05d}")
        study = f"{RSNA_ROOT}.{pid[3:]}"
        new_uid[str(ds.StudyInstanceUID)] = study
        new_uid[str(ds.SOPInstanceUID)] = ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = (
            f"{study}.1.{n + 1}")
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = pid, study, f"{study}.1"
        dest = out / "dicom" / pid / study / f"{pid}_{n}.dcm"
        dest.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(dest)
    for name, column in (("labels.csv", "study_uid"), ("lesions.csv", "sop_uid")):
        table = pd.read_csv(raw.parent / name, dtype={column: str})
        table.assign(**{column: table[column].map(new_uid)}).to_csv(out / name, index=False)
    return {pid: f"{RSNA_ROOT}.{pid[3:]}" for pid in pids.values()}


def _train_tiny(store: Path, runs: Path) -> Path:
    """A one-step training run on `store` (its model card, splits and logs are outputs too); its released model."""
    from conftest import tiny_train_dict
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import train

    cfg = TrainConfig.model_validate(tiny_train_dict(store, runs, stages=[{"name": "all", "epochs": 1}],
                                                     trainer={"max_steps": 1}))
    return train(cfg) / "model"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """index → preprocess → qc → show → info → evaluate → predict on a PACS-style tree; what each step wrote."""
    from mammokit.evaluation.evaluate import evaluate
    from mammokit.export import export_onnx
    from mammokit.predict import predict_studies

    root = tmp_path_factory.mktemp("phi")
    generate(root / "raw", exams=4, seed=5, size_scale=0.2, masks=False, prevalence=0.5)
    studies = _pacs_tree(root / "raw" / "dicom", root / "pacs")
    work = root / "work"  # everything mammokit writes goes here
    index = work / "images.parquet"
    write_index(build_index(root / "pacs", adapter="synth", labels=root / "pacs" / "labels.csv"), index)
    summary = run_pipeline(index, work / "store", PRE, workers=1, progress=False)
    assert summary["failed"] == 0, summary
    write_qc_page(work / "store", work / "qc.html", top=8, thumb_height=80)
    table = pd.read_parquet(work / "store" / "preprocessed.parquet")
    write_show(work / "store", str(table["image_id"].iloc[0]), work / "show.png", height=120)
    info = CliRunner().invoke(app, ["info", str(root / "pacs"), "--no-decode"])
    assert info.exit_code == 0, info.output
    (work / "info.txt").write_text(info.output)
    model = _train_tiny(work / "store", work / "runs")
    evaluate(model, [work / "store"], out=work / "eval", split="all", n_boot=20, mc_passes=1, tta_passes=1,
             gallery=1, device="cpu")
    export_onnx(model, work / "export" / "model.onnx")
    first = next(iter(studies))
    predictions = predict_studies(model, root / "pacs" / "dicom" / first, out=work / "predict", device="cpu")
    return {"root": root, "work": work, "index": index, "studies": studies, "table": table,
            "predictions": predictions}


def _texts(path: Path) -> list[str]:
    """What a file says: its bytes as latin-1, and for a parquet table also its cells (pages may be compressed)."""
    texts = [path.read_bytes().decode("latin-1")]
    if path.suffix == ".parquet":
        texts.append(pd.read_parquet(path).to_csv())
    return texts


def _outputs(work: Path, index: Path) -> list[Path]:
    """Every file written, except the local index (the only holder of raw paths) and its list of skipped files."""
    local = {index, index.with_name(f"{index.stem}.skipped.csv")}
    return sorted(p for p in work.rglob("*") if p.is_file() and p not in local)


def test_no_output_names_a_patient(archive: dict[str, Any]) -> None:
    files = _outputs(archive["work"], archive["index"])
    kinds = {p.suffix for p in files}
    assert {".parquet", ".json", ".html", ".csv", ".png", ".txt"} <= kinds, kinds
    assert any(p.parent.name == "records" for p in files) and any(p.parent.name == "heatmaps" for p in files)
    secrets = [*archive["studies"], *archive["studies"].values(), str(archive["root"] / "pacs")]
    for path in files:
        for text in _texts(path):
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{path.relative_to(archive['work'])}: {leaked}"
            for name, pattern in PHI_PATTERNS.items():
                assert not re.search(pattern, text), f"{name} in {path.relative_to(archive['work'])}"


def test_written_paths_are_relative_with_the_patient_folder_hashed(archive: dict[str, Any]) -> None:
    index = pd.read_parquet(archive["index"]).set_index("image_id")
    salt = resolve_salt()
    for row in archive["table"].itertuples():
        raw = Path(index.loc[row.image_id, "relpath"])  # dicom/PID98765/<study>/PID98765_<n>.dcm, local only
        pid = raw.parts[1]
        digest = hash_id(pid, salt)
        study = hash_id(raw.parts[2], salt)  # the Study UID folder: RSNA's UIDs name the patient
        assert row.safe_relpath == str(Path("dicom", digest, study, raw.name.replace(pid, digest)))
        assert row.patient_id == digest  # the folder's hash is the patient's, as in every other column
    assert "path" not in archive["table"] and "relpath" not in archive["table"]
    record = (archive["work"] / "store" / "records" / f"{file_stem(archive['table']['image_id'].iloc[0])}.json")
    assert '"safe_relpath": "dicom/' in record.read_text() and '"path"' not in record.read_text()
    assert index["path"].str.contains("PID98765").any()  # the local index keeps what reading the files needs


def test_one_patient_hashes_alike_in_index_store_and_prediction(archive: dict[str, Any]) -> None:
    salt = resolve_salt()
    first = next(iter(archive["studies"]))
    want = hash_id(first, salt)
    index = pd.read_parquet(archive["index"])
    mine = index[index["relpath"].str.contains(first)]
    assert set(mine["patient_id"]) == {want}
    assert set(archive["table"].set_index("image_id").loc[mine["image_id"], "patient_id"]) == {want}
    (prediction,) = archive["predictions"]
    assert prediction.prediction["study"]["patient_id"] == want
    assert prediction.exam_id == hash_id(archive["studies"][first], salt)


def test_info_shows_the_hash_unless_asked(archive: dict[str, Any]) -> None:
    shown = (archive["work"] / "info.txt").read_text()
    salt = resolve_salt()
    assert all(hash_id(pid, salt) in shown for pid in archive["studies"])
    asked = CliRunner().invoke(app, ["info", str(archive["root"] / "pacs"), "--no-decode", "--show-ids"])
    assert asked.exit_code == 0, asked.output
    assert all(f"dicom/{pid}/" in asked.output for pid in archive["studies"])
    assert not re.search(PHI_PATTERNS["PatientName"], asked.output)  # ids on request; names never
