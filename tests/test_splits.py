"""Patient-level splits and folds: no patient in two splits, label and site stratification within bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammokit.data.splits import assign_splits, check_patient_disjoint, patient_kfold, patient_table


def cohort(n_patients: int = 600, seed: int = 0) -> pd.DataFrame:
    """Rows = images; ~12 % of patients positive (one positive row); three sites of 60/30/10 %."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        site = rng.choice(["A", "B", "C"], p=[0.6, 0.3, 0.1])
        positive = rng.random() < 0.12
        n = int(rng.integers(1, 5))
        for r in range(n):
            rows.append({"patient": f"P{p:04d}", "site": site, "cancer": int(positive and r == n - 1)})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_assign_splits_keeps_patients_whole_and_stratifies() -> None:
    df = cohort()
    split = assign_splits(df, patient_col="patient", label_col="cancer", site_col="site", seed=0)
    assert split.index.equals(df.index) and set(split) == {"train", "val", "test"}
    df = df.assign(split=split)
    check_patient_disjoint(df, split_col="split", patient_col="patient")
    patients = patient_table(df, patient_col="patient", label_col="cancer", site_col="site")
    patients["split"] = df.groupby("patient")["split"].first()
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    n_pos = int(patients["label"].sum())
    for name, frac in fractions.items():
        members = patients[patients["split"] == name]
        assert abs(len(members) - frac * len(patients)) <= 1
        assert abs(members["label"].sum() - frac * n_pos) <= 2
        for site, group in patients.groupby("site"):
            assert abs((members["site"] == site).sum() - frac * len(group)) <= 4, (name, site)
            positives = group["label"].sum()
            assert abs(((members["site"] == site) & (members["label"] == 1)).sum() - frac * positives) <= 2


def test_assign_splits_is_seeded() -> None:
    df = cohort(200)
    a = assign_splits(df, patient_col="patient", label_col="cancer", seed=4)
    b = assign_splits(df, patient_col="patient", label_col="cancer", seed=4)
    c = assign_splits(df, patient_col="patient", label_col="cancer", seed=5)
    assert a.equals(b) and not a.equals(c)


def test_kfold_is_patient_disjoint_and_keeps_the_positive_rate() -> None:
    df = cohort()
    k = 5
    folds = patient_kfold(df, k, patient_col="patient", label_col="cancer", site_col="site", seed=1)
    assert len(folds) == k
    all_val = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(all_val), np.arange(len(df)))  # every row validated exactly once
    patient_pos = df.groupby("patient")["cancer"].max()
    n_pos = int(patient_pos.sum())
    overall_rate = df["cancer"].mean()
    for train, val in folds:
        assert set(df["patient"].iloc[train]).isdisjoint(df["patient"].iloc[val])
        assert len(train) + len(val) == len(df)
        val_patients = df["patient"].iloc[val].unique()
        assert abs(patient_pos[val_patients].sum() - n_pos / k) <= 2
        assert abs(len(val_patients) - len(patient_pos) / k) <= 1
        assert abs(df["cancer"].iloc[val].mean() - overall_rate) < 0.03


def test_rare_positives_are_spread_one_or_two_per_fold() -> None:
    df = pd.DataFrame({"patient": [f"P{i}" for i in range(50)], "cancer": [1] * 7 + [0] * 43})
    folds = patient_kfold(df, 5, patient_col="patient", label_col="cancer", seed=0)
    assert sorted(int(df["cancer"].iloc[val].sum()) for _, val in folds) == [1, 1, 1, 2, 2]


def test_leak_is_detected() -> None:
    df = pd.DataFrame({"patient": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(ValueError, match="'a'"):
        check_patient_disjoint(df, split_col="split", patient_col="patient")


def test_bad_arguments_are_named() -> None:
    df = cohort(30)
    with pytest.raises(ValueError, match="label_col='label'"):
        assign_splits(df, patient_col="patient", label_col="label")
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(df, patient_col="patient", label_col="cancer", fractions={"train": 0.5, "val": 0.2})
    with pytest.raises(ValueError, match="k=1"):
        patient_kfold(df, 1, patient_col="patient", label_col="cancer")
    broken = df.astype({"cancer": float})
    broken.loc[3, "cancer"] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        patient_kfold(broken, 3, patient_col="patient", label_col="cancer")


def official_table(n_patients: int = 200, seed: int = 0) -> pd.DataFrame:
    """Two exams per patient, four images each, as a store's table; an adapter's official train/test split, one
    patient whose second exam the dataset published in its test split, and one unlabelled patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        official = "test" if p % 5 == 0 else "train"
        for e in range(2):
            group = "test" if p == 1 and e == 1 else official
            for i in range(4):
                rows.append({"patient_id": f"P{p:04d}", "exam_id": f"P{p:04d}-E{e}", "image_id": f"P{p}-{e}-{i}",
                             "cancer": float(rng.random() < 0.2), "site": "A", "split_group": group})
    rows.append({"patient_id": "UNL", "exam_id": "UNL-E0", "image_id": "u", "cancer": np.nan, "site": "A",
                 "split_group": None})
    return pd.DataFrame(rows)


def test_the_official_split_is_kept_and_val_is_carved_from_its_train_patients() -> None:
    from mammokit.training.datamodule import with_splits

    table = official_table()
    out = with_splits(table, seed=0, val_fraction=0.2, test_fraction=0.3)  # test_fraction: the official test wins
    check_patient_disjoint(out, split_col="split", patient_col="patient_id")
    test_patients = set(table.loc[table["split_group"] == "test", "patient_id"])
    assert set(out.loc[out["split"] == "test", "patient_id"]) == test_patients  # P0001 too: its test exam wins
    train_side = out[~out["patient_id"].isin(test_patients)]
    assert set(train_side["split"]) == {"train", "val"}
    share = train_side.drop_duplicates("patient_id")["split"].value_counts(normalize=True)["val"]
    assert abs(share - 0.2) < 0.02
    assert out.loc[out["patient_id"] == "UNL", "split"].isin(["train", "val"]).all()
    random = with_splits(table, seed=0, source="random")
    assert (random["split"] == "test").sum() == 0  # the 80/20 default has no test: the official one was ignored
    internal = with_splits(table.drop(columns="split_group"), seed=0, val_fraction=0.2, test_fraction=0.15)
    check_patient_disjoint(internal, split_col="split", patient_col="patient_id")
    shares = internal.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.02 and abs(shares["val"] - 0.2) < 0.02


def test_synth_fold_numbers_are_not_an_official_split() -> None:
    from mammokit.training.datamodule import official_splits, with_splits

    table = official_table().assign(split_group=lambda t: t.index % 5)
    assert official_splits(table) is None
    with pytest.raises(ValueError, match="no official split"):
        with_splits(table, seed=0, source="official")


def test_folds_leave_the_official_test_patients_out() -> None:
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import fold_tables

    table = official_table()
    test_patients = set(table.loc[table["split_group"] == "test", "patient_id"])
    tables = fold_tables(TrainConfig(), 3, table)
    for fold in tables:
        check_patient_disjoint(fold, split_col="split", patient_col="patient_id")
        assert set(fold.loc[fold["split"] == "test", "patient_id"]) == test_patients
    val = [set(f.loc[f["split"] == "val", "patient_id"]) for f in tables]
    assert not (val[0] & val[1]) and not (val[0] | val[1] | val[2]) & test_patients


def test_folds_hold_the_internal_test_patients_out_too() -> None:
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import fold_tables

    table = official_table().drop(columns="split_group")
    cfg = TrainConfig.model_validate({"data": {"test_fraction": 0.2}})
    tables = fold_tables(cfg, 4, table)
    test = [set(f.loc[f["split"] == "test", "patient_id"]) for f in tables]
    assert test[0] and all(t == test[0] for t in test)
    assert abs(len(test[0]) / table["patient_id"].nunique() - 0.2) < 0.02
    assert not set().union(*(set(f.loc[f["split"] == "val", "patient_id"]) for f in tables)) & test[0]
