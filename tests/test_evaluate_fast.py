"""`evaluate`, `calibrate`, the per-site table and the report on a tiny trained model, against known answers.

The model is the conftest's tiny four-view model trained for one epoch on the session store (site-A, 12 exams, 6 with
a cancer); a second store of 4 exams (3 with a cancer) from another seed is the external site-B. Every number is
checked against an independent computation on what `evaluate` wrote (scikit-learn, scipy, the store tables).

After one epoch the model's logits are nearly constant (about +0.37), so a temperature has a finite NLL minimum only
where the logits' sign matches the majority class (the NLL is convex in 1/T; its slope at 1/T = 0 is
-mean((2y - 1) z) / 2): site-B and the calibration split below have more cancers than not at the exam level.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from conftest import SynthStore, tiny_train_dict
from mammokit.evaluation.calibration import NoTemperatureError
from mammokit.evaluation.evaluate import calibrate, evaluate
from mammokit.evaluation.report import fmt_num

SITE_B_EXAMS = 4
SITE_B_CANCERS = 3


@pytest.fixture(scope="module")
def site_b(synth_store: SynthStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An external store: 4 exams (3 with a cancer) from another seed and site, preprocessed like the session's."""
    from mammokit.datasets.index import build_index, write_index
    from mammokit.preprocess.config import PreprocessConfig
    from mammokit.preprocess.pipeline import run_pipeline
    from mammokit.synth import generate

    root = tmp_path_factory.mktemp("site_b")
    generate(root / "raw", exams=SITE_B_EXAMS, seed=8, size_scale=0.2, masks=False,
             prevalence=SITE_B_CANCERS / SITE_B_EXAMS, site="site-B")
    write_index(build_index(root / "raw", adapter="synth"), root / "images.parquet")
    summary = run_pipeline(root / "images.parquet", root / "store",
                           PreprocessConfig(spacing_mm=0.4, global_long_side=256, patch_size=64),
                           workers=1, progress=False)
    assert summary["failed"] == 0, summary
    return root / "store"


@pytest.fixture(scope="module")
def run(synth_store: SynthStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/tiny: the tiny model trained for one epoch, released in model/ beside its splits.csv."""
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import train

    runs = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig.model_validate(tiny_train_dict(synth_store.store, runs, stages=[{"name": "all", "epochs": 1}]))
    return train(cfg)


@pytest.fixture(scope="module")
def evaluated(run: Path, synth_store: SynthStore, site_b: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    """`evaluate` on every exam of the session store (the internal set) and on site-B; no report (tested apart)."""
    out = tmp_path_factory.mktemp("eval")
    metrics = evaluate(run, [synth_store.store, site_b], out=out, split="all", n_boot=200, mc_passes=2,
                       tta_passes=2, report=False, device="cpu")
    return out, metrics, pd.read_parquet(out / "predictions.parquet")


def _rows(preds: pd.DataFrame, store: Path, level: str) -> pd.DataFrame:
    rows = preds[(preds["store"] == str(store)) & (preds["level"] == level)]
    return rows[rows["label"].notna()]


def _store_labels(store: Path) -> tuple[pd.Series, pd.Series]:
    """Exam and breast cancer labels straight from the store's table (any image with a cancer)."""
    table = pd.read_parquet(store / "preprocessed.parquet")
    return table.groupby("exam_id")["cancer"].max(), table.groupby(["exam_id", "laterality"])["cancer"].max()


def _assert_nll_minimum(temperature: float, logits: np.ndarray, y: np.ndarray) -> None:
    """`temperature` minimises the mean binary NLL of logits / T as scipy's bounded search on log T finds it: the same
    NLL, and the same T where the minimum is finite (where it is not, T runs off towards infinity and only the NLL
    can be compared)."""
    def nll(log_t: float) -> float:
        q = logits / np.exp(log_t)
        return float(-np.mean(y * log_expit(q) + (1 - y) * log_expit(-q)))

    res = minimize_scalar(nll, bounds=(-10.0, 30.0), method="bounded", options={"xatol": 1e-10})
    assert nll(np.log(temperature)) <= res.fun + 1e-9
    finite = np.mean((2 * y - 1) * logits) > 0 and np.any((2 * y - 1) * logits < 0)
    if finite:
        assert temperature == pytest.approx(np.exp(res.x), rel=1e-3)


def test_evaluate_metrics_equal_scikit_learn_on_the_written_predictions(
        evaluated: tuple[Path, dict[str, Any], pd.DataFrame], synth_store: SynthStore) -> None:
    out, metrics, preds = evaluated
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["exam"]["roc_auc"] == pytest.approx(metrics["exam"]["roc_auc"])
    for level, n in (("exam", 12), ("breast", 24)):
        rows, m = _rows(preds, synth_store.store, level), metrics[level]
        y, p = rows["label"].to_numpy().astype(int), rows["prob"].to_numpy()
        assert (m["n"], m["n_pos"]) == (n, int(y.sum())) and len(rows) == n
        assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert m["roc_auc"] == pytest.approx(roc_auc_score(y, rows["logit"]), abs=1e-12)  # a monotone calibration
        assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
        assert m["auc_ci_low"] <= m["roc_auc"] <= m["auc_ci_high"]
    assert metrics["split"] == "all" and metrics["training_overlap_exams"] == 12  # every exam was train or val
    assert metrics["froc"] is None or metrics["froc"]["interpolation"] == "step"


def test_levels_roll_up_as_the_store_labels_say(evaluated: tuple[Path, dict[str, Any], pd.DataFrame],
                                                synth_store: SynthStore) -> None:
    """One exam row, two breast rows and four image rows per exam; labels as a hand roll-up of the store's images;
    probabilities as the stored (uncalibrated: T = 1) map gives them."""
    _, metrics, preds = evaluated
    mine = preds[preds["store"] == str(synth_store.store)]
    counts = mine.groupby("level")["exam_id"].agg(["size", "nunique"])
    assert counts.loc["exam"].tolist() == [12, 12] and counts.loc["breast"].tolist() == [24, 12]
    assert counts.loc["image"].tolist() == [48, 12]
    exam_label, breast_label = _store_labels(synth_store.store)
    exams = mine[mine["level"] == "exam"].set_index("exam_id")
    assert exams["label"].astype(int).to_dict() == exam_label.astype(int).to_dict()
    breasts = mine[mine["level"] == "breast"].set_index(["exam_id", "laterality"])
    assert breasts["label"].astype(int).to_dict() == breast_label.astype(int).to_dict()
    # an exam is positive exactly when one of its breasts is
    assert (breasts["label"].groupby(level=0).max() == exams["label"]).all()
    assert metrics["temperature"] == 1.0 and metrics["temperature_source"].startswith("none")
    np.testing.assert_allclose(exams["prob"], expit(exams["logit"]), atol=1e-12)
    images = mine[mine["level"] == "image"]
    np.testing.assert_allclose(images["prob_raw"], expit(images["logit"]), atol=1e-12)


def test_site_table_has_one_row_per_store_with_its_counts_and_refit(
        evaluated: tuple[Path, dict[str, Any], pd.DataFrame], synth_store: SynthStore, site_b: Path) -> None:
    _, metrics, preds = evaluated
    internal, external = metrics["sites"]
    assert [internal["site"], external["site"]] == ["site-A", "site-B"]
    assert (internal["n_exams"], external["n_exams"]) == (12, SITE_B_EXAMS)
    table_b = pd.read_parquet(site_b / "preprocessed.parquet")
    assert external["vendors"] == sorted(table_b["manufacturer"].astype(str).unique())
    rows = _rows(preds, site_b, "exam")
    y, logits = rows["label"].to_numpy().astype(int), rows["logit"].to_numpy()
    assert len(rows) == SITE_B_EXAMS and y.sum() == _store_labels(site_b)[0].sum() == SITE_B_CANCERS
    assert external["auc"] == pytest.approx(roc_auc_score(y, rows["prob"]), abs=1e-12)
    assert internal["auc_drop"] is None
    assert external["auc_drop"] == pytest.approx(internal["auc"] - external["auc"], abs=1e-12)
    assert external["temperature_refit"] and not internal["temperature_refit"]
    _assert_nll_minimum(external["temperature"], logits, y)
    assert set(metrics["external"]) == {"site-B"}
    assert metrics["external"]["site-B"]["exam"]["n"] == SITE_B_EXAMS


def test_calibrate_stores_the_nll_minimising_temperature(
        run: Path, synth_store: SynthStore, evaluated: tuple[Path, dict[str, Any], pd.DataFrame],
        tmp_path: Path) -> None:
    """On a copy of the run whose splits.csv puts the 6 cancer exams and 2 others in "val": the temperature
    calibrate stores per level is scipy's NLL minimum on those exams' logits as `evaluate` wrote them (calibration
    does not change logits). Where a level's NLL has no finite minimum (T runs off to 0 or ∞; once stored as
    T ≈ 1e9), `--method temperature` is refused and `auto` chooses beta calibration, keeping T = 1 with the reason."""
    copy = tmp_path / "run"
    shutil.copytree(run / "model", copy / "model")
    exam_label, _ = _store_labels(synth_store.store)
    val = set(exam_label[exam_label == 1].index) | set(exam_label[exam_label == 0].index[:2])
    splits = pd.read_csv(run / "splits.csv")
    splits.assign(split=np.where(splits["exam_id"].isin(val), "val", "train")).to_csv(copy / "splits.csv", index=False)
    _, _, preds = evaluated
    rows = {level: _rows(preds, synth_store.store, level) for level in ("exam", "breast")}
    rows = {level: r[r["exam_id"].isin(val)] for level, r in rows.items()}
    finite = {level: _nll_has_a_finite_minimum(r["logit"].to_numpy(), r["label"].to_numpy().astype(int))
              for level, r in rows.items()}
    if not all(finite.values()):
        with pytest.raises(NoTemperatureError, match="--method beta or auto"):
            calibrate(copy, synth_store.store, split="val", method="temperature", device="cpu")
    fitted = calibrate(copy, synth_store.store, split="val", method="auto" if not all(finite.values())
                       else "temperature", device="cpu")
    config = json.loads((copy / "model" / "config.json").read_text())
    t_exam = fitted["exam"].temperature.params["T"]
    assert config["temperature"] == pytest.approx(t_exam) and "split=val exams=8" in config["temperature_source"]
    for level in ("exam", "breast"):
        y = rows[level]["label"].to_numpy().astype(int)
        assert len(rows[level]) == (8 if level == "exam" else 16) and 0 < y.sum() < len(y)
        stored = config["calibration"][level]
        if finite[level]:
            assert "note" not in stored
            _assert_nll_minimum(stored["temperature"]["params"]["T"], rows[level]["logit"].to_numpy(), y)
        else:
            assert stored["temperature"]["params"]["T"] == 1.0 and stored["chosen"]["method"] == "beta"
            assert "no temperature fitted" in stored["note"]


def _nll_has_a_finite_minimum(logits: np.ndarray, y: np.ndarray) -> bool:
    """Whether the binary NLL of logits / T has a minimum at a finite T > 0 (checked by scipy, not by mammokit's
    rule): its bounded search over log T in [-10, 30] stops well inside the bounds."""
    def nll(log_t: float) -> float:
        q = logits / np.exp(log_t)
        return float(-np.mean(y * log_expit(q) + (1 - y) * log_expit(-q)))

    res = minimize_scalar(nll, bounds=(-10.0, 30.0), method="bounded", options={"xatol": 1e-10})
    return -9.0 < res.x < 29.0


def test_report_shows_the_numbers_of_metrics_json(
        run: Path, evaluated: tuple[Path, dict[str, Any], pd.DataFrame], synth_store: SynthStore, site_b: Path,
        tmp_path: Path) -> None:
    """`evaluate` with its report: the HTML carries metrics.json's AUCs, counts, sites and FROC convention."""
    metrics = evaluate(run, [synth_store.store, site_b], out=tmp_path, split="all", n_boot=200, mc_passes=2,
                       tta_passes=2, gallery=1, device="cpu")
    page = html.unescape(Path(metrics["report"]).read_text())
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["exam"]["roc_auc"] == pytest.approx(evaluated[1]["exam"]["roc_auc"])  # same model, same numbers
    for level in ("exam", "breast"):
        m = saved[level]
        assert fmt_num(m["roc_auc"]) in page
        assert f"{fmt_num(m['roc_auc'])} ({fmt_num(m['auc_ci_low'])}–{fmt_num(m['auc_ci_high'])})" in page
        assert f"{m['n']} ({m['n_pos']})" in page
    for site in saved["sites"]:
        assert site["site"] in page and fmt_num(site["auc"]) in page
    external = saved["sites"][1]
    assert f"{-external['auc_drop']:+.3f}" in page
    assert f"T = {external['temperature']:.2f}" in page
    if saved["froc"]:
        assert saved["froc"]["convention"] in page and fmt_num(saved["froc"]["mean_sensitivity"]) in page
    assert "not a medical device" in page.lower()
