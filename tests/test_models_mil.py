"""MIL pooling modules, each against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mammokit.models import (
    AttentionPool,
    GatedAttentionPool,
    LSEPool,
    MaxPool,
    MeanPool,
    TopKMeanPool,
    create_mil_pool,
)

X = torch.tensor([[[1.0], [4.0], [2.0], [9.0]]])  # one bag, 4 instances, 1 channel
MASK = torch.tensor([[True, True, True, False]])  # the 9 is absent


def test_max_pool_ignores_masked_instances() -> None:
    pooled, w = MaxPool()(X, MASK)
    assert pooled.item() == 4.0
    assert w.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert MaxPool()(X)[0].item() == 9.0


def test_mean_pool_excludes_missing_instead_of_zero_filling() -> None:
    pooled, w = MeanPool()(X, MASK)
    assert pooled.item() == pytest.approx(7.0 / 3.0)
    torch.testing.assert_close(w, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0]]))


def test_topk_mean_pool() -> None:
    pooled, w = TopKMeanPool(k=2)(X, MASK)
    assert pooled.item() == pytest.approx(3.0)  # (4 + 2) / 2
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    one_present = torch.tensor([[False, True, False, False]])
    assert TopKMeanPool(k=3)(X, one_present)[0].item() == pytest.approx(4.0)  # k clipped to the present count
    # per channel: each channel averages its own top 2
    x2 = torch.tensor([[[1.0, 5.0], [3.0, 0.0], [2.0, 4.0]]])
    torch.testing.assert_close(TopKMeanPool(k=2)(x2)[0], torch.tensor([[2.5, 4.5]]))


def test_lse_pool_matches_formula_and_limits() -> None:
    r = 2.0
    pooled, w = LSEPool(r=r)(X, MASK)
    expected = math.log((math.exp(r * 1) + math.exp(r * 4) + math.exp(r * 2)) / 3) / r
    assert pooled.item() == pytest.approx(expected, rel=1e-6)
    z = torch.tensor([math.exp(r * 1), math.exp(r * 4), math.exp(r * 2)])
    torch.testing.assert_close(w[0, :3], z / z.sum())
    assert w[0, 3].item() == 0.0
    assert LSEPool(r=200.0)(X, MASK)[0].item() == pytest.approx(4.0, abs=0.01)  # sharp -> max
    assert LSEPool(r=1e-4)(X, MASK)[0].item() == pytest.approx(7.0 / 3.0, abs=1e-3)  # flat -> mean


def test_attention_pool_weights_are_the_softmax_of_scores() -> None:
    torch.manual_seed(0)
    pool = AttentionPool(dim=3, hidden=5)
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, True], [True, True, True, True]])
    pooled, w = pool(x, mask)
    s = (torch.tanh(x @ pool.V.weight.T + pool.V.bias) @ pool.w.weight.T)[..., 0]
    s = s.masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(w, torch.softmax(s, dim=1))
    torch.testing.assert_close(pooled, (w[..., None] * x).sum(1))
    x_changed = x.clone()
    x_changed[0, 2] = 100.0  # a masked instance's value cannot matter
    torch.testing.assert_close(pool(x_changed, mask)[0], pooled)
    perm = torch.tensor([3, 1, 0, 2])  # permutation invariance
    torch.testing.assert_close(pool(x[:, perm], mask[:, perm])[0], pooled)


def test_gated_attention_pool_formula() -> None:
    torch.manual_seed(1)
    pool = GatedAttentionPool(dim=3, hidden=4)
    x = torch.randn(1, 5, 3)
    pooled, w = pool(x)
    gate = torch.tanh(pool.V(x)) * torch.sigmoid(pool.U(x))
    expected = torch.softmax((gate @ pool.w.weight.T)[..., 0], dim=1)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(pooled, (expected[..., None] * x).sum(1))


@pytest.mark.parametrize("kind", ["max", "mean", "topk", "lse", "attention", "gated_attention"])
def test_every_pool_handles_an_empty_bag_and_masks_gradients(kind: str) -> None:
    torch.manual_seed(2)
    pool = create_mil_pool(kind, dim=2, hidden=4)
    x = torch.randn(2, 3, 2, requires_grad=True)
    mask = torch.tensor([[False, False, False], [True, False, True]])
    pooled, w = pool(x, mask)
    assert torch.isfinite(pooled).all() and torch.isfinite(w).all()
    assert pooled[0].abs().sum().item() == 0.0 and w[0].sum().item() == 0.0
    assert w[1].sum().item() == pytest.approx(1.0, abs=1e-6) and w[1, 1].item() == 0.0
    pooled.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[1, 1].abs().sum().item() == 0.0  # a masked instance gets no gradient


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        MaxPool()(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mask must be bool"):
        MeanPool()(torch.zeros(1, 3, 2), torch.ones(1, 3))
    with pytest.raises(ValueError, match="unknown MIL pooling"):
        create_mil_pool("median")
