"""Quality of the preprocessing steps on `mammokit.synth` archives (multi-vendor DICOM with ground-truth masks)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammokit.dicom import read_dicom
from mammokit.preprocess import (
    apply_transform,
    breast_mask,
    crop_box,
    decide_orientation,
    detect_pectoral,
    mask_to_original,
    original_to_stored_boxes,
    original_to_stored_mask,
    plan_transform,
    stored_to_original_boxes,
)
from mammokit.synth import generate
from test_preprocess_phantom import dice


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "archive"
    generate(out, exams=4, seed=7, size_scale=0.25, masks=True)
    return out


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return np.zeros(shape, bool) if img is None else img > 0


def test_crop_orientation_and_pectoral_quality(archive: Path) -> None:
    lesions: dict[str, list[list[float]]] = {}
    with open(archive / "lesions.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            lesions.setdefault(row["sop_uid"], []).append([float(row[k]) for k in ("x0", "y0", "x1", "y1")])
    pect_dice, kept_all, ratios = [], [], []
    for path in sorted((archive / "dicom").rglob("*.dcm")):
        im = read_dicom(path)
        truth = read_mask(archive / "masks" / f"{im.sop_uid}_breast.png", im.pixels.shape)
        bm = breast_mask(im.pixels, im.padding_mask)
        orient = decide_orientation(bm.mask, im.laterality, im.patient_orientation)
        assert not orient.disagreement, (path.name, orient.reason)
        x0, y0, x1, y1 = box = crop_box(bm, im.spacing_mm, margin_mm=2.0)
        kept_all.append(truth[y0:y1, x0:x1].sum() / truth.sum())
        rows, cols = np.flatnonzero(truth.any(1)), np.flatnonzero(truth.any(0))
        ratios.append((x1 - x0) * (y1 - y0) / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)))
        for lx0, ly0, lx1, ly1 in lesions.get(im.sop_uid, []):
            assert x0 <= lx0 and y0 <= ly0 and lx1 <= x1 and ly1 <= y1, path.name
        # the whole chain for this image: stored grid, mask on it, lesion boxes there and back
        record = plan_transform(im.pixels.shape, im.spacing_mm, box, target_spacing_mm=0.4, flip=orient.flip)
        stored = apply_transform(im.pixels, record)
        stored_mask = original_to_stored_mask(bm.mask, record, bm.scale)
        truth_stored = original_to_stored_mask(truth, record)
        assert dice(stored_mask, truth_stored) > 0.98
        if lesions.get(im.sop_uid):
            boxes = np.array(lesions[im.sop_uid])
            np.testing.assert_allclose(stored_to_original_boxes(original_to_stored_boxes(boxes, record), record),
                                       boxes, atol=1e-9)
        if im.view == "MLO":
            res = detect_pectoral(stored, stored_mask, spacing_mm=record.output_spacing_mm[0])
            gt = original_to_stored_mask(read_mask(archive / "masks" / f"{im.sop_uid}_pectoral.png",
                                                   im.pixels.shape), record)
            pect_dice.append(dice(res.mask, gt) if res.found else 0.0)
            # nothing outside the upper chest-wall corner: no muscle pixel right of / below the line's ends
            if res.found:
                ys, xs = np.nonzero(res.mask)
                assert xs.max() < res.line[0][0] and ys.max() < res.line[1][1]
        assert dice(mask_to_original(bm), truth) > 0.99
    assert min(kept_all) >= 0.995
    assert max(ratios) <= 1.15
    assert len(pect_dice) == 8 and min(pect_dice) >= 0.85, pect_dice
