"""`mammokit predict`: one study (or a folder of studies) of raw DICOM in → calibrated scores and heatmaps out.

Per study the steps are those of training, run on the study alone: header scan → preprocessing with the exact
preprocessing config the model was trained with (from its config.json) into a temporary store → the model's input
(`ExamDataset` with the model's input settings) → exam, breast and view logits → calibrated probabilities (each
level's calibration from config.json: temperature or beta) → per-view heatmaps (the model's own saliency, or
Grad-CAM) and patch boxes mapped back onto each DICOM's original pixel grid → `OUT/<exam hash>/prediction.json` and
PNGs.

Nothing identifying leaves: studies, patients and images are named by the reader's salted hashes, never by names,
birth dates or UIDs. A file that cannot be used (broken DICOM, failed preprocessing) becomes a warning of its study
and the rest still predicts.

Which files form a study is decided by `group_studies`: the headers by default, all files with `one_study=True`.
Inputs far from the model's training data (scanned film for a model trained on digital detectors, pixels coarser
than the model's input) are warnings of their study.

With `workers` > 1 the images decode and preprocess in up to that many processes, one image each, and threads write
the views' outputs; the outputs are the same for any count. Each image is decoded once: the preprocessing worker
keeps the gray picture the overlay is drawn on (`preprocess.preview`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from mammokit import INTENDED_USE
from mammokit.config import config_hash
from mammokit.data.dataset import VIEW_SLOTS, ExamDataset, collate, fit_into, view_slot
from mammokit.datasets.index import scan
from mammokit.dicom import MammoImage, read_dicom
from mammokit.dicom_film import FILM_DIGITIZERS
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.evaluation.explain import (
    gradcam,
    input_boxes_to_dicom,
    input_scale,
    model_saliency,
    overlay_png,
    to_dicom_grid,
)
from mammokit.evaluation.inference import dataset_for
from mammokit.ids import hash_id, resolve_salt
from mammokit.io import atomic_write, atomic_write_text
from mammokit.models.contract import ModelOutput
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.pipeline import file_stem, run_pipeline
from mammokit.preprocess.preview import read_preview
from mammokit.preprocess.stats import view_group
from mammokit.preprocess.store_schema import row_transform
from mammokit.release.calibration import Calibrator, LevelCalibration, calibration_from_config
from mammokit.release.device import model_inputs, resolve_device
from mammokit.release.model import load_released, resolve_model_dir

log = logging.getLogger(__name__)
__all__ = ["HEATMAPS", "STAGES", "NoUsableImageError", "StudyGroupingError", "StudyPrediction", "group_studies",
           "predict", "predict_studies", "preprocess_config_of"]

HEATMAPS = ("saliency", "gradcam")
CARD_KEYS = ("run", "seed", "exams", "images", "sites", "vendors", "spacing_mm", "hardware", "precision")
ID_SALT_NOTE = ("ids are HMAC-SHA256 hashes keyed by MAMMOKIT_ID_SALT, else by this installation's random salt "
                "(see `mammokit.ids`)")
PREVIEW_FULL_SIZE = 1 << 30  # a preview side no image reaches: the overlay at the DICOM's own size
COARSE_FACTOR = 1.5  # source pixels this many times the model's input spacing (or more) are upsampled: a warning
FILM_VENDORS = (*FILM_DIGITIZERS, "FILM DIGITIZER")  # a training vendor named so means the model has seen film
# what `predict_studies(timings=...)` reports, in seconds summed over the studies
STAGES = {
    "load": "load the released model",
    "scan": "header scan of the study folder (a worker process)",
    "preprocess": "decode and preprocess every image into the temporary store (worker processes)",
    "inputs": "headers for warnings, the model's input from the store",
    "model": "forward pass",
    "heatmap": "saliency or Grad-CAM",
    "uncertainty": "MC-dropout passes (`mc_passes`; zero when off)",
    "write": "heatmaps onto the DICOM grid, heatmap and overlay PNGs (drawn on the pictures the preprocessing kept: no "
             "second decode), prediction.json (workers > 1: the views in threads)",
}


class StudyGroupingError(InvalidInputError):
    """The files look like one exam whose headers disagree; the caller must say how to group them."""


class NoUsableImageError(InvalidInputError):
    """The folder holds no file the reader takes as a mammogram (e.g. a CT series, or only broken files)."""


@contextmanager
def _stage(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the seconds the block takes to `timings[name]` (nothing without a dict)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class StudyPrediction:
    """One study's result: its folder under OUT and the content of its prediction.json."""

    exam_id: str
    folder: Path
    prediction: dict[str, Any]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _scores(logit: float | None, calibrator: Calibrator) -> dict[str, float] | None:
    """Logit, raw probability sigmoid(z) and calibrated probability; None for an absent level."""
    if logit is None or not math.isfinite(logit):
        return None
    return {"logit": float(logit), "prob_raw": _sigmoid(logit), "prob": float(calibrator.probabilities(logit))}


def preprocess_config_of(config: dict[str, Any]) -> tuple[PreprocessConfig, list[str]]:
    """The preprocessing config a released model was trained with, and warnings when it is missing or changed."""
    pre = config.get("preprocess") or {}
    if not pre.get("config"):
        return PreprocessConfig(), ["the model's config.json records no preprocessing config: used the defaults, "
                                    "which may differ from what the model was trained on"]
    cfg = PreprocessConfig.model_validate(pre["config"])
    recorded = pre.get("config_hash")
    if recorded and recorded != config_hash(cfg):
        return cfg, [f"preprocessing config hash {config_hash(cfg)} differs from the model's recorded {recorded} "
                     "(the config schema changed since training; the recorded values were used)"]
    return cfg, []


def _card(config: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    calibration = calibration_from_config(config)
    """The model's name, input settings, calibration and a short training-card summary for prediction.json."""
    spec = config.get("model", {})
    training = config.get("training") or {}
    stages = training.get("stages")
    card = {k: training.get(k) for k in CARD_KEYS if k in training}
    if isinstance(stages, dict):
        card["stages"] = list(stages)
    inp = config.get("input", {})
    return {
        "name": spec.get("name"), "folder": model_dir.name, "format": config.get("format"),
        "mammokit_version": config.get("mammokit_version"),
        "members": len(spec.get("members", [])) or None,
        "input": {k: inp.get(k) for k in ("level", "input_size", "full_scale", "normalization")},
        "temperature": float(config.get("temperature", 1.0)),
        "temperature_source": calibration["exam"].source,
        "calibration": {level: c.chosen.describe() for level, c in calibration.items()},
        "training": card,
    }


def _folder_key(relpath: str) -> str:
    """A stand-in exam id for files without study identifiers: a salted hash of their folder (never its name)."""
    return "folder-" + (hash_id(str(Path(relpath).parent), resolve_salt()) or "")[:16]


def _file_label(rel: str) -> str:
    """A file's name in output files and logs: a salted hash of its path relative to the study folder (folder and
    file names of PACS exports often hold patient names or UIDs)."""
    return f"file #{hash_id(rel, resolve_salt())[:10]}"


def _scrub(text: str, labels: dict[str, str]) -> str:
    """A reason string with every known file path (absolute, as scanned) replaced by that file's label."""
    text = str(text)
    for path in sorted(labels, key=len, reverse=True):
        text = text.replace(path, labels[path])
    return text


def _assign_warning(studies: dict[str, list[str]], folders: dict[str, set[str]], rel: str, text: str) -> None:
    """Attach a file-level warning to the studies with files in the same folder (or every study if none)."""
    parent = str(Path(rel).parent)
    hits = [e for e, dirs in folders.items() if parent in dirs]
    for exam_id in hits or list(studies):
        studies[exam_id].append(text)


def group_studies(index: pd.DataFrame, one_study: bool | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Decide which files form a study; returns the index with its final `exam_id` and the grouping warnings.

    `one_study=True`: every file is one study (the user's "this folder is one exam"), with a warning when the headers
    name several studies or patients. `one_study=False`: the headers decide (StudyInstanceUID, else PatientID +
    accession, else the folder). `None` (default): the headers decide, except when they split the files into several
    studies of one image each that together fill distinct L/R CC/MLO slots, as one exam does whose headers disagree
    (CBIS-DDSM gives every image its own StudyInstanceUID and PatientID); then `StudyGroupingError` asks for a choice
    rather than predicting one-view studies.
    """
    studies = index["exam_id"].nunique()
    patients = index["patient_id"].dropna().nunique()
    if one_study and studies > 1:
        merged = "one-study-" + (hash_id("|".join(sorted(index["exam_id"].unique())), resolve_salt()) or "")[:16]
        note = (f"--one-study: {len(index)} images whose headers name {studies} studies and {patients} patients "
                "are predicted as one study")
        return index.assign(exam_id=merged), [note]
    if one_study is None and _split_exam(index):
        slots = ", ".join(sorted(f"{lat}-{view_group(v)}" for lat, v in zip(index["laterality"], index["view"],
                                                                                strict=True)))
        raise StudyGroupingError(
            f"the headers make {studies} studies of one image each ({patients} patients), yet the images fill "
            f"distinct views ({slots}) like one exam whose headers disagree (as in CBIS-DDSM): rerun with "
            "--one-study to predict them as one exam, or --by-header to predict each image as its own study")
    return index, []


def _split_exam(index: pd.DataFrame) -> bool:
    """Several header studies of one image each, together filling distinct L/R CC/MLO view slots."""
    if index["exam_id"].nunique() < 2 or index["exam_id"].duplicated().any():
        return False
    slots = [view_slot(lat, v) for lat, v in zip(index["laterality"], index["view"], strict=True)]
    return None not in slots and len(set(slots)) == len(slots)


def _domain_warnings(config: dict[str, Any], table: pd.DataFrame, headers: list[MammoImage]) -> list[str]:
    """Where a study's images lie far from the model's training data: scanned film, pixels coarser than its input."""
    training = config.get("training") or {}
    film = _film_warning([h for h in headers if h.film], len(headers), training)
    out = [film] if film else []
    model_mm = preprocess_config_of(config)[0].spacing_mm
    trained_mm = training.get("spacing_mm")
    if trained_mm and abs(float(trained_mm) - model_mm) > 0.1 * float(trained_mm):
        out.append(f"the model was trained on {float(trained_mm):.3g} mm pixels but is fed {model_mm:.3g} mm ones")
    columns = [c for c in ("source_spacing_row_mm", "source_spacing_col_mm") if c in table.columns]
    source = table[columns].max(axis=1) if columns else pd.Series(dtype=float)
    coarse = source[source >= COARSE_FACTOR * model_mm]
    if len(coarse):
        out.append(f"{len(coarse)} of {len(table)} images have {coarse.max():.3g} mm pixels, coarser than the model's "
                   f"{model_mm:.3g} mm input: upsampled, they hold less detail than its training images")
    return out


def _film_warning(films: list[MammoImage], n: int, training: dict[str, Any]) -> str | None:
    """Scanned film fed to a model whose card records no film (None when there is no film, or the model saw film)."""
    vendors = [str(v) for v in training.get("vendors") or []]
    if not films or training.get("film_images") or any(d in v.upper() for v in vendors for d in FILM_VENDORS):
        return None
    signs = "; ".join(dict.fromkeys(s for img in films for s in img.film_evidence))
    what = f"{len(films)} of {n} images are scanned film ({signs})"
    if not vendors:
        return f"{what}; the model card records no vendors, so whether it was trained on film is unknown"
    return (f"{what}, but the model was trained on digital detector images ({', '.join(vendors)}) with no scanned film "
            "recorded: film grain, contrast and film edges differ from its training data, so these scores are less "
            "reliable")


def _stored_rows(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(preprocessed rows with a `cancer` column for the dataset, failures) of the temporary store."""
    table = pd.read_parquet(store / "preprocessed.parquet")
    failures = pd.read_csv(store / "failures.csv", dtype=str)
    if table.empty:
        return table, failures
    if "cancer" not in table.columns:
        table["cancer"] = np.nan
    return table, failures


def _view_warnings(table: pd.DataFrame, level: str) -> list[str]:
    """Missing, unused and duplicated views, and per-image read/preprocessing notes, as plain sentences."""
    out: list[str] = []
    slots = [view_slot(lat, v) for lat, v in zip(table["laterality"], table["view"], strict=True)]
    present = {s for s in slots if s is not None}
    if level != "view":
        missing = [f"{lat}-{v}" for i, (lat, v) in enumerate(VIEW_SLOTS) if i not in present]
        if missing:
            out.append(f"missing views: {', '.join(missing)} (the model predicts from the views present)")
        counts = pd.Series([s for s in slots if s is not None]).value_counts()
        for slot, n in counts[counts > 1].items():
            lat, v = VIEW_SLOTS[int(slot)]
            out.append(f"{n} images of {lat}-{v}: only the first (by image id) is used")
    for (_, row), slot in zip(table.iterrows(), slots, strict=True):
        label = _label(row)
        if slot is None:
            out.append(f"{label}: view {row.get('view')!r} with laterality {row.get('laterality')!r} is not one of "
                       "L/R CC/MLO; not used")
        for col in ("read_warnings", "mask_warnings"):
            if isinstance(row.get(col), str) and row[col]:
                out.append(f"{label}: {row[col]}")
        if bool(row.get("orientation_disagreement")):
            out.append(f"{label}: orientation disagreement ({row.get('orientation_reason')}); "
                       f"{row.get('orientation_source')} was used")
    return out


def _label(row: pd.Series) -> str:
    """A readable, non-identifying name of one image: laterality-view and the salted hash of its SOP UID."""
    return f"{row.get('laterality') or '?'}-{row.get('view') or '?'} [{_image_hash(row)[:8]}]"


def _image_hash(row: pd.Series | dict[str, Any]) -> str:
    """The image's id (a table row, or a row looked up by id: its name): already the salted hash of its SOP Instance
    UID (`datasets.index.header_row`)."""
    return str(row.get("image_id") or getattr(row, "name", None) or "unknown")


def _heatmaps(model: torch.nn.Module, batch: dict[str, Any], out: ModelOutput, kind: str,
              input_size: tuple[int, int], warnings: list[str]) -> np.ndarray:
    """(V, H, W) heatmaps over the global input canvas: the model's saliency or Grad-CAM of the breast logits."""
    if kind == "gradcam":
        try:
            return gradcam(model, model_inputs(batch), target="breast")[0]
        except ValueError as err:  # e.g. a custom layer that does not run once per view
            warnings.append(f"Grad-CAM unavailable ({err}); the model's own saliency map is shown instead")
    return model_saliency(out, input_size)[0]


def _item_logits(out: ModelOutput) -> dict[str, Any]:
    """One item's exam logit, breast logits and mask, and view logits (numpy) from a batch of one."""
    return {"exam_logit": float(out.exam_logit[0]),
            "breast_logits": out.breast_logits[0].detach().float().cpu().numpy(),
            "breast_mask": out.breast_mask[0].cpu().numpy(),
            "view_logits": out.view_logits[0].detach().float().cpu().numpy()}


def _mc_passes(model: torch.nn.Module, batch: dict[str, Any], passes: int, seed: int) -> list[dict[str, Any]]:
    """`passes` forward passes with dropout on (MC-dropout), masks drawn from `seed`; the global RNG is restored."""
    if passes <= 0:
        return []
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d)]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for m in dropouts:
            m.train(True)
        with torch.no_grad():
            inputs = model_inputs(batch, next(model.parameters()).device)
            return [_item_logits(model(inputs)) for _ in range(passes)]
    finally:
        for m in dropouts:
            m.train(False)
        torch.random.set_rng_state(state)


def _pass_items(items: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The study's items as MC-dropout pass `k` saw them (for `_level_logits`)."""
    return [{**it["mc"][k], "views": [{"laterality": lat, "logit": float(it["mc"][k]["view_logits"][slot])}
                                      for slot, lat in it["view_lateralities"]]} for it in items]


def _uncertainty(level: str, items: list[dict[str, Any]], calibration: dict[str, LevelCalibration],
                 passes: int) -> tuple[float | None, dict[str, float | None]]:
    """Standard deviation over the MC-dropout passes of the calibrated exam and breast probabilities."""
    exam, breasts = [], {"L": [], "R": []}
    for k in range(passes):
        e, b = _level_logits(level, _pass_items(items, k))
        exam.append(None if e is None else float(calibration["exam"].chosen.probabilities(e)))
        for side, v in b.items():
            breasts[side].append(None if v is None else float(calibration["breast"].chosen.probabilities(v)))

    def std(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.std(known)) if known else None

    return std(exam), {side: std(v) for side, v in breasts.items()}


def _level_logits(level: str, items: list[dict[str, Any]]) -> tuple[float | None, dict[str, float | None]]:
    """Exam and breast logits of one study from its items (one exam, two breasts or single views).

    Exam-level models give both directly. Breast-level items each give one breast and single-view items one view;
    there a breast is the mean of its views' logits and the exam the maximum over breasts (as in evaluation).
    """
    breasts: dict[str, list[float]] = {"L": [], "R": []}
    if level == "view":
        for it in items:
            for v in it["views"]:
                breasts[v["laterality"]].append(v["logit"])
    else:
        for it in items:
            for col, side in enumerate(("L", "R")):
                if it["breast_mask"][col]:
                    breasts[side].append(float(it["breast_logits"][col]))
    breast = {s: (float(np.mean(v)) if v else None) for s, v in breasts.items()}
    if level == "exam" and len(items) == 1:
        return float(items[0]["exam_logit"]), breast
    known = [v for v in breast.values() if v is not None]
    return (max(known) if known else None), breast


def _run_items(model: torch.nn.Module, dataset: ExamDataset, table: pd.DataFrame, store: Path, kind: str, out_dir: Path,
               view_calibrator: Calibrator, overlay_max_side: int | None, warnings: list[str], workers: int = 1,
               timings: dict[str, float] | None = None, mc_passes: int = 0) -> list[dict[str, Any]]:
    """Forward every dataset item of one study; map heatmaps and patch boxes to DICOM pixels and write the PNGs."""
    by_id = table.set_index("image_id")
    k = max(1, dataset.full_scale)  # the dataset renders a k-times larger "full" canvas, then area-downscales
    full_size = (dataset.input_size[0] * k, dataset.input_size[1] * k)
    items: list[dict[str, Any]] = []
    views: list[tuple[int, pd.Series, np.ndarray, np.ndarray, np.ndarray, float]] = []  # (item, row, heat, ...)
    for index in range(len(dataset)):
        with _stage(timings, "inputs"):
            batch = collate([dataset[index]])
        with _stage(timings, "model"), torch.no_grad():
            out = model(model_inputs(batch, next(model.parameters()).device))
        with _stage(timings, "heatmap"):
            heat = _heatmaps(model, batch, out, kind, dataset.input_size, warnings)
        with _stage(timings, "uncertainty"):
            passes = _mc_passes(model, batch, mc_passes, seed=index)
        view_logits = out.view_logits[0].detach().float().cpu().numpy()
        boxes = out.patch_boxes[0].detach().float().cpu().numpy()
        attention = out.patch_attention[0].detach().float().cpu().numpy()
        views.extend((len(items), by_id.loc[image_id], heat[slot], boxes[slot], attention[slot],
                      float(view_logits[slot]))
                     for slot, image_id in enumerate(batch["image_ids"][0]) if image_id)
        items.append({**_item_logits(out), "views": [], "mc": passes,
                      "view_lateralities": [(slot, by_id.loc[i]["laterality"])
                                            for slot, i in enumerate(batch["image_ids"][0]) if i]})
    def entry(i: int) -> dict[str, Any]:
        _, row, heat_input, boxes, attention, logit = views[i]
        return _view_entry(row, store, heat_input, boxes, attention, logit, full_size, k, kind, out_dir,
                           view_calibrator, overlay_max_side)

    with _stage(timings, "write"):
        if workers <= 1 or len(views) <= 1:
            entries = [entry(i) for i in range(len(views))]
        else:  # numpy and OpenCV release the GIL: the views' grids and PNGs are made side by side in threads
            with ThreadPoolExecutor(min(workers, len(views))) as pool:
                entries = list(pool.map(entry, range(len(views))))
    for (item, *_), view in zip(views, entries, strict=True):
        items[item]["views"].append(view)
    return items


def _view_entry(row: pd.Series, store: Path, heat_input: np.ndarray, boxes: np.ndarray, attention: np.ndarray,
                logit: float, full_size: tuple[int, int], downscale: float, kind: str, out_dir: Path,
                calibrator: Calibrator, overlay_max_side: int | None) -> dict[str, Any]:
    """One view of prediction.json: its scores, the heatmap on the DICOM grid (PNG files) and its patch boxes."""
    record = row_transform(row)
    stored_shape = tuple(record.stored_shape)
    # The placement comes from `fit_into` itself, so the map back can never drift from what the dataset rendered.
    _, placement = fit_into(np.zeros(stored_shape, np.float32), full_size, 0.0)
    scale = input_scale(placement, stored_shape, downscale)
    heat = np.clip(to_dicom_grid(heat_input, scale, record), 0.0, 1.0)
    dicom_boxes = input_boxes_to_dicom(boxes, scale, record) if len(boxes) else np.zeros((0, 4))
    image_hash = _image_hash(row)
    name = f"{row['laterality']}-{row['view_group']}_{image_hash[:10]}"
    heat_file, overlay_file = f"{name}_heatmap.png", f"{name}_overlay.png"
    heat16 = np.round(heat * 65535.0).astype(np.uint16)
    atomic_write(out_dir / heat_file, lambda tmp: _imwrite(tmp, heat16))
    scores = _scores(logit, calibrator)
    title = f"{row['laterality']}-{row['view_group']}  p={scores['prob']:.2f}" if scores else None
    gray = read_preview(store, file_stem(_image_hash(row)))  # kept by the preprocessing worker: no 2nd decode
    overlay_png(read_dicom(row["path"]).pixels if gray is None else None, heat, out_dir / overlay_file,
                boxes=dicom_boxes, title=title, max_side=overlay_max_side, gray=gray)
    order = np.argsort(-attention, kind="stable") if len(attention) else np.zeros(0, int)
    x0, y0, x1, y1 = record.crop_box
    return {
        "view": f"{row['laterality']}-{row['view_group']}", "laterality": row["laterality"], "view_code": row["view"],
        "image_hash": image_hash, **(scores or {"logit": None, "prob_raw": None, "prob": None}),
        "rows": int(record.original_shape[0]), "columns": int(record.original_shape[1]),
        "manufacturer": row.get("manufacturer"), "heatmap_kind": kind, "heatmap": heat_file, "overlay": overlay_file,
        "heatmap_scale": "uint16 PNG on the DICOM pixel grid; value / 65535 = heat in [0, 1]",
        "heatmap_max": float(heat.max()),
        "crop_box": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
        "patch_boxes": [{"x0": float(dicom_boxes[k, 0]), "y0": float(dicom_boxes[k, 1]),
                         "x1": float(dicom_boxes[k, 2]), "y1": float(dicom_boxes[k, 3]),
                         "attention": float(attention[k]), "inside_fraction": _inside(dicom_boxes[k], record.crop_box)}
                        for k in order],
        "flip": bool(record.flip), "spacing_source": row.get("spacing_source"), "film": bool(row.get("film")),
        "orientation_source": row.get("orientation_source"),
    }


def _inside(box: np.ndarray, crop: tuple[int, int, int, int]) -> float:
    """Fraction of a (x0, y0, x1, y1) box inside the crop box: retrieval may pick a window on the canvas padding."""
    w = max(0.0, min(box[2], crop[2]) - max(box[0], crop[0]))
    h = max(0.0, min(box[3], crop[3]) - max(box[1], crop[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return float(w * h / area) if area > 0 else 0.0


def _imwrite(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path} (OpenCV)")


def _json_ready(obj: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf and pandas' missing values as null."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or obj is pd.NA or (isinstance(obj, float) and not math.isfinite(obj)):
        return None
    return obj if isinstance(obj, str | int | float | bool) else str(obj)


def _outside(table: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Rows whose file is not under `folder` (an output folder placed inside the study folder is not input)."""
    if table.empty:
        return table
    keep = np.array([not Path(p).resolve().is_relative_to(folder) for p in table["path"]], dtype=bool)
    return table[keep].reset_index(drop=True)


def predict_studies(
    model_path: str | Path,
    study_dir: str | Path,
    *,
    out: str | Path,
    heatmap: str = "saliency",
    workers: int = 1,
    keep_store: bool = False,
    overlay_max_side: int | None = 2048,
    device: str = "auto",
    one_study: bool | None = None,
    timings: dict[str, float] | None = None,
    mc_passes: int = 0,
) -> list[StudyPrediction]:
    """Predict every study under `study_dir` with a released model; writes `out/<exam hash>/prediction.json`.

    Args:
        model_path: a released model folder or a run folder holding one in `model/`.
        study_dir: a folder with the DICOM files of one study (any subset of its views) or of several studies.
        out: output folder; each study gets a subfolder named by its salted study hash, plus `summary.json`.
        heatmap: "saliency" (the model's own map, free) or "gradcam" (Grad-CAM of each view's breast logit).
        workers: processes that decode and preprocess the images (at most one per image), and threads that write
            the views' outputs; the outputs do not depend on it.
        keep_store: keep the temporary preprocessed store (`out/.store-*`) for inspection.
        overlay_max_side: downscale overlay PNGs to this long side (None = the DICOM's own size); the heatmap PNGs
            always have the DICOM's size.
        device: where the model runs; "auto" = the GPU when there is one.
        one_study: True = all files under `study_dir` are one study; False = the headers decide; None = the headers
            decide unless they look split (see `group_studies`).
        timings: a dict that gets the seconds of each stage (`STAGES`) added to it.
        mc_passes: MC-dropout passes per study (0 = off); each exam and breast score then has `prob_std`, the
            standard deviation of its calibrated probability over the passes.

    Raises:
        FileNotFoundError: `model_path` is not a model, or `study_dir` is not a folder.
        StudyGroupingError: `one_study` is None and the files look like one exam whose headers disagree.
        NoUsableImageError: `study_dir` holds no usable DICOM file.
        ValueError: `heatmap` is unknown.
    """
    if heatmap not in HEATMAPS:
        raise InvalidInputError(f"heatmap must be one of {HEATMAPS}, got {heatmap!r}")
    if mc_passes < 0:
        raise InvalidInputError(f"mc_passes must be 0 (off) or more, got {mc_passes}")
    study_dir, out = Path(study_dir), Path(out)
    if not study_dir.is_dir():
        raise MissingInputError(f"{study_dir}: not a folder (give the folder holding a study's DICOM files)")
    t0 = time.perf_counter()
    with _stage(timings, "load"):
        model_dir = resolve_model_dir(model_path)
        model, config = load_released(model_dir)
        model.to(resolve_device(device))
    if mc_passes > 0 and not any(isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d) and m.p > 0
                                 for m in model.modules()):
        raise InvalidInputError(f"{model_dir}: the model has no dropout layer with p > 0, so MC-dropout passes "
                                "would all agree: run without them")
    try:
        calibration = calibration_from_config(config)
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInputError(f"{model_dir / 'config.json'}: bad calibration: {err}") from err
    pre_cfg, model_warnings = preprocess_config_of(config)
    out.mkdir(parents=True, exist_ok=True)
    out_abs = out.resolve()
    with _stage(timings, "scan"):
        result = scan(study_dir)
    index, skipped = _outside(result.images, out_abs), _outside(result.skipped, out_abs)
    if index.empty:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in zip(skipped["path"], skipped["reason"], strict=True))
        raise NoUsableImageError(f"{study_dir}: no usable DICOM file found{' (' + reasons + ')' if reasons else ''}")
    index = index.assign(exam_id=[e if isinstance(e, str) and e else _folder_key(r)
                                  for e, r in zip(index["exam_id"], index["relpath"], strict=True)])
    index, grouping = group_studies(index, one_study)
    study_warnings = {e: [*model_warnings, *grouping] for e in sorted(index["exam_id"].unique())}
    folders = {e: {str(Path(r).parent) for r in g["relpath"]} for e, g in index.groupby("exam_id")}
    rels = [str(Path(p).resolve().relative_to(study_dir.resolve())) for p in skipped["path"]]
    labels = {**{p: _label(row) for p, (_, row) in zip(index["path"], index.iterrows(), strict=True)},
              **{p: _file_label(rel) for p, rel in zip(skipped["path"], rels, strict=True)}}
    for path, rel, reason in zip(skipped["path"], rels, skipped["reason"], strict=True):
        log.warning("%s: not used: %s", labels[path], _scrub(reason, labels))  # hashes only: paths may name people
        _assign_warning(study_warnings, folders, rel, f"{labels[path]}: not used: {_scrub(reason, labels)}")
    store = Path(tempfile.mkdtemp(prefix=".store-", dir=out))
    try:
        with _stage(timings, "preprocess"):
            run_pipeline(index, store, pre_cfg, workers=workers, progress=False,
                         preview_side=overlay_max_side or PREVIEW_FULL_SIZE)
            table, failures = _stored_rows(store)
        by_id = index.set_index("image_id")
        if not table.empty:  # the store holds no raw paths: the originals' come from this (in-memory) index
            table = table.assign(path=by_id.loc[table["image_id"], "path"].to_numpy())
        for image_id, reason in zip(failures["image_id"], failures["reason"], strict=True):
            row = by_id.loc[image_id]
            label = labels[row["path"]]
            log.warning("%s (%s): preprocessing failed: %s", row["safe_relpath"], label, _scrub(reason, labels))
            study_warnings[row["exam_id"]].append(f"{label}: preprocessing failed: {_scrub(reason, labels)}")
        predictions = []
        for exam_id, warnings in study_warnings.items():
            rows = table[table["exam_id"] == exam_id] if not table.empty else table
            predictions.append(_predict_study(model, config, model_dir, exam_id, index[index["exam_id"] == exam_id],
                                              rows, store, out / exam_id, warnings, heatmap, calibration,
                                              overlay_max_side, workers, timings, mc_passes))
    finally:
        if not keep_store:
            shutil.rmtree(store, ignore_errors=True)
    summary = {"intended_use": INTENDED_USE, "model": _card(config, model_dir), "seconds": time.perf_counter() - t0,
               "studies": [{"exam_id": p.exam_id, "folder": p.folder.name,
                            "exam": p.prediction["exam"], "warnings": len(p.prediction["warnings"])}
                           for p in predictions]}
    atomic_write_text(out / "summary.json", json.dumps(_json_ready(summary), indent=1))
    return predictions


def _predict_study(model: torch.nn.Module, config: dict[str, Any], model_dir: Path, exam_id: str,
                   index_rows: pd.DataFrame, table: pd.DataFrame, store: Path, folder: Path, warnings: list[str],
                   heatmap: str, calibration: dict[str, LevelCalibration], overlay_max_side: int | None,
                   workers: int = 1, timings: dict[str, float] | None = None, mc_passes: int = 0) -> StudyPrediction:
    """Inference, roll-up and outputs of one study (`table` = its preprocessed rows, possibly none)."""
    folder.mkdir(parents=True, exist_ok=True)
    level = config["input"]["level"]
    items: list[dict[str, Any]] = []
    with _stage(timings, "inputs"):
        headers = [read_dicom(p, pixels=False) for p in table["path"]] if not table.empty else []
    if not table.empty:
        warnings.extend(_view_warnings(table, level))
        warnings.extend(_domain_warnings(config, table, headers))
        dataset = dataset_for(config, table.reset_index(drop=True), store)
        items = _run_items(model, dataset, table, store, heatmap, folder, calibration["breast"].temperature,
                           overlay_max_side, warnings, workers, timings, mc_passes)
    if not items:
        warnings.append("no usable CC/MLO view in this study: no prediction")
    exam_logit, breast_logits = _level_logits(level, items) if items else (None, {"L": None, "R": None})
    patients = [p for p in index_rows["patient_id"].dropna().unique()]
    prediction = {
        "intended_use": INTENDED_USE,
        "study": {"exam_id": exam_id, "patient_id": patients[0] if len(patients) == 1 else None,
                  "patients": len(patients), "files": len(index_rows),
                  "views_used": sorted(v["view"] for it in items for v in it["views"]),
                  "film_images": sum(h.film for h in headers), "id_note": ID_SALT_NOTE},
        "model": _card(config, model_dir),
        "preprocess": {"config_hash": config_hash(preprocess_config_of(config)[0])},
        "exam": _scores(exam_logit, calibration["exam"].chosen),
        "breasts": {s: _scores(v, calibration["breast"].chosen) for s, v in breast_logits.items()},
        "views": [v for it in items for v in it["views"]],
        "uncertainty": None,
        "calibration": {**{level: {"map": c.chosen.describe(), "formula": c.chosen.formula()}
                           for level, c in calibration.items()},
                        "views": f"{calibration['breast'].temperature.describe()} (the breast level's temperature)",
                        "prob_raw": "sigmoid(logit)"},
        "warnings": list(dict.fromkeys(warnings)),
    }
    if items and mc_passes > 0:
        exam_std, breast_std = _uncertainty(level, items, calibration, mc_passes)
        if prediction["exam"] is not None:
            prediction["exam"]["prob_std"] = exam_std
        for side, scores in prediction["breasts"].items():
            if scores is not None:
                scores["prob_std"] = breast_std[side]
        prediction["uncertainty"] = {"method": "mc_dropout", "passes": mc_passes,
                                     "prob_std": "standard deviation of the calibrated probability over the passes "
                                                 "(dropout on, masks seeded by the item's position)"}
    with _stage(timings, "write"):
        atomic_write_text(folder / "prediction.json", json.dumps(_json_ready(prediction), indent=1))
    return StudyPrediction(exam_id, folder, prediction)


def predict(model_path: str | Path, study_dir: str | Path, *, out: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """`predict_studies`, returning just the prediction.json contents (one per study)."""
    return [p.prediction for p in predict_studies(model_path, study_dir, out=out, **kwargs)]
