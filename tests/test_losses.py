"""Losses checked against hand-computed values and torch / torchvision reference implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from mammokit.models.contract import ModelOutput
from mammokit.training.losses import (
    LossConfig,
    MammoLoss,
    bce_with_logits,
    class_balanced_focal_loss,
    class_balanced_weights,
    focal_loss,
    saliency_l1,
    smooth_labels,
    view_targets,
)

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75


def test_bce_hand_values_and_mask() -> None:
    logits = torch.tensor([0.0, LN3, LN3, 5.0])
    targets = torch.tensor([1.0, 1.0, 0.0, float("nan")])
    expected = (math.log(2) - math.log(0.75) - math.log(0.25)) / 3
    assert bce_with_logits(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    mask = torch.tensor([True, False, True, True])
    assert bce_with_logits(logits, targets, mask).item() == pytest.approx((math.log(2) - math.log(0.25)) / 2, rel=1e-6)


def test_label_smoothing_symmetric_and_positive_only() -> None:
    t = torch.tensor([1.0, 0.0, float("nan")])
    assert torch.allclose(smooth_labels(t, 0.2)[:2], torch.tensor([0.9, 0.1]))
    assert torch.allclose(smooth_labels(t, 0.2, positive_only=True)[:2], torch.tensor([0.8, 0.0]))
    assert torch.isnan(smooth_labels(t, 0.2)[2])
    x = torch.tensor([LN3, LN3])
    y = torch.tensor([1.0, 0.0])
    sym = -(0.9 * math.log(0.75) + 0.1 * math.log(0.25) + 0.1 * math.log(0.75) + 0.9 * math.log(0.25)) / 2
    assert bce_with_logits(x, y, smoothing=0.2).item() == pytest.approx(sym, rel=1e-6)
    pos = -(0.8 * math.log(0.75) + 0.2 * math.log(0.25) + math.log(0.25)) / 2
    assert bce_with_logits(x, y, smoothing=0.2, positive_only_smoothing=True).item() == pytest.approx(pos, rel=1e-6)
    with pytest.raises(ValueError, match="smoothing"):
        smooth_labels(t, 1.0)


def test_focal_hand_values_and_reference() -> None:
    x = torch.tensor([LN3, LN3])
    y = torch.tensor([1.0, 0.0])
    pos = 0.25 * 0.25**2 * -math.log(0.75)
    neg = 0.75 * 0.75**2 * -math.log(0.25)
    assert focal_loss(x, y, gamma=2.0, alpha=0.25).item() == pytest.approx((pos + neg) / 2, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g) * 3
    y = (torch.rand(64, 2, generator=g) > 0.7).float()
    ref = sigmoid_focal_loss(x, y, alpha=0.4, gamma=1.5, reduction="mean")
    assert focal_loss(x, y, gamma=1.5, alpha=0.4).item() == pytest.approx(ref.item(), rel=1e-5)
    plain = F.binary_cross_entropy_with_logits(x, y)
    assert focal_loss(x, y, gamma=0.0, alpha=None).item() == pytest.approx(plain.item(), rel=1e-6)


def test_class_balanced_weights_and_loss() -> None:
    beta = 0.99
    raw = [(1 - beta) / (1 - beta**n) for n in (900, 100)]
    expected = [2 * r / sum(raw) for r in raw]
    w = class_balanced_weights((900, 100), beta)
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert w[1] > w[0]  # the rare class weighs more
    assert class_balanced_weights((50, 50), beta).tolist() == pytest.approx([1.0, 1.0])
    x = torch.tensor([LN3, LN3])
    y = torch.tensor([1.0, 0.0])
    by_hand = (expected[1] * 0.25**2 * -math.log(0.75) + expected[0] * 0.75**2 * -math.log(0.25)) / 2
    got = class_balanced_focal_loss(x, y, class_counts=(900, 100), beta=beta, gamma=2.0)
    assert got.item() == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        class_balanced_weights((0, 10))


def test_saliency_l1_and_view_targets() -> None:
    s = torch.tensor([[[[1.0, -3.0]], [[2.0, 2.0]]]])  # (B=1, V=2, 1, 2)
    assert saliency_l1(s).item() == pytest.approx(2.0)
    assert saliency_l1(s, torch.tensor([[True, False]])).item() == pytest.approx(2.0)
    assert saliency_l1(s, torch.tensor([[False, True]])).item() == pytest.approx(2.0)
    assert saliency_l1([torch.ones(2, 2), torch.full((1, 4), -4.0)]).item() == pytest.approx((4 + 16) / 8)
    single = torch.tensor([[[[1.0, 3.0]]], [[[10.0, 10.0]]]])  # single-view items: (B=2, C=1, 1, 2), mask (B,)
    assert saliency_l1(single, torch.tensor([True, False])).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="does not match"):
        saliency_l1(single, torch.tensor([True, False, True]))
    breast = torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])
    lat = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    got = view_targets(breast, lat)
    assert torch.equal(got[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.isnan(got[1, :2]).all() and torch.equal(got[1, 2:], torch.tensor([0.0, 0.0]))
    assert torch.equal(view_targets(breast, torch.tensor([1, 1])), torch.tensor([1.0, 0.0]))


def _outputs(b: int = 2) -> ModelOutput:
    """A four-view `ModelOutput` with known logits (B = 2 = the number of breasts, so shapes alone are ambiguous)."""
    return ModelOutput(
        breast_logits=torch.zeros(b, 2, requires_grad=True),
        breast_mask=torch.ones(b, 2, dtype=torch.bool),
        exam_logit=torch.full((b,), LN3, requires_grad=True),
        view_logits=torch.zeros(b, 4),
        view_mask=torch.ones(b, 4, dtype=torch.bool),
        saliency=torch.full((b, 4, 3, 3), -0.5),
        patch_boxes=torch.zeros(b, 4, 0, 4),
        patch_attention=torch.zeros(b, 4, 0),
        aux_view_logits={"global": torch.full((b, 4), LN3, requires_grad=True),
                         "local": torch.zeros(b, 4, requires_grad=True), "fusion": torch.zeros(b, 4)},
    )


def test_mammoloss_gmic_composite_by_hand() -> None:
    targets = {
        "breast_labels": torch.tensor([[1.0, 0.0], [float("nan"), 1.0]]),
        "exam_label": torch.tensor([1.0, 0.0]),
        "view_labels": torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]),
    }
    loss = MammoLoss(aux_weights={"global": 0.5, "local": 2.0, "fusion": 0.0}, saliency_l1=0.1, exam_weight=3.0)
    total, parts = loss(_outputs(), targets)
    breast = math.log(2)  # three known breasts, logit 0
    exam = (-math.log(0.75) - math.log(0.25)) / 2
    glob = (-math.log(0.75) - math.log(0.25)) / 2  # every aux head -> view labels, by name (half 1, half 0)
    local = math.log(2)
    expected = breast + 3.0 * exam + 0.5 * glob + 2.0 * local + 0.1 * 0.5
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert parts["breast"].item() == pytest.approx(breast, rel=1e-6)
    assert parts["global"].item() == pytest.approx(glob, rel=1e-6)
    assert parts["saliency_l1"].item() == pytest.approx(0.5)
    assert "fusion" not in parts  # weight 0
    total.backward()


def test_mammoloss_masked_entries_contribute_nothing() -> None:
    out = _outputs()
    targets = {
        "breast_labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "breast_mask": torch.tensor([[True, False], [True, True]]),
        "exam_label": torch.tensor([1.0, float("nan")]),
    }
    loss = MammoLoss(kind="focal", aux_weights={}, gamma=2.0, alpha=0.25)
    total, _ = loss(out, targets)
    total.backward()
    assert out.breast_logits.grad[0, 1] == 0 and out.breast_logits.grad[0, 0] != 0
    assert out.exam_logit.grad[1] == 0 and out.exam_logit.grad[0] != 0
    changed = _outputs()
    with torch.no_grad():
        changed.breast_logits[0, 1] = 25.0
        changed.exam_logit[1] = -25.0
    assert loss(changed, targets)[0].item() == pytest.approx(total.item(), rel=1e-6)


def test_mammoloss_all_unknown_is_zero_and_differentiable() -> None:
    out = _outputs(1)
    targets = {"breast_labels": torch.full((1, 2), float("nan")), "exam_label": torch.tensor([float("nan")])}
    total, _ = MammoLoss(aux_weights={})(out, targets)
    assert total.item() == 0.0
    total.backward()
    assert torch.equal(out.breast_logits.grad, torch.zeros(1, 2))


def test_mammoloss_config_and_errors() -> None:
    cfg = LossConfig.from_any({"kind": "cb_focal", "class_counts": [900, 100], "gamma": 1.0})
    assert cfg.class_counts == (900, 100)
    assert MammoLoss(cfg).config.kind == "cb_focal"
    with pytest.raises(ValueError, match="class_counts"):
        MammoLoss(kind="cb_focal")
    with pytest.raises(ValueError, match="unknown keys"):
        LossConfig.from_any({"kind": "bce", "gama": 2})
    with pytest.raises(ValueError, match="kind"):
        LossConfig(kind="hinge")
    out = _outputs()
    out.aux_view_logits["global"] = torch.zeros(2, 3)
    targets = {"breast_labels": torch.zeros(2, 2), "exam_label": torch.zeros(2), "view_labels": torch.zeros(2, 4)}
    with pytest.raises(ValueError, match="'global'"):
        MammoLoss()(out, targets)
    with pytest.raises(KeyError, match="view_labels"):
        MammoLoss()(_outputs(), {"breast_labels": torch.zeros(2, 2), "exam_label": torch.zeros(2)})
    with pytest.raises(ValueError, match="breast_logits"):
        MammoLoss(aux_weights={})({"breast_logits": torch.zeros(2, 3), "exam_logit": torch.zeros(2)}, targets)
