"""Pectoral muscle on MLO phantoms: Dice against the known triangle, and no line when there is no muscle."""

from __future__ import annotations

import numpy as np
import pytest

from mammokit.preprocess.mask import breast_mask, mask_to_original
from mammokit.preprocess.pectoral import detect_pectoral, suppress_pectoral, triangle_mask
from test_preprocess_phantom import dice, make_phantom


def run(**kwargs: object):
    ph = make_phantom(**kwargs)
    breast = mask_to_original(breast_mask(ph.pixels))
    return ph, breast, detect_pectoral(ph.pixels, breast, spacing_mm=ph.spacing_mm[0])


@pytest.mark.parametrize("ab", [(0.35, 0.5), (0.15, 0.25), (0.5, 0.8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_against_known_triangle(ab: tuple[float, float], seed: int) -> None:
    ph, _, res = run(seed=seed, pectoral_ab=ab)
    assert res.found, res.reason
    assert dice(res.mask, ph.pectoral) >= 0.9
    # the returned line ends on the breast's top edge and chest-wall edge, close to the true intercepts
    (xt, yt), (xw, yw) = res.line
    assert yt == 0.0 and xw == 0.0
    (tx, _), (_, ty) = ph.pectoral_line
    assert xt == pytest.approx(tx, rel=0.1) and yw == pytest.approx(ty, rel=0.1)


@pytest.mark.parametrize("seed", range(4))
def test_never_removes_more_than_the_corner_triangle(seed: int) -> None:
    ph, breast, res = run(seed=seed, pectoral_step=0.1)
    if res.found:
        allowed = triangle_mask(ph.pixels.shape, res.line) & breast
        assert not (res.mask & ~allowed).any()
        assert res.mask.sum() <= 0.5 * breast.sum()
    else:
        assert not res.mask.any()


def test_no_muscle_gives_empty_mask_and_reason() -> None:
    # texture alone can mimic an edge; the detector may accept at most one of ten muscle-free MLO phantoms
    results = [run(seed=seed, muscle=False)[2] for seed in range(10)]
    assert sum(r.found for r in results) <= 1
    for r in results:
        if not r.found:
            assert not r.mask.any() and r.line is None and r.reason


def test_suppress_sets_only_the_muscle() -> None:
    ph, _, res = run(seed=0)
    out = suppress_pectoral(ph.pixels, res.mask, fill=-5.0)
    assert np.all(out[res.mask] == -5.0)
    np.testing.assert_array_equal(out[~res.mask], ph.pixels[~res.mask])


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        detect_pectoral(np.zeros((10, 10), np.float32), np.zeros((10, 11), bool))
