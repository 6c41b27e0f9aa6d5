"""Turn evaluation results into the report: levels, calibration, FROC, uncertainty, sites, and a heatmap gallery.

Gallery heatmaps are Grad-CAM on the global backbone when `mammokit.evaluation.explain` can compute it, else the
model's own saliency map; each one is also written as a PNG overlay on the original DICOM pixel grid.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mammokit.evaluation.blocks import ece_bins, froc_block
from mammokit.evaluation.report import (
    CalibrationInfo,
    GalleryItem,
    LevelResult,
    ReportContext,
    pick_gallery_cases,
    write_report,
)

log = logging.getLogger(__name__)


def _level_result(df: Any, metrics: dict[str, Any]) -> LevelResult:
    lab = df[df["label"].notna()]
    return LevelResult(y=lab["label"].to_numpy().astype(int), p_raw=lab["prob_raw"].to_numpy(),
                       p=lab["prob"].to_numpy(), patient_ids=lab["patient_id"].to_numpy(), metrics=metrics)


def _heatmap(model: Any, ev: Any, item: int, slot: int) -> np.ndarray:
    """Grad-CAM of the view's breast logit, in [0, 1] at the global input size."""
    from mammokit.data.dataset import collate
    from mammokit.evaluation.explain import gradcam

    cam = gradcam(model, collate([ev.dataset[item]]), target="breast")[0, slot]  # each view: its breast's logit
    return np.clip(cam, 0, 1).astype(np.float32)


def _dataset(ev: Any) -> Any:
    return ev.dataset


def gallery_items(model: Any, ev: Any, k: int, out: Path) -> list[GalleryItem]:
    """The most confident TPs and FPs and the most missed FNs (exam level), each on its most suspicious view."""
    exam = ev.levels.exam.reset_index(drop=True)
    lab = exam[exam["label"].notna()]
    picks = pick_gallery_cases(lab["label"].to_numpy().astype(int), lab["prob"].to_numpy(), k=k)
    items = []
    for cat, idx in picks.items():
        for j in idx:
            row = lab.iloc[int(j)]
            item = int(ev.result.items.index[ev.result.items["exam_id"] == row["exam_id"]][0])
            views = ev.result.view_logits[item]
            slot = int(np.nanargmax(views)) if np.isfinite(views).any() else 0
            sample = _dataset(ev)[item]
            image = sample["images"][slot, 0].numpy()
            heat = _heatmap(model, ev, item, slot)
            boxes = sample["lesion_boxes"][slot]
            image_id = sample["image_ids"][slot]
            _write_overlay(ev, image_id, heat, out / "heatmaps" / f"{cat}_{row['exam_id'][:12]}_{slot}.png")
            items.append(GalleryItem(cat, image, heat, boxes, float(row["prob"]),
                                     caption=f"exam {str(row['exam_id'])[:10]}… view slot {slot}"))
    return items


def _write_overlay(ev: Any, image_id: str, heat: np.ndarray, path: Path) -> None:
    """The heatmap mapped back onto the original DICOM pixels through the recorded transforms, as a PNG overlay."""
    from mammokit.data.dataset import placement_for
    from mammokit.dicom import DicomReadError, read_dicom
    from mammokit.errors import MissingInputError
    from mammokit.evaluation.explain import input_scale, overlay_png, to_dicom_grid
    from mammokit.preprocess.sources import source_paths
    from mammokit.preprocess.store_schema import row_lesions, row_transform

    row = ev.dataset.table.set_index("image_id").loc[image_id]
    record = row_transform(row)
    stored_shape = (int(row["height"]), int(row["width"]))
    placement = placement_for(stored_shape, ev.dataset.full_size())
    scale = input_scale(placement, stored_shape, downscale=max(1, ev.dataset.full_scale))
    stored = row_lesions(row)
    lesions = None
    if stored:
        from mammokit.preprocess.geometry import stored_to_original_boxes

        lesions = stored_to_original_boxes(np.array([[d["x0"], d["y0"], d["x1"], d["y1"]] for d in stored]), record)
    source = source_paths(ev.dataset.store).get(str(image_id))  # raw paths live in the index, not the store
    try:
        if source is None:
            raise MissingInputError(f"image {image_id}: not in the store's index")
        overlay_png(read_dicom(source).pixels, to_dicom_grid(heat, scale, record), path, title=path.stem,
                    lesion_boxes=lesions)
    except (DicomReadError, OSError) as err:  # the original moved or is unreadable: the report still renders
        log.warning("could not write the DICOM-grid overlay %s: %s", path, err)


def build_report(out: Path, model: Any, config: dict[str, Any], evals: list[Any], metrics: dict[str, Any], *,
                 gallery: int = 3, seed: int = 0) -> Path:
    """Write out/report.html from the evaluations (the first is the internal test set)."""
    main = evals[0]
    levels = {name: _level_result(getattr(main.levels, name), main.metrics[name]) for name in ("exam", "breast")}
    ex = levels["exam"]
    calibration = _calibration_info(main, metrics["calibration"]["exam"], n_bins=ece_bins(len(ex.y)))
    froc_curve = None
    if main.metrics.get("froc"):
        _, froc_curve = froc_block(main.result)
    training = config.get("training", {})
    ctx = ReportContext(
        title=f"mammokit evaluation: {training.get('run', 'model')} on {main.name} ({main.split})",
        levels=levels,
        run={"model": config["model"].get("name"), "input size": config["input"]["input_size"],
             "full scale": config["input"]["full_scale"], "trained on": training.get("store"),
             "training exams": training.get("exams"), "training vendors": ", ".join(training.get("vendors", [])),
             "temperature": round(float(metrics["temperature"]), 4)},
        data={"store": str(main.store), "split": main.split, "exams": len(main.levels.exam),
              "sites": main.name, "external stores": len(evals) - 1,
              **({"exams seen in training (optimistic!)": main.metrics["training_overlap_exams"]}
                 if main.metrics.get("training_overlap_exams") else {})},
        calibration=calibration, froc_curve=froc_curve, froc=main.metrics.get("froc"),
        uncertainty=main.metrics.get("uncertainty") or None, sites=[_site(r) for r in metrics["sites"]],
        gallery=gallery_items(model, main, gallery, out) if gallery else (), seed=seed,
    )
    return write_report(out / "report.html", ctx)


def _calibration_info(main: Any, stored: dict[str, Any], *, n_bins: int) -> CalibrationInfo:
    """The exam level's calibration summary, read from the numbers `evaluate` already put in metrics.json (ECEs,
    floors, Brier), plus the temperature-only probabilities for their reliability diagram."""
    block = main.metrics["exam"]["calibration"]
    lab = main.levels.exam[main.levels.exam["label"].notna()]
    method = "" if stored["chosen"]["method"] == "temperature" else block["method"]

    def numbers(tag: str) -> dict[str, Any]:
        return {"ece": {s: block[f"ece_{s}_{tag}"] for s in ("uniform", "quantile")},
                "floor": block[f"ece_uniform_floor_{tag}"], "brier": block[f"brier_{tag}"]}

    before, after, alone = numbers("before"), numbers("after"), numbers("temperature")
    extra: dict[str, Any] = {}
    if method:
        extra = {"method": method, "p_temperature": lab["prob_temperature"].to_numpy(),
                 "ece_temperature": alone["ece"], "ece_floor_temperature": alone["floor"],
                 "brier_temperature": alone["brier"]}
    return CalibrationInfo(level="exam", temperature=block["temperature"], fitted_on=str(stored["source"]),
                           n_bins=n_bins, ece_before=before["ece"], ece_after=after["ece"],
                           brier_before=before["brier"], brier_after=after["brier"],
                           ece_floor_before=before["floor"], ece_floor_after=after["floor"], **extra)


def _site(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("site", "vendors", "n_exams", "auc", "auc_ci_low", "auc_ci_high", "auc_drop", "temperature_refit",
            "temperature")
    out = {k: row.get(k) for k in keys}
    out["ece_model"], out["ece_refit"] = row.get("ece_model_calibration"), row.get("ece_refit")
    out["auc_ci_low"] = out["auc_ci_low"] if out["auc_ci_low"] is not None else float("nan")
    out["auc_ci_high"] = out["auc_ci_high"] if out["auc_ci_high"] is not None else float("nan")
    return out
