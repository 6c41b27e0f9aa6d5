"""Figures for the evaluation report: ROC with a patient-bootstrap CI band, precision-recall, reliability diagrams,
FROC and gallery tiles (image + heatmap + boxes), each returned as a matplotlib Figure and encoded as a PNG data URI.

Figures are built on `matplotlib.figure.Figure` directly (saved through the Agg canvas, no pyplot state or GUI
backend), so they are thread-safe and
never open a window. Sizes are chosen so that two plots sit side by side in a 1366-pixel-wide browser window.
Numbers printed in legends come from the metrics dicts passed in (`metrics.summarize`, `froc.froc_summary`,
`calibration`), never recomputed here; the curves themselves are drawn from the raw labels and scores.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike

from mammokit.evaluation.calibration import reliability_diagram
from mammokit.evaluation.froc import DEFAULT_INTERPOLATION, FROCCurve, reading_points
from mammokit.evaluation.metrics import _check_binary, _check_both_classes, _cluster_index

PLOT_SIZE = (5.0, 3.9)  # inches; at PLOT_DPI ~ 650 px wide, shown at half the 1366-px page width
PLOT_DPI = 130
LEVEL_COLORS = {"exam": "#1f5fa8", "breast": "#c2571a"}
CATEGORY_COLORS = {"TP": "#1a7f37", "FP": "#b42318", "FN": "#b54708"}
_FALLBACK_COLORS = ("#5b3c99", "#2a7f7f", "#7a7a7a")


def figure_to_data_uri(fig: Figure, dpi: int = PLOT_DPI) -> str:
    """Encode a figure as a `data:image/png;base64,...` URI, so the report stays one self-contained file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.06, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _color(level: str, i: int) -> str:
    return LEVEL_COLORS.get(level, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])


# ----------------------------------------------------------------------------------------------------------- ROC


@dataclass(frozen=True)
class RocBand:
    """ROC curve on a fixed FPR grid with a bootstrap CI band (vertical averaging).

    Attributes:
        fpr: the FPR grid (ascending, 0 to 1).
        tpr: TPR of the full data at each grid FPR.
        tpr_low, tpr_high: percentile band of the replicate TPRs at each grid FPR.
        confidence: two-sided level of the band.
        n_boot_valid: replicates with both classes (the others are dropped).
        replicate_aucs: trapezoidal AUC of each replicate's full ROC curve (NaN for dropped replicates); equal to
            `metrics.bootstrap_auc(..., return_replicates=True)["replicates"]` for the same seed and chunk.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    tpr_low: np.ndarray
    tpr_high: np.ndarray
    confidence: float
    n_boot_valid: int
    replicate_aucs: np.ndarray


def weighted_roc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (FPR, TPR) with per-row weights, one point per distinct score (descending), starting at (0, 0).

    Tied scores enter together, so the segment between two points is the diagonal a tie produces (its area is the
    Mann-Whitney half credit). Weights are bootstrap counts; both classes must carry positive total weight.
    """
    w = np.ones(y.size) if w is None else w
    order = np.argsort(-p, kind="stable")
    ps, ys, ws = p[order], y[order], w[order]
    last = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ws * ys)[last]
    fp = np.cumsum(ws * (1 - ys))[last]
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """TPR of a piecewise-linear ROC curve at each grid FPR; at a vertical segment, its top (best TPR at that FPR)."""
    j = np.searchsorted(fpr, grid, side="right")  # first point with fpr > f
    i = j - 1  # last point with fpr <= f (its TPR is the top of any vertical segment at fpr[i])
    jj = np.minimum(j, fpr.size - 1)
    x0, x1, y0, y1 = fpr[i], fpr[jj], tpr[i], tpr[jj]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(x1 > x0, (grid - x0) / (x1 - x0), 0.0)
    return np.where(fpr[i] == grid, y0, y0 + frac * (y1 - y0))


def roc_bootstrap(
    y: ArrayLike,
    p: ArrayLike,
    patient_ids: ArrayLike | None = None,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    n_grid: int = 101,
    chunk: int = 256,
) -> RocBand:
    """ROC curve with a patient-level (cluster) bootstrap band, by vertical averaging on a fixed FPR grid.

    Patients are drawn exactly as `metrics.bootstrap_auc` draws them (same seed, same chunked
    `rng.integers(0, n_patients, (block, n_patients))` calls, patients in sorted-id order), and every row of a drawn
    patient enters with weight = times drawn; each replicate's weighted ROC is read at the grid FPRs and the band is
    the (1-confidence)/2 and 1-(1-confidence)/2 percentiles per grid point. Replicates lacking a class are dropped.

    Args:
        y, p: labels (0/1) and scores, one per row.
        patient_ids: cluster id per row (None resamples rows).
        n_boot: number of bootstrap replicates (>= 1).
        confidence: two-sided level of the band.
        seed: seed of the resampling RNG.
        n_grid: number of FPR grid points on [0, 1].
        chunk: replicates drawn per RNG call (keep equal to `bootstrap_auc`'s to share its draws).
    """
    y_arr, p_arr = _check_binary(y, p, "roc_bootstrap")
    _check_both_classes(y_arr, "roc_bootstrap")
    if n_boot < 1 or n_grid < 2 or chunk < 1:
        raise ValueError(f"roc_bootstrap: need n_boot >= 1, n_grid >= 2, chunk >= 1 (got {n_boot}, {n_grid}, {chunk})")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"roc_bootstrap: confidence must be in (0, 1), got {confidence}")
    yf = y_arr.astype(np.float64)
    cluster, n_clusters = _cluster_index(patient_ids, y_arr.size)
    grid = np.linspace(0.0, 1.0, n_grid)
    full_fpr, full_tpr = weighted_roc(yf, p_arr)
    rng = np.random.default_rng(seed)
    curves = np.full((n_boot, n_grid), np.nan)
    aucs = np.full(n_boot, np.nan)
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        draws = rng.integers(0, n_clusters, size=(r, n_clusters))
        for k in range(r):
            w = np.bincount(draws[k], minlength=n_clusters)[cluster].astype(np.float64)
            if not (w @ yf > 0 and w @ (1 - yf) > 0):
                continue
            fpr, tpr = weighted_roc(yf, p_arr, w)
            curves[start + k] = tpr_at(fpr, tpr, grid)
            aucs[start + k] = np.trapezoid(tpr, fpr)
    valid = np.isfinite(aucs)
    tail = (1.0 - confidence) / 2
    if valid.any():
        low, high = np.quantile(curves[valid], [tail, 1.0 - tail], axis=0)
    else:
        low = high = np.full(n_grid, np.nan)
    return RocBand(grid, tpr_at(full_fpr, full_tpr, grid), low, high, float(confidence), int(valid.sum()), aucs)


def _auc_label(level: str, m: Mapping[str, Any]) -> str:
    ci = ""
    if np.isfinite(m.get("auc_ci_low", np.nan)):
        ci = f" ({m['auc_ci_low']:.3f}–{m['auc_ci_high']:.3f})"
    return f"{level}: AUC {m['auc']:.3f}{ci}"


def plot_roc(bands: Mapping[str, RocBand], metrics: Mapping[str, Mapping[str, Any]]) -> Figure:
    """ROC of each level with its bootstrap band; the legend shows AUC and CI from the level's metrics dict."""
    fig = Figure(figsize=PLOT_SIZE)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--", label="chance")
    for i, (level, band) in enumerate(bands.items()):
        c = _color(level, i)
        ax.fill_between(band.fpr, band.tpr_low, band.tpr_high, color=c, alpha=0.18, lw=0)
        ax.plot(band.fpr, band.tpr, color=c, lw=1.8, label=_auc_label(level, metrics[level]))
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity (FPR)", ylabel="Sensitivity (TPR)")
    conf = next(iter(bands.values())).confidence if bands else 0.95
    ax.set_title(f"ROC, shaded: {conf:.0%} patient-bootstrap band", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return fig


def plot_pr(levels: Mapping[str, tuple[np.ndarray, np.ndarray]], metrics: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Precision-recall step curve of each level; the legend shows PR-AUC (average precision) and prevalence."""
    fig = Figure(figsize=PLOT_SIZE)
    ax = fig.add_subplot()
    for i, (level, (y, p)) in enumerate(levels.items()):
        c = _color(level, i)
        order = np.argsort(-p, kind="stable")
        ps, ys = p[order], y[order]
        last = np.r_[ps[1:] != ps[:-1], True]
        tp = np.cumsum(ys)[last]
        precision = tp / (np.flatnonzero(last) + 1)
        recall = tp / max(ys.sum(), 1)
        m = metrics[level]
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre", color=c, lw=1.8,
                label=f"{level}: PR-AUC {m['pr_auc']:.3f}")
        ax.axhline(m["prevalence"], color=c, lw=0.8, ls=":", label=f"{level} prevalence {m['prevalence']:.1%}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall (sensitivity)", ylabel="Precision (PPV)")
    ax.set_title("Precision-recall", fontsize=10)
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return fig


def plot_reliability(y: np.ndarray, p: np.ndarray, n_bins: int, title: str, ece: Mapping[str, float]) -> Figure:
    """Reliability diagram: observed cancer rate against mean predicted probability, equal-width and equal-mass bins,
    with a histogram of the probabilities underneath; `ece` maps "uniform"/"quantile" to the ECE shown."""
    fig = Figure(figsize=PLOT_SIZE)
    gs = fig.add_gridspec(2, 1, height_ratios=(3.2, 1), hspace=0.08)
    ax, hx = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--", label="perfect calibration")
    styles = {"uniform": ("equal-width", "#1f5fa8", "o-"), "quantile": ("equal-mass", "#c2571a", "s--")}
    for strategy, (name, c, fmt) in styles.items():
        bins = min(n_bins, y.size)
        d = reliability_diagram(y, p, bins, strategy)
        used = d["counts"] > 0
        ax.plot(d["confidence"][used], d["accuracy"][used], fmt, color=c, ms=4, lw=1.2,
                label=f"{name} bins, ECE {ece[strategy]:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="Observed cancer rate")
    ax.tick_params(labelbottom=False)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    hx.hist([p[y == 0], p[y == 1]], bins=np.linspace(0, 1, 26), stacked=True, color=["#9bb3cf", "#c2571a"],
            label=["no cancer", "cancer"])
    hx.set_yscale("log")
    hx.set(xlim=(0, 1), xlabel="Predicted probability", ylabel="count")
    hx.legend(loc="upper right", fontsize=7, frameon=False)
    return fig


def plot_froc(curve: FROCCurve, summary: Mapping[str, Any]) -> Figure:
    """FROC curve (lesion sensitivity vs false positives per image) with the summary's operating points marked."""
    fig = Figure(figsize=PLOT_SIZE)
    ax = fig.add_subplot()
    # draw exactly what `froc.sensitivity_at_fp_rates` reads: a line through the vertices it interpolates between
    fpi, best = reading_points(curve, str(summary.get("interpolation", DEFAULT_INTERPOLATION)))
    rates = [float(r) for r in summary["sensitivity_at_fp"]]
    sens = [float(v) for v in summary["sensitivity_at_fp"].values()]
    x_max = max(max(rates, default=1.0), float(fpi[-1])) * 1.06
    xs, ys = np.r_[fpi, x_max], np.r_[best, best[-1]]  # flat beyond the last point, as the reader assumes
    ax.plot(xs, ys, color="#5b3c99", lw=1.8, label="FROC")
    ax.plot(rates, sens, "o", color="#b42318", ms=5, label=f"mean sensitivity {summary['mean_sensitivity']:.3f}")
    for r, s in zip(rates, sens, strict=True):
        ax.annotate(f"{s:.2f}", (r, s), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=7)
    ax.set(xlim=(0, x_max), ylim=(0, 1.03))
    ax.set(xlabel="False positives per image", ylabel="Lesion sensitivity")
    ax.set_title(f"FROC: {curve.n_lesions} lesions in {curve.n_images} images", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return fig


def _display_array(a: np.ndarray, max_side: int) -> np.ndarray:
    """Stride-downsample a large image for display (the figure shows ~300 px; full resolution only costs bytes)."""
    step = max(1, int(np.ceil(max(a.shape) / max_side)))
    return a[::step, ::step]


def plot_case(
    image: np.ndarray,
    heatmap: np.ndarray | None,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    category: str,
    *,
    size_in: float = 2.6,
    max_side: int = 512,
) -> Figure:
    """One gallery tile: the image (grey, 1st-99th percentile window), the heatmap overlaid where > 0.2, and lesion
    boxes (y0, x0, y1, x1) in the image's pixel coordinates, framed in the category's colour."""
    h, w = image.shape
    fig = Figure(figsize=(size_in * min(1.0, w / h), size_in * min(1.0, h / w)))
    ax = fig.add_axes((0, 0, 1, 1))
    extent = (0, w, h, 0)  # keep the original pixel coordinates whatever the display stride
    img = _display_array(image, max_side)
    lo, hi = np.percentile(img, [1, 99])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, extent=extent, interpolation="antialiased")
    if heatmap is not None:
        hm = np.ma.masked_less(_display_array(heatmap, max_side), 0.2)
        ax.imshow(hm, cmap="inferno", vmin=0, vmax=1, alpha=0.45, extent=extent, interpolation="bilinear")
    for y0, x0, y1, x1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#39d353", lw=1.4))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    for side in ("left", "right", "top", "bottom"):
        ax.spines[side].set_visible(True)
    fig.patch.set_edgecolor(CATEGORY_COLORS.get(category, "#444444"))
    fig.patch.set_linewidth(6)
    return fig
