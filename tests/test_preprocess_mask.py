"""Breast mask and crop on phantoms with labels, padding, implants, and different bit depths and offsets."""

from __future__ import annotations

import numpy as np
import pytest

from mammokit.preprocess.mask import breast_mask, crop_box, mask_to_original, robust_threshold
from test_preprocess_phantom import dice, make_phantom

CASES = {
    "plain": {},
    "label": {"label": True},
    "padding": {"padding_px": 20},
    "implant": {"implant": True},
    "10bit+offset": {"bits": 10, "offset": 500.0},
    "16bit-negative-flipped": {"bits": 16, "offset": -1000.0, "chest_wall_left": False},
    "cc-everything": {"view": "CC", "label": True, "implant": True, "padding_px": 15},
}


def crop_quality(box: tuple[int, int, int, int], truth: np.ndarray) -> tuple[float, float]:
    """(fraction of true breast pixels inside the box, box area / true breast bounding-box area)."""
    x0, y0, x1, y1 = box
    inside = truth[y0:y1, x0:x1].sum() / truth.sum()
    rows, cols = np.flatnonzero(truth.any(1)), np.flatnonzero(truth.any(0))
    bbox_area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return float(inside), (x1 - x0) * (y1 - y0) / bbox_area


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_mask_and_crop_quality(case: str, seed: int) -> None:
    ph = make_phantom(seed=seed, **CASES[case])
    bm = breast_mask(ph.pixels, ph.padding if ph.padding.any() else None)
    assert not bm.warnings
    assert dice(mask_to_original(bm), ph.breast) > 0.99
    box = crop_box(bm, ph.spacing_mm, margin_mm=2.0)
    kept, ratio = crop_quality(box, ph.breast)
    assert kept >= 0.995
    assert ratio <= 1.15
    x0, y0, x1, y1 = box
    for lx0, ly0, lx1, ly1 in ph.lesion_boxes:
        assert x0 <= lx0 and y0 <= ly0 and lx1 <= x1 and ly1 <= y1


def test_label_padding_and_implant_are_handled() -> None:
    ph = make_phantom(view="CC", label=True, implant=True, padding_px=15)
    full = mask_to_original(breast_mask(ph.pixels, ph.padding))
    rows, cols = ph.pixels.shape
    label = np.zeros_like(full)
    label[int(0.05 * rows) : int(0.12 * rows), int(0.8 * cols) : int(0.95 * cols)] = True
    assert not (full & label).any()
    assert not (full & ph.padding).any()
    yy, xx = np.indices(ph.pixels.shape) + 0.5
    a, cy, b = 0.75 * cols, 0.5 * rows, 0.42 * rows
    implant = ((xx - 0.35 * a) / (0.22 * a)) ** 2 + ((yy - cy) / (0.3 * b)) ** 2 < 1.0
    assert full[implant].mean() == 1.0


def test_threshold_is_affine_invariant() -> None:
    ph = make_phantom(seed=3)
    m1 = breast_mask(ph.pixels).mask
    m2 = breast_mask(ph.pixels * 3.7 + 12345.0).mask
    assert dice(m1, m2) > 0.999


def test_threshold_sits_near_air_not_between_tissues() -> None:
    rng = np.random.default_rng(0)
    air = rng.normal(100, 2, 6000)
    fat, dense = rng.normal(400, 20, 3000), rng.normal(900, 40, 3000)
    t = robust_threshold(np.concatenate([air, fat, dense]))
    assert (air > t).mean() < 0.01  # above the air noise
    assert t < 400 - 3 * 20  # far below the fatty tissue, which Otsu alone would split from dense tissue


def test_constant_and_empty_images_give_whole_image_crop() -> None:
    flat = np.full((300, 200), 7.0, np.float32)
    bm = breast_mask(flat)
    assert bm.box is None and bm.warnings
    assert crop_box(bm, (0.1, 0.1)) == (0, 0, 200, 300)
    padded = breast_mask(flat, padding_mask=np.ones(flat.shape, bool))
    assert padded.box is None and "padding" in padded.warnings[0]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        breast_mask(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="padding_mask"):
        breast_mask(np.zeros((10, 10), np.float32), padding_mask=np.zeros((5, 5), bool))


def _tissue_kept(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & truth).sum() / truth.sum())


def test_fatty_tissue_next_to_air_is_not_split_off() -> None:
    """Issue 11's reproduction: air a minority, fatty ramp, dense majority; Otsu alone cuts at the fat/dense edge."""
    img = np.zeros((2000, 1000), np.float32)
    img[:, 170:520] = np.linspace(100, 1000, 350)
    img[:, 520:] = 1600 + np.random.default_rng(0).normal(0, 250, (2000, 480))
    bm = breast_mask(img)
    assert bm.box is not None and abs(bm.box[0] - 170) <= bm.factor
    assert bm.threshold < 100


def _ellipse_breast(shape: tuple[int, int], rng: np.random.Generator, air: float, fat: float) -> tuple:
    yy, xx = np.indices(shape)
    rows, cols = shape
    breast = ((xx / (0.7 * cols)) ** 2 + ((yy - rows / 2) / (0.42 * rows)) ** 2) < 1
    img = np.full(shape, air, np.float32)
    img[breast] = fat + 800.0 * (1 - xx[breast] / (0.7 * cols)) + rng.normal(0, 20, breast.sum())
    return img, breast


def test_collimated_zeros_without_padding_tag_are_not_taken_for_air() -> None:
    rng = np.random.default_rng(1)
    img, breast = _ellipse_breast((1200, 900), rng, air=300.0, fat=420.0)
    img += rng.normal(0, 10, img.shape).astype(np.float32) * ~breast
    img[:100], img[-100:], img[:, -80:] = 0.0, 0.0, 0.0  # collimator shadow, no PixelPaddingValue
    breast[:100], breast[-100:], breast[:, -80:] = False, False, False
    bm = breast_mask(img)
    full = mask_to_original(bm)
    assert _tissue_kept(full, breast) >= 0.995
    assert (full & ~breast).sum() / breast.sum() < 0.03  # the air inside the field stays out


def test_padding_over_all_the_air_leaves_the_whole_breast() -> None:
    """RSNA-style processed image: PixelPaddingValue written over the air, so no air is left to find."""
    rng = np.random.default_rng(2)
    img, breast = _ellipse_breast((1000, 800), rng, air=0.0, fat=80.0)
    img[breast] += rng.uniform(0, 1500, breast.sum()).astype(np.float32) * (rng.random(breast.sum()) < 0.5)
    bm = breast_mask(img, padding_mask=~breast)
    assert _tissue_kept(mask_to_original(bm), breast) >= 0.995


def test_film_edge_band_and_label_stay_out_of_the_crop() -> None:
    rng = np.random.default_rng(3)
    img, breast = _ellipse_breast((1400, 1000), rng, air=40.0, fat=600.0)
    img += rng.normal(0, 8, img.shape).astype(np.float32) * ~breast
    img[:30] = 3000.0  # unexposed film edge along the top and the nipple side
    img[:, -40:] = 3000.0
    breast[:30], breast[:, -40:] = False, False
    label = np.zeros_like(breast)
    label[200:300, 800:900] = True  # a lead marker in the air, 30 px from the breast's tip
    img[label] = 4000.0
    bm = breast_mask(img)
    assert {"top", "right"} <= set(bm.edge_bands)
    full = mask_to_original(bm)
    assert _tissue_kept(full, breast) >= 0.995
    _, y0, x1, _ = crop_box(bm, (0.1, 0.1), margin_mm=2.0)
    assert x1 <= 800  # the label and the nipple-side film edge are outside the crop
    assert 30 <= y0 <= np.flatnonzero(breast.any(1))[0]  # so is the top film edge; the breast is inside
    assert any(bx0 >= 790 and by0 >= 190 for bx0, by0, _, _ in bm.markers)


def test_a_small_dark_object_does_not_move_the_air_level() -> None:
    """A clip or a hole in the film darker than the air (the DICOM WG-04 film has one)."""
    rng = np.random.default_rng(4)
    img, breast = _ellipse_breast((1000, 800), rng, air=500.0, fat=800.0)
    img += rng.normal(0, 15, img.shape).astype(np.float32) * ~breast
    img[400:500, 700:740] = 0.0
    bm = breast_mask(img)
    assert 450 < bm.air_level < 550
    full = mask_to_original(bm)
    assert _tissue_kept(full, breast) >= 0.995 and (full & ~breast).sum() / breast.sum() < 0.03


def test_a_darker_scanner_band_does_not_become_the_air() -> None:
    """A film scanner's darker column band: the air sits at two levels; the brighter, larger one must not be breast."""
    rng = np.random.default_rng(5)
    img, breast = _ellipse_breast((1200, 900), rng, air=340.0, fat=640.0)
    img += rng.normal(0, 20, img.shape).astype(np.float32) * ~breast
    img[:, 560:760] -= 60.0  # the band runs through the breast and the air beyond the nipple
    bm = breast_mask(img)
    full = mask_to_original(bm)
    assert _tissue_kept(full, breast) >= 0.995
    assert (full & ~breast).sum() / breast.sum() < 0.03


def test_tissue_outside_counts_what_the_mask_cut_not_the_labels() -> None:
    ph = make_phantom(seed=0, label=True)
    assert breast_mask(ph.pixels).tissue_outside < 0.001  # the label beside the breast is no lost tissue
    img = np.zeros((2000, 1000), np.float32)
    img[:, 170:520] = np.linspace(100, 1000, 350)
    img[:, 520:] = 1600 + np.random.default_rng(0).normal(0, 250, (2000, 480))
    cut = breast_mask(img, core_fraction=0.6, body_fraction=0.6, fringe_fraction=0.0)  # forced to drop fatty tissue
    assert cut.box[0] > 300 and cut.tissue_outside > 0.01
