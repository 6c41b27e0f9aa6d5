"""`mammokit preprocess` end to end on a small multi-vendor synthetic archive.

Checked against independent truths: lesions.csv (boxes in DICOM pixels), the synth ground-truth breast masks, the
original pixels pushed through the recorded transform, and a second run (resume, other config, Dask, pool).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammokit.dicom import read_dicom
from mammokit.errors import InvalidInputError
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.geometry import TransformRecord, apply_transform, stored_to_original_boxes
from mammokit.preprocess.pipeline import file_stem, run_pipeline
from mammokit.preprocess.show import write_show
from mammokit.preprocess.sources import source_paths
from mammokit.preprocess.store import read_image, read_mask

# hologic stores right breasts mirrored (chest wall right: must flip); fuji and agfa do not (and burn in a marker).
# size_scale 0.25 keeps agfa's spacing (0.1 mm / scale) under the 0.5 mm a reader trusts.
VENDORS = "hologic,fuji,agfa"
CFG = PreprocessConfig(spacing_mm=0.4, global_long_side=128, patch_size=64)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """synth (3 exams, 12 images) → index → preprocess with one worker; returns paths, summary and table."""
    from mammokit.datasets.index import build_index, write_index
    from mammokit.synth import generate

    root = tmp_path_factory.mktemp("pipeline")
    generate(root / "raw", exams=3, seed=11, size_scale=0.25, vendors=VENDORS, prevalence=0.67, benign_rate=0.67)
    write_index(build_index(root / "raw", adapter="synth"), root / "images.parquet")
    summary = run_pipeline(root / "images.parquet", root / "store", CFG, workers=1, progress=False)
    table = pd.read_parquet(root / "store" / "preprocessed.parquet")
    return {"root": root, "index": root / "images.parquet", "store": root / "store", "summary": summary,
            "table": table}


def _image_arrays(store: Path, table: pd.DataFrame) -> dict[str, np.ndarray]:
    return {r.image_id: read_image(store / r.image_path, r.offset, r.scale) for r in table.itertuples()}


def test_every_row_processed_with_its_record(run: dict) -> None:
    table, store, summary = run["table"], run["store"], run["summary"]
    index = pd.read_parquet(run["index"])
    assert summary["images"] == summary["processed"] == len(index) == 12
    assert summary["failed"] == summary["skipped_done"] == 0
    assert sorted(table["image_id"]) == sorted(index["image_id"])
    assert pd.read_csv(store / "failures.csv").empty
    for col in ("transform", "flip", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "stats", "stat_mean", "stat_p99",
                "lesions_stored", "patches", "config_hash", "pectoral_found"):
        assert table[col].notna().all(), col
    for r in table.itertuples():
        for rel in (r.image_path, r.global_path, r.breast_mask_path):
            assert (store / rel).is_file()
        assert (store / "records" / f"{file_stem(r.image_id)}.json").is_file()
        rec = TransformRecord.from_dict(json.loads(r.transform))
        assert rec.crop_box == (r.crop_x0, r.crop_y0, r.crop_x1, r.crop_y1) and rec.flip == r.flip
        assert rec.stored_shape == (r.height, r.width)
        assert abs(r.spacing_mm - CFG.spacing_mm) < 0.01
    groups = json.loads((store / "view_stats.json").read_text())
    assert set(groups) >= {"CC", "MLO"}
    mlo = table[table["view_group"] == "MLO"]
    assert mlo["pectoral_found"].mean() >= 0.5  # synth MLOs all have a muscle


def test_stored_image_is_the_original_through_the_recorded_transform(run: dict) -> None:
    store = run["store"]
    paths = source_paths(store)  # the store names its index, the only holder of the originals' paths
    assert sorted(paths) == sorted(run["table"]["image_id"]) and "path" not in run["table"]
    for r in run["table"].itertuples():
        rec = TransformRecord.from_dict(json.loads(r.transform))
        expected = apply_transform(read_dicom(paths[r.image_id]).pixels, rec, method=CFG.resample_method)
        stored = read_image(store / r.image_path, r.offset, r.scale)
        mask = read_mask(store / r.breast_mask_path)
        assert stored.shape == expected.shape == mask.shape
        assert np.abs(stored[mask] - expected[mask]).max() <= r.scale / 2 + 1e-3 * max(1.0, abs(r.offset))
        assert (stored[~mask] == np.float32(r.background)).all()  # air is one constant below all tissue
        assert r.background < stored[mask].min()


def test_lesion_boxes_map_back_to_lesions_csv(run: dict) -> None:
    truth = pd.read_csv(run["root"] / "raw" / "lesions.csv", dtype={"sop_uid": str, "lesion_id": str})
    assert len(truth) >= 2
    seen = 0
    sop_of = pd.read_parquet(run["index"]).set_index("image_id")["sop_uid"]  # raw UIDs: in the index only
    for r in run["table"].itertuples():
        stored = json.loads(r.lesions_stored)
        want = truth[truth["sop_uid"] == sop_of[r.image_id]].sort_values("lesion_id")
        assert len(stored) == len(want)
        if not stored:
            continue
        stored = sorted(stored, key=lambda d: d["lesion_id"])
        boxes = np.array([[d["x0"], d["y0"], d["x1"], d["y1"]] for d in stored])
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= r.width).all() and (boxes[:, 3] <= r.height).all()
        back = stored_to_original_boxes(boxes, TransformRecord.from_dict(json.loads(r.transform)))
        np.testing.assert_allclose(back, want[["x0", "y0", "x1", "y1"]].to_numpy(float), atol=1e-6)
        # and every lesion lies inside the crop
        assert (back[:, 0] >= r.crop_x0).all() and (back[:, 2] <= r.crop_x1).all()
        assert (back[:, 1] >= r.crop_y0).all() and (back[:, 3] <= r.crop_y1).all()
        seen += len(stored)
    assert seen == len(truth)


def test_crop_keeps_the_true_breast(run: dict) -> None:
    index = pd.read_parquet(run["index"]).set_index("image_id")
    for r in run["table"].itertuples():
        truth = cv2.imread(index.loc[r.image_id, "truth_breast_mask"], cv2.IMREAD_GRAYSCALE) > 0
        inside = truth[r.crop_y0:r.crop_y1, r.crop_x0:r.crop_x1].sum()
        assert inside / truth.sum() >= 0.995, r.image_id
        ys, xs = np.nonzero(truth)
        box_area = (ys.max() + 1 - ys.min()) * (xs.max() + 1 - xs.min())
        assert (r.crop_x1 - r.crop_x0) * (r.crop_y1 - r.crop_y0) <= 1.3 * box_area  # small images: coarse margin


def test_chest_wall_ends_on_the_left(run: dict) -> None:
    table, store = run["table"], run["store"]
    vendor_of = {"HOLOGIC": "hologic", "FUJI": "fuji", "AGFA": "agfa"}
    for r in table.itertuples():
        mask = read_mask(store / r.breast_mask_path)
        stored = read_image(store / r.image_path, r.offset, r.scale)
        left, right = mask[:, :2].mean(), mask[:, -2:].mean()
        assert left > 0.3 and right < 0.05, (r.laterality, r.view, left, right)
        assert (stored[:, 0] > r.background).mean() > 0.3  # tissue values, not air, along the left edge
        vendor = next(v for k, v in vendor_of.items() if k in r.manufacturer.upper())
        assert r.flip == (r.laterality == "R" and vendor == "hologic")  # only mirrored right breasts flip
    assert table["flip"].any() and (table["laterality"] == "R").sum() > table["flip"].sum()


def test_resume_after_a_kill_processes_only_the_missing(run: dict, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(run["store"], store)
    table = run["table"]
    gone, half = table["image_id"].iloc[:2].tolist(), table["image_id"].iloc[2]
    for image_id in gone:  # killed before anything of these was written
        row = table[table["image_id"] == image_id].iloc[0]
        for rel in (row.image_path, row.global_path, row.breast_mask_path, f"records/{file_stem(image_id)}.json"):
            (store / rel).unlink()
    (store / "records" / f"{file_stem(half)}.json").unlink()  # killed after the images, before the record
    (store / "images" / f".{file_stem(half)}.abc123.tmp.tif").write_bytes(b"half-written")  # a stray temp file
    summary = run_pipeline(run["index"], store, CFG, workers=1, progress=False)
    assert (summary["processed"], summary["skipped_done"], summary["failed"]) == (3, len(table) - 3, 0)
    again = pd.read_parquet(store / "preprocessed.parquet")
    pd.testing.assert_frame_equal(again, table)
    before, after = _image_arrays(run["store"], table), _image_arrays(store, again)
    for image_id, arr in before.items():
        np.testing.assert_array_equal(after[image_id], arr)
    third = run_pipeline(run["index"], store, CFG, workers=1, progress=False)
    assert (third["processed"], third["skipped_done"]) == (0, len(table))


def test_a_new_config_is_refused_then_overwrite_reprocesses_everything(run: dict, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(run["store"], store)
    wider = CFG.model_copy(update={"margin_mm": CFG.margin_mm + 4.0})
    with pytest.raises(InvalidInputError, match=r"another config \(margin_mm 2.0 → 6.0\).*--overwrite"):
        run_pipeline(run["index"], store, wider, workers=1, progress=False)
    summary = run_pipeline(run["index"], store, wider, workers=1, progress=False, overwrite=True)
    assert (summary["processed"], summary["skipped_done"]) == (len(run["table"]), 0)
    assert summary["config_hash"] != run["summary"]["config_hash"]
    new = pd.read_parquet(store / "preprocessed.parquet").set_index("image_id")
    old = run["table"].set_index("image_id").loc[new.index]
    assert ((new["crop_x1"] - new["crop_x0"]) >= (old["crop_x1"] - old["crop_x0"])).all()
    assert ((new["crop_x1"] - new["crop_x0"]) > (old["crop_x1"] - old["crop_x0"])).any()
    assert json.loads((store / "preprocess_config.json").read_text())["config"]["margin_mm"] == wider.margin_mm


def test_a_corrupt_file_fails_alone(run: dict, tmp_path: Path) -> None:
    index = pd.read_parquet(run["index"]).iloc[:3]
    broken = tmp_path / "broken.dcm"  # a real file cut short, as an interrupted copy leaves it
    data = Path(index["path"].iloc[0]).read_bytes()
    broken.write_bytes(data[: len(data) * 6 // 10])
    bad = index.iloc[[0]].assign(image_id="broken-image", sop_uid="broken-image", path=str(broken))
    summary = run_pipeline(pd.concat([index, bad], ignore_index=True), tmp_path / "store", CFG, workers=2,
                           progress=False)
    assert (summary["processed"], summary["failed"]) == (3, 1)
    failures = pd.read_csv(tmp_path / "store" / "failures.csv")
    assert failures["image_id"].tolist() == ["broken-image"] and "path" not in failures
    assert failures["safe_relpath"].tolist() == [bad["safe_relpath"].iloc[0]]
    assert failures["reason"].iloc[0].startswith("truncated file")
    assert sorted(pd.read_parquet(tmp_path / "store" / "preprocessed.parquet")["image_id"]) == sorted(
        index["image_id"])


@pytest.mark.parametrize("processes", [False, True])
def test_dask_and_pool_give_the_same_records(run: dict, tmp_path: Path, processes: bool) -> None:
    from distributed import LocalCluster

    index = pd.read_parquet(run["index"]).iloc[:4]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=processes, dashboard_address=None) as cluster:
        dask = run_pipeline(index, tmp_path / "dask", CFG, scheduler=cluster.scheduler_address, progress=False)
    pool = run_pipeline(index, tmp_path / "pool", CFG, workers=2, progress=False)
    assert dask["processed"] == pool["processed"] == 4
    a = pd.read_parquet(tmp_path / "dask" / "preprocessed.parquet")
    b = pd.read_parquet(tmp_path / "pool" / "preprocessed.parquet")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, run["table"][run["table"]["image_id"].isin(index["image_id"])]
                                  .reset_index(drop=True))
    for image_id, arr in _image_arrays(tmp_path / "dask", a).items():
        np.testing.assert_array_equal(arr, _image_arrays(tmp_path / "pool", b)[image_id])


def test_show_writes_a_two_panel_png(run: dict, tmp_path: Path) -> None:
    table = run["table"]
    row = table[(table["view"] == "MLO") & (table["lesions_stored"] != "[]")].iloc[0]
    out = write_show(run["store"], row.image_id, tmp_path / "show.png", height=300)
    picture = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[0] == 300 + 28
    assert picture.shape[1] > 300 * (row.columns / row.rows + row.width / row.height)  # both panels
    red = (picture[..., 2] > 200) & (picture[..., 1] < 80) & (picture[..., 0] < 80)
    yellow = (picture[..., 2] > 200) & (picture[..., 1] > 180) & (picture[..., 0] < 80)
    assert (red | yellow).sum() > 50  # the lesion boxes are drawn
    with pytest.raises(InvalidInputError, match="no image 'absent'"):
        write_show(run["store"], "absent", tmp_path / "x.png")


def test_show_handles_rows_without_pectoral_line(run: dict, tmp_path: Path) -> None:
    table = run["table"]
    cc = table[table["view"] == "CC"].iloc[0]
    assert table["pectoral_line"].isna().any() and table["pectoral_line"].notna().any()
    assert write_show(run["store"], cc.image_id, tmp_path / "cc.png", height=200).is_file()


def test_film_edge_setting_keeps_tissue_that_reaches_the_border(run: dict, tmp_path: Path) -> None:
    """The scanned-film option ignores a border band when finding the breast; a synthetic MLO's pectoral muscle,
    which does reach the top edge, must still be whole (the band is filled from the first row inside it)."""
    index = pd.read_parquet(run["index"])
    index = index[index["view"] == "MLO"]
    cfg = CFG.model_copy(update={"film_edge_mm": 5.0})
    assert run_pipeline(index, tmp_path / "store", cfg, workers=1, progress=False)["failed"] == 0
    table = pd.read_parquet(tmp_path / "store" / "preprocessed.parquet")
    plain = run["table"].set_index("image_id")
    for r in table.itertuples():
        truth = cv2.imread(index.set_index("image_id").loc[r.image_id, "truth_breast_mask"], cv2.IMREAD_GRAYSCALE) > 0
        assert truth[r.crop_y0:r.crop_y1, r.crop_x0:r.crop_x1].sum() / truth.sum() >= 0.995
        mask = read_mask(tmp_path / "store" / r.breast_mask_path)
        assert mask[0].any()  # the muscle still touches the top edge
        if mask.shape == (plain.loc[r.image_id, "height"], plain.loc[r.image_id, "width"]):
            other = read_mask(run["store"] / plain.loc[r.image_id, "breast_mask_path"])
            assert (mask & other).sum() / (mask | other).sum() > 0.97
