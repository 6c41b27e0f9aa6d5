"""Global image and dense patch grid."""

from __future__ import annotations

import numpy as np
import pytest

from mammokit.preprocess.patches import global_image, grid_starts, patch_grid


def test_global_image_long_side_and_scale() -> None:
    img = np.random.default_rng(0).random((2330, 1790)).astype(np.float32)
    out, scale = global_image(img, long_side=1024)
    assert max(out.shape) == 1024 and out.shape == (1024, round(1790 * 1024 / 2330))
    assert scale == (out.shape[0] / 2330, out.shape[1] / 1790)
    assert out.mean() == pytest.approx(img.mean(), rel=1e-3)
    same, one = global_image(img[:100, :80], long_side=1024)
    assert same.shape == (100, 80) and one == (1.0, 1.0)
    up, s = global_image(img[:100, :80], long_side=200, allow_upsample=True)
    assert up.shape == (200, 160) and s == (2.0, 2.0)


def test_grid_starts_cover_the_axis() -> None:
    assert grid_starts(1000, 512, 256).tolist() == [0, 256, 488]
    assert grid_starts(1024, 512, 256).tolist() == [0, 256, 512]
    assert grid_starts(300, 512, 256).tolist() == [0]


def test_patch_fractions_match_brute_force_and_filter() -> None:
    mask = np.zeros((700, 500), bool)
    mask[100:600, :300] = True
    idx = patch_grid(mask, patch_size=128, stride=100, min_breast_fraction=0.0)
    covered = np.zeros_like(mask)
    for (x0, y0, x1, y1), frac in zip(idx.boxes, idx.breast_fraction, strict=True):
        assert frac == pytest.approx(mask[y0:y1, x0:x1].sum() / 128**2)
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    kept = patch_grid(mask, patch_size=128, stride=100, min_breast_fraction=0.5)
    assert len(kept.boxes) == int((idx.breast_fraction >= 0.5).sum()) and np.all(kept.breast_fraction >= 0.5)


def test_small_image_gets_one_overhanging_patch() -> None:
    idx = patch_grid(np.ones((100, 60), bool), patch_size=128, min_breast_fraction=0.0)
    assert idx.boxes.tolist() == [[0, 0, 128, 128]]
    assert idx.breast_fraction[0] == pytest.approx(6000 / 128**2)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="stride"):
        patch_grid(np.ones((10, 10), bool), patch_size=8, stride=0)
    with pytest.raises(ValueError, match="min_breast_fraction"):
        patch_grid(np.ones((10, 10), bool), min_breast_fraction=2.0)
