"""Per-image statistics inside the mask and their pooling per view group."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammokit.preprocess.stats import PERCENTILES, IntensityStats, StatsAggregator, intensity_stats, view_group


def sample(seed: int, loc: float, shape: tuple[int, int] = (120, 90)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.normal(loc, 50, shape).astype(np.float32)
    mask = rng.random(shape) < 0.6
    return img, mask


def test_stats_match_numpy() -> None:
    img, mask = sample(0, 1000)
    s = intensity_stats(img, mask, stride=1)
    v = img[mask].astype(np.float64)
    assert s.count == v.size
    assert s.mean == pytest.approx(v.mean(), rel=1e-9)
    assert s.std == pytest.approx(v.std(), rel=1e-6)
    assert (s.min, s.max) == (v.min(), v.max())
    for q in PERCENTILES:
        assert s.percentiles[f"p{q:g}"] == pytest.approx(np.percentile(v, q), rel=1e-6)


def test_strided_percentiles_are_close() -> None:
    img, mask = sample(1, 1000, (400, 300))
    exact, fast = intensity_stats(img, mask, stride=1), intensity_stats(img, mask, stride=2)
    assert fast.mean == exact.mean  # mean/std always use every pixel
    assert fast.percentiles["p50"] == pytest.approx(exact.percentiles["p50"], abs=2.0)


def test_empty_mask_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        intensity_stats(np.ones((5, 5), np.float32), np.zeros((5, 5), bool))


def test_pooled_mean_std_equal_concatenated_data_and_merge_is_order_free() -> None:
    images = [sample(i, 1000 + 100 * i) for i in range(6)]
    stats = [intensity_stats(img, m, stride=1) for img, m in images]
    views = ["CC", "MLO", "XCCL", "ML", "CC", "MLO"]
    whole = StatsAggregator()
    for v, s in zip(views, stats, strict=True):
        whole.add(v, s)
    a, b = StatsAggregator(), StatsAggregator()
    for i, (v, s) in enumerate(zip(views, stats, strict=True)):
        (a if i % 2 else b).add(v, s)
    merged = StatsAggregator.from_dict(json.loads(json.dumps(b.to_dict()))).merge(a).result()
    for group, idx in (("CC", [0, 2, 4]), ("MLO", [1, 3, 5])):
        values = np.concatenate([images[i][0][images[i][1]].astype(np.float64) for i in idx])
        g = whole.result()[group]
        assert g.n_images == 3 and g.count == values.size
        assert g.mean == pytest.approx(values.mean(), rel=1e-9)
        assert g.std == pytest.approx(values.std(), rel=1e-6)
        assert g.percentiles["p50"] == pytest.approx(np.median([stats[i].percentiles["p50"] for i in idx]))
        assert merged[group].mean == pytest.approx(g.mean, rel=1e-12)
        assert merged[group].std == pytest.approx(g.std, rel=1e-9)
        assert merged[group].percentiles == g.percentiles


def test_stats_dict_round_trip() -> None:
    s = intensity_stats(*sample(2, 10))
    assert IntensityStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s


@pytest.mark.parametrize(("view", "group"), [("CC", "CC"), ("xccl", "CC"), ("MLO", "MLO"), ("ML", "MLO"),
                                             (None, "OTHER"), ("AT", "OTHER")])
def test_view_group(view: str | None, group: str) -> None:
    assert view_group(view) == group
