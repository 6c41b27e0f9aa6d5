"""`ExamDataset` on the session's synthetic store: view slots, missing views, labels, geometry, normalisation, seeds.

Expected values are computed here from the store's files and labels.csv with plain OpenCV/NumPy, following the
documented contract (aspect kept, top-left aligned, robust z-score from p1/p50/p99, air at -Z_CLIP/2).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from mammokit.data.augment import build_augment
from mammokit.data.dataset import VIEW_SLOTS, Z_CLIP, ExamDataset
from mammokit.preprocess.store import read_image

SIZE = (64, 40)
SCALE = 2
FULL = (SIZE[0] * SCALE, SIZE[1] * SCALE)
AIR = -Z_CLIP / 2


@pytest.fixture(scope="module")
def table(synth_store) -> pd.DataFrame:
    return pd.read_parquet(synth_store.store / "preprocessed.parquet")


@pytest.fixture(scope="module")
def view_stats(synth_store) -> dict:
    return json.loads((synth_store.store / "view_stats.json").read_text())


def make(table: pd.DataFrame, store, **kwargs) -> ExamDataset:
    return ExamDataset(table, store, input_size=SIZE, full_scale=SCALE, **kwargs)


def expected_full(store, row: pd.Series, centre: float, p1: float, p99: float) -> tuple[np.ndarray, int, int]:
    """The full-size input of one stored image, computed independently: (canvas, rows, cols covered)."""
    image = read_image(store / row["image_path"], float(row["offset"]), float(row["scale"]))
    h, w = image.shape
    s = min(FULL[0] / h, FULL[1] / w)
    nh, nw = round(h * s), round(w * s)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.full(FULL, AIR, np.float32)
    tissue = resized > float(row["background"])
    out[:nh, :nw] = np.where(tissue, np.clip((resized - centre) / ((p99 - p1) / 4.652696), -Z_CLIP, Z_CLIP), AIR)
    return out, nh, nw


def test_slots_hold_the_right_views_with_aspect_kept_and_padding_right_bottom(synth_store, table):
    ds = make(table, synth_store.store)
    assert len(ds) == table["exam_id"].nunique() == 12
    for index in (0, 5):
        item = ds[index]
        rows = table[table["exam_id"] == item["exam_id"]]
        assert item["images"].shape == (4, 1, *SIZE) and item["full"].shape == (4, 1, *FULL)
        assert item["view_mask"].all()
        for slot, (lat, view) in enumerate(VIEW_SLOTS):
            row = rows[(rows["laterality"] == lat) & (rows["view_group"] == view)].iloc[0]
            assert item["image_ids"][slot] == row["image_id"]
            want, nh, nw = expected_full(synth_store.store, row, row["stat_p50"], row["stat_p1"], row["stat_p99"])
            got = item["full"][slot, 0].numpy()
            np.testing.assert_allclose(got, want, atol=1e-4)
            assert nh == FULL[0] or nw == FULL[1]  # the image fills one side: aspect kept, no stretching
            assert abs(nh / nw - row["height"] / row["width"]) < 2 / min(nh, nw)
            assert (got[nh:, :] == AIR).all() and (got[:, nw:] == AIR).all()  # padding right and bottom only
            assert (got[:nh, 0] > AIR).any()  # chest wall on the left edge
            # the global input is the area-downscaled full view
            g = cv2.resize(got, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA)
            np.testing.assert_allclose(item["images"][slot, 0].numpy(), g, atol=1e-5)


def test_missing_view_is_masked_and_empty(synth_store, table):
    exam = sorted(table["exam_id"].unique())[3]
    drop = table[(table["exam_id"] == exam) & (table["laterality"] == "L") & (table["view_group"] == "MLO")].index
    ds = make(table.drop(index=drop), synth_store.store)
    item = next(ds[i] for i in range(len(ds)) if ds.items[i]["exam_id"] == exam)
    assert item["view_mask"].tolist() == [True, False, True, True]
    assert item["image_ids"][1] == ""
    assert (item["images"][1] == 0).all() and (item["full"][1] == 0).all()
    assert (item["images"][0] != 0).any() and (item["images"][3] != 0).any()


def test_views_other_than_cc_and_mlo_fill_no_slot_and_are_counted(synth_store, table):
    """An ML (a supplementary lateral: same view group as MLO) never takes the MLO slot, even when its id sorts
    first; an AT and an image without laterality are left out too, each counted by reason."""
    exam = sorted(table["exam_id"].unique())[2]
    rows = table[table["exam_id"] == exam]
    mlo = rows[(rows["laterality"] == "L") & (rows["view"] == "MLO")].iloc[0]
    extra = pd.DataFrame([mlo.to_dict() | {"image_id": "0" + mlo["image_id"], "view": "ML"},
                          mlo.to_dict() | {"image_id": "00" + mlo["image_id"], "view": "AT", "view_group": "OTHER"},
                          mlo.to_dict() | {"image_id": "000" + mlo["image_id"], "laterality": None}])
    ds = make(pd.concat([table, extra], ignore_index=True), synth_store.store)
    item = next(ds[i] for i in range(len(ds)) if ds.items[i]["exam_id"] == exam)
    assert item["image_ids"][VIEW_SLOTS.index(("L", "MLO"))] == mlo["image_id"]
    assert ds.left_out == {"no laterality": 1, "view AT is not CC/MLO": 1, "view ML is not CC/MLO": 1}
    assert len(ds) == table["exam_id"].nunique()


def test_breast_and_exam_labels_match_labels_csv(synth_store, table):
    labels = pd.read_csv(synth_store.raw / "labels.csv")
    truth = {(r.study_uid, r.laterality): int(r.cancer) for r in labels.itertuples()}
    uids = pd.read_parquet(synth_store.index, columns=["image_id", "study_uid"])  # raw UIDs: in the index only
    study = table.merge(uids, on="image_id").groupby("exam_id")["study_uid"].first()
    ds = make(table, synth_store.store)
    seen = {0: 0, 1: 0}
    for i in range(len(ds)):
        item = ds[i]
        uid = study[item["exam_id"]]
        want = [truth[(uid, "L")], truth[(uid, "R")]]
        assert item["breast_labels"].tolist() == want
        assert item["breast_mask"].all()
        assert item["exam_label"].item() == max(want)
        seen[max(want)] += 1
    assert seen == {0: 6, 1: 6}  # prevalence 0.5 of 12 exams
    assert ds.item_labels().tolist() == [int(ds[i]["exam_label"].item()) for i in range(len(ds))]


def test_view_group_normalisation_uses_its_own_group_only(synth_store, table, view_stats):
    cc, mlo = view_stats["CC"]["percentiles"], view_stats["MLO"]["percentiles"]
    assert abs(cc["p50"] - mlo["p50"]) > 1e-3 * abs(cc["p50"])  # the groups differ, so a mix-up would show
    ds = make(table, synth_store.store, normalization="view_group", view_stats=view_stats)
    item = ds[2]
    rows = table[table["exam_id"] == item["exam_id"]].set_index("image_id")
    for slot, (_, view) in enumerate(VIEW_SLOTS):
        row = rows.loc[item["image_ids"][slot]]
        own = view_stats[view]["percentiles"]
        other = view_stats["MLO" if view == "CC" else "CC"]["percentiles"]
        want, _, _ = expected_full(synth_store.store, row, own["p50"], own["p1"], own["p99"])
        wrong, _, _ = expected_full(synth_store.store, row, other["p50"], other["p1"], other["p99"])
        got = item["full"][slot, 0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert np.abs(got - wrong).max() > 0.05
    # per-image statistics give a different input than the pooled ones
    per_image = make(table, synth_store.store)[2]
    assert not np.allclose(per_image["full"].numpy(), item["full"].numpy(), atol=1e-3)


def test_augmentation_depends_on_seed_and_epoch_only(synth_store, table):
    aug = build_augment({"p_affine": 1.0, "p_gamma": 1.0})
    a = make(table, synth_store.store, augment=aug, seed=3)
    b = make(table, synth_store.store, augment=aug, seed=3)
    plain = make(table, synth_store.store)[4]["full"]
    first = a[(4, 0)]["full"]
    assert not np.allclose(first.numpy(), plain.numpy())  # augmentation changed the item
    np.testing.assert_array_equal(b[(4, 0)]["full"].numpy(), first.numpy())  # same seed + epoch: same item
    np.testing.assert_array_equal(a[(4, 0)]["full"].numpy(), first.numpy())  # and repeatable
    assert not np.allclose(a[(4, 1)]["full"].numpy(), first.numpy())  # another epoch: another draw
    other = make(table, synth_store.store, augment=aug, seed=4)
    assert not np.allclose(other[(4, 0)]["full"].numpy(), first.numpy())  # another seed: another draw
    a.set_epoch(1)  # plain indices use the dataset's epoch
    np.testing.assert_array_equal(a[4]["full"].numpy(), a[(4, 1)]["full"].numpy())


def test_breast_and_view_levels(synth_store, table):
    breasts = make(table, synth_store.store, level="breast")
    assert len(breasts) == 24
    item = breasts[0]
    side = 0 if breasts.items[0]["laterality"] == "L" else 1
    assert item["view_mask"].tolist() == ([True, True, False, False] if side == 0 else [False, False, True, True])
    assert item["breast_mask"].tolist() == [side == 0, side == 1]
    assert item["laterality"].tolist() == [0, 0, 1, 1]  # every level yields the model contract's keys
    views = make(table, synth_store.store, level="view")
    assert len(views) == 48
    for v, it in zip(views, views.items, strict=True):  # one view per item, laterality from the view itself
        assert v["images"].shape == (1, 1, *SIZE) and v["view_mask"].tolist() == [True]
        assert v["laterality"].tolist() == [0 if it["laterality"] == "L" else 1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"level": "patient"}, "level must be one of"),
    ({"normalization": "batch"}, "normalization must be one of"),
    ({"normalization": "view_group"}, "needs view_stats"),
])
def test_bad_arguments_are_named(synth_store, table, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(table, synth_store.store, **kwargs)
