"""`mammokit evaluate` and `mammokit calibrate`: predictions, metrics with CIs, calibration, uncertainty, FROC,
explanations, per-site external validation and the report.

The first store is the internal test set; every further store is an external site, reported with its AUC drop
against the internal one and its calibration with the model's calibration and with a temperature refitted on that
site. `calibrate` fits, per level (exam, breast), a temperature and beta calibration on the validation split and keeps
the one with the lower cross-validated NLL (see `calibrators`); evaluation reports the ECE before calibration, after
the temperature alone and after the chosen map.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammokit import INTENDED_USE
from mammokit.errors import InvalidInputError
from mammokit.evaluation.blocks import calibration_block, ece_bins, froc_block
from mammokit.evaluation.calibration import NoTemperatureError, expected_calibration_error, fit_temperature
from mammokit.evaluation.calibrators import fit_level_calibration
from mammokit.evaluation.inference import InferenceResult, dataset_for, run_inference
from mammokit.evaluation.metrics import roc_auc, summarize
from mammokit.evaluation.uncertainty import error_detection_auc, misclassified, summarize_passes
from mammokit.io import atomic_write, atomic_write_text
from mammokit.release.calibration import LevelCalibration, calibration_from_config
from mammokit.release.device import resolve_device
from mammokit.release.model import load_released, resolve_model_dir, set_calibration
from mammokit.release.store_table import load_store_table, run_splits, with_run_splits

log = logging.getLogger(__name__)
GROUP_COLUMNS = ("site", "manufacturer", "density")


def select_split(table: pd.DataFrame, split: str | None, source: str | Path = "store") -> tuple[pd.DataFrame, str]:
    """Rows of `split`; every row for `split` None or "all", or when the store has no splits at all (a store of its
    own, such as an external site). A split the store's splits do not hold is an error, never a silent "all":
    evaluating `--split val` on a training store must not quietly score the training exams."""
    if not split or split == "all" or "split" not in table.columns:
        return table, "all"
    chosen = table["split"] == split
    if not chosen.any():
        held = sorted(table["split"].dropna().astype(str).unique())
        raise InvalidInputError(f"{source}: no exams in split {split!r} (its splits: {', '.join(held) or 'none'}); "
                                "pass --split all to use every exam")
    return table[chosen], split


def training_overlap(table: pd.DataFrame, model_dir: Path) -> int:
    """Number of exams in `table` that the run trained or validated on (0 when the run's splits are unknown)."""
    splits = run_splits(model_dir)
    if splits is None:
        return 0
    seen = splits.loc[splits["split"].isin(["train", "val"]), "exam_id"]
    return int(table.drop_duplicates("exam_id")["exam_id"].astype(str).isin(seen).sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Levels:
    """Exam and breast level tables: one row each, logit, label, patient, groups."""

    exam: pd.DataFrame
    breast: pd.DataFrame
    image: pd.DataFrame


def build_levels(res: InferenceResult, table: pd.DataFrame) -> Levels:
    """Roll an inference result up to exam / breast / image rows with site, vendor and density attached."""
    meta = table.drop_duplicates("exam_id").set_index("exam_id")
    items = res.items.reset_index(drop=True)
    image_rows = []
    by_image = table.set_index("image_id")
    for i, row in items.iterrows():
        for slot, image_id in enumerate(row["image_ids"]):
            if image_id:
                image_rows.append({"exam_id": row["exam_id"], "image_id": image_id, "slot": slot,
                                   "laterality": by_image.loc[image_id, "laterality"],
                                   "view": by_image.loc[image_id, "view"], "logit": float(res.view_logits[i, slot])})
    images = pd.DataFrame(image_rows)
    if res.level == "view":  # single-view model: breast = mean of its views, exam = max over breasts
        labels = table.drop_duplicates(["exam_id", "laterality"]).set_index(["exam_id", "laterality"])["cancer"]
        breast = images.groupby(["exam_id", "laterality"], as_index=False)["logit"].mean()
        breast["label"] = [labels.get((e, lat), math.nan) for e, lat in zip(breast["exam_id"], breast["laterality"],
                                                                             strict=True)]
        exam = breast.groupby("exam_id", as_index=False).agg(logit=("logit", "max"), label=("label", "max"))
    else:
        exam = pd.DataFrame({"exam_id": items["exam_id"], "logit": res.exam_logit, "label": items["exam_label"]})
        rows = []
        for i, row in items.iterrows():
            for side, col in (("L", 0), ("R", 1)):
                if not math.isnan(res.breast_logits[i, col]):
                    rows.append({"exam_id": row["exam_id"], "laterality": side,
                                 "logit": float(res.breast_logits[i, col]), "label": row[f"breast_label_{side}"]})
        breast = pd.DataFrame(rows)
    for df in (exam, breast, images):
        df["patient_id"] = meta.loc[df["exam_id"], "patient_id"].to_numpy()
        for col in GROUP_COLUMNS:
            df[col] = meta.loc[df["exam_id"], col].astype(str).to_numpy() if col in meta.columns else "unknown"
    return Levels(exam, breast, images)


def level_metrics(df: pd.DataFrame, calibration: LevelCalibration, *, n_boot: int,
                  seed: int) -> tuple[dict, pd.DataFrame]:
    """Metrics of one level (labelled rows only) and the rows with raw, temperature-scaled and calibrated (the
    chosen map: every metric but the ECE comparison is computed on these) probabilities added."""
    df = df.copy()
    logits = df["logit"].to_numpy()
    df["prob_raw"] = _sigmoid(logits)
    df["prob_temperature"] = calibration.temperature.probabilities(logits)
    df["prob"] = calibration.chosen.probabilities(logits)
    lab = df[df["label"].notna()]
    y, p = lab["label"].to_numpy().astype(int), lab["prob"].to_numpy()
    groups = {c: lab[c].to_numpy() for c in GROUP_COLUMNS if c in lab.columns}
    metrics = summarize(y, p, groups, lab["patient_id"].to_numpy(), n_boot=n_boot, seed=seed)
    metrics["roc_auc"] = metrics["auc"]  # the name metrics.json promises (`{"exam": {"roc_auc": ...}}`)
    metrics["roc_auc_ci"] = [metrics.get("auc_ci_low"), metrics.get("auc_ci_high")]
    metrics["calibration"] = {
        **calibration_block(y, {"before": lab["prob_raw"].to_numpy(), "temperature": lab["prob_temperature"].to_numpy(),
                                "after": p}),
        "method": calibration.chosen.describe(), "temperature": float(calibration.temperature.params["T"])}
    return metrics, df


def uncertainty_block(res: InferenceResult, exam: pd.DataFrame) -> dict[str, Any]:
    """Per kind (mc, tta): mean/std/entropy of the pass probabilities and how well uncertainty ranks the exam-level
    errors. Measured on the model's own probabilities: a calibration map is fitted to single deterministic passes,
    and a saturating one (beta with b = 0) would squash the spread between passes that signals doubt."""
    out: dict[str, Any] = {}
    known = exam["label"].notna().to_numpy()
    for kind, levels in res.passes.items():
        probs = levels["exam"]
        s = summarize_passes(probs)
        exam[f"{kind}_mean"], exam[f"{kind}_std"] = s["mean"], s["std"]
        exam[f"{kind}_entropy"] = s["predictive_entropy"]
        errors = misclassified(exam["label"].to_numpy()[known], s["mean"][known])
        block = {"passes": int(probs.shape[0]), "mean_std": float(np.mean(s["std"])),
                 "mean_entropy": float(np.mean(s["predictive_entropy"])), "error_rate": float(errors.mean())}
        for name in ("std", "predictive_entropy", "mutual_information"):
            try:
                block[f"error_auc_{name}"] = error_detection_auc(s[name][known], errors)
            except ValueError:
                block[f"error_auc_{name}"] = None
        y_known = exam["label"].to_numpy()[known].astype(int)
        block["roc_auc_of_mean"] = roc_auc(y_known, s["mean"][known]) if len(np.unique(y_known)) == 2 else None
        out[kind] = block
    return out


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass
class StoreEvaluation:
    """Everything computed on one store."""

    name: str
    store: Path
    split: str
    result: InferenceResult
    levels: Levels
    metrics: dict[str, Any]
    dataset: Any  # the ExamDataset the predictions were made on (the report re-reads views from it)
    config: dict[str, Any]  # the released model's config


def evaluate_store(model: Any, config: dict[str, Any], store: str | Path, *, split: str | None,
                   calibration: dict[str, LevelCalibration], n_boot: int, mc_passes: int, tta_passes: int,
                   batch_size: int, seed: int, model_dir: Path | None = None,
                   num_workers: int = 0) -> StoreEvaluation:
    """Inference and metrics on one store. With `model_dir`, a store without splits of its own takes the training
    run's, and exams the run trained or validated on are counted (`training_overlap_exams`) and warned about."""
    store = Path(store)
    table = load_store_table(store)
    if model_dir is not None:
        table = with_run_splits(table, model_dir)
    table, used_split = select_split(table, split, store)
    overlap = training_overlap(table, model_dir) if model_dir is not None else 0
    if overlap:
        log.warning("%s: %d of the evaluated exams were used to train or validate this model; "
                    "their metrics are optimistic", store, overlap)
    dataset = dataset_for(config, table, store)
    res = run_inference(model, dataset, batch_size=batch_size, mc_passes=mc_passes, tta_passes=tta_passes, seed=seed,
                        num_workers=num_workers)
    levels = build_levels(res, table)
    metrics: dict[str, Any] = {"store": str(store), "split": used_split, "training_overlap_exams": overlap}
    for name in ("exam", "breast"):
        m, df = level_metrics(getattr(levels, name), calibration[name], n_boot=n_boot, seed=seed)
        metrics[name] = m
        setattr(levels, name, df)
    # view scores are not calibrated on their own: they get the breast level's temperature
    levels.image["prob_raw"] = _sigmoid(levels.image["logit"].to_numpy())
    levels.image["prob"] = calibration["breast"].temperature.probabilities(levels.image["logit"].to_numpy())
    metrics["uncertainty"] = uncertainty_block(res, levels.exam)
    froc, _ = froc_block(res)
    metrics["froc"] = froc
    n_exams = len(levels.exam)
    metrics["speed_exams_per_s"] = {k: (n_exams / v if v > 0 else None) for k, v in res.seconds.items()}
    site = table["site"].dropna().astype(str).unique() if "site" in table.columns else []
    name = ",".join(sorted(site)) or store.name
    return StoreEvaluation(name, store, used_split, res, levels, metrics, dataset, config)


def predictions_table(ev: StoreEvaluation) -> pd.DataFrame:
    """One table for all levels: level, ids, logit, raw and calibrated probability, label, uncertainty, groups."""
    frames = []
    for level in ("exam", "breast", "image"):
        df = getattr(ev.levels, level).copy()
        df.insert(0, "level", level)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["store"] = str(ev.store)
    out["site_name"] = ev.name
    return out


def site_rows(evals: list[StoreEvaluation]) -> list[dict[str, Any]]:
    """Per-site external validation table: AUC with CI, drop against the internal (first) store, ECE refitted."""
    rows = []
    internal = evals[0].metrics["exam"].get("roc_auc")
    for i, ev in enumerate(evals):
        m = ev.metrics["exam"]
        ex = ev.levels.exam[ev.levels.exam["label"].notna()]
        row = {"site": ev.name, "vendors": sorted(ev.levels.exam["manufacturer"].unique().tolist()),
               "n_exams": len(ex), "auc": m.get("roc_auc"), "auc_ci_low": m.get("roc_auc_ci", [None, None])[0],
               "auc_ci_high": m.get("roc_auc_ci", [None, None])[1],
               "auc_drop": None if i == 0 or internal is None or m.get("roc_auc") is None else internal - m["roc_auc"],
               "ece_model_calibration": m["calibration"]["ece_uniform_after"],
               "ece_model_temperature": m["calibration"]["ece_uniform_temperature"], "temperature_refit": False,
               "training_overlap_exams": ev.metrics["training_overlap_exams"]}
        y = ex["label"].to_numpy().astype(int)
        if i > 0 and len(np.unique(y)) == 2:
            try:
                t_site = fit_temperature(ex["logit"].to_numpy(), y)
            except NoTemperatureError as err:  # the site's logits admit no temperature: say why, refit nothing
                row["temperature_refit_refused"] = str(err)
            else:
                row.update(temperature_refit=True, temperature=t_site,
                           ece_refit=expected_calibration_error(y, _sigmoid(ex["logit"].to_numpy() / t_site),
                                                                ece_bins(len(y))))
        rows.append(row)
    return rows


def evaluate(model_path: str | Path, stores: list[str | Path], *, out: str | Path, split: str | None = "test",
             n_boot: int = 2000, mc_passes: int = 10, tta_passes: int = 4, batch_size: int = 4, seed: int = 0,
             gallery: int = 3, report: bool = True, device: str = "auto", num_workers: int = 0) -> dict[str, Any]:
    """Evaluate a released model on one or more stores; writes predictions, metrics.json, heatmaps and report.
    `device` "auto" runs the model on the GPU when there is one; `num_workers` loader processes read the store
    (results do not depend on them)."""
    if not stores:
        raise InvalidInputError("evaluate needs at least one store (--data)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(model_path)
    model, config = load_released(model_dir)
    model.to(resolve_device(device))
    calibration = calibration_from_config(config)
    temperature = float(calibration["exam"].temperature.params["T"])
    evals = [evaluate_store(model, config, s, split=split if i == 0 else "all", calibration=calibration,
                            n_boot=n_boot, mc_passes=mc_passes, tta_passes=tta_passes, batch_size=batch_size,
                            seed=seed, model_dir=model_dir, num_workers=num_workers) for i, s in enumerate(stores)]
    preds = pd.concat([predictions_table(ev) for ev in evals], ignore_index=True)
    atomic_write(out / "predictions.parquet", lambda tmp: preds.to_parquet(tmp, index=False))
    main = evals[0]
    metrics = {"intended_use": INTENDED_USE, "model": str(model_dir), "temperature": temperature,
               "temperature_source": calibration["exam"].source,
               "calibration": {level: c.to_dict() for level, c in calibration.items()},
               "exam": main.metrics["exam"], "breast": main.metrics["breast"], "froc": main.metrics["froc"],
               "uncertainty": main.metrics["uncertainty"], "speed_exams_per_s": main.metrics["speed_exams_per_s"],
               "split": main.split, "training_overlap_exams": main.metrics["training_overlap_exams"],
               "sites": site_rows(evals),
               "external": {ev.name: {"exam": ev.metrics["exam"], "breast": ev.metrics["breast"]} for ev in evals[1:]}}
    atomic_write_text(out / "metrics.json", json.dumps(_json_ready(metrics), indent=1))
    if report:
        from mammokit.evaluation.report_builder import build_report

        metrics["report"] = str(build_report(out, model, config, evals, metrics, gallery=gallery, seed=seed))
    return metrics


def calibrate(model_path: str | Path, store: str | Path, *, split: str = "val", method: str = "auto",
              batch_size: int = 4, seed: int = 0, device: str = "auto",
              num_workers: int = 0) -> dict[str, LevelCalibration]:
    """Fit, per level (exam, breast), a temperature (L-BFGS on NLL) and, for `method` "auto" or "beta", beta
    calibration on a held-out split; "auto" keeps the one with the lower patient-grouped cross-validated NLL. The
    result is stored in the released model's config.json and returned."""
    model_dir = resolve_model_dir(model_path)
    model, config = load_released(model_dir)
    model.to(resolve_device(device))
    table = with_run_splits(load_store_table(store), model_dir)
    if "split" not in table.columns:
        raise InvalidInputError(f"{store}: no splits recorded (in the store or the run's splits.csv): "
                                f"no {split!r} split to calibrate on")
    table, _ = select_split(table, split, store)
    res = run_inference(model, dataset_for(config, table, store), batch_size=batch_size, num_workers=num_workers)
    levels = build_levels(res, table)
    fitted = {}
    for level in ("exam", "breast"):
        df = getattr(levels, level)
        df = df[df["label"].notna()]
        y = df["label"].to_numpy().astype(int)
        if len(np.unique(y)) < 2:
            raise InvalidInputError(f"{store}: the {split!r} split needs positive and negative {level}s to calibrate")
        fitted[level] = fit_level_calibration(df["logit"].to_numpy(), y, method=method,
                                              groups=df["patient_id"].to_numpy(), seed=seed,
                                              source=f"{store} split={split} {level}s={len(df)}")
    set_calibration(model_dir, {level: c.to_dict() for level, c in fitted.items()},
                    temperature=float(fitted["exam"].temperature.params["T"]), source=fitted["exam"].source)
    return fitted
