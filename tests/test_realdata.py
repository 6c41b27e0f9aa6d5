"""Preprocessing on real mammograms nobody on this project made (`../shared/realdata`, see tests/realdata.py).

Checks, per image: every tissue pixel stays inside the breast mask (≥ 0.995), burned-in markers are outside the crop,
the crop is tight, the chest wall is found on the right side with confidence, and with every laterality, view and
orientation tag removed the view and laterality are read from the image and the pectoral step runs on the MLO.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from mammokit.dicom import read_dicom
from mammokit.preprocess import breast_mask, crop_box, decide_orientation, mask_to_original
from mammokit.preprocess.config import PreprocessConfig
from realdata import (
    NYU_SPACING_MM,
    nyu_images,
    read_png,
    realdata_dir,
    tissue_and_markers,
    write_untagged_dicom,
)

MARGIN_MM = 2.0


def _check_mask(pixels, padding, spacing_mm: float, name: str) -> tuple:
    tissue, markers = tissue_and_markers(pixels)
    bm = breast_mask(pixels, padding)
    kept = float((mask_to_original(bm) & tissue).sum() / tissue.sum())
    assert kept >= 0.995, f"{name}: tissue kept {kept:.4f}"
    x0, y0, x1, y1 = crop_box(bm, (spacing_mm, spacing_mm), margin_mm=MARGIN_MM)
    for mx0, my0, mx1, my1 in markers:
        assert mx0 >= x1 or mx1 <= x0 or my0 >= y1 or my1 <= y0, f"{name}: marker {(mx0, my0, mx1, my1)} in the crop"
    rows, cols = tissue.any(axis=1).nonzero()[0], tissue.any(axis=0).nonzero()[0]
    slack = 2 * (MARGIN_MM / spacing_mm + bm.factor)  # the margin and one coarse block on each side
    assert (x1 - x0) <= cols[-1] + 1 - cols[0] + slack and (y1 - y0) <= rows[-1] + 1 - rows[0] + slack, name
    return bm


@pytest.mark.parametrize("index", range(4))
def test_nyu_ffdm_mask_keeps_every_tissue_pixel_and_finds_the_chest_wall(index: int) -> None:
    path = nyu_images()[index]
    pixels = read_png(path)
    bm = _check_mask(pixels, None, NYU_SPACING_MM, path.name)
    right = path.stem.split("_")[1] == "R"
    orient = decide_orientation(bm.mask)  # no tags at all: content alone
    assert orient.flip is right and orient.source == "content" and not orient.ambiguous
    assert orient.confidence >= 0.5
    assert bm.markers, f"{path.name}: the burned-in label beside the breast should be reported"


def test_rsna_file_keeps_the_fatty_periphery() -> None:
    """PixelPaddingValue written over all the air: the old threshold cut into the breast's fatty periphery."""
    img = read_dicom(realdata_dir() / "dicom" / "rsna_200779059.dcm")
    bm = _check_mask(img.pixels, img.padding_mask, 0.07, "rsna")
    orient = decide_orientation(bm.mask)
    assert orient.flip is True and orient.confidence >= 0.5  # a right breast, chest wall on the right


@pytest.mark.parametrize("name", ["MG1_J2KI.dcm", "MG1_JPLY.dcm"])
def test_wg04_film_mlo_leaves_marker_and_film_edges_out(name: str) -> None:
    img = read_dicom(realdata_dir() / "dicom" / name)
    bm = breast_mask(img.pixels, img.padding_mask)
    x0, _, x1, _ = crop_box(bm, (0.05, 0.05))
    # the lead "L MLO" letters: saturated blobs in the top quarter that touch no image border
    bright = (img.pixels >= 0.9 * img.pixels.max()).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    rows, cols = img.pixels.shape
    letters = [(x, x + w) for x, y, w, h, a in stats[1:]
               if a >= 500 and y > 0 and x > 0 and x + w < cols and y + h < rows // 4]
    assert len(letters) >= 2 and all(lx0 >= x1 for lx0, _ in letters), (letters, x1)
    assert {"top", "bottom"} <= set(bm.edge_bands)
    assert x0 == 0 and decide_orientation(bm.mask).flip is False  # chest wall left, as stored


@pytest.mark.slow
def test_pipeline_reads_view_and_laterality_from_untagged_real_images(tmp_path) -> None:
    from mammokit.datasets.index import build_index, write_index
    from mammokit.preprocess.pipeline import run_pipeline

    src = tmp_path / "src"
    truth = {}
    for path in nyu_images():
        out = write_untagged_dicom(read_png(path), src / f"{path.stem}.dcm", NYU_SPACING_MM)
        truth[pydicom.dcmread(out, stop_before_pixels=True).SOPInstanceUID] = (path.stem.split("_")[1], "CC")
    for name, lat in (("MG1_J2KI.dcm", "L"), ("rsna_200779059.dcm", "R")):
        ds = pydicom.dcmread(realdata_dir() / "dicom" / name)
        for kw in ("ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence", "PatientOrientation"):
            if kw in ds:
                delattr(ds, kw)
        ds.save_as(src / name)
        truth[ds.SOPInstanceUID] = (lat, "MLO" if name.startswith("MG1") else None)
    write_index(build_index(src, adapter="generic"), tmp_path / "images.parquet")
    cfg = PreprocessConfig(spacing_mm=0.4, global_long_side=256, fallback_spacing_mm=0.07)
    summary = run_pipeline(tmp_path / "images.parquet", tmp_path / "store", cfg, progress=False)
    assert summary["failed"] == 0, pd.read_csv(tmp_path / "store" / "failures.csv").to_dict("records")
    table = pd.read_parquet(tmp_path / "store" / "preprocessed.parquet").set_index("image_id")
    image_id = pd.read_parquet(tmp_path / "images.parquet").set_index("sop_uid")["image_id"]  # raw UIDs: index only
    for uid, (lat, view) in truth.items():
        r = table.loc[image_id[uid]]
        assert (r.laterality, r.laterality_source) == (lat, "content"), (uid, r.laterality_reason)
        assert r.laterality_confidence >= 0.5 and not r.orientation_ambiguous
        if view is not None:
            assert (r.view, r.view_source) == (view, "content"), (uid, r.view_reason)
            assert r.view_confidence >= 0.3  # the level below which the view stays unknown
    mlo = table[table["view"] == "MLO"]
    assert len(mlo) == 1 and mlo["pectoral_found"].all()  # the pectoral step ran on the untagged MLO
    ffdm = table[table["view"] != "MLO"]  # the WG-04 film's brighter air strip is left outside, as it should be
    assert (ffdm["qc_tissue_outside_mask"] < 0.05).all()
