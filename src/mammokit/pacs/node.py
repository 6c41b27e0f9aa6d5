"""What every PACS entry point (pull, listen, watch) shares: one study folder -> `mammokit predict` -> DICOM results.

`process_study` predicts the folder as one study and writes the result objects (`results.write_results`) into
`<out_dir>/<study hash>/dicom/`. Logs and error messages name the study by its salted hash only, never by UID,
patient name or id, nor by the folder's name (archive spools often name folders by UID).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from mammokit.datasets.index import candidate_files
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.pacs.results import write_results
from mammokit.predict import NoUsableImageError, predict_studies

__all__ = ["RESULTS_FOLDER", "StudyResult", "process_study", "study_files"]

log = logging.getLogger(__name__)

RESULTS_FOLDER = "dicom"  # under the study's prediction folder


@dataclass(frozen=True)
class StudyResult:
    """One processed study: its ids, its prediction and the DICOM result objects written."""

    study_hash: str  # salted hash of the StudyInstanceUID (what logs/state may show)
    study_uid: str  # the real UID (for addressing the archive only; never logged)
    prediction: dict[str, Any]  # the prediction.json contents
    prediction_dir: Path  # out_dir/<study hash> as written by predict_studies
    result_files: list[Path]  # the DICOM result objects written (SR, SEG per view, SC per view)
    seconds: dict[str, float] = field(default_factory=dict)  # `predict.STAGES` and "encode" (the DICOM objects)


def _folder_label(folder: Path) -> str:
    """A study folder's name in messages: a salted hash of its path."""
    return f"study folder #{hash_id(str(folder.resolve()), resolve_salt())[:10]}"


def study_files(study_dir: Path, out_dir: Path) -> list[Path]:
    """The candidate DICOM files under `study_dir` (an output folder inside it is not input)."""
    out_abs = out_dir.resolve()
    return [p for p in candidate_files(study_dir) if not p.resolve().is_relative_to(out_abs)]


def process_study(model: str | Path, study_dir: str | Path, out_dir: str | Path, *, heatmap: str = "saliency",
                  workers: int = 1, device: str = "auto", mc_passes: int = 0) -> StudyResult:
    """Predict the files of `study_dir` as one study with a released model and write its DICOM result objects.

    `heatmap`, `workers`, `device` and `mc_passes` are `predict_studies`'s; with `mc_passes` the SR carries each
    probability's MC-dropout standard deviation as its uncertainty.

    Raises:
        MissingInputError: `study_dir` is not a folder (or `model` is not a released model).
        InvalidInputError: the folder holds no mammography image, the prediction has no score (no usable CC/MLO
            view), or the images belong to several studies.
    """
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    if not study_dir.is_dir():
        raise MissingInputError(f"{_folder_label(study_dir)}: not a folder")
    seconds: dict[str, float] = {}
    try:
        studies = predict_studies(model, study_dir, out=out_dir, one_study=True, heatmap=heatmap, workers=workers,
                                  device=device, mc_passes=mc_passes, timings=seconds)
    except NoUsableImageError:
        raise InvalidInputError(f"{_folder_label(study_dir)}: no mammography study (no usable mammography image; "
                                "see the log for each file's reason)") from None
    study = studies[0]
    label = study.exam_id
    if not study.prediction.get("exam"):
        raise InvalidInputError(f"study {label}: no prediction (no usable CC/MLO view): no result objects")
    t0 = time.perf_counter()
    files = write_results(study.folder, study_files(study_dir, out_dir), study.folder / RESULTS_FOLDER)
    seconds["encode"] = time.perf_counter() - t0
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    study_hash = hash_id(study_uid, resolve_salt()) or label
    log.info("study %s: exam probability %.3f, %d result objects written", study_hash, study.prediction["exam"]["prob"],
             len(files))
    return StudyResult(study_hash, study_uid, study.prediction, study.folder, files,
                       {k: round(v, 4) for k, v in seconds.items()})
