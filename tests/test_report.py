"""Tests of the evaluation report: ROC bootstrap band, gallery selection, the HTML (self-contained, every section,
numbers equal to the metrics dicts) and, marked slow, its rendering in headless Chromium at laptop size."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from browser import find_chromium, render_checks
from mammokit import INTENDED_USE
from mammokit.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature
from mammokit.evaluation.froc import froc_curve, froc_summary
from mammokit.evaluation.metrics import bootstrap_auc, summarize
from mammokit.evaluation.plots import plot_case, plot_froc, roc_bootstrap, tpr_at, weighted_roc
from mammokit.evaluation.report import (
    CalibrationInfo,
    GalleryItem,
    LevelResult,
    ReportContext,
    SiteRow,
    fmt_ci,
    fmt_num,
    pick_gallery_cases,
    render_report,
    write_report,
)
from mammokit.release.calibration import Calibrator

# ------------------------------------------------------------------------------------------ synthetic inputs


def _scores(rng: np.random.Generator, y: np.ndarray, shift: float) -> np.ndarray:
    """Overconfident logits: the Bayes log-odds are about shift·(x - c), these are 2.5 times steeper (T ≈ 2.5)."""
    return 2.5 * shift * (rng.normal(0, 1, y.size) + shift * y - 1.7)


def _phantom(rng: np.random.Generator, h: int, w: int, lesion: tuple[int, int] | None) -> tuple[np.ndarray, ...]:
    yy, xx = np.mgrid[0:h, 0:w]
    breast = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 < 1
    img = breast * (0.4 + 0.1 * rng.standard_normal((h, w)))
    heat = np.zeros((h, w))
    boxes = np.zeros((0, 4))
    if lesion is not None:
        cy, cx = lesion
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
        img = img + 0.5 * blob
        heat = blob / blob.max()
        boxes = np.array([[cy - 12, cx - 12, cy + 12, cx + 12]], dtype=float)
    return img, heat, boxes


def make_context(seed: int = 0, n_patients: int = 150, n_boot: int = 200) -> ReportContext:
    """A complete ReportContext from synthetic predictions: two levels, calibration, FROC, sites, gallery."""
    rng = np.random.default_rng(seed)
    exam_pid = np.arange(n_patients).repeat(2)  # two exams per patient
    y_exam = (rng.random(exam_pid.size) < 0.2).astype(int)
    z_exam = _scores(rng, y_exam, 2.0)
    breast_pid = exam_pid.repeat(2)
    y_breast = np.zeros(breast_pid.size, dtype=int)
    y_breast[0::2] = y_exam * (rng.random(y_exam.size) < 0.5)
    y_breast[1::2] = y_exam - y_breast[0::2]
    z_breast = _scores(rng, y_breast, 1.6)
    levels, metrics = {}, {}
    site = np.where(exam_pid % 3 == 0, "site B", "site A")
    temperature = fit_temperature(z_exam, y_exam)
    for name, y, z, pid, groups in (("exam", y_exam, z_exam, exam_pid, {"site": site}),
                                     ("breast", y_breast, z_breast, breast_pid, None)):
        p_raw = 1 / (1 + np.exp(-z))
        p = apply_temperature(z, temperature, probabilities=True)
        metrics[name] = summarize(y, p, groups, pid, n_boot=300, seed=seed)
        levels[name] = LevelResult(y=y, p_raw=p_raw, p=p, patient_ids=pid, metrics=metrics[name])
    calib = CalibrationInfo.from_arrays(y_exam, levels["exam"].p_raw, levels["exam"].p, temperature,
                                        fitted_on="synthetic validation split")
    images = [_phantom(rng, 96, 64, (int(rng.integers(30, 66)), int(rng.integers(15, 45))) if k % 2 else None)
              for k in range(12)]
    cands = [np.array([[b[0, 0] + 12, b[0, 1] + 12], [20, 20]]) if b.size else np.array([[40, 30]])
             for _, _, b in images]
    cand_scores = [rng.random(len(c)) for c in cands]
    lesion_boxes = [b for _, _, b in images]
    froc = froc_summary(cands, cand_scores, lesion_boxes)
    pick = pick_gallery_cases(y_exam, levels["exam"].p, k=2)
    gallery = []
    for cat, idx in pick.items():
        for j, i in enumerate(idx):
            img, heat, boxes = images[(2 * j + 1) if cat != "FP" else 2 * j]
            gallery.append(GalleryItem(cat, img, heat if j == 0 else None, boxes, float(levels["exam"].p[i]),
                                       f"exam {i} · patient {exam_pid[i]} · L-MLO"))
    ext = metrics["exam"]
    sites = [
        SiteRow("internal test", ["Hologic"], 212, ext["auc"], ext["auc_ci_low"], ext["auc_ci_high"], None, False,
                None, ece_model=calib.ece_after["uniform"]),
        {"site": "external: a long site name that must wrap inside its cell without pushing the table wider",
         "vendors": "GE, Siemens", "n_exams": 88, "auc": ext["auc"] - 0.061, "auc_ci_low": 0.70,
         "auc_ci_high": 0.86, "auc_drop": 0.061, "temperature_refit": True, "temperature": 1.9,
         "ece_model": 0.071, "ece_refit": 0.052},
    ]
    return ReportContext(
        title="mammokit evaluation: synthetic run",
        levels=levels,
        run={"model": "global_local (efficientnet_b0)", "checkpoint": "runs/synth/best.ckpt", "input": "1024×512"},
        data={"dataset": "synthetic", "split": "test", "exams": int(y_exam.size)},
        calibration=calib,
        froc_curve=froc_curve(cands, cand_scores, lesion_boxes),
        froc=froc,
        uncertainty={"MC-dropout (20 passes)": {"error-detection AUC": 0.712, "mean MI": 0.031},
                     "TTA (8 flips/shifts)": {"error-detection AUC": 0.655, "mean MI": 0.012}},
        sites=sites,
        gallery=gallery,
        seed=seed,
        n_boot=n_boot,
        created="2025-01-01 00:00 UTC",
    )


# ---------------------------------------------------------------------------------------------- ROC band


def test_roc_bootstrap_shares_bootstrap_auc_resamples() -> None:
    rng = np.random.default_rng(4)
    pid = rng.integers(0, 80, 300)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.round(np.clip(0.35 + 0.25 * y + 0.2 * rng.standard_normal(300), 0, 1), 2)  # many ties
    band = roc_bootstrap(y, p, pid, n_boot=300, seed=9)
    ref = bootstrap_auc(y, p, pid, n_boot=300, seed=9, return_replicates=True)
    # same patients drawn, and each replicate's curve has the replicate's Mann-Whitney AUC
    np.testing.assert_allclose(band.replicate_aucs, ref["replicates"], atol=1e-12)
    assert band.n_boot_valid == ref["n_boot_valid"]
    fpr, tpr, _ = roc_curve(y, p)
    np.testing.assert_allclose(band.tpr, np.interp(band.fpr, fpr, tpr), atol=1e-12)
    assert np.all(band.tpr_low <= band.tpr_high)
    inside = (band.tpr >= band.tpr_low - 1e-12) & (band.tpr <= band.tpr_high + 1e-12)
    assert inside.mean() > 0.9
    again = roc_bootstrap(y, p, pid, n_boot=300, seed=9)
    np.testing.assert_array_equal(again.tpr_low, band.tpr_low)
    assert not np.array_equal(roc_bootstrap(y, p, pid, n_boot=300, seed=10).tpr_low, band.tpr_low)


def test_roc_band_of_perfect_separation_is_one() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p = np.where(y == 1, 0.9, 0.1) + np.arange(8) * 1e-3
    band = roc_bootstrap(y, p, n_boot=50, seed=0)
    assert np.all(band.tpr == 1) and np.all(band.tpr_low == 1) and np.all(band.tpr_high == 1)


def test_tpr_at_takes_top_of_vertical_segment_and_interpolates_diagonals() -> None:
    fpr, tpr = weighted_roc(np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.9, 0.5, 0.5, 0.1]))
    # points: (0,0) -> (0,0.5) -> tie (0.5,1) -> (1,1)
    np.testing.assert_allclose(tpr_at(fpr, tpr, np.array([0.0, 0.25, 0.5, 1.0])), [0.5, 0.75, 1.0, 1.0])


def test_roc_bootstrap_rejects_one_class() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_bootstrap(np.zeros(5), np.linspace(0, 1, 5))


# ------------------------------------------------------------------------------------------------ gallery


def test_pick_gallery_cases_orders_by_confidence() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 1])
    p = np.array([0.9, 0.6, 0.8, 0.2, 0.1, 0.55, 0.3])
    pick = pick_gallery_cases(y, p, threshold=0.5, k=2)
    assert pick["TP"].tolist() == [0, 1]
    assert pick["FP"].tolist() == [2, 5]
    assert pick["FN"].tolist() == [4, 6]


# -------------------------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportContext, Path, str]:
    ctx = make_context()
    path = write_report(tmp_path_factory.mktemp("report") / "sub" / "report.html", ctx)
    return ctx, path, path.read_text(encoding="utf-8")


def test_report_is_self_contained(report_html: tuple[ReportContext, Path, str]) -> None:
    ctx, _, html = report_html
    srcs = re.findall(r'\bsrc\s*=\s*"([^"]*)"', html)
    hrefs = re.findall(r'\bhref\s*=\s*"([^"]*)"', html)
    n_tiles = len(ctx.gallery)
    assert len(srcs) == 5 + n_tiles  # ROC, PR, 2 reliability, FROC + gallery tiles
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in hrefs)
    assert "<link" not in html and "@import" not in html and "url(" not in html and "<script" not in html


def test_report_has_every_section_and_intended_use(report_html: tuple[ReportContext, Path, str]) -> None:
    _, _, html = report_html
    for section in ("summary", "discrimination", "metrics", "calibration", "froc", "sites", "uncertainty",
                    "gallery", "setup"):
        assert f'<section id="{section}">' in html
    assert INTENDED_USE in html
    assert html.index(INTENDED_USE) < html.index('<section id="summary">')  # stated before any number
    for cat in ("TP", "FP", "FN"):
        assert f'>{cat}</span>' in html
    assert "site B" in html and "GE, Siemens" in html and "MC-dropout (20 passes)" in html


def _cell(html: str, row_label: str) -> list[str]:
    """Cells of the metrics-table row whose first cell is `row_label`."""
    table = html[html.index('id="metrics-table"'):]
    table = table[: table.index("</table>")]
    row = re.search(r"<tr><td>" + re.escape(row_label) + r"</td>(.*?)</tr>", table)
    assert row is not None, row_label
    return re.findall(r'<td class="num">(.*?)</td>', row.group(1))


def test_report_numbers_match_metrics(report_html: tuple[ReportContext, Path, str]) -> None:
    ctx, _, html = report_html
    ex, br = ctx.levels["exam"].metrics, ctx.levels["breast"].metrics
    auc_cells = _cell(html, "ROC-AUC (95% CI)")
    assert auc_cells == [f"{m['auc']:.3f} ({m['auc_ci_low']:.3f}–{m['auc_ci_high']:.3f})" for m in (ex, br)]
    assert _cell(html, "PR-AUC (average precision)") == [f"{ex['pr_auc']:.3f}", f"{br['pr_auc']:.3f}"]
    assert _cell(html, "probabilistic F1") == [f"{ex['pf1']:.3f}", f"{br['pf1']:.3f}"]
    pt = ex["sensitivity_at_specificity"][0]
    assert _cell(html, "sensitivity at specificity ≥ 90%")[0] == (
        f"{100 * pt['sensitivity']:.1f}% (p ≥ {pt['threshold']:.3f})")
    assert _cell(html, "cases (cancers)") == [f"{m['n']:,} ({m['n_pos']:,})" for m in (ex, br)]
    # headline card and calibration numbers
    assert f'<div class="value">{ex["auc"]:.3f}</div>' in html
    assert f"95% CI {ex['auc_ci_low']:.3f}–{ex['auc_ci_high']:.3f}" in html
    c = ctx.calibration
    assert c is not None and c.ece_after["uniform"] < c.ece_before["uniform"]  # scaling helped the overconfident model
    assert f"<td>ECE, equal-mass bins</td><td class=\"num\">{c.ece_before['quantile']:.3f}</td>" in html
    assert f"T = {c.temperature:.3f}" in html
    assert ctx.froc is not None and f"{ctx.froc['mean_sensitivity']:.3f}" in html
    for row in ex["groups"]["site"]:
        assert f"<td>{row['group']}</td><td class=\"num\">{row['n']:,} ({row['n_pos']:,})</td>" \
               f"<td class=\"num\">{row['auc']:.3f}</td>" in html
    assert "<td class=\"num\">-0.061</td>" in html  # AUC drop shown as a signed change
    # per site: ECE with the model's calibration, and after a temperature refitted on that site
    assert "<td class=\"num\">0.071</td><td class=\"num\">0.052 (T = 1.90)</td>" in html
    assert f"<td class=\"num\">{c.ece_after['uniform']:.3f}</td><td class=\"num\">not refitted</td>" in html


def test_report_without_optional_parts(tmp_path: Path) -> None:
    ctx = make_context(seed=1, n_patients=40, n_boot=20)
    ctx.calibration, ctx.froc_curve, ctx.froc, ctx.uncertainty, ctx.sites, ctx.gallery = None, None, None, None, (), ()
    ctx.levels = {"exam": ctx.levels["exam"]}
    html = render_report(ctx)
    assert "the test set has no lesion boxes" in html and "No calibration was applied" in html
    assert len(re.findall(r'src="data:image/png', html)) == 2  # ROC and PR only


def test_report_rejects_bad_inputs(tmp_path: Path) -> None:
    ctx = make_context(seed=2, n_patients=30, n_boot=10)
    with pytest.raises(ValueError, match=r"should end in \.html"):
        write_report(tmp_path / "report.pdf", ctx)
    bad = ctx.levels["breast"]
    ctx.levels = {**ctx.levels, "breast": LevelResult(bad.y, bad.p_raw[:-1], bad.p, bad.patient_ids, bad.metrics)}
    with pytest.raises(ValueError, match=r"levels\['breast'\].p_raw: .* rows"):
        render_report(ctx)
    ctx = make_context(seed=2, n_patients=30, n_boot=10)
    item = ctx.gallery[0]
    ctx.gallery = [GalleryItem(item.category, item.image, np.ones((3, 3)), item.boxes, item.score)]
    with pytest.raises(ValueError, match=r"gallery\[0\].heatmap: shape"):
        render_report(ctx)
    ctx.gallery = [GalleryItem("TN", item.image, None, (), 0.1)]
    with pytest.raises(ValueError, match=r"gallery\[0\].category"):
        render_report(ctx)


def test_formatting_of_undefined_values() -> None:
    assert fmt_num(float("nan")) == "–" and fmt_num(None) == "–"
    assert fmt_ci(0.81234, float("nan"), float("nan")) == "0.812"
    assert fmt_ci(0.81234, 0.7, 0.9) == "0.812 (0.700–0.900)"


# ------------------------------------------------------------------------------------------------- browser


@pytest.mark.slow
def test_report_renders_in_chromium_without_overflow(report_html: tuple[ReportContext, Path, str],
                                                     tmp_path: Path) -> None:
    if find_chromium() is None:
        if os.environ.get("MAMMOKIT_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MAMMOKIT_REQUIRE_CHROMIUM=1 but no chromium binary is installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    ctx, path, _ = report_html
    check = render_checks(path, width=1366, height=768, screenshot=tmp_path / "report.png")
    assert check["images"] == 5 + len(ctx.gallery)
    assert check["broken"] == []
    assert check["scrollWidth"] <= check["innerWidth"]
    assert check["outside"] == [] and check["clipped"] == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_froc_plot_passes_through_the_summary_points() -> None:
    cands = [np.array([[5, 5], [50, 50]]), np.array([[20, 20]]), np.array([[8, 8], [30, 30]])]
    scores = [np.array([0.9, 0.4]), np.array([0.7]), np.array([0.2, 0.6])]
    lesions = [np.array([[0, 0, 10, 10]]), None, np.array([[0, 0, 10, 10], [25, 25, 35, 35]])]
    for interpolation in ("linear", "step"):
        summary = froc_summary(cands, scores, lesions, fp_rates=(0.1, 0.3, 0.5, 1.0), interpolation=interpolation)
        line = plot_froc(froc_curve(cands, scores, lesions), summary).axes[0].lines[0]
        x, y = (np.asarray(a, dtype=float) for a in line.get_data())
        if interpolation == "step":  # a post-step line: value of the last vertex at or left of each rate
            drawn = y[np.searchsorted(x, list(map(float, summary["sensitivity_at_fp"])), side="right") - 1]
        else:
            drawn = np.interp(list(map(float, summary["sensitivity_at_fp"])), x, y)
        np.testing.assert_allclose(drawn, list(summary["sensitivity_at_fp"].values()), atol=1e-12)


def test_gallery_tile_downsamples_but_keeps_pixel_coordinates() -> None:
    image = np.random.default_rng(0).random((2000, 1000))
    heat = np.zeros_like(image)
    heat[900:1100, 400:600] = 1.0
    fig = plot_case(image, heat, [[900, 400, 1100, 600]], "FN")
    ax = fig.axes[0]
    shown, overlay = ax.images
    assert max(shown.get_array().shape) <= 512 and shown.get_extent() == [0, 1000, 2000, 0]
    assert overlay.get_extent() == [0, 1000, 2000, 0]
    (box,) = ax.patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (400, 900, 200, 200)


def test_report_shows_temperature_alone_beside_a_beta_calibration(tmp_path: Path) -> None:
    """When `calibrate` kept beta calibration, the temperature-only numbers and diagram stay in the report."""
    ctx = make_context(seed=3, n_patients=60, n_boot=20)
    ex = ctx.levels["exam"]
    z = np.log(ex.p_raw) - np.log1p(-ex.p_raw)
    beta = Calibrator("beta", {"a": 1.2, "b": 0.4, "c": -0.2})
    ctx.levels["exam"] = LevelResult(ex.y, ex.p_raw, beta.probabilities(z), ex.patient_ids, ex.metrics)
    ctx.calibration = CalibrationInfo.from_arrays(ex.y, ex.p_raw, beta.probabilities(z), ctx.calibration.temperature,
                                                  method=beta.describe(), p_temperature=ex.p)
    c = ctx.calibration
    assert c.ece_temperature["uniform"] == pytest.approx(expected_calibration_error(ex.y, ex.p))
    html = render_report(ctx)
    header = html[html.index('class="calibration-table"'):]
    header = header[: header.index("</thead>")]
    assert re.findall(r'<th class="num">(.*?)</th>', header) == ["before", "temperature alone",
                                                                "after beta calibration"]
    assert (f"<td>Brier score</td><td class=\"num\">{c.brier_before:.3f}</td><td class=\"num\">"
            f"{c.brier_temperature:.3f}</td><td class=\"num\">{c.brier_after:.3f}</td>") in html
    assert html.count('alt="Reliability diagram') == 3 and "beta a = 1.2, b = 0.4, c = -0.2" in html
