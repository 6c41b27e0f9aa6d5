"""The evaluation report: one self-contained `report.html` (inline CSS, figures as base64 PNG, no scripts, no external
links) with headline numbers and CIs, ROC/PR, calibration before/after (temperature, beta), FROC, metric tables,
per-site table, uncertainty summary and a gallery of the most confident TP/FP/FN cases with heatmaps.

The caller (`mammokit evaluate`) computes the metrics with `metrics.summarize`, `calibration`, `froc.froc_summary`
and `uncertainty`, fills a `ReportContext` and calls `write_report`. This module only formats: every number shown
comes from those dicts; the curves are drawn from the raw arrays (the ROC band is a patient bootstrap, seeded).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from numpy.typing import ArrayLike

from mammokit import INTENDED_USE, __version__
from mammokit.evaluation import plots
from mammokit.evaluation.calibration import brier_score, ece_if_calibrated, expected_calibration_error
from mammokit.evaluation.froc import FROCCurve

CATEGORIES = ("TP", "FP", "FN")
CATEGORY_TITLES = {
    "TP": "Most confident true positives",
    "FP": "Most confident false positives",
    "FN": "Most confidently missed cancers (false negatives)",
}


def _array(a: ArrayLike, name: str, ndim: int = 1) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


@dataclass
class LevelResult:
    """Predictions and metrics of one level ("exam" or "breast").

    Attributes:
        y: 0/1 labels.
        p_raw: uncalibrated probabilities (sigmoid of the raw logits).
        p: calibrated probabilities (after temperature scaling); every metric is computed on these.
        patient_ids: patient id per row; the ROC band resamples patients.
        metrics: `metrics.summarize(y, p, patient_ids=...)` for these rows (optionally with `groups`).
    """

    y: np.ndarray
    p_raw: np.ndarray
    p: np.ndarray
    patient_ids: np.ndarray
    metrics: Mapping[str, Any]

    def validate(self, level: str) -> None:
        """Raise ValueError naming the level and field when arrays disagree or the metrics dict is incomplete."""
        n = _array(self.y, f"levels[{level!r}].y").shape[0]
        for name in ("p_raw", "p", "patient_ids"):
            arr = _array(getattr(self, name), f"levels[{level!r}].{name}")
            if arr.shape[0] != n:
                raise ValueError(f"levels[{level!r}].{name}: {arr.shape[0]} rows but y has {n}")
        for name in ("p_raw", "p"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"levels[{level!r}].{name}: probabilities must be finite and in [0, 1]")
        missing = {"n", "n_pos", "auc", "auc_ci_low", "auc_ci_high", "pr_auc", "pf1", "prevalence"} - set(self.metrics)
        if missing:
            raise ValueError(f"levels[{level!r}].metrics lacks {sorted(missing)}: pass metrics.summarize(...) output")
        if int(self.metrics["n"]) != n:
            raise ValueError(f"levels[{level!r}].metrics: n={self.metrics['n']} but the arrays have {n} rows")


@dataclass
class CalibrationInfo:
    """Temperature scaling summary for one level (ECE in both binnings, Brier, before and after).

    Attributes:
        level: which level's `p_raw`/`p` the reliability diagrams show.
        temperature: fitted T (logits divided by T).
        fitted_on: where T was fitted, e.g. "validation split (n=812 exams)".
        n_bins: bins of the ECE and the reliability diagrams.
        ece_before, ece_after: {"uniform": equal-width ECE, "quantile": equal-mass ECE}.
        ece_floor_before, ece_floor_after: equal-width ECE a perfectly calibrated model would show on this many
            cases (`calibration.ece_if_calibrated`): the finite-sample floor the measured ECE is read against.
        brier_before, brier_after: Brier scores.
        method: the chosen map when it is not the temperature (e.g. "beta a = 1.41, b = 0, c = 1.5"); then
            `p_temperature` (probabilities after the temperature alone) and its `ece_temperature`,
            `ece_floor_temperature` and `brier_temperature` are shown beside it.
    """

    level: str
    temperature: float
    fitted_on: str
    n_bins: int
    ece_before: Mapping[str, float]
    ece_after: Mapping[str, float]
    brier_before: float
    brier_after: float
    ece_floor_before: float = math.nan
    ece_floor_after: float = math.nan
    method: str = ""
    p_temperature: np.ndarray | None = None
    ece_temperature: Mapping[str, float] | None = None
    ece_floor_temperature: float = math.nan
    brier_temperature: float = math.nan

    @classmethod
    def from_arrays(
        cls,
        y: ArrayLike,
        p_raw: ArrayLike,
        p: ArrayLike,
        temperature: float,
        *,
        level: str = "exam",
        fitted_on: str = "validation split",
        n_bins: int = 15,
        method: str = "",
        p_temperature: ArrayLike | None = None,
    ) -> CalibrationInfo:
        """Compute the ECEs and Brier scores with `calibration.expected_calibration_error` / `brier_score`; pass
        `method` and `p_temperature` when `p` comes from a map other than the temperature."""
        strategies = ("uniform", "quantile")
        extra: dict[str, Any] = {}
        if method and p_temperature is not None:
            p_t = np.asarray(p_temperature, dtype=np.float64)
            extra = {"method": method, "p_temperature": p_t, "brier_temperature": brier_score(y, p_t),
                     "ece_temperature": {s: expected_calibration_error(y, p_t, n_bins, s) for s in strategies},
                     "ece_floor_temperature": ece_if_calibrated(p_t, n_bins)}
        return cls(
            level=level,
            temperature=float(temperature),
            fitted_on=fitted_on,
            n_bins=n_bins,
            ece_before={s: expected_calibration_error(y, p_raw, n_bins, s) for s in strategies},
            ece_after={s: expected_calibration_error(y, p, n_bins, s) for s in strategies},
            brier_before=brier_score(y, p_raw),
            brier_after=brier_score(y, p),
            ece_floor_before=ece_if_calibrated(p_raw, n_bins),
            ece_floor_after=ece_if_calibrated(p, n_bins),
            **extra,
        )


@dataclass
class SiteRow:
    """One row of the per-site (external validation) table.

    Attributes:
        site: site or dataset name.
        vendors: manufacturer(s) at that site.
        n_exams: exams evaluated.
        auc, auc_ci_low, auc_ci_high: exam-level AUC with its bootstrap CI (NaN when undefined).
        auc_drop: internal-test AUC minus this site's AUC (positive = worse here); None for the internal set.
        temperature_refit: whether T was refitted on this site's data.
        temperature: the T refitted at this site (None if none was).
        ece_model: exam-level ECE with the model's own calibration (None if unknown).
        ece_refit: exam-level ECE after the temperature refitted at this site (None if none was).
    """

    site: str
    vendors: str | Sequence[str]
    n_exams: int
    auc: float
    auc_ci_low: float = math.nan
    auc_ci_high: float = math.nan
    auc_drop: float | None = None
    temperature_refit: bool = False
    temperature: float | None = None
    ece_model: float | None = None
    ece_refit: float | None = None


@dataclass
class GalleryItem:
    """One case in the gallery.

    Attributes:
        category: "TP", "FP" or "FN".
        image: 2-D float image (e.g. the canonical-frame view).
        heatmap: 2-D map in [0, 1] of the image's shape, or None.
        boxes: lesion boxes (y0, x0, y1, x1) in the image's pixels (empty for none).
        score: the case's calibrated probability.
        caption: short text (patient/exam id, view, finding).
    """

    category: str
    image: np.ndarray
    heatmap: np.ndarray | None
    boxes: Sequence[Sequence[float]] | np.ndarray
    score: float
    caption: str = ""

    def validate(self, i: int) -> None:
        """Raise ValueError naming `gallery[i]` and the field at fault."""
        if self.category not in CATEGORIES:
            raise ValueError(f"gallery[{i}].category: expected one of {CATEGORIES}, got {self.category!r}")
        img = _array(self.image, f"gallery[{i}].image", ndim=2)
        if img.size == 0 or not np.all(np.isfinite(img)):
            raise ValueError(f"gallery[{i}].image: must be non-empty and finite")
        if self.heatmap is not None:
            hm = np.asarray(self.heatmap, dtype=np.float64)
            if hm.shape != img.shape:
                raise ValueError(f"gallery[{i}].heatmap: shape {hm.shape} differs from the image's {img.shape}")
            if not np.all(np.isfinite(hm)) or hm.min() < 0 or hm.max() > 1:
                raise ValueError(f"gallery[{i}].heatmap: values must be finite and in [0, 1]")
        boxes = np.asarray(self.boxes, dtype=np.float64)
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise ValueError(f"gallery[{i}].boxes: expected (N, 4) boxes as (y0, x0, y1, x1), got {boxes.shape}")
        if not 0.0 <= float(self.score) <= 1.0:
            raise ValueError(f"gallery[{i}].score: expected a probability in [0, 1], got {self.score}")


@dataclass
class ReportContext:
    """Everything `write_report` shows. Only `title` and `levels` are required.

    Attributes:
        title: page title, e.g. "mammokit evaluation: run effb3-global-local on VinDr-Mammo test".
        run: model/run description shown as a table (architecture, checkpoint, input size, config path...).
        data: test-data description shown as a table (dataset, split, sites, vendors, exam counts...).
        levels: {"exam": LevelResult, "breast": LevelResult}; exam first is the headline level.
        calibration: temperature-scaling summary, or None when uncalibrated.
        froc_curve, froc: `froc.froc_curve(...)` and `froc.froc_summary(...)`, or None when no lesion boxes exist.
        uncertainty: e.g. {"MC-dropout (20 passes)": {"error-detection AUC": 0.71, ...}, "TTA (8)": {...}}, or a
            flat {name: value} dict, or None.
        sites: per-site rows (SiteRow or dicts with SiteRow's fields).
        gallery: cases to show (`pick_gallery_cases` chooses them); tiles are grouped by category.
        seed, n_boot: the ROC-band bootstrap.
        created: timestamp string shown in the header (default: now, UTC).
    """

    title: str
    levels: Mapping[str, LevelResult]
    run: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    calibration: CalibrationInfo | None = None
    froc_curve: FROCCurve | None = None
    froc: Mapping[str, Any] | None = None
    uncertainty: Mapping[str, Any] | None = None
    sites: Sequence[SiteRow | Mapping[str, Any]] = ()
    gallery: Sequence[GalleryItem] = ()
    seed: int = 0
    n_boot: int = 1000
    created: str | None = None

    def validate(self) -> None:
        """Check every part before anything is drawn, so a bad input fails fast with a named field."""
        if not self.levels:
            raise ValueError("ReportContext.levels: at least one level (e.g. 'exam') is required")
        for level, res in self.levels.items():
            res.validate(level)
        if self.calibration is not None and self.calibration.level not in self.levels:
            raise ValueError(f"calibration.level: {self.calibration.level!r} is not one of {list(self.levels)}")
        if (self.froc_curve is None) != (self.froc is None):
            raise ValueError("froc_curve and froc: give both (froc.froc_curve and froc.froc_summary) or neither")
        for i, item in enumerate(self.gallery):
            item.validate(i)
        if self.n_boot < 1:
            raise ValueError(f"ReportContext.n_boot: must be >= 1, got {self.n_boot}")


def pick_gallery_cases(y: ArrayLike, p: ArrayLike, threshold: float = 0.5, k: int = 4) -> dict[str, np.ndarray]:
    """Row indices of the k most confident cases per category at the call p >= threshold.

    TP: positives called positive, highest p first; FP: negatives called positive, highest p first; FN: positives
    called negative, lowest p first (the most confidently missed cancers). Ties keep row order.
    """
    y_arr, p_arr = np.asarray(y), np.asarray(p, dtype=np.float64)
    if y_arr.shape != p_arr.shape or y_arr.ndim != 1:
        raise ValueError(f"pick_gallery_cases: y and p must be 1-D of equal length, got {y_arr.shape}, {p_arr.shape}")
    if k < 0:
        raise ValueError(f"pick_gallery_cases: k must be >= 0, got {k}")
    called = p_arr >= threshold
    pos = y_arr == 1
    out = {}
    for cat, sel, key in (("TP", pos & called, -p_arr), ("FP", ~pos & called, -p_arr), ("FN", pos & ~called, p_arr)):
        idx = np.flatnonzero(sel)
        out[cat] = idx[np.argsort(key[idx], kind="stable")][:k]
    return out


# ------------------------------------------------------------------------------------------------- formatting


def fmt_num(x: Any, digits: int = 3) -> str:
    """Fixed-point number; an en dash for None/NaN (undefined metrics)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):.{digits}f}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    """Share as a percentage; an en dash for None/NaN."""
    if x is None or math.isnan(float(x)):
        return "–"
    return f"{100 * float(x):.{digits}f}%"


def fmt_ci(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    """`value (low–high)`, or just the value when the CI is undefined."""
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return fmt_num(value, digits)
    return f"{fmt_num(value, digits)} ({fmt_num(low, digits)}–{fmt_num(high, digits)})"


def _fmt_value(v: Any) -> str:
    if isinstance(v, (float, np.floating, int, np.integer, bool, np.bool_)) or v is None:
        return fmt_num(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v)
    return str(v)


def _level_rows(levels: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Rows (label, one cell per level) of the main metrics table."""
    ms = list(levels.values())
    conf = ms[0].get("confidence", 0.95)
    rows: list[tuple[str, list[str]]] = [
        ("cases (cancers)", [f"{fmt_num(m['n'])} ({fmt_num(m['n_pos'])})" for m in ms]),
        ("patients", [fmt_num(m.get("n_patients")) for m in ms]),
        ("prevalence", [fmt_pct(m["prevalence"]) for m in ms]),
        (f"ROC-AUC ({conf:.0%} CI)", [fmt_ci(m["auc"], m["auc_ci_low"], m["auc_ci_high"]) for m in ms]),
        ("PR-AUC (average precision)", [fmt_num(m["pr_auc"]) for m in ms]),
        ("probabilistic F1", [fmt_num(m["pf1"]) for m in ms]),
    ]
    for i, pt in enumerate(ms[0].get("sensitivity_at_specificity", [])):
        rows.append((f"sensitivity at specificity ≥ {fmt_pct(pt['target'], 0)}",
                     [_point(m["sensitivity_at_specificity"][i], "sensitivity") for m in ms]))
    for i, pt in enumerate(ms[0].get("specificity_at_sensitivity", [])):
        rows.append((f"specificity at sensitivity ≥ {fmt_pct(pt['target'], 0)}",
                     [_point(m["specificity_at_sensitivity"][i], "specificity") for m in ms]))
    if "threshold" in ms[0]:
        rows.append((f"sensitivity / specificity at p ≥ {ms[0]['threshold']:g}",
                     [f"{fmt_pct(m['sensitivity_at_threshold'])} / {fmt_pct(m['specificity_at_threshold'])}"
                      for m in ms]))
    if "brier" in ms[0]:
        rows.append(("Brier score", [fmt_num(m["brier"]) for m in ms]))
    return rows


def _point(pt: Mapping[str, float], key: str) -> str:
    return f"{fmt_pct(pt[key])} (p ≥ {fmt_num(pt['threshold'])})"


def _group_tables(levels: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-group breakdowns found in the metrics dicts (site, vendor, density...), one table per level and name."""
    tables = []
    for level, m in levels.items():
        for name, rows in (m.get("groups") or {}).items():
            body = []
            for r in rows:
                sens = r["sensitivity_at_specificity"][0] if r.get("sensitivity_at_specificity") else None
                body.append([r["group"], f"{fmt_num(r['n'])} ({fmt_num(r['n_pos'])})", fmt_num(r["auc"]),
                             _point(sens, "sensitivity") if sens else "–", fmt_num(r["pf1"])])
            target = rows[0]["sensitivity_at_specificity"][0]["target"] if rows and rows[0].get(
                "sensitivity_at_specificity") else None
            sens_head = f"sens. at spec. ≥ {fmt_pct(target, 0)}" if target is not None else "sensitivity"
            tables.append({"title": f"{level} level by {name}",
                           "head": [name, "cases (cancers)", "ROC-AUC", sens_head, "pF1"], "rows": body})
    return tables


def _site_rows(sites: Sequence[SiteRow | Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for i, s in enumerate(sites):
        if isinstance(s, Mapping):
            try:
                s = SiteRow(**s)
            except TypeError as err:
                raise ValueError(f"sites[{i}]: {err}; expected the fields of SiteRow") from err
        vendors = s.vendors if isinstance(s.vendors, str) else ", ".join(map(str, s.vendors))
        drop = "internal" if s.auc_drop is None else f"{-s.auc_drop:+.3f}"
        refit = "not refitted"
        if s.temperature_refit and s.temperature is not None:
            refit = f"{fmt_num(s.ece_refit)} (T = {s.temperature:.2f})"
        rows.append([s.site, vendors, fmt_num(int(s.n_exams)), fmt_ci(s.auc, s.auc_ci_low, s.auc_ci_high), drop,
                     fmt_num(s.ece_model), refit])
    return rows


def _uncertainty_table(unc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A method × quantity table when values are dicts, else a two-column name/value table."""
    if not unc:
        return None
    if all(isinstance(v, Mapping) for v in unc.values()):
        cols: list[str] = []
        for v in unc.values():
            cols += [k for k in v if k not in cols]
        rows = [[name, *(_fmt_value(v.get(c)) for c in cols)] for name, v in unc.items()]
        return {"head": ["method", *cols], "rows": rows}
    return {"head": ["quantity", "value"], "rows": [[k, _fmt_value(v)] for k, v in unc.items()]}


def _headline(ctx: ReportContext) -> list[dict[str, str]]:
    """The cards at the top: AUC per level with CI, the first operating point, pF1, ECE after scaling, FROC."""
    cards = []
    for level, res in ctx.levels.items():
        m = res.metrics
        ci = fmt_ci(m["auc"], m["auc_ci_low"], m["auc_ci_high"])
        value, _, rest = ci.partition(" ")
        cards.append({"label": f"{level}-level ROC-AUC", "value": value,
                      "sub": f"{m.get('confidence', 0.95):.0%} CI {rest.strip('()')}" if rest else "no CI",
                      "note": f"{fmt_num(m['n'])} {level}s, {fmt_num(m['n_pos'])} cancers"})
    first = next(iter(ctx.levels))
    m = ctx.levels[first].metrics
    if m.get("sensitivity_at_specificity"):
        pt = m["sensitivity_at_specificity"][0]
        cards.append({"label": f"sensitivity at {fmt_pct(pt['target'], 0)} specificity", "value":
                      fmt_pct(pt["sensitivity"]), "sub": f"{first} level", "note": f"p ≥ {fmt_num(pt['threshold'])}"})
    cards.append({"label": "probabilistic F1", "value": fmt_num(m["pf1"]), "sub": f"{first} level",
                  "note": f"PR-AUC {fmt_num(m['pr_auc'])}"})
    if ctx.calibration is not None:
        c = ctx.calibration
        sub = f"before {fmt_num(c.ece_before['uniform'])}"
        if c.method:
            sub += f", temperature alone {fmt_num(c.ece_temperature['uniform'])}"
        cards.append({"label": "ECE after calibration", "value": fmt_num(c.ece_after["uniform"]), "sub": sub,
                      "note": (c.method.split()[0] + " calibration") if c.method else f"T = {c.temperature:.2f}"})
    if ctx.froc is not None:
        cards.append({"label": "FROC mean sensitivity", "value": fmt_num(ctx.froc["mean_sensitivity"]),
                      "sub": f"at {', '.join(ctx.froc['sensitivity_at_fp'])} FP/image",
                      "note": f"{ctx.froc['n_lesions']} lesions"})
    return cards


# ---------------------------------------------------------------------------------------------------- render


def _figures(ctx: ReportContext) -> dict[str, Any]:
    """All report figures as data URIs."""
    metrics = {lv: r.metrics for lv, r in ctx.levels.items()}
    arrays = {lv: (np.asarray(r.y, dtype=np.float64), np.asarray(r.p, dtype=np.float64))
              for lv, r in ctx.levels.items()}
    bands = {}
    for lv, r in ctx.levels.items():
        n_pos = int(arrays[lv][0].sum())
        if 0 < n_pos < arrays[lv][0].size:
            bands[lv] = plots.roc_bootstrap(arrays[lv][0], arrays[lv][1], np.asarray(r.patient_ids),
                                            n_boot=ctx.n_boot, confidence=float(metrics[lv].get("confidence", 0.95)),
                                            seed=ctx.seed)
    figs: dict[str, Any] = {"roc": None, "pr": None, "reliability": [], "froc": None}
    if bands:
        figs["roc"] = plots.figure_to_data_uri(plots.plot_roc(bands, metrics))
    with_pos = {lv: a for lv, a in arrays.items() if a[0].sum() > 0}
    if with_pos:
        figs["pr"] = plots.figure_to_data_uri(plots.plot_pr(with_pos, metrics))
    c = ctx.calibration
    if c is not None:
        r = ctx.levels[c.level]
        y = np.asarray(r.y, dtype=np.float64)
        panels = [(r.p_raw, c.ece_before, "before calibration")]
        if c.method:
            panels += [(c.p_temperature, c.ece_temperature, f"temperature alone (T = {c.temperature:.2f})"),
                       (r.p, c.ece_after, f"after {c.method.split()[0]} calibration")]
        else:
            panels.append((r.p, c.ece_after, f"after temperature scaling (T = {c.temperature:.2f})"))
        for p, ece, when in panels:
            fig = plots.plot_reliability(y, np.asarray(p, dtype=np.float64), c.n_bins, f"{c.level} level, {when}", ece)
            figs["reliability"].append({"src": plots.figure_to_data_uri(fig), "alt": f"Reliability diagram, {when}"})
    if ctx.froc_curve is not None and ctx.froc is not None:
        figs["froc"] = plots.figure_to_data_uri(plots.plot_froc(ctx.froc_curve, ctx.froc))
    return figs


def _gallery(items: Sequence[GalleryItem]) -> list[dict[str, Any]]:
    groups = []
    for cat in CATEGORIES:
        tiles = [{"src": plots.figure_to_data_uri(
                     plots.plot_case(np.asarray(it.image, dtype=np.float64),
                                     None if it.heatmap is None else np.asarray(it.heatmap, dtype=np.float64),
                                     it.boxes, cat), dpi=110),
                  "score": fmt_num(it.score), "caption": it.caption,
                  "has_heatmap": it.heatmap is not None}
                 for it in items if it.category == cat]
        if tiles:
            groups.append({"category": cat, "title": CATEGORY_TITLES[cat], "color": plots.CATEGORY_COLORS[cat],
                           "tiles": tiles})
    return groups


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                       autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def render_report(ctx: ReportContext) -> str:
    """The report as an HTML string (see `write_report`)."""
    ctx.validate()
    metrics = {lv: r.metrics for lv, r in ctx.levels.items()}
    calib = None
    if ctx.calibration is not None:
        c = ctx.calibration
        columns = [("before", c.ece_before, c.ece_floor_before, c.brier_before)]
        if c.method:
            columns.append(("temperature alone", c.ece_temperature, c.ece_floor_temperature, c.brier_temperature))
        columns.append((f"after {c.method.split()[0] if c.method else 'temperature'} calibration", c.ece_after,
                        c.ece_floor_after, c.brier_after))
        calib = {"level": c.level, "temperature": f"{c.temperature:.3f}", "fitted_on": c.fitted_on,
                 "n_bins": c.n_bins, "method": c.method, "columns": [col[0] for col in columns],
                 "rows": [["ECE, equal-width bins", *(fmt_num(col[1]["uniform"]) for col in columns)],
                          ["ECE, equal-mass bins", *(fmt_num(col[1]["quantile"]) for col in columns)],
                          ["ECE floor: a perfectly calibrated model, this many cases",
                           *(fmt_num(col[2]) for col in columns)],
                          ["Brier score", *(fmt_num(col[3]) for col in columns)]]}
    froc = None
    if ctx.froc is not None:
        froc = {"rows": [[f"{r} FP/image", fmt_pct(s)] for r, s in ctx.froc["sensitivity_at_fp"].items()],
                "mean": fmt_num(ctx.froc["mean_sensitivity"]), "criterion": ctx.froc.get("criterion", ""),
                "convention": ctx.froc.get("convention") or f"{ctx.froc.get('interpolation', '')} interpolation",
                "n_lesions": ctx.froc["n_lesions"], "n_images": ctx.froc["n_images"],
                "candidates": ctx.froc.get("candidates", "")}
    created = ctx.created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _environment().get_template("report.html").render(
        title=ctx.title, created=created, version=__version__, intended_use=INTENDED_USE,
        headline=_headline(ctx), levels=list(metrics), level_rows=_level_rows(metrics),
        group_tables=_group_tables(metrics), run=[[k, _fmt_value(v)] for k, v in ctx.run.items()],
        data=[[k, _fmt_value(v)] for k, v in ctx.data.items()], calibration=calib, froc=froc,
        uncertainty=_uncertainty_table(ctx.uncertainty), sites=_site_rows(ctx.sites), figures=_figures(ctx),
        gallery=_gallery(ctx.gallery), n_boot=ctx.n_boot, seed=ctx.seed,
    )


def write_report(path: str | Path, ctx: ReportContext) -> Path:
    """Render `ctx` and write one self-contained HTML file at `path` (parent folders are created); returns the path.

    Raises:
        ValueError: naming the field of `ctx` at fault (mismatched lengths, probabilities outside [0, 1], an
            incomplete metrics dict, a heatmap of the wrong shape...).
    """
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"write_report: path {out} should end in .html")
    html = render_report(ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
