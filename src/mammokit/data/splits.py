"""Patient-level splits and k-fold assignment, stratified by label and site.

Every patient goes to exactly one split or fold, so no patient's images leak between training and
evaluation. Patients (not rows) are allocated: a patient is positive if any of its rows is (its label is
the maximum over rows) and belongs to its most frequent site. Patients are ordered by label, then site (in
a seeded random order), then shuffled within each (label, site) stratum, and dealt one by one to the split
that is furthest below its target share. Every prefix of that sequence matches the fractions to within
one patient per split, so each stratum, being a contiguous block, lands in every split within about two
patients of its target: positive rates and sites are spread evenly even when they are rare.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mammokit.errors import InvalidInputError

__all__ = ["assign_splits", "check_patient_disjoint", "patient_kfold", "patient_table"]

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}


def _require_columns(df: pd.DataFrame, **columns: str | None) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df: expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError("df: no rows to split")
    for arg, col in columns.items():
        if col is None:
            continue
        if col not in df.columns:
            raise ValueError(f"{arg}={col!r}: no such column (have {list(df.columns)})")
        if df[col].isna().any():
            bad = df.index[df[col].isna()][:5].tolist()
            raise ValueError(f"{arg}={col!r}: missing values in rows {bad}")


def patient_table(df: pd.DataFrame, *, patient_col: str, label_col: str, site_col: str | None = None) -> pd.DataFrame:
    """One row per patient: its label (max over its rows), site (most frequent) and number of rows."""
    _require_columns(df, patient_col=patient_col, label_col=label_col, site_col=site_col)
    grouped = df.groupby(patient_col, sort=True)
    table = pd.DataFrame({"label": grouped[label_col].max(), "rows": grouped.size()})
    if site_col is not None:
        table["site"] = grouped[site_col].agg(lambda s: s.astype(str).value_counts().sort_index().idxmax())
    else:
        table["site"] = ""
    return table


def _deal(table: pd.DataFrame, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Assign each patient (row of `table`) a bucket index so every (label, site) stratum follows `fractions`."""
    rng = np.random.default_rng(seed)
    sites = np.array(sorted(table["site"].unique()))
    site_rank = dict(zip(sites, rng.permutation(len(sites)), strict=True))
    order = np.lexsort((rng.random(len(table)), table["site"].map(site_rank).to_numpy(), table["label"].to_numpy()))
    assigned = np.zeros(len(fractions))
    buckets = np.empty(len(table), np.int64)
    for step, row in enumerate(order, start=1):
        choice = int(np.argmax(fractions * step - assigned))
        assigned[choice] += 1
        buckets[row] = choice
    return buckets


def assign_splits(
    df: pd.DataFrame,
    *,
    patient_col: str,
    label_col: str,
    site_col: str | None = None,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> pd.Series:
    """Split name of every row (a Series on `df.index`), by patient, stratified by label and site.

    Args:
        df: one row per image or exam.
        patient_col: patient id column; all rows of a patient get the same split.
        label_col: label column (0/1 or ordinal); a patient's label is its maximum.
        site_col: optional site/vendor column to spread across splits.
        fractions: split name -> share of patients, positive and summing to 1 (default 70/15/15).
        seed: makes the assignment reproducible.
    """
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not fractions or any(v <= 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise InvalidInputError(f"fractions={fractions}: need positive shares that sum to 1")
    table = patient_table(df, patient_col=patient_col, label_col=label_col, site_col=site_col)
    names = list(fractions)
    buckets = _deal(table, np.array([fractions[n] for n in names], float), seed)
    per_patient = pd.Series(np.array(names, dtype=object)[buckets], index=table.index)
    return pd.Series(df[patient_col].map(per_patient).to_numpy(), index=df.index, name="split")


def patient_kfold(
    df: pd.DataFrame,
    k: int,
    *,
    patient_col: str,
    label_col: str,
    site_col: str | None = None,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K patient-disjoint folds as (train_idx, val_idx) positional row indices (for `df.iloc`), stratified."""
    table = patient_table(df, patient_col=patient_col, label_col=label_col, site_col=site_col)
    if not 2 <= k <= len(table):
        raise InvalidInputError(f"k={k}: need 2 <= k <= number of patients ({len(table)})")
    buckets = _deal(table, np.full(k, 1.0 / k), seed)
    row_fold = df[patient_col].map(pd.Series(buckets, index=table.index)).to_numpy()
    return [(np.flatnonzero(row_fold != fold), np.flatnonzero(row_fold == fold)) for fold in range(k)]


def check_patient_disjoint(df: pd.DataFrame, *, split_col: str, patient_col: str) -> None:
    """Raise ValueError naming the patients that appear in more than one split of `split_col`."""
    _require_columns(df, split_col=split_col, patient_col=patient_col)
    counts = df.groupby(patient_col)[split_col].nunique()
    leaking = counts.index[counts > 1].tolist()
    if leaking:
        raise InvalidInputError(f"{split_col!r}: {len(leaking)} patient(s) in more than one split, e.g. {leaking[:5]}")
