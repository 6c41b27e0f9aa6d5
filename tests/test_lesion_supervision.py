"""Lesion-box saliency supervision: exact target cells, and a loss that prefers maps lit on the lesions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammokit.training.lesion_supervision import box_saliency_loss, box_targets


def test_targets_mark_exactly_the_cells_a_box_overlaps() -> None:
    boxes = [[np.array([[10.0, 20.0, 30.0, 33.0]]), np.zeros((0, 4))]]  # item 0: slot 0 has one box, slot 1 none
    t = box_targets(boxes, input_hw=(64, 64), map_hw=(8, 8))  # 8 input px per cell
    expected = np.zeros((8, 8))
    expected[1:4, 2:5] = 1  # rows 10..30 -> cells 1..3, cols 20..33 -> cells 2..4
    np.testing.assert_array_equal(t[0, 0].numpy(), expected)
    assert t[0, 1].sum() == 0


def test_loss_is_lower_when_the_map_lights_the_lesion_and_ignores_missing_views() -> None:
    boxes = [[np.array([[0.0, 0.0, 16.0, 16.0]]), np.array([[0.0, 0.0, 16.0, 16.0]])]]
    right = torch.full((1, 2, 4, 4), 0.05)
    right[0, :, 0, 0] = 0.95
    wrong = torch.full((1, 2, 4, 4), 0.05)
    wrong[0, :, 3, 3] = 0.95
    assert box_saliency_loss(right, boxes, (64, 64)) < box_saliency_loss(wrong, boxes, (64, 64))
    # a missing view contributes nothing, whatever its map says
    mask = torch.tensor([[True, False]])
    garbage = right.clone()
    garbage[0, 1] = 0.99
    assert torch.isclose(box_saliency_loss(garbage, boxes, (64, 64), mask), box_saliency_loss(right, boxes, (64, 64),
                                                                                             mask))


def test_no_lesion_anywhere_only_penalises_lit_cells() -> None:
    boxes = [[np.zeros((0, 4))]]
    dark = torch.full((1, 1, 4, 4), 0.01)
    lit = torch.full((1, 1, 4, 4), 0.6)
    assert box_saliency_loss(dark, boxes, (32, 32)) < box_saliency_loss(lit, boxes, (32, 32))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_loss_is_float32_under_mixed_precision(device: str) -> None:
    """bf16 saliency (what autocast gives the loss) still gets a float32 loss; CUDA autocast would refuse the
    probability BCE outright (it did, in the first bf16 training on a GPU)."""
    boxes = [[np.array([[0.0, 0.0, 16.0, 16.0]]), np.zeros((0, 4))]]
    sal32 = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)).to(device)
    sal16 = sal32.to(torch.bfloat16)
    reference = box_saliency_loss(sal16.float(), boxes, (64, 64))
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        loss = box_saliency_loss(sal16, boxes, (64, 64))
    assert loss.dtype == torch.float32
    assert torch.isclose(loss, reference, rtol=1e-6)
    assert box_saliency_loss(sal16, boxes, (64, 64)).dtype == torch.float32  # and without autocast
