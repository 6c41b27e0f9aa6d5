"""TransformRecord and the exact maps between the original DICOM grid and the stored grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammokit.preprocess.geometry import (
    TransformRecord,
    apply_transform,
    original_to_stored_boxes,
    original_to_stored_mask,
    plan_transform,
    stored_to_original_boxes,
    stored_to_original_heatmap,
)


@pytest.fixture(params=[False, True], ids=["noflip", "flip"])
def record(request: pytest.FixtureRequest) -> TransformRecord:
    # non-square source spacing, crop away from the origin
    return plan_transform((600, 500), (0.07, 0.085), (37, 51, 463, 559), target_spacing_mm=0.1, flip=request.param)


def test_plan_scale_is_exact_size_ratio(record: TransformRecord) -> None:
    x0, y0, x1, y1 = record.crop_box
    assert record.stored_shape == (round((y1 - y0) * 0.07 / 0.1), round((x1 - x0) * 0.085 / 0.1))
    assert record.scale == (record.stored_shape[0] / (y1 - y0), record.stored_shape[1] / (x1 - x0))
    assert record.output_spacing_mm == pytest.approx((0.1, 0.1), rel=5e-3)


def test_boxes_round_trip_exactly(record: TransformRecord) -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform([40, 60], [400, 500], size=(20, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 50, size=(20, 2))], axis=1)
    stored = original_to_stored_boxes(boxes, record)
    assert np.all(stored[:, 2] > stored[:, 0]) and np.all(stored[:, 3] > stored[:, 1])
    np.testing.assert_allclose(stored_to_original_boxes(stored, record), boxes, atol=1e-9)


def test_crop_box_maps_to_whole_stored_image(record: TransformRecord) -> None:
    rows, cols = record.stored_shape
    np.testing.assert_allclose(original_to_stored_boxes(record.crop_box, record), [[0, 0, cols, rows]], atol=1e-9)


def test_flip_mirrors_x(record: TransformRecord) -> None:
    x0, y0 = record.crop_box[:2]
    left_edge_box = [x0, y0, x0 + 10, y0 + 10]  # touches the crop's left edge in the original
    out = original_to_stored_boxes(left_edge_box, record)[0]
    if record.flip:
        assert out[2] == pytest.approx(record.stored_shape[1])
    else:
        assert out[0] == pytest.approx(0.0)


def test_apply_transform_moves_a_dot_where_the_boxes_say(record: TransformRecord) -> None:
    pixels = np.zeros(record.original_shape, np.float32)
    pixels[300:306, 200:206] = 1000.0
    stored = apply_transform(pixels, record)
    assert stored.shape == record.stored_shape
    rows, cols = np.indices(stored.shape)
    w = stored / stored.sum()
    centre = ((cols + 0.5) * w).sum(), ((rows + 0.5) * w).sum()
    expected = original_to_stored_boxes([200, 300, 206, 306], record)[0]
    assert centre[0] == pytest.approx((expected[0] + expected[2]) / 2, abs=0.05)
    assert centre[1] == pytest.approx((expected[1] + expected[3]) / 2, abs=0.05)
    # area resampling conserves the integral up to the pixel-area ratio
    assert stored.sum() == pytest.approx(pixels.sum() * record.scale[0] * record.scale[1], rel=1e-4)


@pytest.mark.parametrize("shrink", [1, 4])
def test_heatmap_round_trip_on_a_linear_field(record: TransformRecord, shrink: int) -> None:
    # A heatmap sampled from f(x, y) = 2x - 3y (original edge coords) at its own pixel centres must come back as f
    # at the original pixel centres: bilinear interpolation is exact on linear fields.
    gh, gw = record.stored_shape[0] // shrink, record.stored_shape[1] // shrink
    gy, gx = np.indices((gh, gw)) + 0.5
    sx = gx * record.stored_shape[1] / gw
    sy = gy * record.stored_shape[0] / gh
    boxes = stored_to_original_boxes(np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1), record)
    heat = (2 * boxes[:, 0] - 3 * boxes[:, 1]).reshape(gh, gw)
    back = stored_to_original_heatmap(heat, record, fill=-1e6)
    assert back.shape == record.original_shape
    oy, ox = np.indices(back.shape) + 0.5
    truth = 2 * ox - 3 * oy
    x0, y0, x1, y1 = record.crop_box
    margin = 2 * shrink + 2  # edge pixels are replicated, not extrapolated
    inner = (slice(y0 + margin, y1 - margin), slice(x0 + margin, x1 - margin))
    np.testing.assert_allclose(back[inner], truth[inner], atol=2e-2)
    outside = np.ones(back.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert np.all(back[outside] == -1e6)
    assert np.all(back[y0:y1, x0:x1] > -1e5)


def test_mask_to_stored_matches_the_box_map(record: TransformRecord) -> None:
    mask = np.zeros(record.original_shape, bool)
    mask[200:400, 100:300] = True
    stored = original_to_stored_mask(mask, record)
    ys, xs = np.nonzero(stored)
    expected = original_to_stored_boxes([100, 200, 300, 400], record)[0]
    assert xs.min() == pytest.approx(expected[0], abs=1) and xs.max() + 1 == pytest.approx(expected[2], abs=1)
    assert ys.min() == pytest.approx(expected[1], abs=1) and ys.max() + 1 == pytest.approx(expected[3], abs=1)


def test_record_json_round_trip(record: TransformRecord) -> None:
    again = TransformRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record


def test_record_from_dict_names_the_bad_field(record: TransformRecord) -> None:
    data = record.to_dict()
    del data["crop_box"]
    with pytest.raises(ValueError, match="crop_box"):
        TransformRecord.from_dict(data)
    data = record.to_dict() | {"scale": [1.0]}
    with pytest.raises(ValueError, match="malformed"):
        TransformRecord.from_dict(data)


def test_bad_inputs_raise_clear_errors(record: TransformRecord) -> None:
    with pytest.raises(ValueError, match="empty"):
        plan_transform((100, 100), (0.1, 0.1), (50, 50, 50, 80))
    with pytest.raises(ValueError, match="spacing_mm"):
        plan_transform((100, 100), (0.0, 0.1), None)
    with pytest.raises(ValueError, match="shape"):
        apply_transform(np.zeros((10, 10), np.float32), record)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        original_to_stored_boxes(np.zeros((3, 3)), record)
