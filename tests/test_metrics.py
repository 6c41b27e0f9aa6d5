"""Metrics checked against scikit-learn, brute force, hand-computed values and a coverage simulation."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from mammokit.evaluation.metrics import (
    average_precision,
    bootstrap_auc,
    group_breakdown,
    paired_auc_difference,
    probabilistic_f1,
    roc_auc,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    summarize,
)


def _random_case(rng: np.random.Generator, n: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    p = rng.random(n) * 0.7 + 0.3 * y
    return y, (np.round(p, decimals) if decimals is not None else p)


@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_auc_and_ap_equal_sklearn_with_ties(decimals: int | None) -> None:
    rng = np.random.default_rng(1)
    for n in (7, 50, 400):
        y, p = _random_case(rng, n, decimals)
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_auc_hand_example_and_errors() -> None:
    # pairs (pos, neg): 0.8>0.1, 0.8>0.4, 0.4=0.4 (half), 0.4>0.1 -> 3.5 / 4
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.2, np.nan])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        roc_auc([0, 1, 1], [0.2, 0.3])


def test_bootstrap_replicates_equal_explicit_patient_resamples() -> None:
    rng = np.random.default_rng(2)
    n_pat = 30
    pid = np.repeat([f"p{i:02d}" for i in range(n_pat)], 3)  # 3 rows per patient
    y = np.repeat(rng.integers(0, 2, n_pat), 3)
    y[:3], y[3:6] = 0, 1
    p = np.round(rng.random(y.size) + 0.4 * y, 1)  # ties
    res = bootstrap_auc(y, p, pid, n_boot=40, seed=7, chunk=64, return_replicates=True)
    ids = np.unique(pid)
    draws = np.random.default_rng(7).integers(0, n_pat, size=(40, n_pat))
    for b in range(40):
        rows = np.concatenate([np.flatnonzero(pid == ids[k]) for k in draws[b]])
        if y[rows].min() == y[rows].max():
            assert np.isnan(res["replicates"][b])
        else:
            assert res["replicates"][b] == pytest.approx(roc_auc_score(y[rows], p[rows]), abs=1e-12)
    assert res["auc"] == pytest.approx(roc_auc_score(y, p))
    assert res["ci_low"] <= res["auc"] <= res["ci_high"]


def test_paired_auc_difference_resamples_both_models_with_the_same_patients() -> None:
    rng = np.random.default_rng(4)
    n_pat = 120
    pid = np.repeat([f"p{i:03d}" for i in range(n_pat)], 2)
    y = np.repeat(rng.integers(0, 2, n_pat), 2)
    shared = rng.normal(size=y.size)  # case difficulty both models share
    p_a = 1.2 * y + shared + 0.3 * rng.normal(size=y.size)
    p_b = 0.8 * y + shared + 0.3 * rng.normal(size=y.size)
    res = paired_auc_difference(y, p_a, p_b, pid, n_boot=400, seed=3)
    assert res["difference"] == pytest.approx(roc_auc_score(y, p_a) - roc_auc_score(y, p_b))
    assert res["ci_low"] > 0 and res["share_not_better"] < 0.025  # a is better, and the pairing shows it
    # explicit pairing: replicate k of the difference is the difference of both models' replicate k
    ra = bootstrap_auc(y, p_a, pid, n_boot=400, seed=3, return_replicates=True)["replicates"]
    rb = bootstrap_auc(y, p_b, pid, n_boot=400, seed=3, return_replicates=True)["replicates"]
    assert res["ci_low"] == pytest.approx(np.quantile(ra - rb, 0.025))
    # unpaired intervals of the two AUCs overlap although the paired difference is clearly positive
    assert np.quantile(ra, 0.025) < np.quantile(rb, 0.975)
    same = paired_auc_difference(y, p_a, p_a, pid, n_boot=50)
    assert same["difference"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["share_not_better"] == 1


def test_bootstrap_is_seeded_and_fast() -> None:
    rng = np.random.default_rng(3)
    y, p = _random_case(rng, 5000)
    pid = np.arange(5000) // 2
    t0 = time.perf_counter()
    a = bootstrap_auc(y, p, pid, n_boot=2000, seed=11)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"2,000 replicates over 5,000 rows took {elapsed:.2f} s"
    assert a == bootstrap_auc(y, p, pid, n_boot=2000, seed=11)
    assert a != bootstrap_auc(y, p, pid, n_boot=2000, seed=12)
    assert a["n_boot_valid"] == 2000


def test_cluster_bootstrap_covers_true_auc_at_nominal_rate() -> None:
    """Binormal model, 2 correlated rows per patient with the patient's label; true AUC = Φ(μ/√2)."""
    rng = np.random.default_rng(4)
    mu, rho, n_pat, n_sim = 1.0, 0.8, 200, 200
    true_auc = norm.cdf(mu / np.sqrt(2))
    pid = np.repeat(np.arange(n_pat), 2)
    covered_cluster = covered_rows = 0
    for _ in range(n_sim):
        label = rng.integers(0, 2, n_pat)
        shared = rng.standard_normal(n_pat)
        score = mu * label[pid] + np.sqrt(rho) * shared[pid] + np.sqrt(1 - rho) * rng.standard_normal(pid.size)
        seed = int(rng.integers(1 << 31))
        c = bootstrap_auc(label[pid], score, pid, n_boot=1000, seed=seed)
        r = bootstrap_auc(label[pid], score, None, n_boot=500, seed=seed)
        covered_cluster += c["ci_low"] <= true_auc <= c["ci_high"]
        covered_rows += r["ci_low"] <= true_auc <= r["ci_high"]
    assert 0.88 <= covered_cluster / n_sim <= 0.99
    # resampling rows ignores the within-patient correlation: its intervals are too narrow
    assert covered_rows < covered_cluster


def _brute_operating_points(y: np.ndarray, p: np.ndarray) -> list[tuple[float, float, float]]:
    out = []
    for t in [*sorted(set(p.tolist())), np.inf]:
        pred = p >= t
        out.append((t, pred[y == 1].mean(), (~pred[y == 0]).mean()))
    return out


def test_operating_points_match_brute_force_and_roc_curve() -> None:
    rng = np.random.default_rng(5)
    for decimals in (None, 1):
        y, p = _random_case(rng, 300, decimals)
        table = _brute_operating_points(y, p)
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
        for target in (0.5, 0.9, 0.95, 1.0):
            got = sensitivity_at_specificity(y, p, target)
            ok = [(t, se, sp) for t, se, sp in table if sp >= target]
            best = max(se for _, se, _ in ok)
            assert got["sensitivity"] == pytest.approx(best)
            assert got["sensitivity"] == pytest.approx(tpr[1 - fpr >= target].max())
            assert got["threshold"] == max(t for t, se, _ in ok if se == best)  # the most specific of them
            assert got["specificity"] == max(sp for _, se, sp in ok if se == best)
            assert got["specificity"] >= target
            got2 = specificity_at_sensitivity(y, p, target)
            ok2 = [(t, se, sp) for t, se, sp in table if se >= target]
            best2 = max(sp for _, _, sp in ok2)
            assert got2["specificity"] == pytest.approx(best2)
            assert got2["threshold"] == min(t for t, _, sp in ok2 if sp == best2)  # the most sensitive of them
            assert got2["sensitivity"] == max(se for _, se, sp in ok2 if sp == best2)
            assert got2["sensitivity"] >= target


def test_operating_point_hand_example() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.9, 0.35, 0.95])
    # spec >= 0.75 first reached at t=0.35 (3 of 4 negatives below): sens = 2/2
    assert sensitivity_at_specificity(y, p, 0.75) == {
        "target": 0.75,
        "sensitivity": 1.0,
        "specificity": 0.75,
        "threshold": 0.35,
    }
    # spec = 1 needs t > 0.9: t = 0.95, sens 1/2
    assert sensitivity_at_specificity(y, p, 1.0)["threshold"] == 0.95
    assert specificity_at_sensitivity(y, p, 1.0)["specificity"] == 0.75


def test_probabilistic_f1_hand_example() -> None:
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.5, 0.2, 0.1, 0.1])
    ptp, pfp = 1.4, 0.4
    prec, rec = ptp / (ptp + pfp), ptp / 2
    res = probabilistic_f1(y, p)
    assert res["p_precision"] == pytest.approx(prec)
    assert res["p_recall"] == pytest.approx(rec)
    assert res["pf1"] == pytest.approx(2 * prec * rec / (prec + rec))
    assert probabilistic_f1([1, 0], [1.0, 0.0])["pf1"] == 1.0
    assert probabilistic_f1([1, 0], [0.0, 0.0])["pf1"] == 0.0
    with pytest.raises(ValueError, match="probabilities"):
        probabilistic_f1([1, 0], [1.5, 0.0])


def test_group_breakdown_and_summarize() -> None:
    rng = np.random.default_rng(6)
    y, p = _random_case(rng, 400)
    site = np.where(np.arange(400) % 3 == 0, "A", "B").astype(object)
    site[5] = None
    vendor = np.array(["GE", "Hologic"])[np.arange(400) % 2]
    rows = group_breakdown(y, p, site)
    assert [r["group"] for r in rows] == ["A", "B", "unknown"]
    for r in rows[:2]:
        sel = site == r["group"]
        assert r["n"] == sel.sum()
        assert r["auc"] == pytest.approx(roc_auc_score(y[sel], p[sel]))
        assert r["pf1"] == pytest.approx(probabilistic_f1(y[sel], p[sel])["pf1"])
    assert np.isnan(rows[2]["auc"])  # a single row: one class only

    res = summarize(y, p, groups={"site": site, "vendor": vendor}, patient_ids=np.arange(400) // 4, n_boot=200)
    assert res["auc"] == pytest.approx(roc_auc_score(y, p))
    assert res["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert res["n_patients"] == 100
    assert res["auc_ci_low"] < res["auc"] < res["auc_ci_high"]
    assert res["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert res["sensitivity_at_threshold"] == pytest.approx((p[y == 1] >= 0.5).mean())
    assert [o["target"] for o in res["sensitivity_at_specificity"]] == [0.90, 0.95]
    assert set(res["groups"]) == {"site", "vendor"}
    json.dumps(res)  # JSON-ready

    one_class = summarize(np.zeros(10), np.linspace(0, 1, 10))
    assert np.isnan(one_class["auc"]) and np.isnan(one_class["auc_ci_low"])
    assert np.isnan(one_class["sensitivity_at_specificity"][0]["sensitivity"])
